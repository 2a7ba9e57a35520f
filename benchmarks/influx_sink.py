"""InfluxDB sink throughput into VictoriaMetrics on loopback. Prints one JSON object.

- points_per_s: readings submitted to `InfluxSink` (as the evaluator stage does: column
  batches of one reading per sensor, with tiers) until VictoriaMetrics has acknowledged
  every one, with the config's default batch_size (5000) — sustained over the run.
- serialize_points_per_s: `LineEncoder.readings` alone on the same columns.
- The points are read back through the export API and counted, so a fast run that lost
  data cannot pass.

Usage: python benchmarks/influx_sink.py [--sensors N] [--ticks K]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from ehswatch.config import InfluxSettings  # noqa: E402
from ehswatch.ingest.influx import InfluxSink, InfluxWriter  # noqa: E402
from ehswatch.ingest.lineprotocol import LineEncoder  # noqa: E402
from ehswatch.ingest.spool import Spool  # noqa: E402
from ehswatch.readings import ReadingBatch  # noqa: E402
from ehswatch.thresholds import Evaluator, SensorThresholds, ThresholdTable  # noqa: E402
from tests.servers import VictoriaMetrics  # noqa: E402


async def sustained(
    vm: VictoriaMetrics, work: Path, n: int, ticks: int
) -> tuple[float, InfluxSink]:
    ids = [f"D-{i}" for i in range(n)]
    table = ThresholdTable.build(
        [SensorThresholds(sensor_id=s, high=(10.0, 20.0, 40.0)) for s in ids]
    )
    settings = InfluxSettings(
        url=vm.url, token="t", org="ehs", bucket="telemetry", spool_dir=str(work / "spool")
    )
    start = time.time() - ticks - 5
    evaluator = Evaluator(table, start_ts=start)
    rng = np.random.default_rng(1)
    idx = np.arange(n, dtype=np.int32)
    batches = [
        ReadingBatch.of(idx, rng.normal(5, 1, n), np.full(n, start + t)) for t in range(ticks)
    ]
    evaluations = [evaluator.process(b) for b in batches]
    sink = InfluxSink(
        writer=InfluxWriter(settings),
        encoder=LineEncoder("plant-1", [(s, "zone-1", "dust_al") for s in ids]),
        spool=Spool(settings.spool_dir, 1 << 30),
        batch_size=settings.batch_size,
        flush_interval_s=settings.flush_interval_ms / 1000,
    )
    total = n * ticks
    async with sink:
        t0 = time.perf_counter()
        for b, ev in zip(batches, evaluations, strict=True):
            sink.submit(b, ev)
            await asyncio.sleep(0)
        while sink.stats.points_written + sink.stats.points_spooled < total:
            await asyncio.sleep(0.001)
        elapsed = time.perf_counter() - t0
    return total / elapsed, sink


def serialize_rate(n: int) -> float:
    encoder = LineEncoder("plant-1", [(f"D-{i}", "zone-1", "dust_al") for i in range(n)])
    rng = np.random.default_rng(2)
    sensor = np.arange(n, dtype=np.int32)
    value = rng.normal(5, 1, n)
    tier = np.zeros(n, dtype=np.int8)
    quality = np.zeros(n, dtype=np.uint8)
    ts = np.full(n, time.time())
    runs = []
    for _ in range(5):
        t0 = time.perf_counter()
        encoder.readings(sensor, value, tier, quality, ts)
        runs.append(time.perf_counter() - t0)
    return n / statistics.median(runs)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sensors", type=int, default=10_000)
    ap.add_argument("--ticks", type=int, default=100)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        with VictoriaMetrics(work) as vm:
            rate, sink = asyncio.run(sustained(vm, work, args.sensors, args.ticks))
            stored = sum(len(s["timestamps"]) for s in vm.export('{__name__="reading_value"}'))
    print(
        json.dumps(
            {
                "points_per_s": round(rate),
                "serialize_points_per_s": round(serialize_rate(100_000)),
                "points": args.sensors * args.ticks,
                "points_stored": stored,
                "points_written": sink.stats.points_written,
                "points_spooled": sink.stats.points_spooled,
                "batch_size": sink.batch_size,
            }
        )
    )


if __name__ == "__main__":
    main()

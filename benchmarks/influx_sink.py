"""InfluxDB sink throughput into VictoriaMetrics on loopback. Prints one JSON object.

Measured in one run, against one VictoriaMetrics, `--rounds` times each (the median is
reported, every round's rate is listed):

- points_per_s: readings submitted to `InfluxSink` (as the evaluator stage does: column
  batches of one reading per sensor, with tiers) until VictoriaMetrics has acknowledged
  every one, with the config's default batch_size (5000) — sustained over the run.
- bare_post_points_per_s: the same line protocol (same encoder, same readings, chunks of
  the same batch_size), encoded beforehand and POSTed by a minimal client (http.client,
  one keep-alive connection, one request at a time) to the same server: what the server
  and loopback HTTP allow, with nothing of the sink in the way.
- ratio_to_bare_post = points_per_s / bare_post_points_per_s (goal: at least 0.8);
  ratio_per_round: each round's sink rate over the bare rate of the same round. The two
  alternate which goes first. On a small machine the server and the sink share the
  cores: the sink's own work (line protocol encoding, ~0.6 µs a point) is what the
  ratio measures, and the run-to-run spread of the server's rate is wide.
- serialize_points_per_s: `LineEncoder.readings` alone on the same columns.
- cpu_s_per_million: CPU seconds per million points used by the client's process and by
  the server during each measurement (medians): where the time goes.
- The sink's points are read back through the export API and counted, so a fast run that
  lost data cannot pass; each round writes under its own `site` tag.

Usage: python benchmarks/influx_sink.py [--sensors N] [--ticks K] [--rounds R]
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
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
from ehswatch.thresholds import Evaluation, Evaluator, SensorThresholds, ThresholdTable  # noqa: E402
from tests.servers import VictoriaMetrics  # noqa: E402

BATCH_SIZE = InfluxSettings(url="http://x", token="", org="", bucket="").batch_size


def workload(n: int, ticks: int) -> tuple[list[ReadingBatch], list[Evaluation]]:
    ids = [f"D-{i}" for i in range(n)]
    table = ThresholdTable.build(
        [SensorThresholds(sensor_id=s, high=(10.0, 20.0, 40.0)) for s in ids]
    )
    start = time.time() - ticks - 5
    evaluator = Evaluator(table, start_ts=start)
    rng = np.random.default_rng(1)
    idx = np.arange(n, dtype=np.int32)
    batches = [
        ReadingBatch.of(idx, rng.normal(5, 1, n), np.full(n, start + t)) for t in range(ticks)
    ]
    return batches, [evaluator.process(b) for b in batches]


def server_cpu_s(vm: VictoriaMetrics) -> float:
    """CPU seconds the server process has used so far (Linux /proc)."""
    proc = vm._proc
    assert proc is not None, "the server is not running"
    pid = proc.pid
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


Cpu = tuple[float, float]  # (this process, the server) CPU seconds during a measurement


def encoder(site: str, n: int) -> LineEncoder:
    return LineEncoder(site, [(f"D-{i}", "zone-1", "dust_al") for i in range(n)])


async def sustained(
    vm: VictoriaMetrics,
    work: Path,
    site: str,
    batches: list[ReadingBatch],
    evaluations: list[Evaluation],
) -> tuple[float, InfluxSink, Cpu]:
    n = len(batches[0])
    settings = InfluxSettings(
        url=vm.url, token="t", org="ehs", bucket="telemetry", spool_dir=str(work / site)
    )
    sink = InfluxSink(
        writer=InfluxWriter(settings),
        encoder=encoder(site, n),
        spool=Spool(settings.spool_dir, 1 << 30),
        batch_size=settings.batch_size,
        flush_interval_s=settings.flush_interval_ms / 1000,
        memory_max_points=n * len(batches) + 1,  # measure throughput, not the bound
    )
    total = n * len(batches)
    async with sink:
        cpu0, server0, t0 = time.process_time(), server_cpu_s(vm), time.perf_counter()
        for b, ev in zip(batches, evaluations, strict=True):
            sink.submit(b, ev)
            await asyncio.sleep(0)
        while sink.stats.points_written + sink.stats.points_spooled < total:
            await asyncio.sleep(0.005)  # the end is noticed within 5 ms: 0.2 % of a run
        elapsed = time.perf_counter() - t0
        cpu = (time.process_time() - cpu0, server_cpu_s(vm) - server0)
    return total / elapsed, sink, cpu


def bare_post(
    vm: VictoriaMetrics, site: str, batches: list[ReadingBatch], evaluations: list[Evaluation]
) -> tuple[float, Cpu]:
    """The same line protocol, in chunks of BATCH_SIZE, POSTed one request at a time."""
    enc = encoder(site, len(batches[0]))
    body = b"".join(
        enc.readings(b.sensor, b.value, ev.reading_tier, b.quality, b.ts)
        for b, ev in zip(batches, evaluations, strict=True)
    )
    lines = body.splitlines(keepends=True)
    chunks = [b"".join(lines[k : k + BATCH_SIZE]) for k in range(0, len(lines), BATCH_SIZE)]
    conn = http.client.HTTPConnection("127.0.0.1", vm.port, timeout=30)
    headers = {"Authorization": "Token t", "Content-Type": "text/plain; charset=utf-8"}
    cpu0, server0, t0 = time.process_time(), server_cpu_s(vm), time.perf_counter()
    for chunk in chunks:
        conn.request("POST", "/api/v2/write?org=ehs&bucket=telemetry&precision=ns", chunk, headers)
        resp = conn.getresponse()
        resp.read()
        if resp.status != 204:
            raise RuntimeError(f"bare POST: HTTP {resp.status}")
    elapsed = time.perf_counter() - t0
    cpu = (time.process_time() - cpu0, server_cpu_s(vm) - server0)
    conn.close()
    return len(lines) / elapsed, cpu


def serialize_rate(n: int) -> float:
    enc = encoder("plant-1", n)
    rng = np.random.default_rng(2)
    sensor = np.arange(n, dtype=np.int32)
    value = rng.normal(5, 1, n)
    tier = np.zeros(n, dtype=np.int8)
    quality = np.zeros(n, dtype=np.uint8)
    ts = np.full(n, time.time())
    runs = []
    for _ in range(5):
        t0 = time.perf_counter()
        enc.readings(sensor, value, tier, quality, ts)
        runs.append(time.perf_counter() - t0)
    return n / statistics.median(runs)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sensors", type=int, default=10_000)
    ap.add_argument("--ticks", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    batches, evaluations = workload(args.sensors, args.ticks)
    total = args.sensors * args.ticks
    sink_rates: list[float] = []
    bare_rates: list[float] = []
    stored: list[int] = []
    cpu: dict[str, list[Cpu]] = {"bare": [], "sink": []}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        with VictoriaMetrics(work) as vm:
            for r in range(args.rounds):
                # Alternate which goes first: the server's background work after one
                # run (merges of what it just stored) must not always fall on the other.
                for which in ("bare", "sink") if r % 2 == 0 else ("sink", "bare"):
                    if which == "bare":
                        rate, used = bare_post(vm, f"bare-{r}", batches, evaluations)
                        bare_rates.append(rate)
                        cpu["bare"].append(used)
                        continue
                    rate, sink, used = asyncio.run(
                        sustained(vm, work, f"sink-{r}", batches, evaluations)
                    )
                    sink_rates.append(rate)
                    cpu["sink"].append(used)
                    assert sink.stats.points_spooled == 0, "the sink spooled: not a throughput run"
            for r in range(args.rounds):
                series = vm.export(f'{{__name__="reading_value",site="sink-{r}"}}')
                stored.append(sum(len(s["timestamps"]) for s in series))
    points_per_s = statistics.median(sink_rates)
    bare = statistics.median(bare_rates)
    ratios = [a / b for a, b in zip(sink_rates, bare_rates, strict=True)]
    print(
        json.dumps(
            {
                "points_per_s": round(points_per_s),
                "bare_post_points_per_s": round(bare),
                "ratio_to_bare_post": round(points_per_s / bare, 3),
                "ratio_per_round": [round(x, 3) for x in ratios],
                "serialize_points_per_s": round(serialize_rate(100_000)),
                "points": total,
                "points_stored_per_round": stored,
                "all_stored": all(s == total for s in stored),
                "sink_rounds_points_per_s": [round(x) for x in sink_rates],
                "bare_rounds_points_per_s": [round(x) for x in bare_rates],
                "batch_size": BATCH_SIZE,
                # CPU seconds per million points, median over the rounds: the client's
                # process and the server, while each measurement ran.
                "cpu_s_per_million": {
                    f"{who}_{side}": round(
                        statistics.median(c[k] for c in cpu[who]) * 1e6 / total, 2
                    )
                    for who in ("bare", "sink")
                    for k, side in ((0, "client"), (1, "server"))
                },
            }
        )
    )


if __name__ == "__main__":
    main()

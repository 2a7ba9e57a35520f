"""What the shift figures cost the evaluator's pass. Prints one JSON object.

On a plant of `--sensors` sensors in `--groups` (zone, sensor type) groups, with two
12-hour shifts: the time of `ShiftFigures.on_batch` for one batch of every sensor, and
of `on_tick`, against the floor — the evaluator's own `process` of the same batch,
measured in the same run. Medians of `--repeat` runs.

Usage: python benchmarks/shift_figures.py [--sensors N] [--groups N] [--repeat N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ehswatch.config import Shift  # noqa: E402
from ehswatch.governance.shift_figures import Groups, ShiftFigures  # noqa: E402
from ehswatch.readings import ReadingBatch  # noqa: E402
from ehswatch.thresholds import Evaluator, SensorThresholds, ThresholdTable  # noqa: E402

SHIFTS = [
    Shift(name="day", start="08:00", end="20:00"),
    Shift(name="night", start="20:00", end="08:00"),
]


def median_ms(f: object, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        f()  # type: ignore[operator]
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sensors", type=int, default=100_000)
    ap.add_argument("--groups", type=int, default=1_000)
    ap.add_argument("--repeat", type=int, default=21)
    args = ap.parse_args()
    n, g = args.sensors, args.groups
    of_sensor = (np.arange(n) % g).astype(np.intp)
    order = np.argsort(of_sensor, kind="stable").astype(np.intp)
    starts = np.searchsorted(of_sensor[order], np.arange(g)).astype(np.intp)
    groups = Groups(
        keys=tuple((f"z{k}", "dust") for k in range(g)), order=order, starts=starts,
        of_sensor=of_sensor,
    )  # fmt: skip
    figures = ShiftFigures(groups=groups, shifts=SHIFTS, timezone="Asia/Shanghai")
    table = ThresholdTable.build(
        [SensorThresholds(sensor_id=f"D-{k}", high=(10.0, 20.0, 40.0)) for k in range(n)]
    )
    evaluator = Evaluator(table, 0.0)
    rng = np.random.default_rng(1)
    now = time.time()
    values = rng.uniform(0, 30, n)
    batch = ReadingBatch.of(np.arange(n), values, np.full(n, now))
    tiers = (values >= 10).astype(np.int8) + (values >= 20) + (values >= 40)
    figures.on_tick(now, values, tiers)
    clock = [now]

    def evaluate() -> None:
        clock[0] += 1.0
        evaluator.process(ReadingBatch.of(batch.sensor, batch.value, np.full(n, clock[0])))

    def tick() -> None:
        clock[0] += 1.0
        figures.on_tick(clock[0], values, tiers)

    floor = median_ms(evaluate, args.repeat)
    on_batch = median_ms(lambda: figures.on_batch(batch.sensor, batch.value), args.repeat)
    on_tick = median_ms(tick, args.repeat)
    public = median_ms(lambda: figures.figures(), args.repeat)
    print(
        json.dumps(
            {
                "sensors": n,
                "groups": g,
                "evaluate_batch_ms": round(floor, 2),
                "on_batch_ms": round(on_batch, 2),
                "on_tick_ms": round(on_tick, 2),
                "figures_ms": round(public, 2),
                "batch_ratio": round(on_batch / floor, 3),
                "tick_ratio": round(on_tick / floor, 3),
            }
        )
    )


if __name__ == "__main__":
    main()

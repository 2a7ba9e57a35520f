"""Evaluator throughput: 100 000 sensors, one reading each per tick. Prints one JSON object.

The plant is mixed: a third workshop dust monitors (high side, on/off delays), a third
oxygen analysers (low and high sides, no delays), a third gas detectors (high side,
off-delay only). Each tick is one `ReadingBatch` holding one reading per sensor in index
order, as collectors deliver them. Most readings are normal noise; 1 % of the sensors ramp
up through all three tiers and back, so every tick carries real transitions.

The vectorized evaluator and the plain-Python reference run the same ticks in this one
run; the transitions they produce are compared, and the ratio of their median tick times
is `speedup_vs_reference`. Extra figures: the same batch in shuffled sensor order, and a
"storm" tick where every sensor changes tier (the worst case, no reading is quiet).

Usage: python benchmarks/evaluator.py [--sensors N] [--ticks K] [--reference-ticks R]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from functools import partial

import numpy as np

from ehswatch.analytics.predict import Predictor, PredictSettings
from ehswatch.config import Prediction
from ehswatch.readings import ReadingBatch
from ehswatch.thresholds import Evaluation, Evaluator, SensorThresholds, ThresholdTable
from ehswatch.thresholds.reference import ReferenceEvaluator


def plant(n: int) -> list[SensorThresholds]:
    sensors = []
    for i in range(n):
        kind = i % 3
        if kind == 0:
            s = SensorThresholds(
                sensor_id=f"D-{i}",
                high=(10.0, 20.0, 40.0),
                deadband=1.0,
                on_delay_s=2.0,
                off_delay_s=5.0,
                stale_after_s=10.0,
            )
        elif kind == 1:
            s = SensorThresholds(
                sensor_id=f"O2-{i}",
                low=(19.5, 18.0, 16.0),
                high=(23.5, 25.0, None),
                deadband=0.2,
                stale_after_s=30.0,
            )
        else:
            s = SensorThresholds(
                sensor_id=f"G-{i}",
                high=(10.0, 25.0, 50.0),
                deadband=2.0,
                off_delay_s=10.0,
                stale_after_s=30.0,
            )
        sensors.append(s)
    return sensors


def stream(n: int, ticks: int, seed: int = 7) -> list[ReadingBatch]:
    rng = np.random.default_rng(seed)
    idx = np.arange(n, dtype=np.int32)
    kind = idx % 3
    base = np.where(kind == 0, 4.0, np.where(kind == 1, 20.9, 2.0))
    noise = np.where(kind == 1, 0.05, 0.5)
    hot = rng.random(n) < 0.01
    batches = []
    for t in range(ticks):
        v = base + rng.normal(0.0, 1.0, n) * noise
        # Hot sensors climb for 30 ticks past every setpoint, then fall back.
        phase = t % 60
        ramp = (phase if phase < 30 else 60 - phase) / 30.0
        v = np.where(hot & (kind == 0), 4.0 + 50.0 * ramp, v)
        v = np.where(hot & (kind == 1), 20.9 - 6.0 * ramp, v)
        v = np.where(hot & (kind == 2), 2.0 + 60.0 * ramp, v)
        batches.append(ReadingBatch.of(idx, v, np.full(n, 1000.0 + t)))
    return batches


def timed(run: Callable[[], Evaluation]) -> tuple[float, Evaluation]:
    t0 = time.perf_counter()
    out = run()
    return (time.perf_counter() - t0) * 1e3, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sensors", type=int, default=100_000)
    ap.add_argument("--ticks", type=int, default=60)
    ap.add_argument("--reference-ticks", type=int, default=3)
    args = ap.parse_args()
    n = args.sensors

    sensors = plant(n)
    table = ThresholdTable.build(sensors)
    batches = stream(n, args.ticks)

    vec = Evaluator(table, start_ts=999.0)
    vec_ms, vec_transitions = [], 0
    for b in batches:
        ms, out = timed(partial(vec.process, b))
        vec_ms.append(ms)
        vec_transitions += len(out.transitions)

    # The reference on the first ticks of the same stream, checked against a fresh
    # vectorized run of the same ticks.
    ref = ReferenceEvaluator(sensors, start_ts=999.0)
    check = Evaluator(table, start_ts=999.0)
    ref_ms, identical = [], True
    for b in batches[: args.reference_ticks]:
        rows = list(
            zip(b.sensor.tolist(), b.value.tolist(), b.ts.tolist(), b.quality.tolist(), strict=True)
        )
        ms, ref_out = timed(partial(ref.process, rows))
        ref_ms.append(ms)
        vec_out = check.process(b)
        identical &= ref_out.transitions.rows() == vec_out.transitions.rows()

    # Same readings, shuffled order (no slice fast path).
    rng = np.random.default_rng(1)
    shuffled_ms = []
    shuf = Evaluator(table, start_ts=999.0)
    for b in [b.take(rng.permutation(n)) for b in batches]:
        shuffled_ms.append(timed(partial(shuf.process, b))[0])

    # Storm: every sensor jumps between normal and its interlock tier on every tick.
    storm = Evaluator(table, start_ts=999.0)
    idx = np.arange(n, dtype=np.int32)
    kind = idx % 3
    high = np.where(kind == 0, 45.0, np.where(kind == 1, 15.0, 55.0))
    low = np.where(kind == 0, 4.0, np.where(kind == 1, 20.9, 2.0))
    storm_ms, storm_transitions = [], 0
    for t in range(10):
        b = ReadingBatch.of(idx, high if t % 2 == 0 else low, np.full(n, 2000.0 + 20 * t))
        ms, out = timed(partial(storm.process, b))
        storm_ms.append(ms)
        storm_transitions += len(out.transitions)

    # One loud sensor: 100 000 readings in one batch alternating across its setpoints
    # (every reading a transition), and the same count for a calm busy sensor.
    loud_n = 100_000
    loud_table = ThresholdTable.build(
        [SensorThresholds(sensor_id="D-loud", high=(10.0, 20.0, 40.0), deadband=1.0)]
    )
    loud_ms, loud_transitions = [], 0
    for rep in range(5):
        loud = Evaluator(loud_table, start_ts=999.0)
        values = np.where(np.arange(loud_n) % 2 == 1, 45.0, 5.0)
        b = ReadingBatch.of(np.zeros(loud_n), values, 1000.0 + rep + np.arange(loud_n) * 1e-5)
        ms, out = timed(partial(loud.process, b, 1000.0 + rep + 2.0))
        loud_ms.append(ms)
        loud_transitions = len(out.transitions)
        assert loud_transitions == loud_n - 1, "the loud sensor must cross on every reading"
    calm = Evaluator(loud_table, start_ts=999.0)
    b = ReadingBatch.of(np.zeros(loud_n), np.full(loud_n, 5.0), 1000.0 + np.arange(loud_n) * 1e-5)
    calm_ms = timed(partial(calm.process, b))[0]

    # Prediction on for every sensor with the shipped settings (a 120 s window sampled
    # every 5 s: each tick samples and refits a fifth of the sensors): the same ticks
    # with the predictor sampling and projecting after each evaluation.
    predictor = Predictor(
        sensors=np.arange(n, dtype=np.intp),
        setpoint=table.setpoint,
        settings=PredictSettings.of(Prediction()),
        step_s=1.0,
    )
    with_prediction = Evaluator(table, start_ts=999.0)
    plain = Evaluator(table, start_ts=999.0)
    pred_ms, plain_ms = [], []
    for b in batches:
        plain_ms.append(timed(partial(plain.process, b))[0])
        t0 = time.perf_counter()
        with_prediction.process(b)
        predictor.sample(float(b.ts.max()), with_prediction.last_value)
        predictor.predict(float(b.ts.max()), with_prediction.tier)
        pred_ms.append((time.perf_counter() - t0) * 1e3)

    tick = statistics.median(vec_ms)
    ref_tick = statistics.median(ref_ms)
    print(
        json.dumps(
            {
                "sensors": n,
                "tick_ms_median": round(tick, 3),
                "predictive_tick_ms": round(statistics.median(pred_ms), 3),
                "predictive_overhead": round(
                    statistics.median(pred_ms) / statistics.median(plain_ms), 2
                ),
                "tick_ms_p95": round(float(np.percentile(vec_ms, 95)), 3),
                "evals_per_s": round(n / (tick / 1e3)),
                "reference_tick_ms": round(ref_tick, 1),
                "speedup_vs_reference": round(ref_tick / tick, 1),
                "reference_identical": identical,
                "transitions_per_tick": round(vec_transitions / len(batches), 1),
                "shuffled_tick_ms_median": round(statistics.median(shuffled_ms), 3),
                "storm_tick_ms_median": round(statistics.median(storm_ms), 3),
                "storm_transitions_per_tick": storm_transitions // 10,
                "loud_sensor_readings": loud_n,
                "loud_sensor_ms": round(statistics.median(loud_ms), 1),
                "loud_sensor_transitions": loud_transitions,
                "calm_busy_sensor_ms": round(calm_ms, 1),
                "ticks": len(batches),
                "reference_ticks": len(ref_ms),
                "python": platform.python_version(),
                "numpy": np.__version__,
            }
        )
    )


if __name__ == "__main__":
    main()

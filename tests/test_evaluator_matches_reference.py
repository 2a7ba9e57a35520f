"""The rules of docs/thresholds.md: the vectorized evaluator gives exactly the reference's
transitions, for any stream of readings cut into batches of any size."""

from __future__ import annotations

import math
from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ehswatch.readings import ReadingBatch
from ehswatch.thresholds import Evaluation, Evaluator, SensorThresholds, ThresholdTable
from ehswatch.thresholds.reference import ReferenceEvaluator
from ehswatch.thresholds.table import TierTriple

# Values cluster on and around the setpoints, where the rules have their edges.
GRID = [
    0.5,
    1.0,
    2.0,
    3.0,
    4.0,
    5.0,
    6.0,
    9.0,
    9.5,
    10.0,
    10.5,
    11.0,
    19.0,
    20.0,
    21.0,
    39.0,
    40.0,
    41.0,
]


@st.composite
def tier_sets(draw: st.DrawFn, candidates: list[float]) -> TierTriple:
    values = sorted(draw(st.sets(st.sampled_from(candidates), min_size=0, max_size=3)))
    slots: list[float | None] = [None, None, None]
    positions = sorted(draw(st.permutations([0, 1, 2]))[: len(values)])
    for pos, v in zip(positions, values, strict=True):
        slots[pos] = v
    return (slots[0], slots[1], slots[2])


@st.composite
def sensor_sets(draw: st.DrawFn) -> list[SensorThresholds]:
    n = draw(st.integers(1, 5))
    sensors = []
    for i in range(n):
        side = draw(st.sampled_from(["high", "low", "both"]))
        high = draw(tier_sets([10.0, 20.0, 40.0, 10.5])) if side != "low" else (None, None, None)
        low_raw = draw(tier_sets([1.0, 3.0, 5.0, 4.0])) if side != "high" else (None, None, None)
        # Low severity grows downward: reverse the ascending draw.
        low = (low_raw[2], low_raw[1], low_raw[0])
        delays = st.sampled_from([0.0, 0.0, 0.5, 1.0, 2.5])
        sensors.append(
            SensorThresholds(
                sensor_id=f"S{i}",
                high=high,
                low=low,
                deadband=draw(st.sampled_from([0.0, 0.5, 1.0, 2.0])),
                on_delay_s=draw(delays),
                off_delay_s=draw(delays),
                stale_after_s=draw(st.sampled_from([1.5, 4.0, 100.0])),
                max_ahead_s=draw(st.sampled_from([0.0, 5.0])),
                max_behind_s=draw(st.sampled_from([2.0, 8.0, 3600.0])),
                clock_skew_after_s=draw(st.sampled_from([0.0, 2.0, 10.0])),
            )
        )
    return sensors


@dataclass(frozen=True)
class Step:
    readings: list[tuple[int, float, float, int]]
    tick_after: float | None
    now: float = math.inf  # the service clock given with the batch


values = st.one_of(
    st.sampled_from(GRID),
    st.floats(-5, 60, allow_nan=False),
    st.sampled_from([math.nan, math.inf, -math.inf]),
)


@st.composite
def streams(draw: st.DrawFn, n_sensors: int, monotonic: bool) -> list[Step]:
    """Readings cut into batches; after some batches a tick at or after the last reading.

    Not `monotonic`: readings of a batch come in any order (newest first, shuffled), some
    are late (older than readings of earlier batches), some are stamped ahead of the
    service clock given with the batch, and some sensors get long loud runs."""
    t = 0.0
    steps = []
    for _ in range(draw(st.integers(1, 10))):
        batch = []
        for _ in range(draw(st.integers(0, 16))):
            t += draw(st.sampled_from([0.0, 0.25, 0.5, 1.0, 2.5, 6.0]))
            ts = t
            if not monotonic and draw(st.integers(0, 3)) == 0:
                ts = t - draw(st.sampled_from([0.25, 3.0, 10.0]))  # a late reading
            quality = 0 if draw(st.integers(0, 14)) else 1
            batch.append((draw(st.integers(0, n_sensors - 1)), draw(values), ts, quality))
        now = math.inf
        if not monotonic:
            order = draw(st.sampled_from(["arrival", "newest_first", "shuffled"]))
            if order == "newest_first":
                batch = sorted(batch, key=lambda r: -r[2])
            elif order == "shuffled":
                batch = draw(st.permutations(batch))
            if draw(st.integers(0, 3)):
                # The service clock: some readings are stamped too far ahead of it.
                now = t - draw(st.sampled_from([0.0, 3.0, 6.0, 20.0]))
        tick = None
        if draw(st.booleans()):
            ahead = draw(st.sampled_from([0.0, 0.5, 3.0, 8.0]))
            tick = t + ahead
            # In order: the next readings come after the tick. Otherwise the service
            # clock may run ahead of readings still in flight: they come stamped before
            # the tick that already decided their sensor's state up to it.
            if monotonic or draw(st.booleans()):
                t = tick
        steps.append(Step(batch, tick, now))
    return steps


def _events(evaluations: list[Evaluation]) -> list[tuple[object, ...]]:
    out: list[tuple[object, ...]] = []
    for e in evaluations:
        out += [("T", *r) for r in e.transitions.rows()]
        out += [("F", *r) for r in e.faults.rows()]
    # One call's rows are sorted by (ts, sensor); across calls, order them the same way.
    # The sort is stable, so equal keys keep the order in which they happened.
    return sorted(out, key=lambda r: (r[-1], r[1], r[0]))


def _batch(rows: list[tuple[int, float, float, int]]) -> ReadingBatch:
    return ReadingBatch.of(
        [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], [r[3] for r in rows]
    )


def _run_vectorized(
    sensors: list[SensorThresholds], steps: list[Step], ticks: bool = True
) -> tuple[Evaluator, list[Evaluation]]:
    ev = Evaluator(ThresholdTable.build(sensors), start_ts=0.0)
    results = []
    for step in steps:
        results.append(ev.process(_batch(step.readings), step.now))
        if ticks and step.tick_after is not None:
            results.append(ev.tick(step.tick_after))
    return ev, results


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_vectorized_equals_reference_for_any_batch_in_any_order(data: st.DataObject) -> None:
    """Batches in any order, late readings, readings from the future, loud runs: the
    vectorized evaluator gives the reference's events, tiers, counts and state."""
    sensors = data.draw(sensor_sets())
    steps = data.draw(streams(len(sensors), monotonic=False))
    ev, vec = _run_vectorized(sensors, steps)
    ref = ReferenceEvaluator(sensors, start_ts=0.0)
    ref_results = []
    for step in steps:
        ref_results.append(ref.process(step.readings, step.now))
        if step.tick_after is not None:
            ref_results.append(ref.tick(step.tick_after))
    assert _events(vec) == _events(ref_results)
    # Each reading is stored with its sensor's tier just after it: the same in both.
    assert [e.reading_tier.tolist() for e in vec] == [e.reading_tier.tolist() for e in ref_results]
    assert [e.accepted.tolist() for e in vec] == [e.accepted.tolist() for e in ref_results]
    assert [(e.late, e.future, e.too_old) for e in vec] == [
        (e.late, e.future, e.too_old) for e in ref_results
    ]
    assert ev.tier.tolist() == ref.tiers()
    assert ev.faulted.tolist() == ref.faulted()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_an_in_order_stream_gives_the_same_events_however_it_is_cut(data: st.DataObject) -> None:
    """No crossing inside a micro-batch is lost — the vectorized evaluator on
    batches equals the reference taking the same stream one reading at a time."""
    sensors = data.draw(sensor_sets())
    steps = data.draw(streams(len(sensors), monotonic=True))
    ev, vec = _run_vectorized(sensors, steps)
    ref = ReferenceEvaluator(sensors, start_ts=0.0)
    one_by_one = []
    ref_tiers: list[int] = []
    for step in steps:
        for r in step.readings:
            one_by_one.append(ref.process([r]))
            ref_tiers += one_by_one[-1].reading_tier.tolist()
        if step.tick_after is not None:
            one_by_one.append(ref.tick(step.tick_after))
    assert _events(vec) == _events(one_by_one)
    assert [t for e in vec for t in e.reading_tier.tolist()] == ref_tiers
    assert ev.tier.tolist() == ref.tiers()
    assert ev.faulted.tolist() == ref.faulted()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_ticks_change_when_a_transition_is_seen_never_what_it_is(data: st.DataObject) -> None:
    sensors = data.draw(sensor_sets())
    steps = data.draw(streams(len(sensors), monotonic=True))
    end = (
        max([r[2] for s in steps for r in s.readings] + [s.tick_after or 0.0 for s in steps]) + 200
    )
    with_ticks, a = _run_vectorized(sensors, steps, ticks=True)
    without, b = _run_vectorized(sensors, steps, ticks=False)
    a.append(with_ticks.tick(end))
    b.append(without.tick(end))
    assert _events(a) == _events(b)


@settings(max_examples=100, deadline=None)
@given(sensors=sensor_sets(), seed=st.integers(0, 2**32 - 1), order=st.permutations(range(5)))
def test_batch_order_of_distinct_sensors_does_not_matter(
    sensors: list[SensorThresholds], seed: int, order: list[int]
) -> None:
    import numpy as np

    rng = np.random.default_rng(seed)
    n = len(sensors)
    perm = [i for i in order if i < n]
    rows = [(i, float(rng.choice(GRID)), 1.0 + i * 0.1, 0) for i in range(n)]
    a = Evaluator(ThresholdTable.build(sensors), 0.0).process(_batch(rows))
    b = Evaluator(ThresholdTable.build(sensors), 0.0).process(_batch([rows[i] for i in perm]))
    assert a.transitions.rows() == b.transitions.rows()

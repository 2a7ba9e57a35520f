"""The event voter (`ehswatch.interlock.timeline`) against the reference voter: random
event streams for a few zones, cut into random evaluations, devices out of step with one
another, drained by the controller at random moments."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ehswatch.interlock.reference import ReferenceVoter
from ehswatch.interlock.timeline import EventVoter, Held, Inbox
from ehswatch.interlock.voting import VotingTable
from ehswatch.readings import ReadingBatch
from ehswatch.thresholds import Evaluator, SensorThresholds, ThresholdTable
from ehswatch.thresholds.outcome import Evaluation, FaultChanges, TierTransitions
from ehswatch.thresholds.reference import ReferenceEvaluator

# (kind, sensor, ts, value): kind 0 a tier change to `value`, 1 a fault change to `value`
Event = tuple[int, int, float, int]


def evaluation(events: list[Event]) -> Evaluation:
    """One evaluation's columns, each sorted by (ts, sensor), ties in the order given."""
    tr = sorted((e for e in events if e[0] == 0), key=lambda e: (e[2], e[1]))
    fa = sorted((e for e in events if e[0] == 1), key=lambda e: (e[2], e[1]))
    return Evaluation(
        transitions=TierTransitions(
            sensor=np.array([e[1] for e in tr], dtype=np.int32),
            from_tier=np.zeros(len(tr), dtype=np.int8),
            to_tier=np.array([e[3] for e in tr], dtype=np.int8),
            value=np.full(len(tr), np.nan),
            threshold=np.full(len(tr), np.nan),
            ts=np.array([e[2] for e in tr], dtype=np.float64),
        ),
        faults=FaultChanges(
            sensor=np.array([e[1] for e in fa], dtype=np.int32),
            faulted=np.array([bool(e[3]) for e in fa], dtype=bool),
            reason=np.ones(len(fa), dtype=np.int8),
            value=np.full(len(fa), np.nan),
            ts=np.array([e[2] for e in fa], dtype=np.float64),
        ),
    )


def table(
    zones: list[tuple[int, int, bool]],
) -> tuple[VotingTable, dict[str, tuple[int, list[int], bool]]]:
    """VotingTable for zones given as (M, N, fault_counts_as_trip); sensors numbered in
    order, one sensor more that votes nowhere."""
    voter, zone_of, spec = [], [], {}
    s = 0
    for k, (m, n, f) in enumerate(zones):
        spec[f"z{k}"] = (m, list(range(s, s + n)), f)
        voter += list(range(s, s + n))
        zone_of += [k] * n
        s += n
    vt = VotingTable(
        zone_ids=tuple(spec),
        voter=np.array(voter, dtype=np.intp),
        zone_of=np.array(zone_of, dtype=np.intp),
        need=np.array([m for m, _, _ in zones], dtype=np.int64),
        fault_trips=np.array([f for _, _, f in zones], dtype=bool),
    )
    return vt, spec


@dataclass
class Report:
    first_evaluation: int | None = None
    first_at: float | None = None
    earliest_at: float | None = None


def run_voter(voter: EventVoter, evs: list[Evaluation], drains: list[int]) -> dict[int, Report]:
    """Feed `evs` through an inbox drained after `drains[k]` evaluations each time."""
    inbox = Inbox()
    reports: dict[int, Report] = {}
    fed = 0
    queued = iter(evs)
    k = 0
    done = False
    while not done:
        for _ in range(drains[k % len(drains)]):
            ev = next(queued, None)
            if ev is None:
                done = True
                break
            inbox.put(ev)
        k += 1
        while len(inbox):
            for h in voter.feed(inbox.pop()):
                r = reports.setdefault(h.zone, Report())
                if r.first_evaluation is None:
                    r.first_evaluation, r.first_at = fed, h.at
                r.earliest_at = h.at if r.earliest_at is None else min(r.earliest_at, h.at)
            fed += 1
    return reports


VOTINGS = [(1, 1), (1, 2), (2, 2), (2, 3)]
STEPS = [0.0, 0.0, 0.0, 0.5, 1.0, 2.0, 4.0]


@st.composite
def scenarios(
    draw: st.DrawFn,
) -> tuple[
    list[tuple[int, int, bool]],
    dict[int, int],
    dict[int, bool],
    list[Event],
    list[int],
    list[int],
    float,
]:
    zones = [
        (*draw(st.sampled_from(VOTINGS)), draw(st.booleans()))
        for _ in range(draw(st.integers(1, 4)))
    ]
    n = sum(z[1] for z in zones) + 1  # the last sensor votes nowhere
    retention = draw(st.sampled_from([3.0, 8.0, 600.0]))
    tier0 = {s: draw(st.sampled_from([0, 0, 2, 3])) for s in range(n)}
    fault0 = {s: draw(st.booleans()) and draw(st.booleans()) for s in range(n)}
    arrivals: list[tuple[float, int, int, Event]] = []
    for s in range(n):
        lag = draw(st.sampled_from([0.0, 0.0, retention / 2, retention]))
        tier, faulted, ts = tier0[s], fault0[s], 0.0
        for seq in range(draw(st.integers(0, 12))):
            ts += draw(st.sampled_from(STEPS))
            if draw(st.integers(0, 3)) == 0:
                faulted = not faulted
                e: Event = (1, s, ts, int(faulted))
            else:
                to = draw(st.sampled_from([t for t in (0, 1, 2, 3) if t != tier]))
                tier = to
                e = (0, s, ts, to)
            arrivals.append((ts + lag, s, seq, e))
    arrivals.sort()
    events = [a[3] for a in arrivals]
    cuts = draw(st.lists(st.integers(1, 6), min_size=1, max_size=8))
    drains = draw(st.lists(st.integers(1, 4), min_size=1, max_size=5))
    return zones, tier0, fault0, events, cuts, drains, retention


def cut(events: list[Event], sizes: list[int]) -> list[Evaluation]:
    out, k, i = [], 0, 0
    while i < len(events):
        size = sizes[k % len(sizes)]
        out.append(evaluation(events[i : i + size]))
        i += size
        k += 1
        if k % 3 == 0:
            out.append(evaluation([]))  # a tick that changed nothing
    return out


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_the_event_voter_trips_exactly_the_zones_the_reference_trips_at_the_same_instants(
    scenario: tuple[
        list[tuple[int, int, bool]],
        dict[int, int],
        dict[int, bool],
        list[Event],
        list[int],
        list[int],
        float,
    ],
) -> None:
    zones, tier0, fault0, events, sizes, drains, retention = scenario
    vt, spec = table(zones)
    n = sum(z[1] for z in zones) + 1
    evs = cut(events, sizes)
    voter = EventVoter(
        vt,
        n_sensors=n,
        tier=np.array([tier0[s] for s in range(n)], dtype=np.int8),
        faulted=np.array([fault0[s] for s in range(n)], dtype=bool),
        start_ts=-1.0,
        retention_s=retention,
    )
    got = run_voter(voter, evs, drains)
    ref = ReferenceVoter(spec, tier=tier0, faulted=fault0, start_ts=-1.0)
    ref.feed_all(evs)
    want = {
        k: Report(d.first_evaluation, d.first_at, d.earliest_at)
        for k, d in enumerate(ref.verdict.values())
        if d.first_evaluation is not None
    }
    assert got == want
    # And the vote now is the reference's.
    now = [sum(v.open_since is not None for v in vs) for vs in ref.voters.values()]
    assert voter.votes_now().tolist() == now


# ------------------------------------------------------------------ the rules, by example


def one_zone(m: int, n: int, fault_trips: bool = True) -> EventVoter:
    vt, _ = table([(m, n, fault_trips)])
    return EventVoter(vt, n_sensors=n + 1, start_ts=0.0)


def test_two_votes_that_overlap_for_100_ms_inside_one_evaluation_trip_a_2oo2_zone() -> None:
    v = one_zone(2, 2)
    held = v.feed(evaluation([(0, 0, 10.0, 3), (0, 1, 10.1, 3), (0, 0, 10.2, 0), (0, 1, 10.3, 0)]))
    assert held == [Held(zone=0, at=10.1, sensors=(0, 1))]
    assert not v.holds_now()[0]


def test_a_pulse_that_starts_and_ends_at_the_same_instant_counts() -> None:
    v = one_zone(1, 1)
    assert v.feed(evaluation([(0, 0, 5.0, 3), (0, 0, 5.0, 1)])) == [Held(0, 5.0, (0,))]


def test_one_voter_stopping_as_another_starts_overlap_on_the_tie() -> None:
    v = one_zone(2, 2)
    assert v.feed(evaluation([(0, 0, 1.0, 3), (0, 0, 2.0, 0), (0, 1, 2.0, 3)])) == [
        Held(0, 2.0, (0, 1))
    ]


def test_a_vote_that_ends_and_starts_at_one_instant_is_not_counted_twice() -> None:
    v = one_zone(2, 2)
    assert v.feed(evaluation([(0, 0, 1.0, 3), (0, 0, 2.0, 2), (0, 0, 2.0, 3)])) == []
    assert v.votes_now().tolist() == [1]


def test_an_interval_from_a_late_device_still_meets_one_from_an_earlier_evaluation() -> None:
    v = one_zone(2, 2)
    assert v.feed(evaluation([(0, 0, 100.0, 3), (0, 0, 101.0, 0)])) == []
    # The other device's batch comes 200 s later, about the same moment.
    assert v.feed(evaluation([(0, 1, 100.5, 3), (0, 1, 100.7, 0)])) == [Held(0, 100.5, (0, 1))]


def test_intervals_beyond_the_retention_horizon_are_forgotten() -> None:
    vt, _ = table([(2, 2, True)])
    v = EventVoter(vt, n_sensors=3, start_ts=0.0, retention_s=60.0)
    v.feed(evaluation([(0, 0, 100.0, 3), (0, 0, 101.0, 0)]))
    v.feed(evaluation([(0, 1, 200.0, 1)]))  # the zone's newest event: 200
    assert v.kept() == 0
    assert v.feed(evaluation([(0, 1, 201.0, 0)])) == []


def test_a_faulted_sensor_votes_only_where_faults_count_and_its_held_tier_never() -> None:
    v = one_zone(1, 1, fault_trips=True)
    assert v.feed(evaluation([(1, 0, 1.0, 1), (1, 0, 1.5, 0)])) == [Held(0, 1.0, (0,))]
    w = one_zone(1, 1, fault_trips=False)
    assert w.feed(evaluation([(0, 0, 1.0, 3), (1, 0, 1.0, 1)])) == [Held(0, 1.0, (0,))]
    assert not w.holds_now()[0]  # tier 3 is held, but the sensor is faulted
    # A good reading back below the setpoint: its tier falls, then its fault clears.
    assert w.feed(evaluation([(0, 0, 2.0, 0), (1, 0, 2.0, 0)])) == []


def test_an_overlap_known_already_is_not_reported_again() -> None:
    v = one_zone(2, 2)
    assert v.feed(evaluation([(0, 0, 1.0, 3), (0, 1, 2.0, 3)])) == [Held(0, 2.0, (0, 1))]
    assert v.feed(evaluation([(0, 0, 3.0, 2)])) == []  # it ended: nothing new
    assert v.feed(evaluation([(0, 0, 4.0, 3)])) == [Held(0, 4.0, (0, 1))]  # again
    assert v.held_count.tolist() == [2]


def test_the_cap_merges_the_closest_intervals_and_never_loses_an_overlap() -> None:
    vt, _ = table([(2, 2, True)])
    v = EventVoter(vt, n_sensors=3, start_ts=0.0, cap=10)
    ev = [(0, 0, float(k), 3 if k % 2 == 0 else 0) for k in range(100)]
    v.feed(evaluation(ev))
    assert v.kept() == 10 and v.merged == 40
    # Inside a gap that was merged: fail-safe, it counts.
    assert v.feed(evaluation([(0, 1, 50.5, 3), (0, 1, 50.6, 0)])) != []


def test_50000_transitions_of_one_loud_sensor_cost_milliseconds() -> None:
    vt, _ = table([(2, 3, True)] * 20)
    v = EventVoter(vt, n_sensors=61, start_ts=0.0)
    n = 50_000
    ts = np.arange(n) * 1e-3
    loud = [(0, 0, float(t), 3 if k % 2 == 0 else 2) for k, t in enumerate(ts)]
    others = [(0, 1, 10.0, 3), (0, 1, 10.0005, 0)]
    ev = evaluation(loud + others)
    t0 = time.perf_counter()
    held = v.feed(ev)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    v.feed(evaluation([(0, 0, 60.0, 3), (0, 2, 60.0, 3)]))
    second = time.perf_counter() - t0
    assert held == [Held(0, 10.0, (0, 1))]
    assert first < 0.25 and second < 0.05, (first, second)


@pytest.mark.parametrize("fault_trips", [True, False])
def test_initial_state_holds_from_the_start(fault_trips: bool) -> None:
    vt, _ = table([(1, 1, fault_trips)])
    v = EventVoter(
        vt, n_sensors=2, faulted=np.array([True, False]), tier=np.array([3, 0]), start_ts=7.0
    )
    assert v.holds_now()[0] == fault_trips


# ------------------------------------------------------------------ through the evaluators

SENSORS = [
    SensorThresholds(
        sensor_id=f"S{k}",
        high=(10.0, 20.0, 40.0),
        deadband=1.0,
        on_delay_s=delay,
        off_delay_s=delay,
        stale_after_s=5.0,
    )
    for k, delay in enumerate([0.0, 0.0, 0.5, 0.0, 0.0, 1.0, 0.0])
]
EVAL_ZONES = [(2, 2, True), (1, 1, True), (2, 3, False), (1, 1, False)]  # S0-1, S2, S3-5, S6
VALUES = [5.0, 15.0, 38.5, 39.5, 40.0, 45.0, math.nan]


@st.composite
def reading_streams(
    draw: st.DrawFn,
) -> list[tuple[list[tuple[int, float, float, int]], float | None]]:
    steps, t = [], 0.0
    for _ in range(draw(st.integers(1, 8))):
        batch = []
        for _ in range(draw(st.integers(0, 10))):
            t += draw(st.sampled_from([0.0, 0.1, 0.25, 1.0, 3.0]))
            ts = t - (draw(st.sampled_from([0.5, 2.0])) if draw(st.integers(0, 5)) == 0 else 0.0)
            batch.append(
                (draw(st.integers(0, len(SENSORS) - 1)), draw(st.sampled_from(VALUES)), ts, 0)
            )
        tick = None
        if draw(st.booleans()):
            t += draw(st.sampled_from([0.0, 0.5, 2.0, 6.0]))
            tick = t
        steps.append((batch, tick))
    return steps


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(reading_streams())
def test_readings_through_the_evaluator_trip_as_through_the_reference_evaluator(
    steps: list[tuple[list[tuple[int, float, float, int]], float | None]],
) -> None:
    vt, spec = table(EVAL_ZONES)
    vec_ev = Evaluator(ThresholdTable.build(SENSORS), start_ts=0.0)
    ref_ev = ReferenceEvaluator(SENSORS, start_ts=0.0)
    vec: list[Evaluation] = []
    ref: list[Evaluation] = []
    for batch, tick in steps:
        rb = ReadingBatch.of(
            [r[0] for r in batch],
            [r[1] for r in batch],
            [r[2] for r in batch],
            [r[3] for r in batch],
        )
        vec.append(vec_ev.process(rb))
        ref.append(ref_ev.process(batch))
        if tick is not None:
            vec.append(vec_ev.tick(tick))
            ref.append(ref_ev.tick(tick))
    voter = EventVoter(vt, n_sensors=len(SENSORS), start_ts=0.0)
    got = run_voter(voter, vec, [1, 2, 3])
    reference = ReferenceVoter(spec, start_ts=0.0)
    reference.feed_all(ref)
    want = {
        k: Report(d.first_evaluation, d.first_at, d.earliest_at)
        for k, d in enumerate(reference.verdict.values())
        if d.first_evaluation is not None
    }
    assert got == want

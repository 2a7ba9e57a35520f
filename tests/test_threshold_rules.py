"""The threshold rules (docs/thresholds.md), one test per rule; each runs against the
vectorized evaluator and the reference."""

from __future__ import annotations

import math

from ehswatch.thresholds import FaultReason, SensorThresholds, Tier
from tests.conftest import MakeHarness

W, A, TRIP = Tier.WARNING, Tier.ALARM, Tier.INTERLOCK
N = Tier.NORMAL

DUST = SensorThresholds(sensor_id="D-101", high=(10.0, 20.0, 40.0), deadband=1.0)
O2 = SensorThresholds(
    sensor_id="O2-301",
    low=(19.5, 18.0, 16.0),
    high=(23.5, 25.0, None),
    deadband=0.2,
    stale_after_s=30.0,
)


def steps(evaluation: object) -> list[tuple[int, int, float]]:
    """(from, to, ts) of each transition."""
    return [(a, b, ts) for _, a, b, _, _, ts in evaluation.transitions.rows()]  # type: ignore[attr-defined]


def test_high_tier_raises_at_the_setpoint_itself(make_harness: MakeHarness) -> None:
    h = make_harness([DUST])
    assert steps(h.feed([("D-101", 9.99, 1.0)])) == []
    assert steps(h.feed([("D-101", 10.0, 2.0)])) == [(N, W, 2.0)]


def test_low_tier_raises_at_or_below_the_setpoint(make_harness: MakeHarness) -> None:
    h = make_harness([O2])
    assert steps(h.feed([("O2-301", 20.9, 1.0), ("O2-301", 19.5, 2.0)])) == [(N, W, 2.0)]
    assert steps(h.feed([("O2-301", 17.9, 3.0)])) == [(W, A, 3.0)]
    assert steps(h.feed([("O2-301", 16.0, 4.0)])) == [(A, TRIP, 4.0)]


def test_tier_is_the_most_severe_reached_on_either_side(make_harness: MakeHarness) -> None:
    h = make_harness([O2])
    assert steps(h.feed([("O2-301", 23.6, 1.0)])) == [(N, W, 1.0)]  # oxygen enrichment
    assert steps(h.feed([("O2-301", 25.1, 2.0)])) == [(W, A, 2.0)]
    assert h.tier("O2-301") == A
    # Straight to the low interlock: the high latches clear, the low one rises, one step.
    assert steps(h.feed([("O2-301", 15.0, 3.0)])) == [(A, TRIP, 3.0)]
    assert h.tier("O2-301") == TRIP


def test_jump_across_tiers_is_one_transition(make_harness: MakeHarness) -> None:
    h = make_harness([DUST])
    ev = h.feed([("D-101", 55.0, 1.0)])
    assert ev.transitions.rows() == [(0, N, TRIP, 55.0, 40.0, 1.0)]


def test_transition_names_the_setpoint_entered_or_left(make_harness: MakeHarness) -> None:
    h = make_harness([DUST])
    assert h.feed([("D-101", 25.0, 1.0)]).transitions.rows() == [(0, N, A, 25.0, 20.0, 1.0)]
    assert h.feed([("D-101", 12.0, 2.0)]).transitions.rows() == [(0, A, W, 12.0, 20.0, 2.0)]


def test_rise_needs_the_value_beyond_the_setpoint_for_on_delay(make_harness: MakeHarness) -> None:
    dust = SensorThresholds(sensor_id="D", high=(10.0, 20.0, 40.0), on_delay_s=2.0)
    h = make_harness([dust])
    assert steps(h.feed([("D", 12.0, 1.0), ("D", 12.0, 2.0)])) == []
    assert steps(h.feed([("D", 12.0, 3.0)])) == [(N, W, 3.0)]


def test_interrupted_on_delay_starts_over(make_harness: MakeHarness) -> None:
    dust = SensorThresholds(sensor_id="D", high=(10.0, 20.0, 40.0), on_delay_s=2.0)
    h = make_harness([dust])
    assert (
        steps(h.feed([("D", 12.0, 1.0), ("D", 9.0, 2.0), ("D", 12.0, 2.5), ("D", 12.0, 4.0)])) == []
    )
    assert steps(h.feed([("D", 12.0, 4.5)])) == [(N, W, 4.5)]


def test_delay_matures_on_a_tick_with_the_last_value_held(make_harness: MakeHarness) -> None:
    dust = SensorThresholds(sensor_id="D", high=(10.0, 20.0, 40.0), on_delay_s=2.0)
    h = make_harness([dust])
    h.feed([("D", 25.0, 1.0)])
    assert steps(h.tick(2.5)) == []
    ev = h.tick(3.5)
    # Stamped with the moment the delay matured, not the moment the tick noticed it.
    assert ev.transitions.rows() == [(0, N, A, 25.0, 20.0, 3.0)]


def test_a_reading_at_the_maturing_instant_decides_with_its_own_value(
    make_harness: MakeHarness,
) -> None:
    dust = SensorThresholds(sensor_id="D", high=(10.0, 20.0, 40.0), on_delay_s=2.0)
    h = make_harness([dust])
    assert steps(h.feed([("D", 25.0, 1.0), ("D", 5.0, 3.0)])) == []
    assert h.tier("D") == N


def test_fall_needs_the_value_back_past_the_setpoint_by_the_deadband(
    make_harness: MakeHarness,
) -> None:
    h = make_harness([DUST])
    h.feed([("D-101", 21.0, 1.0)])
    assert steps(h.feed([("D-101", 19.5, 2.0)])) == []  # below 20 but inside the 1.0 deadband
    assert steps(h.feed([("D-101", 19.0, 3.0)])) == []  # exactly setpoint - deadband: not past
    assert steps(h.feed([("D-101", 18.99, 4.0)])) == [(A, W, 4.0)]


def test_low_side_fall_needs_the_value_above_the_setpoint_plus_deadband(
    make_harness: MakeHarness,
) -> None:
    h = make_harness([O2])
    h.feed([("O2-301", 19.0, 1.0)])
    assert steps(h.feed([("O2-301", 19.7, 2.0)])) == []
    assert steps(h.feed([("O2-301", 19.71, 3.0)])) == [(W, N, 3.0)]


def test_fall_waits_for_off_delay(make_harness: MakeHarness) -> None:
    dust = SensorThresholds(sensor_id="D", high=(10.0, 20.0, 40.0), deadband=1.0, off_delay_s=5.0)
    h = make_harness([dust])
    h.feed([("D", 25.0, 0.0)])
    assert steps(h.feed([("D", 5.0, 1.0), ("D", 5.0, 5.0)])) == []
    assert steps(h.feed([("D", 5.0, 6.0)])) == [(A, N, 6.0)]


def test_fall_delay_restarts_when_the_value_returns_inside_the_deadband(
    make_harness: MakeHarness,
) -> None:
    dust = SensorThresholds(sensor_id="D", high=(10.0, 20.0, 40.0), deadband=1.0, off_delay_s=5.0)
    h = make_harness([dust])
    h.feed([("D", 25.0, 0.0), ("D", 5.0, 1.0), ("D", 9.5, 4.0), ("D", 5.0, 5.0)])
    assert steps(h.tick(9.9)) == [(A, W, 6.0)]  # alarm fell 5 s after 1.0; warning restarted at 5
    assert steps(h.tick(10.5)) == [(W, N, 10.0)]


def test_spike_inside_one_batch_is_not_lost(make_harness: MakeHarness) -> None:
    h = make_harness([DUST])
    ev = h.feed([("D-101", 5.0, 1.0), ("D-101", 45.0, 1.1), ("D-101", 5.0, 1.2)])
    assert steps(ev) == [(N, TRIP, 1.1), (TRIP, N, 1.2)]


def test_spike_between_evaluations_still_raises_with_an_off_delay(
    make_harness: MakeHarness,
) -> None:
    dust = SensorThresholds(sensor_id="D", high=(10.0, 20.0, 40.0), off_delay_s=3.0)
    h = make_harness([dust])
    assert steps(h.feed([("D", 5.0, 1.0), ("D", 45.0, 1.1), ("D", 5.0, 1.2)])) == [(N, TRIP, 1.1)]
    assert steps(h.tick(5.0)) == [(TRIP, N, 4.2)]


def test_every_crossing_in_a_batch_is_reported_in_time_order(make_harness: MakeHarness) -> None:
    h = make_harness([DUST])
    values = [5.0, 12.0, 22.0, 45.0, 22.0, 12.0, 5.0]
    ev = h.feed([("D-101", v, float(t)) for t, v in enumerate(values)])
    assert steps(ev) == [
        (N, W, 1.0),
        (W, A, 2.0),
        (A, TRIP, 3.0),
        (TRIP, A, 4.0),
        (A, W, 5.0),
        (W, N, 6.0),
    ]


def test_delays_of_several_tiers_mature_in_time_order(make_harness: MakeHarness) -> None:
    dust = SensorThresholds(sensor_id="D", high=(10.0, 20.0, 40.0), on_delay_s=2.0)
    h = make_harness([dust])
    h.feed([("D", 15.0, 0.0), ("D", 45.0, 1.0)])
    assert steps(h.tick(10.0)) == [(N, W, 2.0), (W, TRIP, 3.0)]


def test_nan_reading_puts_the_sensor_in_fault(make_harness: MakeHarness) -> None:
    h = make_harness([DUST])
    ev = h.feed([("D-101", math.nan, 1.0)])
    assert ev.faults.rows() == [(0, True, FaultReason.BAD, None, 1.0)]
    assert h.faulted("D-101")


def test_infinite_reading_puts_the_sensor_in_fault(make_harness: MakeHarness) -> None:
    h = make_harness([DUST])
    ev = h.feed([("D-101", math.inf, 1.0)])
    assert [(f, r) for _, f, r, _, _ in ev.faults.rows()] == [(True, FaultReason.BAD)]
    assert steps(ev) == []  # an infinite value is no reading, not an interlock


def test_reading_flagged_bad_by_its_source_puts_the_sensor_in_fault(
    make_harness: MakeHarness,
) -> None:
    h = make_harness([DUST])
    ev = h.feed([("D-101", 0.0, 1.0, 2)])  # a 0 that the collector marked "lost"
    assert ev.faults.rows() == [(0, True, FaultReason.BAD, 0.0, 1.0)]
    assert steps(ev) == []


def test_fault_is_kept_apart_from_the_tier(make_harness: MakeHarness) -> None:
    h = make_harness([DUST])
    h.feed([("D-101", 25.0, 1.0)])
    ev = h.feed([("D-101", math.nan, 2.0)])
    assert steps(ev) == []
    assert h.tier("D-101") == A  # missing data never clears an alarm
    assert h.faulted("D-101")


def test_good_reading_clears_the_fault(make_harness: MakeHarness) -> None:
    h = make_harness([DUST])
    h.feed([("D-101", math.nan, 1.0)])
    ev = h.feed([("D-101", 3.0, 2.0)])
    assert ev.faults.rows() == [(0, False, FaultReason.BAD, 3.0, 2.0)]
    assert not h.faulted("D-101")


def test_no_delay_runs_through_a_fault(make_harness: MakeHarness) -> None:
    dust = SensorThresholds(sensor_id="D", high=(10.0, 20.0, 40.0), on_delay_s=2.0)
    h = make_harness([dust])
    h.feed([("D", 25.0, 0.0), ("D", math.nan, 1.0), ("D", 25.0, 1.5)])
    assert steps(h.tick(3.0)) == []
    assert steps(h.tick(4.0)) == [(N, A, 3.5)]


def test_sensor_without_readings_for_stale_after_goes_to_fault(make_harness: MakeHarness) -> None:
    dust = SensorThresholds(sensor_id="D", high=(10.0, 20.0, 40.0), stale_after_s=10.0)
    h = make_harness([dust])
    h.feed([("D", 5.0, 100.0)])
    assert h.tick(110.0).faults.rows() == []  # exactly stale_after_s: not yet
    ev = h.tick(111.0)
    assert ev.faults.rows() == [(0, True, FaultReason.STALE, 5.0, 110.0)]


def test_sensor_that_never_reports_goes_stale_counted_from_start(make_harness: MakeHarness) -> None:
    dust = SensorThresholds(sensor_id="D", high=(10.0, 20.0, 40.0), stale_after_s=10.0)
    h = make_harness([dust])
    ev = h.tick(10.5)
    assert ev.faults.rows() == [(0, True, FaultReason.STALE, None, 10.0)]


def test_late_reading_after_a_gap_reports_the_stale_period(make_harness: MakeHarness) -> None:
    dust = SensorThresholds(sensor_id="D", high=(10.0, 20.0, 40.0), stale_after_s=10.0)
    h = make_harness([dust])
    ev = h.feed([("D", 5.0, 1.0), ("D", 5.0, 30.0)])
    assert ev.faults.rows() == [
        (0, True, FaultReason.STALE, 5.0, 11.0),
        (0, False, FaultReason.STALE, 5.0, 30.0),
    ]


def test_hold_ends_when_the_sensor_goes_stale(make_harness: MakeHarness) -> None:
    dust = SensorThresholds(
        sensor_id="D", high=(10.0, 20.0, 40.0), on_delay_s=5.0, stale_after_s=3.0
    )
    h = make_harness([dust])
    h.feed([("D", 25.0, 0.0)])
    ev = h.tick(20.0)
    assert steps(ev) == []  # the value was only known to hold for 3 s of the 5 s delay
    assert [f for _, f, _, _, _ in ev.faults.rows()] == [True]


def faults(evaluation: object) -> list[tuple[bool, int, float]]:
    """(raised, reason, ts) of each fault change."""
    return [(f, r, ts) for _, f, r, _, ts in evaluation.faults.rows()]  # type: ignore[attr-defined]


def test_a_spike_inside_one_batch_raises_and_returns(make_harness: MakeHarness) -> None:
    h = make_harness([DUST])
    ev = h.feed([("D-101", 5.0, 1.0), ("D-101", 45.0, 1.1), ("D-101", 5.0, 1.2)])
    assert steps(ev) == [(N, TRIP, 1.1), (TRIP, N, 1.2)]
    assert ev.reading_tier.tolist() == [N, TRIP, N]


def test_a_batch_listed_newest_first_is_taken_in_timestamp_order(
    make_harness: MakeHarness,
) -> None:
    dust = SensorThresholds(sensor_id="D", high=(10.0, 20.0, 40.0), deadband=1.0, on_delay_s=2.0)
    h = make_harness([dust])
    # A gateway that lists its buffer newest first: 45 held from t=1 to t=3 is 2 s.
    ev = h.feed([("D", 45.0, 3.0), ("D", 45.0, 2.0), ("D", 45.0, 1.0), ("D", 5.0, 0.5)])
    assert steps(ev) == [(N, TRIP, 3.0)]
    assert ev.late == 0
    # Aligned with the input: the newest reading (first) is the one that raised.
    assert ev.reading_tier.tolist() == [TRIP, N, N, N]


def test_a_late_reading_may_raise_a_tier(make_harness: MakeHarness) -> None:
    h = make_harness([DUST])
    h.feed([("D-101", 5.0, 10.0)])
    ev = h.feed([("D-101", 45.0, 9.0)])
    assert ev.late == 1
    # Taken at the sensor's latest time: the evaluated stream never goes back.
    assert steps(ev) == [(N, TRIP, 10.0)]


def test_a_late_reading_never_lowers_a_tier(make_harness: MakeHarness) -> None:
    h = make_harness([DUST])
    h.feed([("D-101", 45.0, 10.0)])
    ev = h.feed([("D-101", 5.0, 9.0)])
    assert ev.late == 1
    assert steps(ev) == []
    assert h.tier("D-101") == TRIP


def test_a_late_reading_cancels_a_pending_fall_not_a_pending_rise(
    make_harness: MakeHarness,
) -> None:
    dust = SensorThresholds(
        sensor_id="D", high=(10.0, 20.0, 40.0), deadband=1.0, on_delay_s=2.0, off_delay_s=2.0
    )
    h = make_harness([dust])
    h.feed([("D", 45.0, 0.0), ("D", 45.0, 2.0)])  # up after 2 s
    h.feed([("D", 5.0, 3.0)])  # a fall starts
    h.feed([("D", 45.0, 2.5)])  # late, high: the fall was not unbroken
    assert steps(h.feed([("D", 5.0, 5.5)])) == []  # 2 s from 3.0 would have lowered it
    g = make_harness([dust])
    g.feed([("D", 5.0, 0.0), ("D", 45.0, 1.0)])  # a rise starts
    g.feed([("D", 5.0, 0.5)])  # late, low: cannot break the rise
    assert steps(g.feed([("D", 45.0, 3.0)])) == [(N, TRIP, 3.0)]


def test_a_late_reading_never_becomes_the_latest(make_harness: MakeHarness) -> None:
    h = make_harness([DUST])
    h.feed([("D-101", 5.0, 10.0)])
    h.feed([("D-101", 5.0, 9.0)])  # late
    # The next true reading is in order (not compared with the late one) and is taken.
    ev = h.feed([("D-101", 45.0, 10.5)])
    assert ev.late == 0
    assert steps(ev) == [(N, TRIP, 10.5)]


def test_a_reading_too_far_ahead_is_rejected_counted_and_never_the_latest(
    make_harness: MakeHarness,
) -> None:
    h = make_harness([DUST])  # max_ahead_s 5
    h.feed([("D-101", 5.0, 100.0)], now=100.0)
    ev = h.feed([("D-101", 45.0, 150.0)], now=100.5)  # the device clock ran 50 s ahead
    assert ev.future == 1
    assert ev.accepted.tolist() == [False]
    assert steps(ev) == []
    # The true readings after it are not "older than the latest": nothing is blinded.
    ev = h.feed([("D-101", 45.0, 101.0)], now=101.0)
    assert (ev.late, ev.future) == (0, 0)
    assert steps(ev) == [(N, TRIP, 101.0)]
    # Within the tolerance a device clock ahead is accepted.
    assert h.feed([("D-101", 45.0, 105.9)], now=101.0).accepted.tolist() == [True]


def test_readings_that_keep_arriving_from_the_future_fault_clock_skew(
    make_harness: MakeHarness,
) -> None:
    dust = SensorThresholds(sensor_id="D", high=(10.0, 20.0, 40.0), clock_skew_after_s=10.0)
    h = make_harness([dust])
    h.feed([("D", 5.0, 100.0)], now=100.0)
    # A device clock a minute ahead, a reading a second: rejected, and for 10 s only that.
    for now in range(101, 111):
        assert faults(h.feed([("D", 5.0, now + 60.0)], now=float(now))) == []
    ev = h.feed([("D", 5.0, 171.0)], now=111.0)
    assert faults(ev) == [(True, FaultReason.CLOCK_SKEW, 100.0)]
    assert h.faulted("D")
    # A reading in order again clears it.
    ev = h.feed([("D", 5.0, 112.0)], now=112.0)
    assert faults(ev) == [(False, FaultReason.CLOCK_SKEW, 112.0)]


def test_readings_that_keep_arriving_late_fault_clock_skew(make_harness: MakeHarness) -> None:
    """A device clock stepped back: every reading is older than the latest, for longer
    than clock_skew_after_s — FAULT, and the reading that shows it is not taken."""
    dust = SensorThresholds(sensor_id="D", high=(10.0, 20.0, 40.0), clock_skew_after_s=10.0)
    h = make_harness([dust])
    h.feed([("D", 5.0, 1000.0)], now=1000.0)
    for now in range(1001, 1011):
        ev = h.feed([("D", 5.0, now - 600.0)], now=float(now))
        assert ev.late == 1 and faults(ev) == []
    ev = h.feed([("D", 45.0, 411.0)], now=1011.0)
    assert faults(ev) == [(True, FaultReason.CLOCK_SKEW, 1000.0)]
    assert steps(ev) == []


def test_a_burst_of_old_readings_is_taken_raise_only_and_faults_nothing(
    make_harness: MakeHarness,
) -> None:
    """A gateway replaying its buffer after the live readings: late, all at once."""
    dust = SensorThresholds(sensor_id="D", high=(10.0, 20.0, 40.0), clock_skew_after_s=10.0)
    h = make_harness([dust])
    h.feed([("D", 5.0, 1000.0)], now=1000.0)
    replay = [("D", 45.0 if k == 19_999 else 5.0, 400.0 + k * 0.01) for k in range(20_000)]
    ev = h.feed(replay, now=1000.5)
    assert ev.late == 20_000
    assert faults(ev) == []
    assert steps(ev) == [(N, TRIP, 1000.0)]  # the replay's high reading raised the tier


def test_an_in_order_reading_ends_the_skew_run(make_harness: MakeHarness) -> None:
    dust = SensorThresholds(sensor_id="D", high=(10.0, 20.0, 40.0), clock_skew_after_s=10.0)
    h = make_harness([dust])
    h.feed([("D", 5.0, 100.0)], now=100.0)
    for t in range(101, 131):
        h.feed([("D", 5.0, t - 50.0), ("D", 5.0, t - 49.0), ("D", 5.0, float(t))], now=float(t))
    assert not h.faulted("D")


def test_a_reading_older_than_the_horizon_is_rejected_and_counted(
    make_harness: MakeHarness,
) -> None:
    dust = SensorThresholds(sensor_id="D", high=(10.0, 20.0, 40.0), max_behind_s=3600.0)
    h = make_harness([dust])
    ev = h.feed([("D", 45.0, 10_000.0 - 3601.0), ("D", 45.0, 10_000.0 - 3599.0)], now=10_000.0)
    assert ev.too_old == 1
    assert ev.accepted.tolist() == [False, True]
    assert steps(ev) == [(N, TRIP, 10_000.0 - 3599.0)]


def test_a_sensor_s_changes_are_stamped_in_time_order_whatever_the_arrival_order(
    make_harness: MakeHarness,
) -> None:
    """A tick found the sensor stale at 13; its gateway's buffer then arrives stamped
    before that: late (the state up to 13 is decided), taken raise-only — so no change
    of this sensor is ever stamped before one already reported."""
    dust = SensorThresholds(sensor_id="D", high=(10.0, 20.0, 40.0), stale_after_s=10.0)
    h = make_harness([dust])
    h.feed([("D", 5.0, 3.0)])
    assert faults(h.tick(14.0)) == [(True, FaultReason.STALE, 13.0)]
    ev = h.feed([("D", 5.0, 4.0), ("D", 5.0, 12.0)])
    assert ev.late == 2
    assert faults(ev) == [] and h.faulted("D")
    ev = h.feed([("D", 5.0, 13.5)])
    assert faults(ev) == [(False, FaultReason.STALE, 13.5)]


def test_readings_from_before_the_start_are_taken_in_order(make_harness: MakeHarness) -> None:
    """A broker's backlog after a restart is stamped before the evaluator started."""
    h = make_harness([DUST])  # started at t = 0
    ev = h.feed([("D-101", 45.0, -20.0), ("D-101", 5.0, -19.0)])
    assert ev.late == 0
    assert steps(ev) == [(N, TRIP, -20.0), (TRIP, N, -19.0)]


def test_one_loud_sensor_is_evaluated_in_bounded_passes(make_harness: MakeHarness) -> None:
    h = make_harness([DUST])
    n = 2_000
    readings = [("D-101", 45.0 if k % 2 else 5.0, float(k)) for k in range(n)]
    ev = h.feed(readings)
    assert len(ev.transitions) == n - 1
    assert ev.reading_tier.tolist() == [TRIP if k % 2 else N for k in range(n)]


def test_sensors_are_independent(make_harness: MakeHarness) -> None:
    h = make_harness([DUST, O2])
    ev = h.feed([("O2-301", 17.0, 1.0), ("D-101", 12.0, 1.0)])
    assert [(s, b) for s, _, b, _, _, _ in ev.transitions.rows()] == [(0, W), (1, A)]

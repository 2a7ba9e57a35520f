"""`interlock.rules.decide`, pure: one test per rule of a zone's turn."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ehswatch.interlock.rules import Act, decide
from ehswatch.interlock.state import ZoneState
from ehswatch.interlock.timeline import Held

NOW = 1_800_000_000.0
ARMED = ZoneState(zone="mill-1")
HELD = Held(zone=0, at=NOW - 0.3, sensors=(4, 7))


def test_no_vote_held_and_none_holding_does_nothing_and_forgets_a_suppressed_trip() -> None:
    d = decide(ARMED, held=None, holds_now=False, voters_now=(), now=NOW)
    assert (d.act, d.vote_gone) == (Act.NOTHING, True)


def test_a_vote_holding_now_trips_with_the_sensors_voting_now() -> None:
    d = decide(ARMED, held=None, holds_now=True, voters_now=(4, 7), now=NOW)
    assert (d.act, d.cause, d.at) == (Act.TRIP, (4, 7), None)


def test_a_vote_that_came_and_went_inside_one_batch_still_trips_with_its_time() -> None:
    d = decide(ARMED, held=HELD, holds_now=False, voters_now=(), now=NOW)
    assert (d.act, d.cause, d.at, d.vote_gone) == (Act.TRIP, (4, 7), NOW - 0.3, False)


def test_the_held_vote_names_the_cause_over_the_one_voting_now() -> None:
    d = decide(ARMED, held=HELD, holds_now=True, voters_now=(9,), now=NOW)
    assert d.cause == (4, 7)


def test_a_latched_zone_does_nothing_more() -> None:
    latched = ZoneState(zone="mill-1", tripped=True, seq=1)
    for held, holds in ((HELD, True), (None, True), (HELD, False)):
        d = decide(latched, held=held, holds_now=holds, voters_now=(4,), now=NOW)
        assert (d.act, d.vote_gone) == (Act.NOTHING, False)


def test_a_bypassed_zone_suppresses_the_trip_until_the_bypass_ends() -> None:
    bypassed = ZoneState(zone="mill-1", bypass_until=NOW + 60)
    assert decide(bypassed, held=HELD, holds_now=True, voters_now=(), now=NOW).act is Act.SUPPRESS
    after = decide(bypassed, held=None, holds_now=True, voters_now=(4,), now=NOW + 60)
    assert after.act is Act.TRIP  # the end of the bypass is the end of the suppression


@given(
    tripped=st.booleans(),
    bypass_s=st.none() | st.floats(-3600, 3600),
    held=st.booleans(),
    holds_now=st.booleans(),
)
def test_an_armed_unbypassed_zone_with_a_vote_always_trips(
    tripped: bool, bypass_s: float | None, held: bool, holds_now: bool
) -> None:
    """Never a missed trip: whenever a vote held or holds, the zone is not latched and
    not bypassed, the decision is a trip — and a trip is decided for nothing else."""
    s = ZoneState(
        zone="z", tripped=tripped, bypass_until=None if bypass_s is None else NOW + bypass_s
    )
    d = decide(
        s, held=HELD if held else None, holds_now=holds_now, voters_now=(1,), now=NOW
    )  # fmt: skip
    must_trip = (held or holds_now) and not tripped and not s.bypassed(NOW)
    assert (d.act is Act.TRIP) == must_trip

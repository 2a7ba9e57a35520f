"""The two-approval rule of a bypass, pure (`interlock.bypass`): each check refuses in
its own case and only there, in the order people are told."""

from __future__ import annotations

import dataclasses

import pytest

from ehswatch.interlock.bypass import APPROVAL_WINDOW_S, BypassAsk, bypass_refusal
from ehswatch.interlock.state import PendingBypass, ZoneState
from ehswatch.roles import Actor

CHEN = Actor(name="chen.jie", role="safety_director")
ZHAO = Actor(name="zhao.lei", role="gm")
ZHANG = Actor(name="zhang.min", role="supervisor")
NOW = 1_800_000_000.0
FIRST = PendingBypass(by=CHEN.name, role=CHEN.role, at=NOW - 60, reason="r", measure="m", hours=2)


def ask(**changes: object) -> BypassAsk:
    base = BypassAsk(
        zone="mill-1",
        actor=CHEN,
        reason="replace the filter",
        measure="fire watch",
        hours=2.0,
        state=ZoneState(zone="mill-1"),
        now=NOW,
        limit_h=8.0,
        voting="1oo2",
        vote_holds=False,
        votes=0,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def why(a: BypassAsk) -> str | None:
    refused = bypass_refusal(a)
    return None if refused is None else refused.why(a)


def test_a_first_approval_with_reason_and_measure_is_taken() -> None:
    assert bypass_refusal(ask()) is None


def test_the_second_approval_by_the_other_role_and_person_is_taken_without_a_reason() -> None:
    second = ask(actor=ZHAO, reason="", measure="", state=ZoneState(zone="mill-1", pending=FIRST))
    assert bypass_refusal(second) is None


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"actor": ZHANG}, "only a safety director and a general manager may approve a bypass"),
        ({"reason": " "}, "a bypass needs a reason and a compensating measure"),
        ({"measure": ""}, "a bypass needs a reason and a compensating measure"),
        ({"hours": 0.0}, "a bypass of mill-1 lasts more than 0 and at most 8 h"),
        ({"hours": 8.5}, "a bypass of mill-1 lasts more than 0 and at most 8 h"),
        (
            {"vote_holds": True, "votes": 1},
            "the 1oo2 vote of mill-1 holds now (1 vote(s)): a bypass is refused while the "
            "vote holds",
        ),
        (
            {"state": ZoneState(zone="mill-1", tripped=True)},
            "mill-1 is tripped now: reset it first",
        ),
        (
            {"state": ZoneState(zone="mill-1", bypass_until=NOW + 60)},
            "mill-1 is already bypassed",
        ),
        (
            {
                "actor": Actor(name="sun.li", role="safety_director"),  # another one
                "state": ZoneState(zone="mill-1", pending=FIRST),
            },
            "the second approval must come from the gm",
        ),
        (
            {
                "actor": Actor(name=CHEN.name, role="gm"),
                "state": ZoneState(zone="mill-1", pending=FIRST),
            },
            "the second approval must come from a different person",
        ),
    ],
)
def test_each_check_refuses_its_own_case(changes: dict[str, object], expected: str) -> None:
    assert why(ask(**changes)) == expected


def test_a_role_too_low_is_forbidden_and_refused_before_anything_else() -> None:
    a = ask(actor=ZHANG, reason="", hours=100.0, vote_holds=True)
    refused = bypass_refusal(a)
    assert refused is not None and refused.forbidden
    assert not bypass_refusal(ask(hours=100.0)).forbidden  # type: ignore[union-attr]


def test_a_first_approval_older_than_the_window_counts_as_none() -> None:
    stale = dataclasses.replace(FIRST, at=NOW - APPROVAL_WINDOW_S - 1)
    # The same safety director again: a new first approval, not "a different person".
    assert bypass_refusal(ask(state=ZoneState(zone="mill-1", pending=stale))) is None
    # The gm without reason and measure: nothing to approve any more.
    late = ask(actor=ZHAO, reason="", measure="", state=ZoneState(zone="mill-1", pending=stale))
    assert why(late) == "a bypass needs a reason and a compensating measure"

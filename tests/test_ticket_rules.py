"""Tickets tied to the plant (docs/hazards.md): a rectification is verified, and a ticket
archived, only once the hazard is controlled where it was raised; owners are known people."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ehswatch.config import GradeRule
from ehswatch.hazards import model
from ehswatch.hazards.model import Approval, HazardTicket, Reality, TicketState
from ehswatch.roles import Actor, Forbidden, Refused

LEADER = Actor(name="zhang.wei", role="supervisor")
DIRECTOR = Actor(name="wang.fang", role="safety_director")
GM = Actor(name="chen.gang", role="gm")
A_RULE = GradeRule(deadline_h=2, stop_work=True, approvers=["gm", "safety_director"])
CLEAR = Reality(tier=0, faulted=False, value=2.0, unit="mg/m3", zone_latched=False)


def ticket(state: TicketState, kind: str = "tier", **kw: object) -> HazardTicket:
    fields: dict[str, object] = {"owner": "li.na", "rectifier": "li.na", "grade": "A", **kw}
    return HazardTicket(
        id=7, alarm_id=3, sensor="D-1", zone="z1", kind=kind, state=state,
        created_at=0.0, due_at=7200.0, **fields,  # type: ignore[arg-type]
    )  # fmt: skip


def test_a_sensor_still_at_the_tickets_tier_is_not_controlled() -> None:
    now = Reality(tier=3, faulted=False, value=45.0, unit="mg/m3", zone_latched=False)
    why = model.still_unsafe(ticket(TicketState.VERIFYING), ticket_tier=3, now=now)
    assert why == (
        "D-1 still reads 45 mg/m3, at the interlock tier: it must be back below the "
        "ticket's tier first"
    )


def test_a_sensor_below_the_tickets_tier_is_controlled_even_above_normal() -> None:
    now = Reality(tier=1, faulted=False, value=12.0, unit="mg/m3", zone_latched=False)
    assert model.still_unsafe(ticket(TicketState.VERIFYING), ticket_tier=2, now=now) is None


def test_a_latched_zone_is_not_controlled_whatever_the_sensor_reads() -> None:
    now = Reality(tier=0, faulted=False, value=2.0, unit="mg/m3", zone_latched=True)
    why = model.still_unsafe(ticket(TicketState.VERIFYING), ticket_tier=3, now=now)
    assert why == "zone z1 is still latched by its interlock: reset it first"


def test_a_sensor_in_fault_proves_nothing_whatever_the_tickets_kind() -> None:
    now = Reality(tier=0, faulted=True, value=None, unit="", zone_latched=False)
    why = model.still_unsafe(ticket(TicketState.VERIFYING), ticket_tier=3, now=now)
    assert why == "D-1 is still in FAULT: it must read again first"


def test_lowering_a_stop_work_grade_waits_for_the_hazard_to_be_controlled() -> None:
    c_rule = GradeRule(deadline_h=72, approvers=["team_leader"])
    t = ticket(TicketState.RECTIFYING, stop_work=True)
    latched = "zone z1 is still latched by its interlock: reset it first"
    with pytest.raises(Refused, match="the stop-work stays: zone z1 is still latched"):
        model.lower_grade(t, GM, "C", "drift", current=A_RULE, new=c_rule, unsafe=latched)
    lowered, _ = model.lower_grade(t, GM, "C", "drift", current=A_RULE, new=c_rule)
    assert (lowered.grade, lowered.stop_work) == ("C", False)


def test_a_fault_ticket_is_not_controlled_while_the_sensor_is_in_fault() -> None:
    now = Reality(tier=0, faulted=True, value=None, unit="", zone_latched=False)
    t = ticket(TicketState.VERIFYING, kind="fault")
    assert model.still_unsafe(t, ticket_tier=0, now=now) == (
        "D-1 is still in FAULT: it must read again first"
    )


def test_every_reason_is_given_at_once() -> None:
    now = Reality(tier=3, faulted=False, value=45.0, unit="mg/m3", zone_latched=True)
    why = model.still_unsafe(ticket(TicketState.VERIFYING), ticket_tier=3, now=now)
    assert why is not None and "still reads 45" in why and "still latched" in why


@given(
    tier=st.integers(0, 3),
    ticket_tier=st.integers(1, 3),
    latched=st.booleans(),
    faulted=st.booleans(),
)
def test_a_pass_is_refused_exactly_while_the_hazard_is_not_controlled(
    tier: int, ticket_tier: int, latched: bool, faulted: bool
) -> None:
    now = Reality(tier=tier, faulted=faulted, value=1.0, unit="", zone_latched=latched)
    t = ticket(TicketState.VERIFYING)
    unsafe = model.still_unsafe(t, ticket_tier=ticket_tier, now=now)
    assert (unsafe is not None) == (latched or faulted or tier >= ticket_tier)
    if unsafe:
        with pytest.raises(Refused, match="not verified: "):
            model.verify(t, LEADER, passed=True, unsafe=unsafe)
        # Sending it back is never held up: the rectifier must go on.
        back, _ = model.verify(t, LEADER, passed=False, reason="still dusty", unsafe=unsafe)
        assert back.state == TicketState.RECTIFYING
    else:
        passed, _ = model.verify(t, LEADER, passed=True, unsafe=unsafe)
        assert passed.state == TicketState.APPROVING


def test_the_archiving_approval_waits_for_the_hazard_to_be_controlled() -> None:
    t = ticket(TicketState.APPROVING, stop_work=True)
    latched = "zone z1 is still latched by its interlock: reset it first"
    # The first approval is only a signature: it goes in.
    one, _ = model.approve(t, DIRECTOR, now=1.0, rule=A_RULE, unsafe=latched)
    assert one.approvals == (Approval(name="wang.fang", role="safety_director", at=1.0),)
    # The last would archive it and lift the stop-work: refused while the zone is latched.
    with pytest.raises(Refused, match="not archived: zone z1 is still latched"):
        model.approve(one, GM, now=2.0, rule=A_RULE, unsafe=latched)
    done, what = model.approve(one, GM, now=3.0, rule=A_RULE, unsafe=None)
    assert (done.state, done.stop_work, what) == (
        TicketState.ARCHIVED,
        False,
        "approved and archived",
    )


def test_an_owner_must_be_a_known_person() -> None:
    t = ticket(TicketState.DETECTED, owner="", rectifier="")
    with pytest.raises(Refused, match="nobody is not a known person"):
        model.register(
            t, LEADER, owner="nobody", due_at=None, now=1.0, rule=A_RULE, owner_known=False
        )
    done, _ = model.register(t, LEADER, owner="li.na", due_at=None, now=1.0, rule=A_RULE)
    assert done.owner == "li.na" and done.state == TicketState.REGISTERED


def test_a_ticket_is_reassigned_by_a_supervisor_to_another_known_person() -> None:
    t = ticket(TicketState.RECTIFYING)
    moved, what = model.assign(t, LEADER, owner="zhao.lei", owner_known=True)
    assert moved.owner == "zhao.lei" and what == "assigned li.na → zhao.lei"
    with pytest.raises(Refused, match="not a known person"):
        model.assign(t, LEADER, owner="ghost", owner_known=False)
    with pytest.raises(Refused, match="already owns"):
        model.assign(t, LEADER, owner="li.na", owner_known=True)
    with pytest.raises(Forbidden):
        model.assign(t, Actor(name="li.na", role="operator"), owner="zhao.lei", owner_known=True)
    with pytest.raises(Refused, match="only a registered or rectifying ticket"):
        model.assign(ticket(TicketState.VERIFYING), LEADER, owner="zhao.lei", owner_known=True)


B_RULE = GradeRule(deadline_h=24, approvers=["dept_head"], stand_in=True)


def test_a_higher_role_stands_in_for_an_approver_where_the_grade_allows_it() -> None:
    t = ticket(TicketState.APPROVING, grade="B")
    done, what = model.approve(t, GM, now=5.0, rule=B_RULE)
    assert what == "approved and archived"
    assert done.approvals == (
        Approval(name="chen.gang", role="dept_head", at=5.0, acting_role="gm"),
    )


def test_no_one_stands_in_where_the_grade_does_not_allow_it() -> None:
    strict = GradeRule(deadline_h=24, approvers=["dept_head"], stand_in=False)
    with pytest.raises(Forbidden, match="approved by dept_head, not by a gm"):
        model.approve(ticket(TicketState.APPROVING, grade="B"), GM, now=5.0, rule=strict)


def test_a_lower_role_never_stands_in() -> None:
    with pytest.raises(Forbidden, match="or a higher role standing in"):
        model.approve(ticket(TicketState.APPROVING, grade="B"), LEADER, now=5.0, rule=B_RULE)


def test_an_a_ticket_keeps_two_distinct_named_signatures_even_with_stand_ins() -> None:
    lenient = GradeRule(
        deadline_h=2, stop_work=True, approvers=["gm", "safety_director"], stand_in=True
    )
    t = ticket(TicketState.APPROVING)
    one, _ = model.approve(t, GM, now=1.0, rule=lenient)
    with pytest.raises(Refused, match="each approval must come from a different person"):
        model.approve(one, GM, now=2.0, rule=lenient)  # the GM for the safety director too
    admin = Actor(name="admin.liu", role="admin")
    two, what = model.approve(one, admin, now=3.0, rule=lenient)
    assert what == "approved and archived"
    assert [(a.name, a.role) for a in two.approvals] == [
        ("chen.gang", "gm"),
        ("admin.liu", "safety_director"),
    ]
    # The default A rule takes no stand-ins at all: its two signatures are its own roles.
    with pytest.raises(Forbidden):
        model.approve(one, admin, now=3.0, rule=A_RULE)

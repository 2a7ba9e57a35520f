"""*My work* and the workbench's words (docs/workbench.md): pure rules, no browser."""

from __future__ import annotations

from typing import Any

import pytest

from ehswatch.alarms.model import Alarm, AlarmKind, AlarmState
from ehswatch.config import Hazards
from ehswatch.hazards.model import Approval, HazardTicket, TicketState
from ehswatch.interlock.bypass import APPROVAL_WINDOW_S
from ehswatch.roles import Actor
from ehswatch.workbench.i18n import TEXT, language
from ehswatch.workbench.mywork import SECTIONS, my_work

GRADES = Hazards().grades
LI = Actor(name="li.na", role="operator")
ZHANG = Actor(name="zhang.wei", role="supervisor")
WANG = Actor(name="wang.jun", role="safety_director")
CHEN = Actor(name="chen.gang", role="gm")


def alarm(k: int, **kw: Any) -> Alarm:
    return Alarm(
        id=k, sensor=f"D-{k}", zone="z1", sensor_type="dust", kind=AlarmKind.TIER,
        first_at=100.0 + k, last_at=100.0 + k, **kw,
    )  # fmt: skip


def ticket(k: int, state: TicketState, **kw: Any) -> HazardTicket:
    fields: dict[str, Any] = {"grade": "A", "due_at": 1000.0 + k, **kw}
    return HazardTicket(
        id=k, alarm_id=k, sensor=f"D-{k}", zone="z1", kind="tier", state=state,
        created_at=0.0, **fields,
    )  # fmt: skip


def work(actor: Actor, **kw: Any) -> dict[str, list[str]]:
    got = my_work(
        actor,
        alarms=kw.get("alarms", []),
        tickets=kw.get("tickets", []),
        interlocks=kw.get("interlocks", []),
        grades=GRADES,
        now=500.0,
    )
    return {section: [i.link for i in items] for section, items in got.items() if items}


def test_every_word_is_said_in_both_languages() -> None:
    assert set(TEXT["zh"]) == set(TEXT["en"])
    assert all(TEXT[lang][s] for lang in TEXT for s in SECTIONS)


@pytest.mark.parametrize(
    ("query", "cookie", "accept", "chosen"),
    [
        ("en", "zh", "zh-CN", "en"),
        (None, "en", "zh-CN", "en"),
        ("fr", None, "en-US,en;q=0.9", "en"),
        (None, None, "zh-TW,zh;q=0.9,en;q=0.8", "zh"),
        (None, None, None, "zh"),
    ],
)
def test_the_language_is_the_persons_choice_then_the_browsers_then_chinese(
    query: str | None, cookie: str | None, accept: str | None, chosen: str
) -> None:
    assert language(query, cookie, accept) == chosen


def test_unacknowledged_open_alarms_wait_for_an_operator_not_a_viewer() -> None:
    alarms = [
        alarm(1),
        alarm(2, state=AlarmState.ACK_ACTIVE, acked_at=101.0, acked_by="x"),
        alarm(3, closed_at=150.0, state=AlarmState.NORMAL, active=False),
    ]
    assert work(LI, alarms=alarms) == {"alarms_to_ack": ["/app/alarms/1"]}
    assert work(Actor(name="v", role="viewer"), alarms=alarms) == {}


def test_a_detected_ticket_waits_for_a_supervisor_to_register_it() -> None:
    tickets = [ticket(1, TicketState.DETECTED)]
    assert work(ZHANG, tickets=tickets) == {"to_register": ["/app/hazards/1"]}
    assert work(LI, tickets=tickets) == {}


def test_a_ticket_being_rectified_waits_for_its_owner_only() -> None:
    tickets = [
        ticket(1, TicketState.RECTIFYING, owner="li.na"),
        ticket(2, TicketState.REGISTERED, owner="li.na"),
        ticket(3, TicketState.RECTIFYING, owner="zhao.lei"),
    ]
    assert work(LI, tickets=tickets) == {"tickets_i_own": ["/app/hazards/1", "/app/hazards/2"]}


def test_a_submitted_rectification_waits_for_a_supervisor_who_is_not_its_rectifier() -> None:
    tickets = [
        ticket(1, TicketState.VERIFYING, rectifier="zhang.wei"),
        ticket(2, TicketState.VERIFYING, rectifier="li.na"),
    ]
    assert work(ZHANG, tickets=tickets) == {"to_verify": ["/app/hazards/2"]}


def test_an_approval_waits_for_each_role_the_grade_needs_until_it_is_given() -> None:
    given = (Approval(name="wang.jun", role="safety_director", at=1.0),)
    tickets = [ticket(1, TicketState.APPROVING, approvals=given), ticket(2, TicketState.APPROVING)]
    assert work(WANG, tickets=tickets) == {"to_approve": ["/app/hazards/2"]}
    assert work(CHEN, tickets=tickets) == {"to_approve": ["/app/hazards/1", "/app/hazards/2"]}
    assert work(ZHANG, tickets=tickets) == {}  # an A ticket is not a team leader's


def test_a_pending_bypass_waits_for_the_other_bypass_role_with_its_lapse_time() -> None:
    pending = {"by": "wang.jun", "role": "safety_director", "at": 400.0, "reason": "r"}
    interlocks: list[dict[str, Any]] = [{"zone": "z1", "pending": pending}, {"zone": "z2"}]
    got = my_work(CHEN, alarms=[], tickets=[], interlocks=interlocks, grades=GRADES, now=500.0)
    (item,) = got["bypass_to_approve"]
    assert item.link == "/app/interlocks/z1" and item.deadline == 400.0 + APPROVAL_WINDOW_S
    assert work(WANG, interlocks=interlocks) == {}  # the requester's own
    assert work(Actor(name="other", role="safety_director"), interlocks=interlocks) == {}


def test_each_list_is_soonest_deadline_first() -> None:
    tickets = [
        ticket(1, TicketState.RECTIFYING, owner="li.na", due_at=900.0),
        ticket(2, TicketState.RECTIFYING, owner="li.na", due_at=300.0),
        ticket(3, TicketState.RECTIFYING, owner="li.na", due_at=600.0),
    ]
    assert work(LI, tickets=tickets)["tickets_i_own"] == [
        "/app/hazards/2",
        "/app/hazards/3",
        "/app/hazards/1",
    ]


def test_a_predicted_crossing_is_in_my_work_with_its_time_as_the_countdown() -> None:
    from ehswatch.workbench.mywork import my_work

    predicted = [{"sensor": "D-1", "zone": "z1", "tier": 2, "eta_at": 1_800_000_300.0}]
    for role, shown in (("operator", 1), ("viewer", 0)):
        work = my_work(
            Actor(name="x", role=role),  # type: ignore[arg-type]
            alarms=[], tickets=[], interlocks=[], grades={}, now=1_800_000_000.0,
            predicted=predicted,
        )  # fmt: skip
        assert len(work["predicted"]) == shown
    assert work["predicted"] == [] and my_work(
        Actor(name="y", role="supervisor"), alarms=[], tickets=[], interlocks=[], grades={},
        now=0.0, predicted=predicted,
    )["predicted"][0].deadline == 1_800_000_300.0  # fmt: skip


def test_a_predicted_crossing_links_to_its_zones_interlock_or_else_the_board() -> None:
    from ehswatch.workbench.mywork import my_work

    predicted = [
        {"sensor": "D-1", "zone": "guarded", "tier": 3, "eta_at": 1_800_000_300.0},
        {"sensor": "G-1", "zone": "open-floor", "tier": 2, "eta_at": 1_800_000_200.0},
    ]
    work = my_work(
        Actor(name="x", role="operator"), alarms=[], tickets=[], grades={},
        interlocks=[{"zone": "guarded", "pending": None}], now=1_800_000_000.0,
        predicted=predicted,
    )  # fmt: skip
    assert [i.link for i in work["predicted"]] == ["/", "/app/interlocks/guarded"]

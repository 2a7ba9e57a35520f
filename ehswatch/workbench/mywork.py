"""*My work*: what waits for one person, from the alarms, tickets and interlocks (pure).

`my_work(actor, alarms=..., tickets=..., interlocks=..., grades=..., now=...)` lists, in
this order, each list soonest deadline first:
- alarms to acknowledge (operator or above): open, unacknowledged;
- tickets to register (supervisor or above): detected, with their grade's deadline;
- tickets the person owns that are registered or being rectified;
- rectifications waiting for verification (supervisor or above, never the rectifier's own);
- tickets waiting for an approval the person's role gives and has not yet given
  (a team leader's approval is a supervisor's);
- bypasses asked for by someone else that the person's role completes (a safety
  director's by a GM, a GM's by a safety director), before the request lapses.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ehswatch.alarms.model import Alarm
from ehswatch.config import GradeRule
from ehswatch.hazards.model import HazardTicket, TicketState
from ehswatch.interlock.bypass import APPROVAL_WINDOW_S, BYPASS_ROLES
from ehswatch.roles import Actor


@dataclass(frozen=True, kw_only=True, slots=True)
class WorkItem:
    kind: str  # the section: "alarms_to_ack", "to_register", … (an i18n key)
    link: str  # the item's page
    title: str
    detail: str
    deadline: float | None  # epoch seconds: the countdown's end
    since: float | None = None  # epoch seconds: how long it has waited


SECTIONS = (
    "alarms_to_ack",
    "predicted",
    "reports_to_grade",
    "to_register",
    "tickets_i_own",
    "to_verify",
    "to_approve",
    "bypass_to_approve",
)


def _approver_role(approver: str) -> str:
    return "supervisor" if approver == "team_leader" else approver


def my_work(
    actor: Actor,
    *,
    alarms: Iterable[Alarm],
    tickets: Iterable[HazardTicket],
    interlocks: Iterable[Mapping[str, Any]],
    grades: Mapping[Any, GradeRule],
    now: float,
    predicted: Iterable[Mapping[str, Any]] = (),
) -> dict[str, list[WorkItem]]:
    work: dict[str, list[WorkItem]] = {section: [] for section in SECTIONS}
    interlocks = list(interlocks)
    guarded = {il["zone"] for il in interlocks}
    if actor.at_least("operator"):  # a reading heading for its setpoint: look before
        for p in predicted:
            work["predicted"].append(
                WorkItem(
                    kind="predicted",
                    # the zone's interlock where it has one, else the board (it lists
                    # every predicted crossing with its countdown)
                    link=f"/app/interlocks/{p['zone']}" if p["zone"] in guarded else "/",
                    title=f"{p['sensor']} · {p['zone']}",
                    detail=f"tier {p['tier']}",
                    deadline=float(p["eta_at"]),
                )
            )
    if actor.at_least("operator"):
        for a in alarms:
            if a.open and a.unacked:
                work["alarms_to_ack"].append(
                    WorkItem(
                        kind="alarms_to_ack",
                        link=f"/app/alarms/{a.id}",
                        title=f"{a.sensor} · {a.zone}",
                        detail=f"{a.kind} {a.peak_tier}",
                        deadline=None,
                        since=a.first_at,
                    )
                )
    for t in tickets:
        section = _ticket_section(actor, t, grades)
        if section is not None:
            work[section].append(
                WorkItem(
                    kind=section,
                    link=f"/app/hazards/{t.id}",
                    title=f"#{t.id} {t.grade} · {t.zone} · {t.sensor}",
                    detail=str(t.state),
                    deadline=t.due_at,
                    since=t.created_at,
                )
            )
    for il in interlocks:
        pending = il.get("pending")
        if not pending or pending.get("by") == actor.name:
            continue
        others = [r for r in BYPASS_ROLES if r != pending.get("role")]
        if actor.role in others:
            work["bypass_to_approve"].append(
                WorkItem(
                    kind="bypass_to_approve",
                    link=f"/app/interlocks/{il['zone']}",
                    title=str(il["zone"]),
                    detail=f"{pending.get('by')}: {pending.get('reason')}",
                    deadline=float(pending.get("at", now)) + APPROVAL_WINDOW_S,
                    since=pending.get("at"),
                )
            )
    for items in work.values():
        items.sort(key=lambda i: (i.deadline is None, i.deadline or 0.0, i.since or 0.0))
    return work


def _ticket_section(actor: Actor, t: HazardTicket, grades: Mapping[Any, GradeRule]) -> str | None:
    if t.state == TicketState.REPORTED:
        return "reports_to_grade" if actor.at_least("supervisor") else None
    if t.state == TicketState.DETECTED:
        return "to_register" if actor.at_least("supervisor") else None
    if t.state in (TicketState.REGISTERED, TicketState.RECTIFYING):
        return "tickets_i_own" if t.owner == actor.name else None
    if t.state == TicketState.VERIFYING:
        mine = t.rectifier == actor.name
        return "to_verify" if actor.at_least("supervisor") and not mine else None
    if t.state == TicketState.APPROVING:
        rule = grades.get(t.grade)
        if rule is None:
            return None
        needed = {_approver_role(r) for r in rule.approvers}
        given_roles = {a.role for a in t.approvals}
        signed = any(a.name == actor.name for a in t.approvals)
        if actor.role in needed - given_roles and not signed:
            return "to_approve"
    return None

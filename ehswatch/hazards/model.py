"""`HazardTicket` and its workflow (docs/hazards.md): pure rules, no I/O.

    detected ──register──► registered ──start──► rectifying ──submit──► verifying
                                                     ▲                      │
                                                     └──────send back───────┤ verify
                                                                            ▼
                                          archived ◄──last approval── approving

- register: supervisor or above; names the owner and the due time (at the latest the
  grade's deadline from detection).
- start, submit: the owner (or a supervisor or above); submit needs the measure taken,
  and evidence is attached to the ticket before or with it.
- verify: supervisor or above, and never the person who submitted the rectification;
  pass → approving, or send back with a reason → rectifying.
- approve: each of the grade's approver roles by a distinct person (A: a gm and a safety
  director; B: a department head; C: a team leader, i.e. a supervisor). The last needed
  approval archives the ticket. Tickets never close by themselves.
- Grades: A (major hazard, 重大事故隐患: work in the zone stops) > B > C (general, 一般).
  A higher tier in the same alarm episode raises the grade; only a person holding one of
  the current grade's approver roles may lower it, with a reason.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import StrEnum

from ehswatch.config import GradeRule
from ehswatch.roles import RANK, Actor, Forbidden, Refused


class TicketState(StrEnum):
    REPORTED = "reported"  # a near-miss or hazard report by anyone, for grading
    DETECTED = "detected"
    REGISTERED = "registered"
    RECTIFYING = "rectifying"
    VERIFYING = "verifying"
    APPROVING = "approving"
    ARCHIVED = "archived"


SEVERITY = {"A": 3, "B": 2, "C": 1}
ESCALATION_LADDER = ("owner", "dept_head", "safety_director", "gm")


@dataclass(frozen=True, kw_only=True, slots=True)
class Approval:
    name: str
    role: str  # the approver role signed for
    at: float
    acting_role: str = ""  # a higher role standing in for `role` (empty: the role itself)


@dataclass(frozen=True, kw_only=True, slots=True)
class HazardTicket:
    id: int | None = None
    alarm_id: int | None = None  # None: opened by the governance watch or a patrol
    source: str = ""  # then what opened it, e.g. "cleaning:polishing-1:1796150000"
    title: str = ""  # what it is about, when no alarm says it
    sensor: str
    zone: str
    # The alarm's kind: "tier", "fault", "comm" (a device), or a zone condition; or what
    # governance found: "cleaning" (not recorded), "residue" (over the limit), "patrol"
    # (a failed checklist item), "round" (a missed patrol round).
    kind: str
    grade: str
    state: TicketState = TicketState.DETECTED
    created_at: float
    due_at: float
    owner: str = ""
    registered_by: str = ""
    rectifier: str = ""
    measure: str = ""
    submitted_at: float | None = None
    verifier: str = ""
    sent_back: int = 0
    approvals: tuple[Approval, ...] = ()
    archived_at: float | None = None
    reminded: bool = False
    escalation_level: int = 0  # 0 none; 1 dept_head, 2 safety_director, 3 gm
    recurrence: int = 1  # tickets of this sensor within the recurrence window, this included
    related: tuple[int, ...] = ()
    chronic: bool = False
    stop_work: bool = False
    stop_work_confirmed_at: float | None = None  # an A ticket: work seen stopped, by whom
    stop_work_confirmed_by: str = ""

    @property
    def open(self) -> bool:
        return self.state != TicketState.ARCHIVED


Outcome = tuple[HazardTicket, str]  # the ticket after, and what happened (for the audit)


def more_severe(a: str, b: str) -> bool:
    return SEVERITY[a] > SEVERITY[b]


@dataclass(frozen=True, kw_only=True, slots=True)
class Reality:
    """The plant as it is now, where a ticket was raised: the sensor's current tier
    (0 normal … 3 interlock) and fault, its last value, and whether the zone is latched."""

    tier: int
    faulted: bool
    value: float | None
    unit: str
    zone_latched: bool


TIER_WORDS = {1: "warning", 2: "alarm", 3: "interlock"}


def still_unsafe(t: HazardTicket, *, ticket_tier: int, now: Reality) -> str | None:
    """Why the hazard is not yet controlled in the plant, every reason, or None: the
    sensor still reads at or beyond the tier the ticket was raised at; the sensor is in
    FAULT (whatever the ticket's kind: a sensor that cannot read proves nothing); the
    zone is still latched by its interlock. A
    rectification is not verified, nor a ticket archived, on paper alone."""
    reasons = []
    if t.kind == "tier" and ticket_tier > 0 and now.tier >= ticket_tier:
        value = f"{now.value:g} {now.unit}".strip() if now.value is not None else "a value"
        word = TIER_WORDS.get(now.tier, str(now.tier))
        reasons.append(
            f"{t.sensor} still reads {value}, at the {word} tier: "
            "it must be back below the ticket's tier first"
        )
    if now.faulted:  # a sensor that cannot read cannot show the hazard is gone
        reasons.append(f"{t.sensor} is still in FAULT: it must read again first")
    if now.zone_latched:
        reasons.append(f"zone {t.zone} is still latched by its interlock: reset it first")
    return "; ".join(reasons) or None


def _role_for(approver: str) -> str:
    return "supervisor" if approver == "team_leader" else approver


def register(
    t: HazardTicket,
    actor: Actor,
    *,
    owner: str,
    due_at: float | None,
    now: float,
    rule: GradeRule,
    owner_known: bool = True,
) -> Outcome:
    if not actor.at_least("supervisor"):
        raise Forbidden(f"{actor.name} ({actor.role}) may not register hazards")
    _expect(t, TicketState.DETECTED, "register")
    if not owner.strip():
        raise Refused("registering names the owner who will rectify it")
    if not owner_known:
        raise Refused(f"{owner} is not a known person: the owner must be able to sign in")
    latest = t.created_at + rule.deadline_h * 3600
    due = latest if due_at is None else due_at
    if not now < due <= latest:
        raise Refused(
            f"the due time must be after now and at the latest the grade {t.grade} "
            f"deadline ({rule.deadline_h:g} h from detection)"
        )
    return dataclasses.replace(
        t, state=TicketState.REGISTERED, owner=owner, due_at=due, registered_by=actor.name
    ), "registered"


def accept_report(
    t: HazardTicket, actor: Actor, *, grade: str, rule: GradeRule, now: float
) -> Outcome:
    """A supervisor or above grades a report: it becomes a detected ticket of `grade`,
    due the grade's deadline after it was reported (then registered like any new
    ticket): grading late does not buy time."""
    if not actor.at_least("supervisor"):
        raise Forbidden(f"{actor.name} ({actor.role}) may not grade reports")
    _expect(t, TicketState.REPORTED, "grade the report")
    return dataclasses.replace(
        t,
        state=TicketState.DETECTED,
        grade=grade,
        due_at=t.created_at + rule.deadline_h * 3600,
        stop_work=rule.stop_work,
        registered_by=actor.name,
    ), f"report graded {grade}"


def dismiss_report(t: HazardTicket, actor: Actor, *, reason: str, now: float) -> Outcome:
    """A supervisor or above dismisses a report, with the reason: it is archived."""
    if not actor.at_least("supervisor"):
        raise Forbidden(f"{actor.name} ({actor.role}) may not dismiss reports")
    _expect(t, TicketState.REPORTED, "dismiss the report")
    if not reason.strip():
        raise Refused("dismissing a report says why")
    return dataclasses.replace(
        t, state=TicketState.ARCHIVED, archived_at=now, measure=f"dismissed: {reason}"
    ), "report dismissed"


def confirm_stop_work(t: HazardTicket, actor: Actor, *, now: float) -> Outcome:
    """A supervisor or above who has seen work stop in the zone of an A (stop-work)
    ticket says so: the ticket stops climbing past the GM for it."""
    if not actor.at_least("supervisor"):
        raise Forbidden(f"{actor.name} ({actor.role}) may not confirm a stop-work")
    if not t.stop_work:
        raise Refused(f"ticket {t.id} (grade {t.grade}) does not stop work")
    if not t.open:
        raise Refused(f"ticket {t.id} is archived")
    if t.stop_work_confirmed_at is not None:
        raise Refused(f"{t.stop_work_confirmed_by} already confirmed work stopped in {t.zone}")
    return dataclasses.replace(
        t, stop_work_confirmed_at=now, stop_work_confirmed_by=actor.name
    ), "stop-work confirmed"


def assign(t: HazardTicket, actor: Actor, *, owner: str, owner_known: bool) -> Outcome:
    """Hand a registered or rectifying ticket to another owner (supervisor or above)."""
    if not actor.at_least("supervisor"):
        raise Forbidden(f"{actor.name} ({actor.role}) may not assign hazards")
    if t.state not in (TicketState.REGISTERED, TicketState.RECTIFYING):
        raise Refused(
            f"ticket {t.id} is {t.state}: only a registered or rectifying ticket is assigned"
        )
    if not owner_known:
        raise Refused(f"{owner} is not a known person: the owner must be able to sign in")
    if owner == t.owner:
        raise Refused(f"{owner} already owns ticket {t.id}")
    return dataclasses.replace(t, owner=owner), f"assigned {t.owner} → {owner}"


def start(t: HazardTicket, actor: Actor) -> Outcome:
    _owner_or_supervisor(t, actor, "start rectifying")
    _expect(t, TicketState.REGISTERED, "start rectifying")
    return dataclasses.replace(t, state=TicketState.RECTIFYING), "rectification started"


def submit(t: HazardTicket, actor: Actor, *, measure: str, evidence: int, now: float) -> Outcome:
    _owner_or_supervisor(t, actor, "submit the rectification")
    _expect(t, TicketState.RECTIFYING, "submit")
    if not measure.strip():
        raise Refused("submitting needs a description of the measure taken")
    if evidence == 0:
        raise Refused("submitting needs evidence (a photo or a document) on the ticket")
    return dataclasses.replace(
        t, state=TicketState.VERIFYING, rectifier=actor.name, measure=measure, submitted_at=now
    ), "rectification submitted"


def verify(
    t: HazardTicket, actor: Actor, *, passed: bool, reason: str = "", unsafe: str | None = None
) -> Outcome:
    """`unsafe`: why the hazard is not yet controlled in the plant (`still_unsafe`); a pass
    is refused while there is a reason, a send-back is not."""
    if not actor.at_least("supervisor"):
        raise Forbidden(f"{actor.name} ({actor.role}) may not verify rectifications")
    _expect(t, TicketState.VERIFYING, "verify")
    if actor.name == t.rectifier:
        raise Refused("the rectification must be verified by someone other than the rectifier")
    if passed and unsafe:
        raise Refused(f"not verified: {unsafe}")
    if passed:
        return dataclasses.replace(t, state=TicketState.APPROVING, verifier=actor.name), "verified"
    if not reason.strip():
        raise Refused("sending a rectification back needs a reason")
    return dataclasses.replace(
        t, state=TicketState.RECTIFYING, verifier=actor.name, sent_back=t.sent_back + 1
    ), "sent back"


def approve(
    t: HazardTicket, actor: Actor, *, now: float, rule: GradeRule, unsafe: str | None = None
) -> Outcome:
    """`unsafe` as for `verify`: the approval that would archive is refused while there
    is a reason (an A ticket's stop-work lifts only with the hazard controlled)."""
    _expect(t, TicketState.APPROVING, "approve")
    needed = [_role_for(r) for r in rule.approvers]
    have = {a.role for a in t.approvals}
    slot: str | None = actor.role
    if actor.role not in needed or actor.role in have:  # its own role's slot, else a stand-in
        slot = _stand_in_slot(actor, needed, have, rule) or (
            actor.role if actor.role in needed else None
        )
    if slot is None:
        also = " (or a higher role standing in)" if rule.stand_in else ""
        raise Forbidden(
            f"grade {t.grade} is approved by {' and '.join(rule.approvers)}{also}, "
            f"not by a {actor.role}"
        )
    if slot in have:
        raise Refused(f"grade {t.grade} already has the {slot}'s approval")
    if any(a.name == actor.name for a in t.approvals):
        raise Refused("each approval must come from a different person")
    approval = Approval(
        name=actor.name, role=slot, at=now, acting_role="" if slot == actor.role else actor.role
    )
    approvals = (*t.approvals, approval)
    if {a.role for a in approvals} >= set(needed):
        if unsafe:
            raise Refused(f"not archived: {unsafe}")
        return dataclasses.replace(
            t, approvals=approvals, state=TicketState.ARCHIVED, archived_at=now, stop_work=False
        ), "approved and archived"
    return dataclasses.replace(t, approvals=approvals), "approved"


def _stand_in_slot(actor: Actor, needed: list[str], have: set[str], rule: GradeRule) -> str | None:
    """The approver role a higher role signs for, where the grade allows stand-ins: the
    lowest one not yet signed that the actor outranks."""
    if not rule.stand_in:
        return None
    rank = RANK[actor.role]
    open_slots = [r for r in needed if r not in have and RANK.get(r, rank) < rank]
    return min(open_slots, key=lambda r: RANK[r], default=None)


def raise_grade(t: HazardTicket, grade: str, rule: GradeRule) -> Outcome | None:
    """A higher tier in the same episode: the same ticket, a more severe grade."""
    if not t.open or not more_severe(grade, t.grade):
        return None
    due = min(t.due_at, t.created_at + rule.deadline_h * 3600)
    return dataclasses.replace(
        t, grade=grade, due_at=due, stop_work=t.stop_work or rule.stop_work, approvals=()
    ), f"grade raised {t.grade} → {grade}"


def lower_grade(
    t: HazardTicket,
    actor: Actor,
    grade: str,
    reason: str,
    *,
    current: GradeRule,
    new: GradeRule,
    unsafe: str | None = None,
) -> Outcome:
    """`unsafe` as for `verify`: lowering a stop-work grade to one without stop-work is
    refused while there is a reason (the stop-work would lift on paper alone)."""
    if actor.role not in [_role_for(r) for r in current.approvers]:
        raise Forbidden(
            f"only an approver of grade {t.grade} ({' or '.join(current.approvers)}) may lower it"
        )
    if not t.open:
        raise Refused("an archived ticket keeps its grade")
    if not more_severe(t.grade, grade):
        raise Refused(f"{grade} is not lower than {t.grade}")
    if not reason.strip():
        raise Refused("lowering a grade needs a reason")
    if t.stop_work and not new.stop_work and unsafe:
        raise Refused(f"the stop-work stays: {unsafe}")
    return dataclasses.replace(
        t,
        grade=grade,
        stop_work=new.stop_work,
        approvals=(),
        due_at=max(t.due_at, t.created_at + new.deadline_h * 3600)
        if t.state == TicketState.DETECTED
        else t.due_at,
    ), f"grade lowered {t.grade} → {grade}"


def _owner_or_supervisor(t: HazardTicket, actor: Actor, what: str) -> None:
    if actor.name != t.owner and not actor.at_least("supervisor"):
        raise Forbidden(f"only the owner ({t.owner}) or a supervisor may {what}")


def _expect(t: HazardTicket, state: TicketState, what: str) -> None:
    if t.state != state:
        raise Refused(f"ticket {t.id} is {t.state}: cannot {what} (needs {state})")

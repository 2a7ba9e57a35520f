"""`TicketWorkflow`: what people do to a ticket, from registration to the archive.

`register`, `start`, `add_evidence`, `submit`, `verify`, `approve`, `lower_grade`: each
checks its rule in `model` (pure), then stores the change through the `TicketLedger`
(row, audit entry, outbound message) in one transaction. Every refusal is audited where
it is decided (`refusals`), in a transaction of its own, and raised: `Forbidden` (403)
or `Refused` (409; evidence too large or of the wrong type: 413 / 415).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from ehswatch.alarms.store import AlarmRecord
from ehswatch.audit import record
from ehswatch.hazards import model
from ehswatch.hazards.evidence import EvidenceStore
from ehswatch.hazards.model import HazardTicket, TicketState
from ehswatch.hazards.rooms import Rooms, TicketRoom
from ehswatch.hazards.store import EvidenceRecord, TicketRecord, to_ticket
from ehswatch.people.store import can_act
from ehswatch.refusals import Refusal, refuse
from ehswatch.roles import Actor, Forbidden, NotFound, Refused

# How the plant is now where a ticket was raised (the desk part asks the control part).
RealityOf = Callable[[HazardTicket, Actor], Awaitable[model.Reality]]


class TicketWorkflow(TicketRoom):
    def __init__(
        self, rooms: Rooms, *, evidence: EvidenceStore, reality: RealityOf | None = None
    ) -> None:
        """`reality`: the plant now, for the rule that a hazard is verified and archived
        only once it is controlled (`model.still_unsafe`); None (tools, tests of the
        workflow alone) checks paper only."""
        super().__init__(rooms)
        self.evidence = evidence
        self._reality = reality

    async def _unsafe(self, ticket_id: int, actor: Actor) -> str | None:
        if self._reality is None:
            return None
        t = await self.ledger.get(ticket_id)
        async with self.db.new_session() as s:
            tier = await s.scalar(select(AlarmRecord.peak_tier).where(AlarmRecord.id == t.alarm_id))
        return model.still_unsafe(t, ticket_tier=int(tier or 0), now=await self._reality(t, actor))

    async def register(
        self,
        ticket_id: int,
        actor: Actor,
        *,
        owner: str,
        due_at: float | None = None,
        comment: str = "",
    ) -> HazardTicket:
        known = await self._known(owner)
        return await self._act(
            ticket_id,
            actor,
            "register",
            comment,
            lambda t, now: model.register(
                t,
                actor,
                owner=owner,
                due_at=due_at,
                now=now,
                rule=self._rule(t),
                owner_known=known,
            ),
        )

    async def assign(
        self, ticket_id: int, actor: Actor, *, owner: str, comment: str = ""
    ) -> HazardTicket:
        known = await self._known(owner)
        return await self._act(
            ticket_id,
            actor,
            "assign",
            comment,
            lambda t, _now: model.assign(t, actor, owner=owner, owner_known=known),
        )

    async def _known(self, name: str) -> bool:
        """Whether `name` can act: a person who may sign in, or a configured user."""
        async with self.db.new_session() as s:
            return await can_act(s, name, {u.name for u in self.config.users})

    async def _grade_exists(
        self, ticket_id: int, actor: Actor, grade: str, action: str, comment: str
    ) -> None:
        """Refused (audited) unless `grade` is one of the configured grades."""
        if grade not in self.settings.grades:
            refusal = Refusal(
                actor=actor,
                action=action,
                subject=f"ticket:{ticket_id}",
                why=f"no grade {grade!r}",
                comment=comment,
            )
            await refuse(self.db, refusal, self._clock())

    async def accept_report(
        self, ticket_id: int, actor: Actor, *, grade: str, comment: str = ""
    ) -> HazardTicket:
        await self._grade_exists(ticket_id, actor, grade, "grade report", comment)
        rule = self.settings.grades[grade]  # type: ignore[index]
        return await self._act(
            ticket_id,
            actor,
            "grade report",
            comment,
            lambda t, now: model.accept_report(t, actor, grade=grade, rule=rule, now=now),
            after=self.dispatch.opened,
        )

    async def dismiss_report(self, ticket_id: int, actor: Actor, *, reason: str) -> HazardTicket:
        return await self._act(
            ticket_id,
            actor,
            "dismiss report",
            reason,
            lambda t, now: model.dismiss_report(t, actor, reason=reason, now=now),
        )

    async def confirm_stop_work(
        self, ticket_id: int, actor: Actor, comment: str = ""
    ) -> HazardTicket:
        return await self._act(
            ticket_id,
            actor,
            "confirm stop-work",
            comment,
            lambda t, now: model.confirm_stop_work(t, actor, now=now),
        )

    async def start(self, ticket_id: int, actor: Actor, comment: str = "") -> HazardTicket:
        return await self._act(
            ticket_id, actor, "start", comment, lambda t, now: model.start(t, actor)
        )

    async def submit(
        self, ticket_id: int, actor: Actor, *, measure: str, comment: str = ""
    ) -> HazardTicket:
        async with self.db.new_session() as s:
            n = (
                await s.scalar(
                    select(func.count())
                    .select_from(EvidenceRecord)
                    .where(EvidenceRecord.ticket_id == ticket_id)
                )
                or 0
            )
        return await self._act(
            ticket_id,
            actor,
            "submit",
            comment,
            lambda t, now: model.submit(t, actor, measure=measure, evidence=n, now=now),
        )

    async def verify(
        self, ticket_id: int, actor: Actor, *, passed: bool, reason: str = "", comment: str = ""
    ) -> HazardTicket:
        unsafe = await self._unsafe(ticket_id, actor) if passed else None
        return await self._act(
            ticket_id,
            actor,
            "verify",
            comment or reason,
            lambda t, now: model.verify(t, actor, passed=passed, reason=reason, unsafe=unsafe),
        )

    async def approve(self, ticket_id: int, actor: Actor, comment: str = "") -> HazardTicket:
        unsafe = await self._unsafe(ticket_id, actor)
        return await self._act(
            ticket_id,
            actor,
            "approve",
            comment,
            lambda t, now: model.approve(t, actor, now=now, rule=self._rule(t), unsafe=unsafe),
        )

    async def lower_grade(
        self, ticket_id: int, actor: Actor, *, grade: str, reason: str
    ) -> HazardTicket:
        await self._grade_exists(ticket_id, actor, grade, "lower grade", reason)
        unsafe = await self._unsafe(ticket_id, actor)
        return await self._act(
            ticket_id,
            actor,
            "lower grade",
            reason,
            lambda t, now: model.lower_grade(
                t,
                actor,
                grade,
                reason,
                current=self._rule(t),
                new=self.settings.grades[grade],  # type: ignore[index]
                unsafe=unsafe,
            ),
        )

    async def add_evidence(
        self,
        ticket_id: int,
        actor: Actor,
        *,
        filename: str,
        content: bytes,
        thumbnail: bytes | None = None,
    ) -> EvidenceRecord:
        """`thumbnail`: a small copy of the photo made by the phone, served for lists."""
        now = self._clock()
        t = await self.ledger.get(ticket_id)
        refused = functools.partial(
            Refusal,
            actor=actor,
            action="evidence",
            subject=f"ticket:{ticket_id}",
            detail={"file": filename},
        )
        if t.owner != actor.name and not actor.at_least("supervisor"):
            why = f"only the owner ({t.owner}) or a supervisor may add evidence"
            await refuse(self.db, refused(why=why, forbidden=True), now)
        if t.state not in (TicketState.REGISTERED, TicketState.RECTIFYING):
            why = f"ticket {ticket_id} is {t.state}: evidence goes with a rectification"
            await refuse(self.db, refused(why=why), now)
        try:
            thumb_ext = self.evidence.check_thumbnail(thumbnail) if thumbnail else None
            stored = self.evidence.store(ticket_id, content)
        except Refused as exc:  # too large, not a photo or document: its own status
            await refuse(self.db, refused(why=str(exc)), now, error=exc)
        if thumbnail and thumb_ext is not None:
            self.evidence.store_thumbnail(stored.path, thumbnail, thumb_ext)
        async with self.db.new_session() as s, s.begin():
            ev = EvidenceRecord(
                ticket_id=ticket_id,
                filename=filename[:255],
                content_type=stored.content_type,
                size=stored.size,
                sha256=stored.sha256,
                path=str(stored.path),
                uploaded_by=actor.name,
                at=now,
            )
            s.add(ev)
            record(
                s,
                ts=now,
                actor=actor,
                action="evidence added",
                subject=f"ticket:{ticket_id}",
                detail={"file": filename, "sha256": stored.sha256, "size": stored.size},
            )
        return ev

    async def evidence_of(self, ticket_id: int) -> list[EvidenceRecord]:
        """The ticket's evidence, oldest first."""
        await self.ledger.get(ticket_id)  # NotFound for a ticket that does not exist
        async with self.db.new_session() as s:
            q = (
                select(EvidenceRecord)
                .where(EvidenceRecord.ticket_id == ticket_id)
                .order_by(EvidenceRecord.id)
            )
            return list((await s.execute(q)).scalars())

    async def evidence_file(self, ticket_id: int, evidence_id: int) -> EvidenceRecord:
        async with self.db.new_session() as s:
            ev = await s.get(EvidenceRecord, evidence_id)
        if ev is None or ev.ticket_id != ticket_id:
            raise NotFound(f"no evidence {evidence_id} on ticket {ticket_id}")
        return ev

    def _rule(self, t: HazardTicket) -> Any:
        return self.settings.grades[t.grade]  # type: ignore[index]

    async def _act(
        self,
        ticket_id: int,
        actor: Actor,
        action: str,
        comment: str,
        step: Callable[[HazardTicket, float], model.Outcome],
        after: Callable[[AsyncSession, HazardTicket], Awaitable[HazardTicket]] | None = None,
    ) -> HazardTicket:
        now = self._clock()
        async with self.db.new_session() as s, s.begin():
            r = await s.get(TicketRecord, ticket_id)
            if r is None:
                raise NotFound(f"no ticket {ticket_id}")
            t = to_ticket(r)
            refusal: Refusal | None = None
            try:
                new, what = step(t, now)
            except (Refused, Forbidden) as exc:
                refusal = Refusal.of(
                    exc,
                    actor=actor,
                    action=action,
                    subject=f"ticket:{ticket_id}",
                    detail={"state": str(t.state)},
                    comment=comment,
                )
            else:
                new = await self.ledger.save(s, new, actor, what, {"from": str(t.state)}, comment)
                if after is not None:  # in the same transaction (a graded report's dispatch)
                    new = await after(s, new)
        if refusal is not None:
            await refuse(self.db, refusal, now)
        self._changed.set()
        return new

"""`TicketIntake`: a ticket for every alarm episode, from the alarm outbox.

It reads the outbox with its own cursor, committed with the tickets it causes: a
`raised` event opens the episode's ticket, graded by `hazards.tier_grade`; a later
`tier_raised` raises the same ticket's grade. A ticket is unique per alarm episode, so a
restart never duplicates one. A Modbus device that stops answering is one ticket (its
`comm` alarm, graded as a fault); the faults of its sensors grouped under that alarm open
none — a grouped fault that is `released` (its sensor still faulted after the device
answers again) opens its own.

Recurrence: a sensor's tickets within `recurrence_days` (30) are linked and counted; the
`chronic_count`-th (3rd) is flagged chronic and escalated to the safety director. An A
ticket stops work in its zone (audited, and the department head notified).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any, Self

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from ehswatch.alarms.model import route_tier_of
from ehswatch.alarms.store import OutboxRecord
from ehswatch.audit import record
from ehswatch.component import Component, Job, woken
from ehswatch.hazards import model
from ehswatch.hazards.model import HazardTicket
from ehswatch.hazards.rooms import Rooms, TicketRoom
from ehswatch.hazards.store import CursorRecord, TicketRecord, to_ticket
from ehswatch.roles import SYSTEM

log = logging.getLogger(__name__)
INTAKE_BATCH = 500  # alarm events taken in per transaction
CURSOR = "hazard-desk"
INTAKE_EVENTS = ("raised", "tier_raised", "reactivated", "released")
DAY = 86400.0
POLL_S = 1.0  # a wake-up lost between the parts costs at most this long


class TicketIntake(TicketRoom, Component):
    component_name = "hazard-intake"

    def __init__(self, rooms: Rooms) -> None:
        super().__init__(rooms)
        self.wake = asyncio.Event()  # set after each commit of alarm events

    async def __aenter__(self) -> Self:
        self.wake.set()  # catch up with what arrived while we were down
        return await super().__aenter__()

    def jobs(self) -> Iterable[tuple[str, Job]]:
        yield "intake", self._loop

    async def _loop(self) -> None:
        while True:
            await woken(self.wake, POLL_S)
            # Again only while a whole batch came (see `AlarmRelay._loop`).
            while await self.intake_once() == INTAKE_BATCH:
                pass

    async def intake_once(self, limit: int = INTAKE_BATCH) -> int:
        """Open or regrade tickets for new alarm events; how many events were read.
        Several processes on one database take turns (`Database.turn`): an event's
        ticket is opened once; 0 while another one is at it."""
        async with self.db.turn("hazard-intake") as mine:
            return await self._intake_batch(limit) if mine else 0

    async def _intake_batch(self, limit: int) -> int:
        async with self.db.new_session() as s, s.begin():
            cursor = await s.get(CursorRecord, CURSOR) or CursorRecord(name=CURSOR, last_event_id=0)
            rows = list(
                (
                    await s.execute(
                        select(OutboxRecord)
                        .where(OutboxRecord.id > cursor.last_event_id)
                        .order_by(OutboxRecord.id)
                        .limit(limit)
                    )
                ).scalars()
            )
            if not rows:
                return 0
            for row in rows:
                if row.event in INTAKE_EVENTS:
                    alarm = row.alarm()
                    if not alarm.get("grouped_under"):  # grouped: its device's ticket
                        await self._intake(s, alarm, row.ts)
            cursor.last_event_id = rows[-1].id
            await s.merge(cursor)
        self._changed.set()
        return len(rows)

    def _grade_of(self, alarm: dict[str, Any]) -> str:
        tier = route_tier_of(alarm["kind"], alarm["peak_tier"])
        return self.settings.tier_grade[tier]  # type: ignore[index]

    async def _intake(self, s: AsyncSession, alarm: dict[str, Any], ts: float) -> None:
        grade = self._grade_of(alarm)
        rule = self.settings.grades[grade]  # type: ignore[index]
        existing = (
            await s.execute(select(TicketRecord).where(TicketRecord.alarm_id == alarm["id"]))
        ).scalar_one_or_none()
        if existing is not None:
            t = to_ticket(existing)
            raised = model.raise_grade(t, grade, rule)
            if raised is not None:
                new, what = raised
                new = await self.ledger.save(s, new, SYSTEM, what, {"alarm": alarm["id"]})
                await self.dispatch.regraded(s, t, new)
                if new.stop_work and not t.stop_work:
                    await self._stop_work(s, new)
            return
        window = self.settings.recurrence_days * DAY
        earlier = list(
            (
                await s.execute(
                    select(TicketRecord.id)
                    .where(
                        TicketRecord.sensor == alarm["sensor"],
                        TicketRecord.created_at > ts - window,
                    )
                    .order_by(TicketRecord.id)
                )
            ).scalars()
        )
        count = len(earlier) + 1
        t = HazardTicket(
            alarm_id=alarm["id"],
            sensor=alarm["sensor"],
            zone=alarm["zone"],
            kind=alarm["kind"],
            grade=grade,
            created_at=ts,
            due_at=ts + rule.deadline_h * 3600,
            recurrence=count,
            related=tuple(earlier),
            chronic=count >= self.settings.chronic_count,
            stop_work=rule.stop_work,
        )
        t = await self.ledger.save(
            s, t, SYSTEM, "opened", {"alarm": alarm["id"], "grade": grade, "recurrence": count}
        )
        log.warning(
            "hazard ticket %d opened: grade %s, %s in %s (alarm %d)",
            t.id,
            grade,
            t.sensor,
            t.zone,
            alarm["id"],
        )
        t = await self.dispatch.opened(s, t)
        if t.stop_work:
            await self._stop_work(s, t)
        if t.chronic:
            record(
                s,
                ts=ts,
                actor=SYSTEM,
                action="chronic hazard",
                subject=f"ticket:{t.id}",
                detail={
                    "sensor": t.sensor,
                    "tickets": [*t.related, t.id],
                    "days": self.settings.recurrence_days,
                },
            )
            chain = await self.owners.chain(s, t.zone)
            director = chain.of("safety_director")
            await self.ledger.notify(s, t, "chronic", "safety_director", ts, person=director)
            log.error(
                "CHRONIC HAZARD: %s has had %d tickets in %g days (ticket %d); escalated "
                "to the safety director",
                t.sensor,
                count,
                self.settings.recurrence_days,
                t.id,
            )

    async def _stop_work(self, s: AsyncSession, t: HazardTicket) -> None:
        now = self._clock()
        record(
            s,
            ts=now,
            actor=SYSTEM,
            action="stop work",
            subject=f"zone:{t.zone}",
            detail={"ticket": t.id, "grade": t.grade},
        )
        chain = await self.owners.chain(s, t.zone)
        await self.ledger.notify(s, t, "stop_work", "dept_head", now, person=chain.of("dept_head"))
        log.error(
            "MAJOR HAZARD (grade A), ticket %d: work in %s stops until it is controlled",
            t.id,
            t.zone,
        )

"""`TicketDeadlines`: reminders and escalation, level by level, until a ticket is handled.

Every `CHECK_S` (10 s), for each ticket not yet submitted: at 75 % of its allowed time
the owner is reminded; from the due time it escalates one level at a time up its zone's
chain in the responsibility map — department head, then safety director (a quarter of
the allowed time later), then general manager (another quarter) — each step stored as a
ticket change and sent to the `hazards.notify` channels, naming the person. An A ticket
(stop-work) whose stop-work nobody has confirmed keeps escalating past the GM, another
notice every quarter of its allowed time, whatever its state, until someone confirms
work has stopped (`confirm_stop_work`) or it is archived.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Iterable
from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy import select

from ehswatch.component import Component, Job
from ehswatch.hazards.model import ESCALATION_LADDER, TicketState
from ehswatch.hazards.rooms import Rooms, TicketRoom
from ehswatch.hazards.store import TicketRecord, to_ticket
from ehswatch.roles import SYSTEM

log = logging.getLogger(__name__)
CHECK_S = 10.0
#: not yet handed in: reminded and escalated
UNHANDLED = (TicketState.DETECTED, TicketState.REGISTERED, TicketState.RECTIFYING)
OPEN = [s for s in TicketState if s != TicketState.ARCHIVED]


class TicketDeadlines(TicketRoom, Component):
    component_name = "hazard-deadlines"

    def __init__(self, rooms: Rooms) -> None:
        super().__init__(rooms)
        self.tz = ZoneInfo(rooms.config.site.timezone)

    def jobs(self) -> Iterable[tuple[str, Job]]:
        yield "schedule", self._loop

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(CHECK_S)
            await self.run_schedule()

    async def run_schedule(self) -> None:
        """Remind and escalate what is due (one process at a time on a shared database)."""
        async with self.db.turn("hazard-deadlines") as mine:
            if mine:
                await self._run_schedule()

    async def _run_schedule(self) -> None:
        now = self._clock()
        top = len(ESCALATION_LADDER) - 1
        async with self.db.new_session() as s, s.begin():
            rows = (
                await s.execute(select(TicketRecord).where(TicketRecord.state.in_(OPEN)))
            ).scalars()
            for r in list(rows):
                t = to_ticket(r)
                unconfirmed = t.stop_work and t.stop_work_confirmed_at is None
                if t.state not in UNHANDLED and not unconfirmed:
                    continue
                span = max(t.due_at - t.created_at, 1.0)
                if not t.reminded and t.state in UNHANDLED and now >= t.created_at + 0.75 * span:
                    t = dataclasses.replace(t, reminded=True)
                    await self.ledger.save(s, t, SYSTEM, "reminder", {"due_at": t.due_at})
                    await self.ledger.notify(s, t, "reminder", "owner", now, person=t.owner)
                if now <= t.due_at:
                    continue
                level = 1 + int((now - t.due_at) // (0.25 * span))
                level = level if unconfirmed else min(level, top)
                chain = await self.owners.chain(s, t.zone)
                while t.escalation_level < level:
                    # The chain one step at a time; past the GM (an unconfirmed stop-work)
                    # one notice for the latest step, not one per step missed while down.
                    step = t.escalation_level + 1 if t.escalation_level < top else level
                    t = dataclasses.replace(t, escalation_level=step)
                    to = ESCALATION_LADDER[min(step, top)]
                    if step <= top:
                        what, change = f"overdue-{step}", f"overdue: escalated to {to}"
                    else:
                        what = f"stop-work-unconfirmed-{step - top}"
                        change = "overdue: stop-work still not confirmed, escalated to gm again"
                    await self.ledger.save(
                        s, t, SYSTEM, change, {"due_at": t.due_at, "level": t.escalation_level}
                    )
                    await self.ledger.notify(s, t, what, to, now, person=chain.of(to))
                    log.error(
                        "hazard ticket %d overdue (grade %s, due %s): escalated to %s %s",
                        t.id,
                        t.grade,
                        self._when(t.due_at),
                        to,
                        chain.of(to),
                    )
        self._changed.set()

    def _when(self, ts: float) -> str:
        return datetime.fromtimestamp(ts, self.tz).strftime("%Y-%m-%d %H:%M")

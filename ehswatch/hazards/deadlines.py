"""`TicketDeadlines`: reminders and escalation, level by level, until a ticket is handled.

Every `CHECK_S` (10 s), for each ticket not yet submitted: at 75 % of its allowed time
the owner is reminded; from the due time it escalates one level at a time — department
head, then safety director (a quarter of the allowed time later), then general manager
(another quarter) — each step stored as a ticket change and sent to the `hazards.notify`
channels.
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
from ehswatch.hazards.ledger import Rooms, TicketRoom
from ehswatch.hazards.model import ESCALATION_LADDER, TicketState
from ehswatch.hazards.store import TicketRecord, to_ticket
from ehswatch.roles import SYSTEM

log = logging.getLogger(__name__)
CHECK_S = 10.0


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
        now = self._clock()
        async with self.db.new_session() as s, s.begin():
            rows = (
                await s.execute(
                    select(TicketRecord).where(
                        TicketRecord.state.in_(
                            [TicketState.DETECTED, TicketState.REGISTERED, TicketState.RECTIFYING]
                        )
                    )
                )
            ).scalars()
            for r in list(rows):
                t = to_ticket(r)
                span = max(t.due_at - t.created_at, 1.0)
                if not t.reminded and now >= t.created_at + 0.75 * span:
                    t = dataclasses.replace(t, reminded=True)
                    await self.ledger.save(s, t, SYSTEM, "reminder", {"due_at": t.due_at})
                    await self.ledger.notify(s, t, "reminder", "owner", now)
                if now > t.due_at:
                    level = min(
                        1 + int((now - t.due_at) // (0.25 * span)), len(ESCALATION_LADDER) - 1
                    )
                    while t.escalation_level < level:
                        t = dataclasses.replace(t, escalation_level=t.escalation_level + 1)
                        to = ESCALATION_LADDER[t.escalation_level]
                        await self.ledger.save(
                            s,
                            t,
                            SYSTEM,
                            f"overdue: escalated to {to}",
                            {"due_at": t.due_at, "level": t.escalation_level},
                        )
                        await self.ledger.notify(s, t, f"overdue-{t.escalation_level}", to, now)
                        log.error(
                            "hazard ticket %d overdue (grade %s, due %s): escalated to %s",
                            t.id,
                            t.grade,
                            self._when(t.due_at),
                            to,
                        )
        self._changed.set()

    def _when(self, ts: float) -> str:
        return datetime.fromtimestamp(ts, self.tz).strftime("%Y-%m-%d %H:%M")

"""`TicketLedger`: where every ticket change is written, and ticket notices queued.

A change is the ticket's row, its audit entry ("ticket <what>"), and, with
`hazards.webhook`, its message for the platform (`outbound`), all in the caller's
transaction: a change is never stored without its audit entry or its message. Notices
(reminders, escalations, stop-work, chronic hazards) go to the `hazards.notify` channels
through the shared notification queue.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from ehswatch.alarms.store import enqueue_notifications, notification_rows
from ehswatch.audit import record
from ehswatch.component import Wakeable
from ehswatch.config import PlantConfig
from ehswatch.db import Database
from ehswatch.hazards.model import HazardTicket, TicketState
from ehswatch.hazards.store import (
    TicketOutboundRecord,
    TicketRecord,
    ticket_dict,
    ticket_from_row,
    to_record,
    to_ticket,
)
from ehswatch.roles import Actor, NotFound


class TicketLedger:
    def __init__(
        self,
        *,
        config: PlantConfig,
        db: Database,
        clock: Callable[[], float] = time.time,
        notify_wake: Wakeable | None = None,
    ) -> None:
        """`notify_wake` is set once notices are queued (the notifier's wake-up)."""
        self.config = config
        self.settings = config.hazards
        self.db = db
        self._clock = clock
        self._notify_wake = notify_wake

    async def get(self, ticket_id: int) -> HazardTicket:
        async with self.db.new_session() as s:
            r = await s.get(TicketRecord, ticket_id)
        if r is None:
            raise NotFound(f"no ticket {ticket_id}")
        return to_ticket(r)

    async def tickets(self, *, open_only: bool = False) -> list[HazardTicket]:
        async with self.db.new_session() as s:
            q = select(*TicketRecord.__table__.columns).order_by(TicketRecord.id)
            if open_only:
                q = q.where(TicketRecord.state != TicketState.ARCHIVED)
            return [ticket_from_row(row) for row in (await s.execute(q)).mappings()]

    async def save(
        self,
        s: AsyncSession,
        t: HazardTicket,
        actor: Actor,
        what: str,
        detail: dict[str, Any],
        comment: str = "",
    ) -> HazardTicket:
        """Write the ticket (its id is given to a new one), its audit entry and its
        outbound message; the caller commits."""
        rec = await s.merge(to_record(t))
        await s.flush()
        t = dataclasses.replace(t, id=rec.id)
        now = self._clock()
        record(
            s,
            ts=now,
            actor=actor,
            action=f"ticket {what}",
            subject=f"ticket:{t.id}",
            detail={**detail, "state": str(t.state), "grade": t.grade},
            comment=comment,
        )
        if self.settings.webhook is not None:
            s.add(
                TicketOutboundRecord(
                    ticket_id=t.id,
                    ts=now,
                    next_try=now,
                    payload=json.dumps(
                        {
                            "site": self.config.site.id,
                            "change": what,
                            "by": actor.name,
                            "ts": now,
                            "ticket": ticket_dict(t),
                        },
                        ensure_ascii=False,
                    ),
                )
            )
        return t

    async def notify(
        self, s: AsyncSession, t: HazardTicket, what: str, to: str, now: float, person: str = ""
    ) -> None:
        """Queue a notice about the ticket for `to` (a role, or "owner") — `person`, when
        the zone's responsibility map names one — to every `hazards.notify` channel, once
        per ticket and `what`."""
        if not self.settings.notify:
            return
        payload = json.dumps(
            {"what": what, "to": to, "person": person, "ts": now, "ticket": ticket_dict(t)},
            ensure_ascii=False,
        )
        rows = notification_rows(
            key=f"ticket:{t.id}:{what}",
            channels=self.settings.notify,
            zone=t.zone,
            kind="ticket",
            payload=payload,
            now=now,
        )
        await enqueue_notifications(self.db, s, rows)
        if self._notify_wake is not None:
            self._notify_wake.set()

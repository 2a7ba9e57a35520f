"""Tickets that governance opens — a missed cleaning, a cleaning over its limit, a
patrol's failed item, a missed round — into the same ticket flow as an alarm's.

Each has a `source` naming what opened it, unique, so the watch looking twice (or again
after a restart) never opens a second; each is dispatched to its zone's people like any
new ticket, and carries the photos that show it as its evidence.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from ehswatch.hazards.evidence import StoredEvidence
from ehswatch.hazards.model import HazardTicket, TicketState
from ehswatch.hazards.rooms import Rooms
from ehswatch.hazards.store import EvidenceRecord, TicketRecord
from ehswatch.roles import SYSTEM, Actor


async def open_ticket(
    s: AsyncSession,
    rooms: Rooms,
    *,
    source: str,
    kind: str,
    zone: str,
    grade: str,
    title: str,
    now: float,
    sensor: str = "",
    evidence: Sequence[tuple[StoredEvidence, str]] = (),
    by: Actor = SYSTEM,
    state: TicketState = TicketState.DETECTED,
) -> HazardTicket | None:
    """Open, save and dispatch the ticket of `source` (None: it has one already).
    `evidence`: stored photos and their uploaders, attached to the ticket. A ticket
    opened *reported* is not dispatched: it waits to be graded."""
    if await s.scalar(select(TicketRecord.id).where(TicketRecord.source == source)):
        return None
    rule = rooms.config.hazards.grades[grade]  # type: ignore[index]
    t = HazardTicket(
        source=source,
        title=title,
        sensor=sensor,
        zone=zone,
        kind=kind,
        grade=grade,
        created_at=now,
        due_at=now + rule.deadline_h * 3600,
        stop_work=rule.stop_work and state != TicketState.REPORTED,
        state=state,
    )
    t = await rooms.ledger.save(s, t, by, "opened", {"source": source, "grade": grade})
    assert t.id is not None
    for stored, uploader in evidence:
        s.add(
            EvidenceRecord(
                ticket_id=t.id,
                filename=Path(stored.path).name,
                content_type=stored.content_type,
                size=stored.size,
                sha256=stored.sha256,
                path=str(stored.path),
                uploaded_by=uploader,
                at=now,
            )
        )
    if state == TicketState.REPORTED:
        return t
    return await rooms.dispatch.opened(s, t)

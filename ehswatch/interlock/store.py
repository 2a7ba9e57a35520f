"""Interlock zone state in the database.

A trip is written *after* its PLC command (output first: the coil never waits on the
database); people's commands (reset, bypass) are written before they act. Changes are
stored as patches of the fields they change (`patch`), in the order they happened, so a
write queued behind another never undoes a field it does not own.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Boolean, Float, Integer, String, Text, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from ehswatch.db import Database
from ehswatch.interlock.state import PendingBypass, ZoneState
from ehswatch.tables import Base


class ZoneRecord(Base):
    __tablename__ = "interlock_zone"

    zone: Mapped[str] = mapped_column(String(64), primary_key=True)
    tripped: Mapped[bool] = mapped_column(Boolean, default=False)
    seq: Mapped[int] = mapped_column(Integer, default=0)
    tripped_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    trip_votes: Mapped[int] = mapped_column(Integer, default=0)
    trip_cause: Mapped[str] = mapped_column(Text, default="[]")
    bypass_until: Mapped[float | None] = mapped_column(Float, nullable=True)
    bypass_reason: Mapped[str] = mapped_column(Text, default="")
    bypass_measure: Mapped[str] = mapped_column(Text, default="")
    bypass_by: Mapped[str] = mapped_column(Text, default="[]")
    pending: Mapped[str] = mapped_column(Text, default="null")
    output_fault: Mapped[bool] = mapped_column(Boolean, default=False)


def to_state(r: ZoneRecord) -> ZoneState:
    p = json.loads(r.pending)
    return ZoneState(
        zone=r.zone,
        tripped=r.tripped,
        seq=r.seq,
        tripped_at=r.tripped_at,
        trip_votes=r.trip_votes,
        trip_cause=tuple(json.loads(r.trip_cause)),
        bypass_until=r.bypass_until,
        bypass_reason=r.bypass_reason,
        bypass_measure=r.bypass_measure,
        bypass_by=tuple(json.loads(r.bypass_by)),
        pending=PendingBypass(**p) if p else None,
        output_fault=r.output_fault,
    )


async def load_all(session: AsyncSession) -> dict[str, ZoneState]:
    rows = (await session.execute(select(ZoneRecord))).scalars().all()
    return {r.zone: to_state(r) for r in rows}


def values_of(s: ZoneState) -> dict[str, Any]:
    """The zone's state as the columns of its row (without the key)."""
    pending = None
    if s.pending is not None:
        p = s.pending
        pending = {
            "by": p.by,
            "role": p.role,
            "at": p.at,
            "reason": p.reason,
            "measure": p.measure,
            "hours": p.hours,
        }
    return {
        "tripped": s.tripped,
        "seq": s.seq,
        "tripped_at": s.tripped_at,
        "trip_votes": s.trip_votes,
        "trip_cause": json.dumps(list(s.trip_cause)),
        "bypass_until": s.bypass_until,
        "bypass_reason": s.bypass_reason,
        "bypass_measure": s.bypass_measure,
        "bypass_by": json.dumps(list(s.bypass_by)),
        "pending": json.dumps(pending, ensure_ascii=False),
        "output_fault": s.output_fault,
    }


_DEFAULTS = values_of(ZoneState(zone=""))


async def patch(db: Database, session: AsyncSession, zone: str, values: dict[str, Any]) -> None:
    """Set the given columns of the zone's row (created with the defaults if missing).

    One statement (an upsert): a trip's row is written on every latch, and a read before
    the write would double what the latch costs the database."""
    stmt = db.insert(ZoneRecord).values(zone=zone, **{**_DEFAULTS, **values})
    if values:
        stmt = stmt.on_conflict_do_update(index_elements=[ZoneRecord.zone], set_=values)
    else:
        stmt = stmt.on_conflict_do_nothing()
    await session.execute(stmt)

"""The append-only audit log: who did what, when, to what, and why (docs/interlock.md,
docs/hazards.md).

Every interlock trip, reset, refusal and bypass, and (later) every hazard-ticket action,
is one row. Rows are only ever inserted (on SQLite, triggers refuse UPDATE and DELETE).
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Float, Integer, String, Text, insert, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from ehswatch.db import Database
from ehswatch.roles import Actor
from ehswatch.tables import Base


class AuditEntry(Base):
    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    ts: Mapped[float] = mapped_column(Float, index=True)
    actor: Mapped[str] = mapped_column(String(128))
    role: Mapped[str] = mapped_column(String(32))
    action: Mapped[str] = mapped_column(String(64), index=True)
    subject: Mapped[str] = mapped_column(String(128), index=True)  # e.g. "zone:polishing-1"
    detail: Mapped[str] = mapped_column(Text, default="{}")  # JSON
    comment: Mapped[str] = mapped_column(Text, default="")

    def details(self) -> dict[str, Any]:
        return dict(json.loads(self.detail))


async def recent_entries(
    db: Database, *, subject: str | None = None, limit: int = 200
) -> list[dict[str, Any]]:
    """The newest `limit` entries (of `subject`, if given), newest first, as the API
    shows them."""
    async with db.new_session() as s:
        q = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
        if subject:
            q = q.where(AuditEntry.subject == subject)
        return [
            {
                "id": e.id,
                "ts": e.ts,
                "actor": e.actor,
                "role": e.role,
                "action": e.action,
                "subject": e.subject,
                "detail": e.details(),
                "comment": e.comment,
            }
            for e in (await s.execute(q)).scalars()
        ]


def storable(value: Any) -> Any:
    """`value` with every string made valid UTF-8 (a lone surrogate escaped): an entry
    the database can never take would turn a refusal into a failure, and hold every
    later write behind it."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return value.encode("utf-8", "backslashreplace").decode("utf-8")
        return value
    if isinstance(value, dict):
        return {storable(k): storable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(storable(v) for v in value)
    return value


ACTOR_MAX, ROLE_MAX, ACTION_MAX, SUBJECT_MAX = 128, 32, 64, 128  # the columns' lengths


def entry_row(
    *,
    ts: float,
    actor: Actor,
    action: str,
    subject: str,
    detail: dict[str, Any] | None = None,
    comment: str = "",
) -> dict[str, Any]:
    """One entry as the columns of its row, for `append`: text made storable, names cut
    to their columns (PostgreSQL refuses a longer one)."""
    return {
        "ts": ts,
        "actor": storable(actor.name)[:ACTOR_MAX],
        "role": storable(actor.role)[:ROLE_MAX],
        "action": storable(action)[:ACTION_MAX],
        "subject": storable(subject)[:SUBJECT_MAX],
        "detail": json.dumps(storable(detail or {}), ensure_ascii=False, sort_keys=True),
        "comment": storable(comment),
    }


async def append(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Insert `entry_row`s in one statement, in their order (committed with the change
    they record). For the paths that audit often (every trip): an ORM `record` costs a
    flush and a RETURNING per entry."""
    if rows:
        await session.execute(insert(AuditEntry), rows)


def record(
    session: AsyncSession,
    *,
    ts: float,
    actor: Actor,
    action: str,
    subject: str,
    detail: dict[str, Any] | None = None,
    comment: str = "",
) -> AuditEntry:
    """Add one entry to the session (committed with the change it records)."""
    entry = AuditEntry(
        **entry_row(
            ts=ts, actor=actor, action=action, subject=subject, detail=detail, comment=comment
        )
    )
    session.add(entry)
    return entry

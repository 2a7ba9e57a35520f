"""`/api/audit`: the append-only audit log, newest first."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query
from sqlalchemy import select

from ehswatch.api.deps import DatabaseDep, Viewer
from ehswatch.audit import AuditEntry

router = APIRouter(prefix="/api", tags=["audit"])


@router.get("/audit")
async def audit(
    db: DatabaseDep,
    _: Viewer,
    subject: str | None = None,
    limit: int = Query(200, ge=1, le=5000),
) -> list[dict[str, Any]]:
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

"""`/api/audit`: the append-only audit log, newest first."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query

from ehswatch.api.deps import DatabaseDep, Viewer
from ehswatch.api.models import READ_ERRORS, AuditEntry
from ehswatch.audit import recent_entries

router = APIRouter(prefix="/api", tags=["audit"], responses=READ_ERRORS)


@router.get("/audit", response_model=list[AuditEntry])
async def audit(
    db: DatabaseDep,
    _: Viewer,
    subject: str | None = None,
    limit: int = Query(200, ge=1, le=5000),
) -> list[dict[str, Any]]:
    """The audit log, newest first: every trip, reset, bypass, ticket change and refusal, with
    who, when and why."""
    return await recent_entries(db, subject=subject, limit=limit)

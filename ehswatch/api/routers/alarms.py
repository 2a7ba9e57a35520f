"""`/api/alarms` (+ `/{id}/ack`, `/{id}/shelve`, `/{id}/unshelve`, `/metrics`)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field
from sqlalchemy import select

from ehswatch.alarms.metrics import alarm_metrics
from ehswatch.alarms.store import AlarmRecord, alarm_dict, to_alarm
from ehswatch.api.deps import AlarmsDep, Id, Operator, ServiceDep, Supervisor, Viewer
from ehswatch.api.models import Comment

router = APIRouter(prefix="/api/alarms", tags=["alarms"])


class ShelveRequest(BaseModel):
    minutes: float = Field(gt=0, le=24 * 60)
    reason: str = Field(min_length=1, max_length=2000)
    comment: str = Field("", max_length=2000)


@router.get("")
async def list_alarms(
    service: ServiceDep,
    _: Viewer,
    include_closed: bool = False,
    limit: int = Query(200, ge=1, le=5000),
) -> list[dict[str, Any]]:
    """Open alarms, newest first (with `include_closed`, closed ones too)."""
    async with service.db.new_session() as s:
        q = select(AlarmRecord).order_by(AlarmRecord.last_at.desc()).limit(limit)
        if not include_closed:
            q = q.where(AlarmRecord.closed_at.is_(None))
        return [alarm_dict(to_alarm(r)) for r in (await s.execute(q)).scalars()]


@router.get("/metrics")
async def metrics(service: ServiceDep, _: Viewer) -> dict[str, Any]:
    return await alarm_metrics(service.db, service.clock())  # the alarms' own clock


@router.post("/{alarm_id}/ack")
async def ack(
    alarm_id: Id, alarms: AlarmsDep, user: Operator, body: Comment | None = None
) -> dict[str, Any]:
    return alarm_dict(await alarms.ack(alarm_id, user, (body or Comment()).comment))


@router.post("/{alarm_id}/shelve")
async def shelve(
    alarm_id: Id, body: ShelveRequest, alarms: AlarmsDep, user: Supervisor
) -> dict[str, Any]:
    return alarm_dict(
        await alarms.shelve(
            alarm_id, user, minutes=body.minutes, reason=body.reason, comment=body.comment
        )
    )


@router.post("/{alarm_id}/unshelve")
async def unshelve(
    alarm_id: Id, alarms: AlarmsDep, user: Supervisor, body: Comment | None = None
) -> dict[str, Any]:
    return alarm_dict(await alarms.unshelve(alarm_id, user, (body or Comment()).comment))

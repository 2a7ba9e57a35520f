"""`/api/alarms` (+ `/{id}/ack`, `/{id}/shelve`, `/{id}/unshelve`, `/metrics`).

Lists come from the database; acknowledge, shelve and unshelve are done by the control
part, which holds the alarms' states (over the command channel)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field
from sqlalchemy import select

from ehswatch.alarms.metrics import alarm_metrics
from ehswatch.alarms.store import AlarmRecord, alarm_dict, to_alarm
from ehswatch.api.deps import ControlDep, DatabaseDep, DeskDep, Id, Operator, Supervisor, Viewer
from ehswatch.api.models import Comment

router = APIRouter(prefix="/api/alarms", tags=["alarms"])


class ShelveRequest(BaseModel):
    minutes: float = Field(gt=0, le=24 * 60)
    reason: str = Field(min_length=1, max_length=2000)
    comment: str = Field("", max_length=2000)


@router.get("")
async def list_alarms(
    db: DatabaseDep,
    _: Viewer,
    include_closed: bool = False,
    limit: int = Query(200, ge=1, le=5000),
) -> list[dict[str, Any]]:
    """Open alarms, newest first (with `include_closed`, closed ones too)."""
    async with db.new_session() as s:
        q = select(AlarmRecord).order_by(AlarmRecord.last_at.desc()).limit(limit)
        if not include_closed:
            q = q.where(AlarmRecord.closed_at.is_(None))
        return [alarm_dict(to_alarm(r)) for r in (await s.execute(q)).scalars()]


@router.get("/metrics")
async def metrics(desk: DeskDep, _: Viewer) -> dict[str, Any]:
    return await alarm_metrics(desk.db, desk.clock())


@router.post("/{alarm_id}/ack")
async def ack(
    alarm_id: Id, control: ControlDep, user: Operator, body: Comment | None = None
) -> dict[str, Any]:
    comment = (body or Comment()).comment
    return await control.call("alarm.ack", user, alarm_id=alarm_id, comment=comment)


@router.post("/{alarm_id}/shelve")
async def shelve(
    alarm_id: Id, body: ShelveRequest, control: ControlDep, user: Supervisor
) -> dict[str, Any]:
    return await control.call("alarm.shelve", user, alarm_id=alarm_id, **body.model_dump())


@router.post("/{alarm_id}/unshelve")
async def unshelve(
    alarm_id: Id, control: ControlDep, user: Supervisor, body: Comment | None = None
) -> dict[str, Any]:
    comment = (body or Comment()).comment
    return await control.call("alarm.unshelve", user, alarm_id=alarm_id, comment=comment)

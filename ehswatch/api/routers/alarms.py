"""`/api/alarms` (+ `/{id}/ack`, `/{id}/shelve`, `/{id}/unshelve`, `/metrics`).

Lists come from the database; acknowledge, shelve and unshelve are done by the control
part, which holds the alarms' states (over the command channel)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query
from fastapi.responses import Response
from pydantic import BaseModel, Field

from ehswatch.alarms.metrics import alarm_metrics
from ehswatch.alarms.store import alarm_dict, recent_alarms
from ehswatch.api.deps import ControlDep, DeskDep, Id, Operator, Supervisor, Viewer
from ehswatch.api.encoding import encode_json
from ehswatch.api.models import ACT_ERRORS, READ_ERRORS, Alarm, Comment

router = APIRouter(prefix="/api/alarms", tags=["alarms"], responses=READ_ERRORS)


class ShelveRequest(BaseModel):
    minutes: float = Field(gt=0, le=24 * 60)
    reason: str = Field(min_length=1, max_length=2000)
    comment: str = Field("", max_length=2000)


@router.get("", response_model=list[Alarm])
async def list_alarms(
    desk: DeskDep,
    _: Viewer,
    include_closed: bool = False,
    limit: int = Query(200, ge=1, le=5000),
) -> Response:
    """Open alarms, the most recently changed first (with `include_closed`, closed ones
    too)."""

    async def build() -> bytes:
        alarms = await recent_alarms(desk.db, include_closed=include_closed, limit=limit)
        return encode_json([alarm_dict(a) for a in alarms])

    body = await desk.recent(("alarms", include_closed, limit), build)
    return Response(body, media_type="application/json")


@router.get("/metrics")
async def metrics(desk: DeskDep, _: Viewer) -> dict[str, Any]:
    """Alarm-management figures (after ISA-18.2): alarms per 10 minutes, floods, standing and
    chattering alarms, time to acknowledge."""
    return await alarm_metrics(desk.db, desk.clock())


@router.post("/{alarm_id}/ack", response_model=Alarm, responses=ACT_ERRORS)
async def ack(
    alarm_id: Id, control: ControlDep, user: Operator, body: Comment | None = None
) -> dict[str, Any]:
    """Acknowledge an unacknowledged alarm (operator or above). Done by the control part;
    audited."""
    comment = (body or Comment()).comment
    return await control.call("alarm.ack", user, alarm_id=alarm_id, comment=comment)


@router.post("/{alarm_id}/shelve", response_model=Alarm, responses=ACT_ERRORS)
async def shelve(
    alarm_id: Id, body: ShelveRequest, control: ControlDep, user: Supervisor
) -> dict[str, Any]:
    """Shelve an alarm for a while, with a reason (supervisor or above). Never an interlock-
    tier alarm or a zone condition; audited."""
    return await control.call("alarm.shelve", user, alarm_id=alarm_id, **body.model_dump())


@router.post("/{alarm_id}/unshelve", response_model=Alarm, responses=ACT_ERRORS)
async def unshelve(
    alarm_id: Id, control: ControlDep, user: Supervisor, body: Comment | None = None
) -> dict[str, Any]:
    """Take an alarm off the shelf before its time (supervisor or above); audited."""
    comment = (body or Comment()).comment
    return await control.call("alarm.unshelve", user, alarm_id=alarm_id, comment=comment)

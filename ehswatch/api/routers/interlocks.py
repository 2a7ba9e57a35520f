"""`/api/interlocks` (+ `/{zone}/reset`, `/{zone}/bypass`, `/{zone}/bypass/end`).

States are shown at the service clock's time (a bypass's remaining time, whether it is
on), the clock the controller decides by, never the wall clock.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from ehswatch.api.deps import InterlockDep, ServiceDep, Supervisor, Viewer
from ehswatch.api.models import Comment

router = APIRouter(prefix="/api/interlocks", tags=["interlocks"])


class BypassRequest(BaseModel):
    reason: str = Field("", max_length=2000, description="first approver: why")
    measure: str = Field("", max_length=2000, description="first approver: compensating measure")
    hours: float = Field(gt=0, le=24)
    comment: str = Field("", max_length=2000)


@router.get("")
async def list_interlocks(
    interlock: InterlockDep, service: ServiceDep, _: Viewer
) -> list[dict[str, Any]]:
    now = service.clock()
    return [s.public(now) for s in interlock.states.values()]


@router.post("/{zone}/reset")
async def reset(
    zone: str,
    interlock: InterlockDep,
    service: ServiceDep,
    user: Supervisor,
    body: Comment | None = None,
) -> dict[str, Any]:
    s = await interlock.reset(zone, user, (body or Comment()).comment)
    return s.public(service.clock())


@router.post("/{zone}/bypass")
async def bypass(
    zone: str, body: BypassRequest, interlock: InterlockDep, service: ServiceDep, user: Supervisor
) -> dict[str, Any]:
    """The first call (safety director or gm) asks; the second, by the other role, turns it on."""
    s = await interlock.request_bypass(
        zone, user, reason=body.reason, measure=body.measure, hours=body.hours, comment=body.comment
    )
    return s.public(service.clock())


@router.post("/{zone}/bypass/end")
async def end_bypass(
    zone: str,
    interlock: InterlockDep,
    service: ServiceDep,
    user: Supervisor,
    body: Comment | None = None,
) -> dict[str, Any]:
    s = await interlock.end_bypass(zone, user, (body or Comment()).comment)
    return s.public(service.clock())

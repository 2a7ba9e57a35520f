"""`/api/interlocks` (+ `/{zone}/reset`, `/{zone}/bypass`, `/{zone}/bypass/end`).

The list is the control part's latest published state (at most one tick old), shown
at the control part's clock (a bypass's remaining time, whether it is on), never the wall
clock. Reset and bypass are done by the control part, over the command channel; its
refusals (403, 409) come back as they are.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, Field

from ehswatch.api.deps import ControlDep, DeskDep, Supervisor, Viewer
from ehswatch.api.models import ACT_ERRORS, READ_ERRORS, Comment, Interlock, errors

router = APIRouter(prefix="/api/interlocks", tags=["interlocks"], responses=READ_ERRORS)


class BypassRequest(BaseModel):
    reason: str = Field("", max_length=2000, description="first approver: why")
    measure: str = Field("", max_length=2000, description="first approver: compensating measure")
    hours: float = Field(gt=0, le=24)
    comment: str = Field("", max_length=2000)


@router.get("", response_model=list[Interlock], responses=errors(404, 503))
async def list_interlocks(desk: DeskDep, _: Viewer) -> list[dict[str, Any]]:
    """Every interlocked zone: latched or not, the current vote, bypass and pending bypass,
    output and durability faults."""
    status = desk.status()[1]
    if status is None:
        raise HTTPException(503, "the control part has not published its state")
    states: list[dict[str, Any]] | None = status.get("interlocks")
    if states is None:
        raise HTTPException(404, "this plant has no interlocked zones")
    return states


@router.post("/{zone}/reset", response_model=Interlock, responses=ACT_ERRORS)
async def reset(
    zone: str, control: ControlDep, user: Supervisor, body: Comment | None = None
) -> dict[str, Any]:
    """Reset a tripped zone (supervisor or above): refused while the vote holds, an input is
    faulted or not yet past its setpoint by the deadband. Audited, refusals too."""
    comment = (body or Comment()).comment
    return await control.call("interlock.reset", user, zone=zone, comment=comment)


@router.post("/{zone}/bypass", response_model=Interlock, responses=ACT_ERRORS)
async def bypass(
    zone: str, body: BypassRequest, control: ControlDep, user: Supervisor
) -> dict[str, Any]:
    """The first call (safety director or gm) asks; the second, by the other role, turns it on."""
    return await control.call("interlock.bypass", user, zone=zone, **body.model_dump())


@router.post("/{zone}/bypass/end", response_model=Interlock, responses=ACT_ERRORS)
async def end_bypass(
    zone: str, control: ControlDep, user: Supervisor, body: Comment | None = None
) -> dict[str, Any]:
    """End a zone's bypass before its time (supervisor or above); a vote that holds then trips
    the zone at once."""
    comment = (body or Comment()).comment
    return await control.call("interlock.bypass_end", user, zone=zone, comment=comment)

"""`/api/predictions`: the crossings predicted now, and the latest predicted events."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel

from ehswatch.api.deps import DeskDep, Viewer
from ehswatch.api.models import READ_ERRORS, errors

router = APIRouter(prefix="/api/predictions", tags=["analytics"], responses=READ_ERRORS)


class Predicted(BaseModel):
    sensor: str
    zone: str
    tier: int
    eta_at: float


class PredictedEvent(BaseModel):
    seq: int
    sensor: str
    zone: str
    event: str
    tier: int
    eta_at: float | None
    at: float


class PredictionsOut(BaseModel):
    """`active`: each sensor heading for a setpoint, with the tier (2 alarm, 3
    interlock) and the expected time of crossing, soonest first; `events`: what started
    ("predicted") or ended ("cleared") lately, oldest first. A prediction trips nothing."""

    active: list[Predicted]
    events: list[PredictedEvent]


@router.get("", response_model=PredictionsOut, responses=errors(503))
async def predictions(desk: DeskDep, _: Viewer) -> dict[str, Any]:
    status = desk.status()[1]
    if status is None:
        raise HTTPException(503, "the control part has not published its state")
    found: dict[str, Any] = status.get("predictions") or {"active": [], "events": []}
    return found

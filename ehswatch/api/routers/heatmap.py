"""`/api/heatmap`: each zone's risk by hour of the week, and the riskiest periods."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel

from ehswatch.analytics.heatmap import heatmap
from ehswatch.api.deps import EPOCH_MAX, DeskDep, Viewer
from ehswatch.api.models import READ_ERRORS

router = APIRouter(prefix="/api/heatmap", tags=["analytics"], responses=READ_ERRORS)
DAYS_DEFAULT = 90


class HeatmapOut(BaseModel):
    """`score`, `alarms`, `tickets`: one row per zone (in `zones`' order) of 168 hours,
    Monday 00:00 first, on the site's clock; `top`: the riskiest periods and zones."""

    since: float
    until: float
    zones: list[str]
    score: list[list[float]]
    alarms: list[list[int]]
    tickets: list[list[int]]
    top: dict[str, list[dict[str, Any]]]


@router.get("", response_model=HeatmapOut)
async def risk_heatmap(
    desk: DeskDep,
    _: Viewer,
    since: Annotated[float | None, Query(ge=0, le=EPOCH_MAX)] = None,
    until: Annotated[float | None, Query(ge=0, le=EPOCH_MAX)] = None,
) -> dict[str, Any]:
    """Alarms (weighed by their peak tier) and tickets (by grade) of [since, until) —
    the last 90 days by default — by zone and hour of the week."""
    now = desk.clock()
    end = until if until is not None else now
    start = since if since is not None else end - DAYS_DEFAULT * 86400
    zones = [z.id for z in desk.config.zones]
    return await heatmap(desk.db, zones, desk.config.site.timezone, start, end)

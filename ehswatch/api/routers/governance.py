"""`/api/governance` (the dust governance board's figures) and `/api/exports` (the
hazard ledger, cleaning and patrol records as Excel workbooks)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Query
from fastapi.responses import Response

from ehswatch.api.deps import EPOCH_MAX, HazardsDep, Viewer
from ehswatch.api.models import READ_ERRORS, errors
from ehswatch.governance.board import month_starts

router = APIRouter(tags=["governance"], responses=READ_ERRORS)
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


@router.get("/api/governance", response_model=dict[str, Any])
async def governance(hazards: HazardsDep, _: Viewer) -> dict[str, Any]:
    """Per zone: the readings of the current and past shifts (peak, mean, time at each
    tier per sensor type), cleaning records done and missed, patrol rounds done and
    missed, open tickets by grade with progress and deadline, and the hazards of this
    month against last month and the same month last year."""
    return await hazards.governance.board()


@router.get(
    "/api/exports/{kind}.xlsx",
    response_class=Response,
    responses={**errors(404, 422), 200: {"content": {XLSX: {}}}},
)
async def export(
    kind: Literal["ledger", "cleaning", "patrols"],
    hazards: HazardsDep,
    _: Viewer,
    since: Annotated[float | None, Query(ge=0, le=EPOCH_MAX, description="epoch seconds")] = None,
    until: Annotated[float | None, Query(ge=0, le=EPOCH_MAX, description="epoch seconds")] = None,
    zone: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    """The hazard ledger (隐患台账), cleaning or patrol records of [since, until) — this
    month by default — of one zone or all, as an Excel workbook."""
    gov = hazards.governance
    now = gov.rooms.clock()
    this = month_starts(now, ZoneInfo(gov.config.site.timezone))["this"]
    start, end = since if since is not None else this[0], until if until is not None else now
    data = await gov.export(kind, since=start, until=end, zone=zone)
    day = datetime.fromtimestamp(start, ZoneInfo(gov.config.site.timezone)).strftime("%Y%m%d")
    name = f"{kind}-{zone or 'all'}-{day}.xlsx"
    return Response(
        data, media_type=XLSX, headers={"Content-Disposition": f'attachment; filename="{name}"'}
    )

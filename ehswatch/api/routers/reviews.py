"""`/api/reviews`: the monthly safety performance review (月度安全履职评估)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path
from fastapi.responses import Response
from pydantic import BaseModel

from ehswatch.analytics.review import monthly
from ehswatch.analytics.review_files import review_pdf, review_xlsx
from ehswatch.api.deps import HazardsDep, require
from ehswatch.api.models import READ_ERRORS, errors
from ehswatch.api.routers.governance import XLSX
from ehswatch.governance.sheets import NoFont
from ehswatch.roles import Actor

router = APIRouter(prefix="/api/reviews", tags=["analytics"], responses=READ_ERRORS)
Manager = Annotated[Actor, Depends(require("dept_head"))]
Month = Annotated[str, Path(pattern=r"^\d{4}-(0[1-9]|1[0-2])$", description="YYYY-MM")]


class ReviewOut(BaseModel):
    """`this` and `last` (the month before): each with `people` and `departments`, each
    person's figures and `scores` (0–1 per axis of the radar chart)."""

    month: str
    this: dict[str, Any]
    last: dict[str, Any]


async def _review(hazards: Any, month: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    year, mon = (int(p) for p in month.split("-"))
    if not 2000 <= year <= 2999:
        raise HTTPException(422, "month: a year from 2000 to 2999")
    chains = await hazards.owners.chains()
    return await monthly(hazards.governance.config, hazards.governance.db, chains, year, mon)


@router.get("/{month}.xlsx", response_class=Response, responses={200: {"content": {XLSX: {}}}})
async def review_workbook(month: Month, hazards: HazardsDep, _: Manager) -> Response:
    this, last, label = await _review(hazards, month)
    site = hazards.governance.config.site.name
    data = await asyncio.to_thread(review_xlsx, site, label, this, last)
    return Response(
        data,
        media_type=XLSX,
        headers={"Content-Disposition": f'attachment; filename="review-{label}.xlsx"'},
    )


@router.get(
    "/{month}.pdf",
    response_class=Response,
    responses={**errors(503), 200: {"content": {"application/pdf": {}}}},
)
async def review_report(month: Month, hazards: HazardsDep, _: Manager) -> Response:
    this, last, label = await _review(hazards, month)
    site = hazards.governance.config.site.name
    try:
        data = await asyncio.to_thread(review_pdf, site, label, this, last)
    except NoFont as exc:
        raise HTTPException(503, str(exc)) from None
    return Response(
        data,
        media_type="application/pdf",
        headers={"Content-Disposition": f'attachment; filename="review-{label}.pdf"'},
    )


@router.get("/{month}", response_model=ReviewOut)
async def review(month: Month, hazards: HazardsDep, _: Manager) -> dict[str, Any]:
    """Each person's and department's month (department head or above): tickets closed
    on time and overdue, time to rectify, time to acknowledge alarms, rounds and
    cleaning records done against planned, reports made; and last month's."""
    this, last, label = await _review(hazards, month)
    return {"month": label, "this": this, "last": last}

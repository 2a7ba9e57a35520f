"""`/api/reports`: hazard and near-miss reports by anyone (docs/analytics.md), and the
grading of a reported ticket."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from pydantic import BaseModel, Field

from ehswatch.api.deps import EPOCH_MAX, HazardsDep, Id, MaybeCaller, Supervisor, Viewer
from ehswatch.api.models import ACT_ERRORS, READ_ERRORS, Comment, HazardTicket, errors
from ehswatch.api.routers.cleaning import read_photo
from ehswatch.hazards.store import ticket_dict

router = APIRouter(tags=["analytics"], responses=READ_ERRORS)


class ReportMade(BaseModel):
    id: int
    zone: str
    ticket_id: int
    anonymous: bool


class ReportCounts(BaseModel):
    total: int
    by_zone: dict[str, int]
    by_person: list[dict[str, Any]]


class GradeReport(Comment):
    grade: str = Field(pattern="^[ABC]$")


class DismissReport(BaseModel):
    reason: str = Field(min_length=1, max_length=2000)


@router.post(
    "/api/reports/{zone}",
    response_model=ReportMade,
    responses={**ACT_ERRORS, **errors(413, 415, 422, 429)},
)
async def report(
    zone: str,
    request: Request,
    hazards: HazardsDep,
    user: MaybeCaller,
    text: Annotated[str, Form(min_length=1, max_length=2000, description="what was seen")],
    photo: Annotated[UploadFile | None, File(description="a photo of it")] = None,
    thumbnail: Annotated[UploadFile | None, File(description="a small copy (≤ 256 KB)")] = None,
) -> dict[str, Any]:
    """Report a hazard or a near miss in `zone`: signed in, or anonymously where the site
    allows it (`governance.anonymous_reports`; else 403). It enters the ticket flow as
    *reported* for the zone's team leader to grade. Audited."""
    picture = await read_photo(photo, thumbnail, hazards.evidence.max_bytes)
    address = request.client.host if request.client else ""
    return await hazards.near_misses.report(zone, user, text=text, photo=picture, address=address)


@router.get("/api/reports/counts", response_model=ReportCounts)
async def report_counts(
    hazards: HazardsDep,
    _: Viewer,
    since: Annotated[float, Query(ge=0, le=EPOCH_MAX)] = 0.0,
    until: Annotated[float, Query(ge=0, le=EPOCH_MAX)] = EPOCH_MAX,
) -> dict[str, Any]:
    """Reports per zone and per person in [since, until), with how many were taken up."""
    return await hazards.near_misses.counts(since=since, until=until)


@router.post(
    "/api/hazards/{ticket_id}/accept-report", response_model=HazardTicket, responses=ACT_ERRORS
)
async def accept_report(
    ticket_id: Id, body: GradeReport, hazards: HazardsDep, user: Supervisor
) -> dict[str, Any]:
    """Grade a reported ticket (supervisor or above): it becomes a ticket of that grade,
    registered to the zone's team leader with the grade's deadline."""
    t = await hazards.accept_report(ticket_id, user, grade=body.grade, comment=body.comment)
    return ticket_dict(t)


@router.post(
    "/api/hazards/{ticket_id}/dismiss-report", response_model=HazardTicket, responses=ACT_ERRORS
)
async def dismiss_report(
    ticket_id: Id, body: DismissReport, hazards: HazardsDep, user: Supervisor
) -> dict[str, Any]:
    """Dismiss a reported ticket with the reason (supervisor or above): it is archived."""
    return ticket_dict(await hazards.dismiss_report(ticket_id, user, reason=body.reason))

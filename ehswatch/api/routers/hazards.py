"""`/api/hazards` (+ `/{id}` and the workflow actions, `/report`)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, File, UploadFile
from fastapi.responses import FileResponse, Response
from pydantic import AwareDatetime, BaseModel, Field

from ehswatch.api.deps import DeskDep, HazardsDep, Id, Operator, Supervisor, Viewer
from ehswatch.api.encoding import encode_json
from ehswatch.api.files import kept_file
from ehswatch.api.models import (
    ACT_ERRORS,
    READ_ERRORS,
    Comment,
    EvidenceAdded,
    HazardTicket,
    errors,
)
from ehswatch.hazards.evidence import THUMBNAIL_MAX_BYTES, sniff, thumbnail_for
from ehswatch.hazards.store import ticket_dict

router = APIRouter(prefix="/api/hazards", tags=["hazards"], responses=READ_ERRORS)


class RegisterRequest(BaseModel):
    owner: str = Field(min_length=1, max_length=128)
    due_at: AwareDatetime | Annotated[float, Field(allow_inf_nan=False)] | None = Field(
        None,
        description="ISO 8601 with its offset (2026-12-01T18:00:00+08:00), or seconds "
        "since the epoch; default: the grade's deadline",
    )

    def due_epoch(self) -> float | None:
        if isinstance(self.due_at, datetime):
            return self.due_at.timestamp()
        return self.due_at

    comment: str = Field("", max_length=2000)


class SubmitRequest(BaseModel):
    measure: str = Field(min_length=1, max_length=5000)
    comment: str = Field("", max_length=2000)


class VerifyRequest(BaseModel):
    passed: bool
    reason: str = Field("", max_length=2000)


class GradeRequest(BaseModel):
    grade: str = Field(pattern="^[ABC]$")
    reason: str = Field(min_length=1, max_length=2000)


@router.get("", response_model=list[HazardTicket])
async def list_tickets(desk: DeskDep, _: Viewer, open_only: bool = True) -> Response:
    """The tickets, newest first (by default those not archived)."""

    async def build() -> bytes:
        tickets = await desk.hazards.tickets(open_only=open_only)
        return encode_json([ticket_dict(t) for t in reversed(tickets)])

    return Response(await desk.recent(("tickets", open_only), build), media_type="application/json")


@router.get("/report")
async def report(hazards: HazardsDep, _: Viewer) -> dict[str, Any]:
    """The plant manager's figures: open tickets by grade, zone and state, the overdue and
    chronic ones, the mean time to rectify, this month against last."""
    return await hazards.report()


@router.get("/{ticket_id}", response_model=HazardTicket, responses=errors(404))
async def get_ticket(ticket_id: Id, hazards: HazardsDep, _: Viewer) -> dict[str, Any]:
    """One hazard ticket, whatever its state."""
    return ticket_dict(await hazards.get(ticket_id))


@router.post("/{ticket_id}/register", response_model=HazardTicket, responses=ACT_ERRORS)
async def register(
    ticket_id: Id, body: RegisterRequest, hazards: HazardsDep, user: Supervisor
) -> dict[str, Any]:
    """Register a detected ticket: name its owner (the rectifier) and, at the latest, the
    grade's deadline (supervisor or above)."""
    return ticket_dict(
        await hazards.register(
            ticket_id, user, owner=body.owner, due_at=body.due_epoch(), comment=body.comment
        )
    )


class AssignRequest(BaseModel):
    owner: str = Field(min_length=1, max_length=128)
    comment: str = Field("", max_length=2000)


@router.post("/{ticket_id}/assign", response_model=HazardTicket, responses=ACT_ERRORS)
async def assign(
    ticket_id: Id, body: AssignRequest, hazards: HazardsDep, user: Supervisor
) -> dict[str, Any]:
    """Hand a registered or rectifying ticket to another owner, a known person (supervisor
    or above); audited."""
    return ticket_dict(
        await hazards.assign(ticket_id, user, owner=body.owner, comment=body.comment)
    )


@router.post("/{ticket_id}/confirm-stop-work", response_model=HazardTicket, responses=ACT_ERRORS)
async def confirm_stop_work(
    ticket_id: Id, hazards: HazardsDep, user: Supervisor, body: Comment | None = None
) -> dict[str, Any]:
    """Work has been seen stopped in the zone of an A (stop-work) ticket (supervisor or
    above): the ticket stops escalating past the GM for it. Audited."""
    return ticket_dict(
        await hazards.confirm_stop_work(ticket_id, user, (body or Comment()).comment)
    )


@router.post("/{ticket_id}/start", response_model=HazardTicket, responses=ACT_ERRORS)
async def start(
    ticket_id: Id, hazards: HazardsDep, user: Operator, body: Comment | None = None
) -> dict[str, Any]:
    """The owner starts the rectification."""
    return ticket_dict(await hazards.start(ticket_id, user, (body or Comment()).comment))


@router.post(
    "/{ticket_id}/evidence",
    response_model=EvidenceAdded,
    responses={**ACT_ERRORS, **errors(413, 415)},
)
async def evidence(
    ticket_id: Id,
    hazards: HazardsDep,
    user: Operator,
    file: Annotated[UploadFile, File(description="photo (JPEG/PNG/WebP) or PDF")],
    thumbnail: Annotated[
        UploadFile | None, File(description="optional: a small copy of the photo (≤ 256 KB)")
    ] = None,
) -> dict[str, Any]:
    """Add a photo or a document to a ticket being rectified (the owner, or a supervisor or
    above); kept with its SHA-256, and its thumbnail when one comes with it."""
    limit = hazards.evidence.max_bytes
    content = await file.read(limit + 1)  # never more than one byte past the limit
    small = await thumbnail.read(THUMBNAIL_MAX_BYTES + 1) if thumbnail is not None else None
    ev = await hazards.add_evidence(
        ticket_id,
        user,
        filename=file.filename or "evidence",
        content=content,
        thumbnail=small,
    )
    return {"id": ev.id, "sha256": ev.sha256, "size": ev.size, "content_type": ev.content_type}


@router.get("/{ticket_id}/evidence", response_model=list[EvidenceAdded], responses=errors(404))
async def list_evidence(ticket_id: Id, hazards: HazardsDep, _: Viewer) -> list[dict[str, Any]]:
    """The ticket's photos and documents, oldest first (each served at
    `/api/hazards/{ticket_id}/evidence/{id}`)."""
    return [
        {"id": e.id, "sha256": e.sha256, "size": e.size, "content_type": e.content_type}
        for e in await hazards.evidence_of(ticket_id)
    ]


@router.get(
    "/{ticket_id}/evidence/{evidence_id}",
    response_class=FileResponse,
    responses={**errors(404), 200: {"description": "the photo or document as uploaded"}},
)
async def evidence_file(
    ticket_id: Id, evidence_id: Id, hazards: HazardsDep, _: Viewer
) -> FileResponse:
    """One photo or document of a ticket, as it was uploaded (its type sniffed then)."""
    ev = await hazards.evidence_file(ticket_id, evidence_id)
    return kept_file(Path(ev.path), ev.content_type)


@router.get(
    "/{ticket_id}/evidence/{evidence_id}/thumbnail",
    response_class=FileResponse,
    responses={**errors(404), 200: {"description": "the thumbnail, or the photo itself"}},
)
async def evidence_thumbnail(
    ticket_id: Id, evidence_id: Id, hazards: HazardsDep, _: Viewer
) -> FileResponse:
    """A photo's thumbnail, as the phone made it; the photo itself when it came without."""
    ev = await hazards.evidence_file(ticket_id, evidence_id)
    thumb = thumbnail_for(Path(ev.path))
    kind = sniff(thumb.read_bytes()[:16]) if thumb is not None else None
    if thumb is None or kind is None:
        return kept_file(Path(ev.path), ev.content_type)
    return kept_file(thumb, kind[0])


@router.post("/{ticket_id}/submit", response_model=HazardTicket, responses=ACT_ERRORS)
async def submit(
    ticket_id: Id, body: SubmitRequest, hazards: HazardsDep, user: Operator
) -> dict[str, Any]:
    """The rectifier submits the measure taken; needs evidence on the ticket."""
    return ticket_dict(
        await hazards.submit(ticket_id, user, measure=body.measure, comment=body.comment)
    )


@router.post("/{ticket_id}/verify", response_model=HazardTicket, responses=ACT_ERRORS)
async def verify(
    ticket_id: Id, body: VerifyRequest, hazards: HazardsDep, user: Supervisor
) -> dict[str, Any]:
    """Verify a submitted rectification (supervisor or above, never the rectifier): pass it on
    to approval, or send it back with a reason."""
    return ticket_dict(
        await hazards.verify(ticket_id, user, passed=body.passed, reason=body.reason)
    )


@router.post("/{ticket_id}/approve", response_model=HazardTicket, responses=ACT_ERRORS)
async def approve(
    ticket_id: Id, hazards: HazardsDep, user: Supervisor, body: Comment | None = None
) -> dict[str, Any]:
    """Approve the archive: each of the grade's approver roles, each a different person; the
    last approval archives the ticket."""
    return ticket_dict(await hazards.approve(ticket_id, user, (body or Comment()).comment))


@router.post("/{ticket_id}/grade", response_model=HazardTicket, responses=ACT_ERRORS)
async def grade(
    ticket_id: Id, body: GradeRequest, hazards: HazardsDep, user: Supervisor
) -> dict[str, Any]:
    """Lower a ticket's grade, with a reason: only a holder of one of the current grade's
    approver roles."""
    return ticket_dict(
        await hazards.lower_grade(ticket_id, user, grade=body.grade, reason=body.reason)
    )

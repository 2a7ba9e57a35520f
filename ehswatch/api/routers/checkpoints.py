"""`/api/checkpoints`: patrol checkpoints, their checklists, QR codes and rounds."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, HTTPException, Query, UploadFile
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict

from ehswatch.api.deps import EPOCH_MAX, HazardsDep, Operator, Viewer
from ehswatch.api.models import ACT_ERRORS, READ_ERRORS, errors
from ehswatch.api.routers.cleaning import read_photo
from ehswatch.governance.desk import Photo
from ehswatch.governance.sheets import NoFont

router = APIRouter(prefix="/api/checkpoints", tags=["governance"], responses=READ_ERRORS)


class ChecklistItemOut(BaseModel):
    id: str
    text: str
    kind: str
    min: float | None
    max: float | None
    unit: str


class CheckpointOut(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str
    name: str
    zone: str
    device: str
    every_h: float
    grace_min: float
    grade: str
    url: str
    checklist: list[ChecklistItemOut]


class Answer(BaseModel):
    item: str
    value: bool | float | None
    photo: bool
    passed: bool
    problem: str


class PatrolRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: int
    checkpoint: str
    zone: str
    window_start: float
    by: str
    at: float
    answers: list[Answer]
    passed: bool
    ticket_id: int | None
    comment: str


def _out(hazards: Any, cp: Any) -> dict[str, Any]:
    gov = hazards.governance
    return {
        "id": cp.id,
        "name": cp.name,
        "zone": cp.zone,
        "device": cp.device,
        "every_h": cp.every_h,
        "grace_min": cp.grace_min,
        "grade": cp.grade,
        "url": gov.checkpoint_url(cp.id),
        "checklist": [i.model_dump() for i in gov.checklist(cp)],
    }


@router.get("", response_model=list[CheckpointOut])
async def checkpoints(
    hazards: HazardsDep, _: Viewer, zone: Annotated[str | None, Query(max_length=64)] = None
) -> list[dict[str, Any]]:
    """Every checkpoint (of one `zone`), with its checklist and the address its QR holds."""
    return [
        _out(hazards, cp)
        for cp in hazards.governance.checkpoints.values()
        if zone is None or cp.zone == zone
    ]


@router.get("/rounds", response_model=list[PatrolRecord])
async def rounds(
    hazards: HazardsDep,
    _: Viewer,
    zone: Annotated[str | None, Query(max_length=64)] = None,
    checkpoint: Annotated[str | None, Query(max_length=64)] = None,
    since: Annotated[float | None, Query(ge=0, le=EPOCH_MAX)] = None,
    until: Annotated[float | None, Query(ge=0, le=EPOCH_MAX)] = None,
) -> list[dict[str, Any]]:
    """Patrol rounds, newest first, of one `zone` or `checkpoint`, made in [since, until)."""
    return await hazards.governance.patrol_records(
        zone=zone, checkpoint=checkpoint, since=since, until=until
    )


@router.get(
    "/sheet.pdf",
    response_class=Response,
    responses={**errors(404, 503), 200: {"content": {"application/pdf": {}}}},
)
async def qr_sheet(
    hazards: HazardsDep, _: Viewer, zone: Annotated[str, Query(max_length=64)]
) -> Response:
    """The A4 sheet of a zone's checkpoint codes (PDF), to print and post at them."""
    try:
        pdf = await asyncio.to_thread(hazards.governance.zone_sheet, zone)
    except NoFont as exc:
        raise HTTPException(503, str(exc)) from None
    name = f"qr-{zone}.pdf"
    return Response(
        pdf,
        media_type="application/pdf",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


@router.get("/{checkpoint_id}", response_model=CheckpointOut, responses=errors(404))
async def checkpoint(checkpoint_id: str, hazards: HazardsDep, _: Viewer) -> dict[str, Any]:
    return _out(hazards, hazards.governance.checkpoint(checkpoint_id))


@router.get(
    "/{checkpoint_id}/qr.svg",
    response_class=Response,
    responses={**errors(404), 200: {"content": {"image/svg+xml": {}}}},
)
async def qr_code(checkpoint_id: str, hazards: HazardsDep, _: Viewer) -> Response:
    """The checkpoint's QR code (SVG): the workbench address of its checklist."""
    svg = hazards.governance.qr_svg(checkpoint_id)
    return Response(svg, media_type="image/svg+xml")


@router.post(
    "/{checkpoint_id}/rounds",
    response_model=PatrolRecord,
    responses={**ACT_ERRORS, **errors(413, 415, 422)},
)
async def record_round(
    checkpoint_id: str,
    hazards: HazardsDep,
    user: Operator,
    answers: Annotated[str, Form(max_length=20_000, description='JSON: {"item": value, …}')],
    comment: Annotated[str, Form(max_length=2000)] = "",
    photo_items: Annotated[
        list[str], Form(description="the item of each photo, in the order of `photos`")
    ] = [],  # noqa: B006
    photos: Annotated[list[UploadFile], File(description="photos, one per photo_items")] = [],  # noqa: B006
) -> dict[str, Any]:
    """Record a round at the checkpoint (operator or above): every item answered, a photo
    for each photo item and each item that fails. A failed item opens a ticket carrying
    its photo. Audited."""
    try:
        values = json.loads(answers)
    except (ValueError, RecursionError):  # RecursionError: nesting thousands deep
        raise HTTPException(422, "answers: not JSON") from None
    if not isinstance(values, dict):
        raise HTTPException(422, "answers: a JSON object of item → value")
    if len(photo_items) != len(photos) or len(set(photo_items)) < len(photo_items):
        raise HTTPException(422, "photo_items: one distinct item for each photo")
    limit = hazards.evidence.max_bytes
    got: dict[str, Photo] = {}
    for item, upload in zip(photo_items, photos, strict=True):
        picture = await read_photo(upload, None, limit)
        assert picture is not None
        got[item] = picture
    return await hazards.governance.record_patrol(
        checkpoint_id, user, values=values, photos=got, comment=comment
    )

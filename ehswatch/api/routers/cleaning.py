"""`/api/cleaning`: shift cleaning records, per zone and shift (docs/governance.md)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Query, UploadFile
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict

from ehswatch.api.deps import EPOCH_MAX, HazardsDep, Id, Operator, Viewer
from ehswatch.api.files import kept_file
from ehswatch.api.models import ACT_ERRORS, READ_ERRORS, errors
from ehswatch.governance.desk import Photo
from ehswatch.hazards.evidence import THUMBNAIL_MAX_BYTES, sniff

router = APIRouter(prefix="/api/cleaning", tags=["governance"], responses=READ_ERRORS)


class CleaningRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: int
    zone: str
    shift: str
    shift_start: float
    shift_end: float
    by: str
    at: float
    residue_mm: float
    items: list[str]
    photo: bool
    passed: bool
    ticket_id: int | None
    comment: str


class ShiftToRecord(BaseModel):
    """The shift a record made now is for, with the zone's rule; `shift` None: none."""

    zone: str
    shift: str | None
    shift_start: float | None
    shift_end: float | None
    items: list[str]
    photo_required: bool
    residue_limit_mm: float


async def read_photo(
    upload: UploadFile | None, thumbnail: UploadFile | None, limit: int
) -> Photo | None:
    """What was uploaded, never more than one byte past the limit (the store refuses
    it then); None when nothing came."""
    if upload is None:
        return None
    content = await upload.read(limit + 1)
    small = await thumbnail.read(THUMBNAIL_MAX_BYTES + 1) if thumbnail is not None else None
    return Photo(content=content, thumbnail=small)


@router.get("", response_model=list[CleaningRecord])
async def cleaning_records(
    hazards: HazardsDep,
    _: Viewer,
    zone: Annotated[str | None, Query(max_length=64)] = None,
    since: Annotated[float | None, Query(ge=0, le=EPOCH_MAX)] = None,
    until: Annotated[float | None, Query(ge=0, le=EPOCH_MAX)] = None,
) -> list[dict[str, Any]]:
    """Cleaning records, newest shift first: of one `zone` or all, shifts starting in
    [`since`, `until`) (epoch seconds)."""
    return await hazards.governance.cleaning_records(zone=zone, since=since, until=until)


@router.get("/{zone}/shift", response_model=ShiftToRecord, responses=errors(404))
async def shift_to_record(zone: str, hazards: HazardsDep, _: Viewer) -> dict[str, Any]:
    """Which shift a record made now in `zone` is for, and what its rule asks."""
    gov = hazards.governance
    shift = await gov.shift_to_record(zone)
    rule = gov.rules[zone]
    return {
        "zone": zone,
        "shift": shift.name if shift else None,
        "shift_start": shift.start if shift else None,
        "shift_end": shift.end if shift else None,
        "items": rule.items,
        "photo_required": rule.photo_required,
        "residue_limit_mm": rule.residue_limit_mm,
    }


@router.post(
    "/{zone}",
    response_model=CleaningRecord,
    responses={**ACT_ERRORS, **errors(413, 415, 422)},
)
async def record_cleaning(
    zone: str,
    hazards: HazardsDep,
    user: Operator,
    residue_mm: Annotated[float, Form(ge=0, le=1000, allow_inf_nan=False)],
    items: Annotated[list[str], Form(description="the rule's items done (repeat the field)")] = [],  # noqa: B006
    comment: Annotated[str, Form(max_length=2000)] = "",
    photo: Annotated[UploadFile | None, File(description="the cleaned surfaces")] = None,
    thumbnail: Annotated[UploadFile | None, File(description="a small copy (≤ 256 KB)")] = None,
) -> dict[str, Any]:
    """Record `zone`'s cleaning for the shift ending now (or ended within the rule's
    grace): the items done, the residue measured (mm), the photo. The zone's team
    leader, or a supervisor or above; once per shift. A record over the limit, or with
    an item not done, opens a ticket carrying its photo. Audited."""
    picture = await read_photo(photo, thumbnail, hazards.evidence.max_bytes)
    return await hazards.governance.record_cleaning(
        zone, user, items_done=items, residue_mm=residue_mm, photo=picture, comment=comment
    )


@router.get(
    "/records/{record_id}/photo",
    response_class=FileResponse,
    responses={**errors(404), 200: {"description": "the photo as uploaded"}},
)
async def cleaning_photo(record_id: Id, hazards: HazardsDep, _: Viewer) -> FileResponse:
    path = Path(await hazards.governance.cleaning_photo(record_id))
    head = await asyncio.to_thread(_head, path)
    kind = sniff(head)
    return kept_file(path, kind[0] if kind else "application/octet-stream")


def _head(path: Path) -> bytes:
    with path.open("rb") as f:
        return f.read(16)

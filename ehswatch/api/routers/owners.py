"""`/api/owners`: the responsibility map — who answers for each zone, by role."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from ehswatch.api.deps import Admin, HazardsDep, Viewer
from ehswatch.api.models import ACT_ERRORS, READ_ERRORS, errors
from ehswatch.governance.responsibility import Chain

router = APIRouter(prefix="/api/owners", tags=["governance"], responses=READ_ERRORS)

Name = Field(None, max_length=64)


class ZoneOwners(BaseModel):
    """A zone's people by role; "" where nobody is named."""

    model_config = ConfigDict(extra="forbid")
    zone: str
    team_leader: str
    dept_head: str
    safety_director: str
    gm: str
    on_call: str


class OwnersChange(BaseModel):
    """The roles to name anew; "" gives a role the config's name back."""

    model_config = ConfigDict(extra="forbid")
    team_leader: str | None = Name
    dept_head: str | None = Name
    safety_director: str | None = Name
    gm: str | None = Name
    on_call: str | None = Name
    comment: str = Field("", max_length=2000)


def _answer(chain: Chain) -> dict[str, Any]:
    return {"zone": chain.zone, **chain.people}


@router.get("", response_model=list[ZoneOwners])
async def owners(hazards: HazardsDep, _: Viewer) -> list[dict[str, Any]]:
    """Every zone's people: its config over the plant's defaults, with the admins' edits."""
    return [_answer(c) for c in await hazards.owners.chains()]


@router.post("/{zone}", response_model=ZoneOwners, responses={**ACT_ERRORS, **errors(422)})
async def change_owners(
    zone: str, body: OwnersChange, hazards: HazardsDep, user: Admin
) -> dict[str, Any]:
    """Name a zone's people (admin): each must be a known person; audited with the map
    before and after."""
    changes = body.model_dump(exclude={"comment"}, exclude_none=True)
    return _answer(await hazards.owners.change(zone, changes, user, comment=body.comment))

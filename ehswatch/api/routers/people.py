"""`/api/people`: the people who sign in, managed by an admin (docs/workbench.md).

The same rules as `ehswatch users`: names of 1 to 64 letters, digits or `. _ - @`, never a
machine user's; passwords of 8 to 256 characters, kept only as argon2id hashes; disabling
or a new password ends the person's sessions. Every change is audited.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, ConfigDict, Field

from ehswatch.api.deps import Admin, PeopleDep
from ehswatch.api.models import ACT_ERRORS, READ_ERRORS, errors
from ehswatch.config import Role
from ehswatch.people.directory import Person as PersonRecord

router = APIRouter(prefix="/api/people", tags=["people"], responses=READ_ERRORS)


class Person(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    display_name: str
    role: str
    disabled: bool
    created_at: float
    password_set_at: float


class NewPerson(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    role: Role
    password: str = Field(min_length=1, max_length=1024)
    display_name: str = Field("", max_length=64)


class NewPassword(BaseModel):
    password: str = Field(min_length=1, max_length=1024)


def _answer(p: PersonRecord) -> dict[str, Any]:
    return {
        "name": p.name,
        "display_name": p.display_name,
        "role": p.role,
        "disabled": p.disabled,
        "created_at": p.created_at,
        "password_set_at": p.password_set_at,
    }


@router.get("", response_model=list[Person])
async def list_people(people: PeopleDep, _: Admin) -> list[dict[str, Any]]:
    """Everyone who may sign in, or was disabled (admin)."""
    return [_answer(p) for p in await people.list()]


@router.post("", response_model=Person, responses={**ACT_ERRORS, **errors(422)})
async def add_person(body: NewPerson, people: PeopleDep, admin: Admin) -> dict[str, Any]:
    """Add a person (admin); a name taken is 409, a name or password that cannot be used
    422."""
    try:
        person = await people.add(
            body.name, body.role, body.password, by=admin, display_name=body.display_name
        )
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    return _answer(person)


@router.post("/{name}/disable", response_model=Person, responses=ACT_ERRORS)
async def disable(name: str, people: PeopleDep, admin: Admin) -> dict[str, Any]:
    """Stop a person signing in; their sessions end at once (admin)."""
    await people.disable(name, by=admin)
    return _answer(await people.get(name))


@router.post("/{name}/enable", response_model=Person, responses=ACT_ERRORS)
async def enable(name: str, people: PeopleDep, admin: Admin) -> dict[str, Any]:
    """Let a disabled person sign in again (admin)."""
    await people.enable(name, by=admin)
    return _answer(await people.get(name))


@router.post("/{name}/password", response_model=Person, responses={**ACT_ERRORS, **errors(422)})
async def set_password(
    name: str, body: NewPassword, people: PeopleDep, admin: Admin
) -> dict[str, Any]:
    """Give a person a new password; their sessions end (admin)."""
    await people.get(name)  # 404 before anything is hashed
    try:
        await people.set_password(name, body.password, by=admin)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    return _answer(await people.get(name))

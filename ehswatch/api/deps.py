"""What routes depend on: the desk part, and the person behind the bearer token.

Routes take the desk part's pieces through the `...Dep` aliases — the shared state and
status of the control part, the database, the hazard desk, the command channel to the
control part — and their caller through `Caller` (any valid token) or `require(role)` (a
token of that role or above). No token, or an unknown one: 401. A role too low: 403.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Path, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ehswatch.config import Role
from ehswatch.control_channel import ControlClient
from ehswatch.db import Database
from ehswatch.desk_part import DeskPart
from ehswatch.hazards.desk import HazardDesk
from ehswatch.refusals import Refusal, refuse
from ehswatch.roles import Actor

# Database ids: positive, and within a 64-bit integer (SQLite and PostgreSQL alike).
Id = Annotated[int, Path(ge=1, le=2**62)]

bearer = HTTPBearer(auto_error=False, description="an ehswatch user token")


def get_desk(request: Request) -> DeskPart:
    desk: DeskPart = request.app.state.desk
    return desk


DeskDep = Annotated[DeskPart, Depends(get_desk)]


def get_hazards(desk: DeskDep) -> HazardDesk:
    return desk.hazards


def get_control(desk: DeskDep) -> ControlClient:
    return desk.link


def get_db(desk: DeskDep) -> Database:
    return desk.db


HazardsDep = Annotated[HazardDesk, Depends(get_hazards)]
ControlDep = Annotated[ControlClient, Depends(get_control)]
DatabaseDep = Annotated[Database, Depends(get_db)]


def current_user(
    request: Request,
    desk: DeskDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Actor:
    token = credentials.credentials if credentials is not None else None
    if token is None and request.url.path == "/api/events":
        token = request.query_params.get("access_token")  # EventSource cannot send headers
    if not token:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "a bearer token is required",
            headers={"WWW-Authenticate": "Bearer"},
        )
    digest = hashlib.sha256(token.encode()).hexdigest()
    user = desk.users.get(digest)
    if user is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "unknown token", headers={"WWW-Authenticate": "Bearer"}
        )
    return user


Caller = Annotated[Actor, Depends(current_user)]


def require(role: Role) -> Callable[..., Coroutine[Any, Any, Actor]]:
    """A token of `role` or above; a lower one is refused (403), and the refusal audited
    like every other: action "<METHOD> <route> refused", subject the path asked for."""

    async def check(request: Request, desk: DeskDep, user: Caller) -> Actor:
        if not user.at_least(role):
            route = request.scope.get("route")
            template = getattr(route, "path", request.url.path)
            refusal = Refusal(
                actor=user,
                action=f"{request.method} {template}",
                subject=f"api:{request.url.path[:120]}",  # the column holds 128
                why=f"{user.name} is {user.role}; this needs {role} or above",
                forbidden=True,
                detail={"needs": role},
            )
            await refuse(desk.db, refusal, desk.clock())
        return user

    return check


Viewer = Annotated[Actor, Depends(require("viewer"))]
Operator = Annotated[Actor, Depends(require("operator"))]
Supervisor = Annotated[Actor, Depends(require("supervisor"))]

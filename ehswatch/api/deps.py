"""What routes depend on: the running service, and the person behind the bearer token.

Routes take the service's parts through the `...Dep` aliases, and their caller through
`Caller` (any valid token) or `require(role)` (a token of that role or above). No token,
or an unknown one: 401. A role too low: 403.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Path, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ehswatch.alarms.manager import AlarmManager
from ehswatch.config import Role
from ehswatch.hazards.desk import HazardDesk
from ehswatch.interlock.controller import InterlockController
from ehswatch.roles import Actor
from ehswatch.service import Service

# Database ids: positive, and within a 64-bit integer (SQLite and PostgreSQL alike).
Id = Annotated[int, Path(ge=1, le=2**62)]

bearer = HTTPBearer(auto_error=False, description="an ehswatch user token")


def get_service(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


ServiceDep = Annotated[Service, Depends(get_service)]


def get_alarms(service: ServiceDep) -> AlarmManager:
    return service.alarms


def get_hazards(service: ServiceDep) -> HazardDesk:
    return service.hazards


def get_interlock(service: ServiceDep) -> InterlockController:
    if service.interlock is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "this plant has no interlocked zones")
    return service.interlock


AlarmsDep = Annotated[AlarmManager, Depends(get_alarms)]
HazardsDep = Annotated[HazardDesk, Depends(get_hazards)]
InterlockDep = Annotated[InterlockController, Depends(get_interlock)]


def current_user(
    request: Request,
    service: ServiceDep,
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
    user = service.users.get(digest)
    if user is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "unknown token", headers={"WWW-Authenticate": "Bearer"}
        )
    return user


Caller = Annotated[Actor, Depends(current_user)]


def require(role: Role) -> Callable[..., Coroutine[Any, Any, Actor]]:
    async def check(user: Caller) -> Actor:
        if not user.at_least(role):
            raise HTTPException(
                status.HTTP_403_FORBIDDEN, f"{user.name} is {user.role}; this needs {role} or above"
            )
        return user

    return check


Viewer = Annotated[Actor, Depends(require("viewer"))]
Operator = Annotated[Actor, Depends(require("operator"))]
Supervisor = Annotated[Actor, Depends(require("supervisor"))]

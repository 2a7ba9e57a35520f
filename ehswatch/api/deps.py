"""What routes depend on: the desk part, and the person behind the request.

Routes take the desk part's pieces through the `...Dep` aliases — the shared state and
status of the control part, the database, the hazard desk, the people, the command
channel to the control part — and their caller through `Caller` (anyone signed in) or
`require(role)` (that role or above).

A caller is a machine with a bearer token (config `users`), or a person with the session
cookie that `POST /auth/login` set. Neither, an unknown one or an ended session: 401. A
role too low: 403. A change (any method but GET, HEAD, OPTIONS) asked for with the
session cookie must carry the session's CSRF token in `X-CSRF-Token`, else 403: another
site can make a browser send the cookie, never read the token. Both 403s are audited.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Path, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ehswatch.config import Role
from ehswatch.control_channel import ControlClient
from ehswatch.db import Database
from ehswatch.desk_part import DeskPart
from ehswatch.hazards.desk import HazardDesk
from ehswatch.people.directory import People
from ehswatch.refusals import Refusal, refuse
from ehswatch.roles import Actor

# Database ids: positive, and within what an INTEGER column holds on either engine
# (PostgreSQL keeps it in 32 bits; SQLite in 64): a larger one is no row, a 422.
ID_MAX = 2**31 - 1
Id = Annotated[int, Path(ge=1, le=ID_MAX)]
#: the latest time a query may name (year 5138): any calendar holds it
EPOCH_MAX = 1e11

bearer = HTTPBearer(auto_error=False, description="an ehswatch user token")
SESSION_COOKIE = "ehs_session"  # HttpOnly: the page's scripts never see it
CSRF_COOKIE = "ehs_csrf"  # readable by the page, sent back as the header
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


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


def get_people(desk: DeskDep) -> People:
    return desk.people


HazardsDep = Annotated[HazardDesk, Depends(get_hazards)]
PeopleDep = Annotated[People, Depends(get_people)]
ControlDep = Annotated[ControlClient, Depends(get_control)]
DatabaseDep = Annotated[Database, Depends(get_db)]


async def current_user(
    request: Request,
    desk: DeskDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Actor:
    token = credentials.credentials if credentials is not None else None
    if token is None and request.url.path == "/api/events":
        token = request.query_params.get("access_token")  # EventSource cannot send headers
    if token:
        digest = hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()
        user = desk.users.get(digest)
        if user is None:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "unknown token",
                headers={"WWW-Authenticate": "Bearer"},
            )
        return user
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "sign in, or send a bearer token",
            headers={"WWW-Authenticate": "Bearer"},
        )
    session = await desk.people.session(cookie)
    if session is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "the session has ended: sign in again",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if request.method not in SAFE_METHODS:
        sent = request.headers.get(CSRF_HEADER, "").encode("utf-8", "surrogateescape")
        if not secrets.compare_digest(sent, session.csrf.encode()):
            await refuse(
                desk.db,
                Refusal(
                    actor=session.actor,
                    action=f"{request.method} {_template(request)}",
                    subject=f"api:{request.url.path[:120]}",
                    why=f"a change asked for with a session needs its {CSRF_HEADER} header",
                    forbidden=True,
                    detail={"csrf": "missing" if not sent else "wrong"},
                ),
                desk.clock(),
            )
    return session.actor


def _template(request: Request) -> str:
    route = request.scope.get("route")
    return str(getattr(route, "path", request.url.path))


Caller = Annotated[Actor, Depends(current_user)]


async def maybe_user(
    request: Request,
    desk: DeskDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Actor | None:
    """The caller, or None for one who sends neither a token nor a session (where a
    route takes anonymous requests); an unknown token or an ended session is still 401."""
    if credentials is None and not request.cookies.get(SESSION_COOKIE):
        return None
    return await current_user(request, desk, credentials)


MaybeCaller = Annotated[Actor | None, Depends(maybe_user)]


def require(role: Role) -> Callable[..., Coroutine[Any, Any, Actor]]:
    """A token of `role` or above; a lower one is refused (403), and the refusal audited
    like every other: action "<METHOD> <route> refused", subject the path asked for."""

    async def check(request: Request, desk: DeskDep, user: Caller) -> Actor:
        if not user.at_least(role):
            refusal = Refusal(
                actor=user,
                action=f"{request.method} {_template(request)}",
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
Admin = Annotated[Actor, Depends(require("admin"))]

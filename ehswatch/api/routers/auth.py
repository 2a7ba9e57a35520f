"""`/auth`: people sign in and out (docs/workbench.md).

`POST /auth/login` takes `username` and `password` as JSON or as form fields. It sets the
session cookie (HttpOnly, SameSite=Lax) and the CSRF cookie, and answers who signed in
with the CSRF token; a form post (a page without scripts) is sent on to `next` (a path of
the workbench) instead. A wrong name or password is 401, the same answer for either;
after repeated failures the next attempts are 429 with `Retry-After`. `POST /auth/logout`
ends the session; `GET /auth/me` says who the caller is.
"""

from __future__ import annotations

import math
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, HTTPException, Request, Response, status
from fastapi.responses import RedirectResponse
from pydantic import BaseModel, Field, ValidationError

from ehswatch.api.deps import (
    CSRF_COOKIE,
    SESSION_COOKIE,
    Caller,
    DeskDep,
    PeopleDep,
)
from ehswatch.api.models import SignedIn, errors
from ehswatch.people.directory import SignInRefused

router = APIRouter(prefix="/auth", tags=["sign-in"])


class Credentials(BaseModel):
    username: str = Field(min_length=1, max_length=256)
    password: str = Field(min_length=1, max_length=1024)
    next: str = Field("/app/", max_length=512)


async def _credentials(request: Request) -> Credentials:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    try:
        if kind == "application/json":
            return Credentials.model_validate_json(await request.body())
        if kind == "application/x-www-form-urlencoded":
            form = await request.form()
            fields = {k: v for k, v in form.items() if isinstance(v, str)}
            return Credentials.model_validate(fields)
    except ValidationError as exc:
        raise HTTPException(
            422,
            [{"loc": e["loc"], "msg": e["msg"]} for e in exc.errors(include_url=False)],
        ) from None
    raise HTTPException(
        status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
        "send username and password as JSON or as form fields",
    )


def _next_page(wanted: str) -> str:
    """Only a path of the workbench or the governance board (never another site: an
    open redirect)."""
    ours = wanted.startswith("/app/") or wanted == "/governance"
    return wanted if ours and "//" not in wanted and "\\" not in wanted else "/app/"


_CREDENTIALS_SCHEMA = {
    "type": "object",
    "required": ["username", "password"],
    "properties": {
        "username": {"type": "string", "maxLength": 256},
        "password": {"type": "string", "maxLength": 1024, "format": "password"},
        "next": {"type": "string", "description": "a form's sign-in: the page to go on to"},
    },
}


@router.post(
    "/login",
    response_model=SignedIn,
    responses={
        **errors(401, 403, 415, 422, 429),
        303: {"description": "a form's sign-in: on to next"},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": _CREDENTIALS_SCHEMA},
                "application/x-www-form-urlencoded": {"schema": _CREDENTIALS_SCHEMA},
            },
        }
    },
)
async def login(request: Request, desk: DeskDep, people: PeopleDep) -> Any:
    """Sign in with a name and password; sets the session and CSRF cookies (audited, as
    every refusal is)."""
    origin = request.headers.get("origin")
    if origin is not None and urlsplit(origin).netloc != request.headers.get("host", ""):
        # Another site signing this browser in to an account of its choosing (login CSRF):
        # a browser always says where a form came from.
        raise HTTPException(status.HTTP_403_FORBIDDEN, "sign in from this service's own page")
    given = await _credentials(request)
    client = request.client.host if request.client is not None else "?"
    try:
        signed = await people.sign_in(given.username, given.password, client=client)
    except SignInRefused as exc:
        if exc.retry_after_s is not None:
            raise HTTPException(
                status.HTTP_429_TOO_MANY_REQUESTS,
                str(exc),
                headers={"Retry-After": str(max(1, math.ceil(exc.retry_after_s)))},
            ) from None
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, str(exc)) from None
    session = signed.session
    answer: Response
    if request.headers.get("content-type", "").startswith("application/json"):
        answer = Response(
            SignedIn(
                name=session.actor.name,
                display_name=session.display_name,
                role=session.actor.role,
                csrf_token=session.csrf,
                expires_at=session.expires_at,
            ).model_dump_json(),
            media_type="application/json",
        )
    else:
        answer = RedirectResponse(_next_page(given.next), status_code=status.HTTP_303_SEE_OTHER)
    secure = desk.config.api.cookie_secure
    max_age = int(people.max_s)
    answer.set_cookie(
        SESSION_COOKIE, signed.token, max_age=max_age, httponly=True, samesite="lax",
        secure=secure, path="/",
    )  # fmt: skip
    answer.set_cookie(
        CSRF_COOKIE, session.csrf, max_age=max_age, httponly=False, samesite="lax",
        secure=secure, path="/",
    )  # fmt: skip
    return answer


@router.post("/logout", status_code=204, responses=errors(422))
async def logout(request: Request, people: PeopleDep) -> Response:
    """End the caller's session (audited) and clear its cookies. Without a session: 204
    all the same (signing out twice is not an error). It takes no body (one is 422)."""
    if await request.body():
        raise HTTPException(422, "signing out takes no body")
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        await people.sign_out(token)
    answer = Response(status_code=204)
    answer.delete_cookie(SESSION_COOKIE, path="/")
    answer.delete_cookie(CSRF_COOKIE, path="/")
    return answer


@router.get("/me", response_model=SignedIn, responses=errors(401))
async def me(request: Request, people: PeopleDep, caller: Caller) -> SignedIn:
    """Who the caller is (a person's session, or a machine's bearer token)."""
    token = request.cookies.get(SESSION_COOKIE)
    session = (
        await people.session(token) if token and "authorization" not in request.headers else None
    )
    if session is not None and session.actor == caller:
        return SignedIn(
            name=caller.name,
            display_name=session.display_name,
            role=caller.role,
            csrf_token=session.csrf,
            expires_at=session.expires_at,
        )
    return SignedIn(
        name=caller.name, display_name="", role=caller.role, csrf_token=None, expires_at=None
    )

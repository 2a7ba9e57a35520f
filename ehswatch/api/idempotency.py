"""`Idempotency-Key`: a POST sent again with the same key is answered, not done again.

A phone on plant Wi-Fi may send an action, lose the answer, and send it again (the
workbench keeps actions taken offline and sends them when the connection returns).
With the header `Idempotency-Key: <up to 128 printable characters>` on a POST:
- the first request is done, and its answer (status and body) kept for `TTL_S`;
- a request with the same key from the same caller (the same bearer token or session
  cookie) is answered with the kept answer and `Idempotent-Replayed: true`, and nothing
  is done again;
- the same key for another route, or with another body, is 422; while the first is
  still being done, 409 (a first one that never finished — the process died — is given
  up after `ABANDONED_S`, and the request is done);
- an answer of 500 or over is not kept (the request may be retried and done), nor a 401
  (a caller who is nobody keeps nothing in the plant's database).
Keys are kept per caller: one person's key never answers another's request.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable

from sqlalchemy import Float, Integer, LargeBinary, String, delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ehswatch.db import Database
from ehswatch.tables import Base

TTL_S = 24 * 3600.0
ABANDONED_S = 60.0  # a request still "being done" after this long died with its process
KEY_MAX = 128
BODY_MAX = 1 << 20  # answers bigger than this are not kept (none of the actions' are)
HEADER = b"idempotency-key"


class IdempotentRequest(Base):
    __tablename__ = "idempotent_request"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True)  # caller + key
    path: Mapped[str] = mapped_column(String(256))
    request_sha256: Mapped[str] = mapped_column(String(64), default="")  # of its body
    at: Mapped[float] = mapped_column(Float, index=True)
    status: Mapped[int | None] = mapped_column(Integer, nullable=True)  # None: being done
    content_type: Mapped[str] = mapped_column(String(128), default="")
    body: Mapped[bytes] = mapped_column(LargeBinary, default=b"")


SESSION_COOKIE = "ehs_session"  # api.deps's: the cookie `POST /auth/login` sets


def _caller(scope: Scope) -> bytes | None:
    """What identifies the caller: its bearer token or its session cookie, read as the
    routes read them (Starlette's headers and cookie parser), so that the caller the
    answer is kept for is the caller the route served."""
    request = Request(scope)
    auth = request.headers.get("authorization")
    if auth:
        return b"bearer:" + auth.encode("latin-1")
    session = request.cookies.get(SESSION_COOKIE)
    return b"session:" + session.encode("utf-8", "surrogateescape") if session else None


async def _answer(send: Send, status: int, body: bytes, content_type: str, replayed: bool) -> None:
    headers = [(b"content-type", content_type.encode("latin-1") or b"application/json")]
    headers.append((b"content-length", str(len(body)).encode()))
    if replayed:
        headers.append((b"idempotent-replayed", b"true"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _buffered(receive: Receive, headers: dict[bytes, bytes]) -> tuple[bytes | None, Receive]:
    """The request's body, read now when it is small (up to `BODY_MAX`, by its
    Content-Length), and a `receive` that hands it on; (None, receive) otherwise."""
    try:
        length = int(headers.get(b"content-length", b"-1"))
    except ValueError:
        length = -1
    if not 0 <= length <= BODY_MAX:
        return None, receive
    parts: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None, receive  # the client left
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    body = b"".join(parts)
    given = False

    async def replay() -> Message:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return body, replay


def _error(detail: str) -> bytes:
    return json.dumps({"detail": detail}).encode()


class IdempotencyMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        database: Callable[[Scope], Database | None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`database(scope)`: the database to keep answers in (None: pass through)."""
        self.app = app
        self._database = database
        self._clock = clock
        self._inserts = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        headers: dict[bytes, bytes] = dict(scope.get("headers") or [])
        key = headers.get(HEADER)
        caller = _caller(scope)
        db = self._database(scope) if key is not None else None
        if key is None or caller is None or db is None:
            await self.app(scope, receive, send)
            return
        if not 0 < len(key) <= KEY_MAX or not all(33 <= b < 127 for b in key):
            await _answer(
                send, 422, _error(f"an Idempotency-Key is 1 to {KEY_MAX} printable characters"),
                "application/json", replayed=False,
            )  # fmt: skip
            return
        digest = hashlib.sha256(caller + b"\0" + key).hexdigest()
        path = str(scope["path"])[:256]
        body, receive = await _buffered(receive, headers)
        asked = hashlib.sha256(body).hexdigest() if body is not None else ""
        kept = await self._kept(db, digest)
        if kept is None and not await self._claim(db, digest, path, asked):
            kept = await self._kept(db, digest)
        if kept is not None:
            if kept.path != path or (
                asked and kept.request_sha256 and asked != kept.request_sha256
            ):
                await _answer(
                    send, 422, _error("this Idempotency-Key was used for another request"),
                    "application/json", replayed=False,
                )  # fmt: skip
            elif kept.status is None:
                await _answer(
                    send, 409, _error("a request with this Idempotency-Key is still being done"),
                    "application/json", replayed=False,
                )  # fmt: skip
            else:
                await _answer(send, kept.status, kept.body, kept.content_type, replayed=True)
            return
        await self._do(db, digest, scope, receive, send)

    async def _do(
        self, db: Database, digest: str, scope: Scope, receive: Receive, send: Send
    ) -> None:
        """Do the request, keep its answer, then send it: kept before it is sent, so a
        copy sent the moment the answer arrives finds it (POST answers are small)."""
        messages: list[Message] = []
        status, content_type, size = 500, "", 0

        async def holding(message: Message) -> None:
            nonlocal status, content_type, size
            if message["type"] == "http.response.start":
                status = int(message["status"])
                for name, value in message.get("headers", []):
                    if name.lower() == b"content-type":
                        content_type = value.decode("latin-1")
            elif message["type"] == "http.response.body":
                size += len(message.get("body", b""))
            messages.append(message)

        try:
            await self.app(scope, receive, holding)
        except BaseException:
            await self._release(db, digest)
            raise
        if status >= 500 or status == 401 or size > BODY_MAX:
            await self._release(db, digest)
        else:
            body = b"".join(
                m.get("body", b"") for m in messages if m["type"] == "http.response.body"
            )
            async with db.new_session() as s, s.begin():
                row = await s.scalar(
                    select(IdempotentRequest).where(IdempotentRequest.digest == digest)
                )
                if row is not None:
                    row.status, row.content_type, row.body = status, content_type[:128], body
        for message in messages:
            await send(message)

    async def _kept(self, db: Database, digest: str) -> IdempotentRequest | None:
        async with db.new_session() as s:
            row = await s.scalar(
                select(IdempotentRequest).where(IdempotentRequest.digest == digest)
            )
        now = self._clock()
        stale = row is not None and (
            row.at < now - TTL_S or (row.status is None and row.at < now - ABANDONED_S)
        )
        if stale:
            await self._release(db, digest)
            return None
        return row

    async def _claim(self, db: Database, digest: str, path: str, asked: str) -> bool:
        """Take the key for this request; False when another request has it."""
        now = self._clock()
        try:
            async with db.new_session() as s, s.begin():
                s.add(
                    IdempotentRequest(
                        digest=digest, path=path, request_sha256=asked, at=now, status=None
                    )
                )
        except IntegrityError:
            return False
        self._inserts += 1
        if self._inserts % 100 == 0:  # now and then, forget the answers past their time
            async with db.new_session() as s, s.begin():
                await s.execute(delete(IdempotentRequest).where(IdempotentRequest.at < now - TTL_S))
        return True

    async def _release(self, db: Database, digest: str) -> None:
        async with db.new_session() as s, s.begin():
            await s.execute(delete(IdempotentRequest).where(IdempotentRequest.digest == digest))

"""`?times=iso`: the API's times as ISO 8601 text, in the site's time zone.

Every time the API answers is epoch seconds by default (what the board and existing
clients read). With `times=iso` on any `/api` (or `/auth/me`) request, the same answer
comes with each time as ISO 8601 with its offset, to the millisecond, e.g.
``"2026-12-02T05:24:56.120+08:00"`` for a site in Asia/Shanghai; `null` stays `null`.

A time is a number under a key named `at`, `ts`, `now`, `start`, `end`, `ends`, `since`
or `until`, or
ending in `_at`, `_until`, `_start` or `_end`: every
time field of every answer is named so (a test holds the OpenAPI schema to it), and no
other number is. The conversion is one pure walk over the answer (`times_as_iso`),
done by `IsoTimesMiddleware` on the way out, so the domain records, the kept answers of
`Idempotency-Key` and the cached list bodies stay one form. Only a 2xx JSON answer is
rewritten; errors and the event stream pass as they are. The parameter itself is
declared and checked per route by `times_format` (in `/docs`; another value is 422).
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl
from zoneinfo import ZoneInfo

import msgspec
from fastapi import Query
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ehswatch.api.encoding import encode_json

TIME_KEY = re.compile(r"^(?:at|ts|now|start|end|ends|since|until)$|_at$|_until$|_start$|_end$")


async def times_format(
    times: Annotated[
        Literal["epoch", "iso"],
        Query(
            description="how the answer gives its times: epoch seconds (the default), or "
            "ISO 8601 text with the site's offset, to the millisecond"
        ),
    ] = "epoch",
) -> str:
    """The `times` query parameter, declared once for every route that answers times."""
    return times


def iso(epoch: float, zone: ZoneInfo) -> str | float:
    """`epoch` as ISO 8601 in `zone`; a number no calendar holds is left as it is."""
    try:
        return datetime.fromtimestamp(epoch, zone).isoformat(timespec="milliseconds")
    except (OverflowError, OSError, ValueError):
        return epoch


def times_as_iso(value: Any, zone: ZoneInfo) -> Any:
    """`value` (decoded JSON) with every time (see the module) as ISO 8601 in `zone`."""
    if isinstance(value, dict):
        return {
            k: iso(v, zone) if _is_time(k, v) else times_as_iso(v, zone) for k, v in value.items()
        }
    if isinstance(value, list):
        return [times_as_iso(v, zone) for v in value]
    return value


def _is_time(key: str, value: Any) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and TIME_KEY.search(key) is not None
    )


def _wants_iso(scope: Scope) -> bool:
    query = scope.get("query_string", b"").decode("latin-1")
    return ("times", "iso") in parse_qsl(query)


class IsoTimesMiddleware:
    """Rewrites a 2xx JSON answer's times when the request asked `times=iso`."""

    def __init__(self, app: ASGIApp, *, timezone: str) -> None:
        self.app = app
        self.zone = ZoneInfo(timezone)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _wants_iso(scope):
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        body: list[bytes] = []

        async def rewrite(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                kind = dict(message.get("headers", [])).get(b"content-type", b"")
                json = kind.startswith(b"application/json")
                if 200 <= message["status"] < 300 and json:
                    start = message  # held until the whole body is in
                    return
            elif message["type"] == "http.response.body" and start is not None:
                body.append(message.get("body", b""))
                if message.get("more_body", False):
                    return
                data = encode_json(times_as_iso(msgspec.json.decode(b"".join(body)), self.zone))
                kept = [(k, v) for k, v in start.get("headers", []) if k != b"content-length"]
                kept.append((b"content-length", str(len(data)).encode()))
                await send({**start, "headers": kept})
                await send({"type": "http.response.body", "body": data})
                return
            await send(message)

        await self.app(scope, receive, rewrite)

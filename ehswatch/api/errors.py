"""Malformed requests: always a 4xx with a JSON `{"detail": ...}`, never a 500.

A 422 echoes the offending input back, and some inputs cannot be written as JSON: NaN
and ±Infinity (Python's JSON parser accepts them, and `1e400` overflows to infinity),
raw bytes that are not UTF-8 (a body sent with another content type is validated as
bytes), strings with lone surrogates (`"\\ud800"`). Building that 422 failed: a 500. And
NaN/Infinity literals are not JSON at all, yet a float field without bounds let them
through to the domain.

So, once, at the boundary: every error response goes through `json_safe` (non-finite
numbers and undecodable bytes as strings, echoes kept short and shallow), and
`strict_json` refuses a JSON body with a non-finite number (422) before any route sees
it. Route responses need nothing: they are serialised by pydantic, which writes a NaN
as `null` (the board shows a sensor without a value the same way).
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Mapping
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

MAX_DEPTH = 16  # levels of an echoed input kept; deeper ones become "…"
MAX_ECHO = 1000  # characters of an echoed string (or bytes) kept


def _text(s: str) -> str:
    if len(s) > MAX_ECHO:
        s = f"{s[:MAX_ECHO]}… ({len(s)} characters)"
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: shown as their escapes
        s = s.encode("utf-8", "backslashreplace").decode("utf-8")
    return s


def json_safe(value: Any, depth: int = 0) -> Any:
    """`value` as something `json.dumps(..., allow_nan=False)` always writes as UTF-8."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, int):
        try:
            str(value)
        except ValueError:  # more digits than Python will print
            return f"an integer of {value.bit_length()} bits"
        return value
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return _text(bytes(value).decode("utf-8", "backslashreplace"))
    if depth >= MAX_DEPTH:
        return "…"
    if isinstance(value, dict):
        return {_text(str(k)): json_safe(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [json_safe(v, depth + 1) for v in value]
    return _text(str(value))  # e.g. the exception in a validator's ctx


def error_response(
    status_code: int, detail: Any, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"detail": json_safe(detail)}, status_code=status_code, headers=headers)


async def invalid_request(_: Request, exc: Exception) -> JSONResponse:
    """A request that does not fit the route (path, query, headers, body): 422."""
    assert isinstance(exc, RequestValidationError)
    return error_response(422, exc.errors())


def _unreadable(cause: BaseException | None) -> str | None:
    """Why a body could not be read as JSON, in words, when that is what went wrong."""
    if isinstance(cause, UnicodeDecodeError):
        return f"the body is not UTF-8: byte {cause.start} ({cause.reason})"
    if isinstance(cause, RecursionError):
        return "the body is not readable JSON: it nests too deeply"
    if isinstance(cause, ValueError) and "digits" in str(cause):
        limit = sys.get_int_max_str_digits()
        return f"the body is not readable JSON: an integer of more than {limit} digits"
    if isinstance(cause, ValueError):
        return f"the body is not readable JSON: {cause}"
    return None


async def http_error(_: Request, exc: Exception) -> Response:
    """`HTTPException`s (401, 403, 404, 405, a body that cannot be read: 400) as JSON."""
    assert isinstance(exc, HTTPException)
    if exc.status_code in (204, 304):
        return Response(status_code=exc.status_code, headers=exc.headers)
    detail = exc.detail
    if exc.status_code == 400 and (reason := _unreadable(exc.__cause__)) is not None:
        detail = reason
    return error_response(exc.status_code, detail, exc.headers)


def _is_json(content_type: str | None) -> bool:
    """The content types FastAPI parses as JSON."""
    if not content_type:
        return False
    main, _, sub = content_type.split(";", 1)[0].strip().lower().partition("/")
    return main == "application" and (sub == "json" or sub.endswith("+json"))


class _NotFinite(ValueError):
    pass


def _constant(name: str) -> float:
    raise _NotFinite(f"{name} is not a JSON number; send a finite number")


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NotFinite(f"{text[:40]} overflows to infinity; send a finite number")
    return value


async def strict_json(request: Request) -> None:
    """An app-wide dependency: a JSON body with NaN, Infinity or -Infinity (or a number
    that overflows to one) is refused, 422, before the route runs."""
    if not _is_json(request.headers.get("content-type")):
        return
    try:
        body = await request.body()
    except RuntimeError:  # the stream went to a form parser: not a JSON body
        return
    if not body:
        return
    try:
        json.loads(body, parse_constant=_constant, parse_float=_float)
    except _NotFinite as e:
        raise RequestValidationError(
            [
                {
                    "type": "json_invalid",
                    "loc": ("body",),
                    "msg": "JSON decode error",
                    "input": {},
                    "ctx": {"error": str(e)},
                }
            ]
        ) from None
    except (ValueError, RecursionError):
        return  # not JSON: the route's own body parsing answers that (or it takes none)

"""Malformed requests: every one is a 4xx with a JSON `{"detail": ...}`, never a 500.

One server for the whole module (in a thread of its own, with an alarm and its hazard
ticket open so that ids 1 exist), called with a role that may use each route so that the
body really is parsed. The routes come from the app's own OpenAPI document: a new route
is covered without touching this file.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ehswatch.api.app import create_app
from ehswatch.api.errors import MAX_DEPTH, json_safe
from tests.aio import eventually, run
from tests.test_api import MUTATING, auth, plant, raise_alarm, serve

SCHEMA: dict[str, Any] = create_app(plant(Path("unused"))).openapi()
BODY_METHODS = ("post", "put", "patch", "delete")


def concrete(template: str) -> str:
    """A route's path with its parameters filled: ids 1 (they exist), zone z1."""
    return re.sub(r"\{(\w+)\}", lambda m: "1" if m[1].endswith("_id") else "z1", template)


ROUTES: list[tuple[str, str]] = sorted(
    (method.upper(), concrete(path))
    for path, ops in SCHEMA["paths"].items()
    for method in ops
    if method in BODY_METHODS
)
POSTS = [path for method, path in ROUTES if method == "POST"]
VALID_BODY = {path: body for _, path, body, _, _ in MUTATING}


def role_for(path: str) -> str:
    """A role the route lets through (its least, or one the domain allows beyond it)."""
    for _, p, _, least, domain in MUTATING:
        if p == path:
            return sorted(domain)[0] if domain else least
    return "gm"


def _resolve(schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if ref is None:
        return schema
    node: Any = SCHEMA
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return dict(node)


def _is_numeric(schema: dict[str, Any]) -> bool:
    schema = _resolve(schema)
    options = schema.get("anyOf", []) + schema.get("oneOf", []) + [schema]
    return any(_resolve(o).get("type") in ("number", "integer") for o in options)


def numeric_fields() -> list[tuple[str, str]]:
    """(path, field) for every numeric field of every JSON body the app takes."""
    out = []
    for template, ops in SCHEMA["paths"].items():
        for method, op in ops.items():
            content = op.get("requestBody", {}).get("content", {})
            if method not in BODY_METHODS or "application/json" not in content:
                continue
            body = _resolve(content["application/json"]["schema"])
            for option in [body, *body.get("anyOf", [])]:
                for name, field in _resolve(option).get("properties", {}).items():
                    if _is_numeric(field):
                        out.append((concrete(template), name))
    return sorted(set(out))


NUMERIC = numeric_fields()
NOT_FINITE = ["NaN", "Infinity", "-Infinity", "1e400", str(10**400)]


class LiveApi:
    """The API on a real server, run in its own thread and event loop for the module."""

    def __init__(self, tmp: Path) -> None:
        self.config = plant(tmp)
        self.base_url = f"http://127.0.0.1:{self.config.api.port}"
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="test:api-input", daemon=True)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with serve(self.config) as (service, _):
            raise_alarm(service)  # alarm 1, and with it hazard ticket 1
            await eventually(lambda: len(service.alarms.open) == 1, what="an alarm")
            self._ready.set()
            await self._stop.wait()

    def _run(self) -> None:
        try:
            run(self._main(), timeout=600)
        except BaseException as e:  # handed to the test thread
            self._error = e
            self._ready.set()

    def __enter__(self) -> LiveApi:
        self._thread.start()
        assert self._ready.wait(60), "the API did not start"
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *_: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(60)
        assert not self._thread.is_alive(), "the API did not stop"
        if self._error is not None:
            raise self._error


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveApi]:
    with LiveApi(tmp_path_factory.mktemp("api-input")) as live:
        yield live


@pytest.fixture(scope="module")
def client(api: LiveApi) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api.base_url, timeout=30) as c:
        yield c


def post(
    client: httpx.Client,
    path: str,
    content: bytes,
    content_type: str | None = "application/json",
    method: str = "POST",
) -> httpx.Response:
    headers = auth(role_for(path))
    if content_type is not None:
        headers["Content-Type"] = content_type
    return client.request(method, path, content=content, headers=headers)


def json_error(r: httpx.Response) -> Any:
    """The `detail` of an answer that must be a 4xx with a JSON body."""
    assert 400 <= r.status_code < 500, (r.request.method, r.request.url.path, r.status_code, r.text)
    body = r.json()
    assert isinstance(body, dict) and body.get("detail"), r.text
    return body["detail"]


@settings(max_examples=300, deadline=None, database=None)
@given(
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers()
        | st.integers(4300, 6000).map(lambda n: 10**n)  # more digits than Python prints
        | st.sampled_from([float("nan"), float("inf"), float("-inf")])
        | st.floats()
        | st.binary(max_size=16)
        | st.text(st.characters() | st.characters(categories=["Cs"]), max_size=16),
        lambda inner: (
            st.lists(inner, max_size=3)
            | st.tuples(inner)
            | st.dictionaries(st.text(max_size=4) | st.integers(), inner, max_size=3)
        ),
        max_leaves=10,
    )
)
def test_whatever_an_error_echoes_is_written_as_json(value: Any) -> None:
    json.dumps({"detail": json_safe(value)}, allow_nan=False).encode("utf-8")


def test_an_echo_is_cut_short_in_length_and_in_depth() -> None:
    deep: Any = 1
    for _ in range(5000):
        deep = [deep]
    out = json.dumps(json_safe(deep), allow_nan=False, ensure_ascii=False)
    assert out.count("[") == MAX_DEPTH and '"…"' in out
    assert len(json_safe("x" * 100_000)) < 2000
    assert json_safe([float("nan"), float("-inf"), b"\xff", "\ud800"]) == [
        "NaN",
        "-Infinity",
        "\\xff",
        "\\ud800",
    ]


def test_the_routes_under_test_come_from_the_app() -> None:
    assert "/api/interlocks/z1/bypass" in POSTS and "/api/hazards/1/evidence" in POSTS
    assert {("/api/alarms/1/shelve", "minutes"), ("/api/interlocks/z1/bypass", "hours")} <= set(
        NUMERIC
    )


@pytest.mark.parametrize("literal", NOT_FINITE)
@pytest.mark.parametrize(("path", "field"), NUMERIC)
def test_a_non_finite_number_in_a_body_is_a_4xx_with_a_json_message(
    client: httpx.Client, path: str, field: str, literal: str
) -> None:
    body = dict(VALID_BODY.get(path) or {})
    body[field] = "@number@"
    text = json.dumps(body).replace('"@number@"', literal)
    detail = json_error(post(client, path, text.encode()))
    assert json.dumps(detail)  # what it says is JSON itself, whatever was sent


@pytest.mark.parametrize("content_type", ["application/json", "text/plain", None])
@pytest.mark.parametrize("path", POSTS)
def test_a_non_utf8_body_is_a_4xx_with_a_json_message(
    client: httpx.Client, path: str, content_type: str | None
) -> None:
    for content in (b"\xff\xfe\x80", b'{"comment": "\xc3\x28", "reason": "\xed\xa0\x80"}'):
        json_error(post(client, path, content, content_type))


@pytest.mark.parametrize("path", POSTS)
def test_other_malformed_bodies_are_a_4xx_with_a_json_message(
    client: httpx.Client, path: str
) -> None:
    deep = 100_000
    for content, content_type in (
        (b"not json", "application/json"),
        (b"[1, 2]", "application/json"),  # JSON, not an object
        (b'"text"', "application/json"),
        (b"NaN", "application/json"),
        (b"[" * deep + b"]" * deep, "application/json"),
        (b'{"comment":' + b"[" * 900 + b"]" * 900 + b"}", "application/json"),
        (b'{"comment":' + b'{"a":' * 900 + b"1" + b"}" * 901, "application/json"),
        (b"1" * 5000, "application/json"),  # more digits than Python reads
        (b'{"comment": "\\ud800", "reason": "\\udfff"}', "application/json"),  # lone surrogates
        (b'{"comment": "x"}', "text/plain"),
        (b'{"comment": "x"}', "application/x-www-form-urlencoded"),
        (b"--x\r\n\xff\r\n--x--\r\n", "multipart/form-data; boundary=x"),
        (b"\xff", "multipart/form-data"),
    ):
        r = post(client, path, content, content_type)
        if r.status_code < 300 and content_type == "text/plain":
            continue  # a route whose body is optional may ignore what it cannot read
        json_error(r)
    if (VALID_BODY.get(path) or {}) and "evidence" not in path:
        json_error(post(client, path, b""))  # the body is required
        json_error(post(client, path, b"", None))


def test_path_and_query_parameters_out_of_range_are_a_4xx_with_a_json_message(
    client: httpx.Client,
) -> None:
    viewer = auth("viewer")
    for path in (
        "/api/hazards/0",
        "/api/hazards/-1",
        f"/api/hazards/{2**63}",
        f"/api/hazards/{'9' * 5000}",
        "/api/hazards/NaN",
        "/api/hazards/%ff",
        "/api/alarms?limit=0",
        "/api/alarms?limit=NaN",
        f"/api/alarms?limit={'9' * 5000}",
        "/api/alarms?include_closed=%ff",
        "/api/sensors?history=1e400",
        "/api/sensors?history=-Infinity",
        "/api/audit?limit=99999999",
        "/api/hazards?open_only=maybe",
    ):
        json_error(client.get(path, headers=viewer))
    json_error(client.post(f"/api/alarms/{2**62 + 1}/ack", headers=auth("operator")))
    json_error(client.post("/api/interlocks/%ed%a0%80/reset", headers=auth("supervisor")))


def _json_values() -> st.SearchStrategy[Any]:
    text = st.text(st.characters() | st.characters(categories=["Cs"]), max_size=20)
    leaves = (
        st.none()
        | st.booleans()
        | st.integers()
        | st.sampled_from([10**400, -(10**400), 2**63, 0])
        | st.floats()  # NaN and ±Infinity among them
        | text
    )
    return st.recursive(
        leaves,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
        max_leaves=12,
    )


def _shaped(path: str, value: Any) -> st.SearchStrategy[Any]:
    """The route's valid body with one field (or a new one) set to `value`."""
    body = dict(VALID_BODY.get(path) or {"comment": "c"})
    fields = st.sampled_from(sorted(body)) | st.text(max_size=8)
    return fields.map(lambda f: {**body, f: value})


@st.composite
def _request(draw: st.DrawFn) -> tuple[str, str, bytes, str | None]:
    method, path = draw(st.sampled_from(ROUTES))
    kind = draw(st.sampled_from(["bytes", "json", "shaped", "deep", "digits"]))
    if kind == "bytes":
        content = draw(st.binary(max_size=64))
    elif kind == "deep":
        n = draw(st.integers(1, 3000))
        content = draw(st.sampled_from([b"[" * n + b"]" * n, b'{"a":' * n + b"0" + b"}" * n]))
    elif kind == "digits":
        content = b"-" * draw(st.integers(0, 1)) + b"9" * draw(st.integers(300, 6000))
    else:
        value = draw(_json_values())
        if kind == "shaped":
            value = draw(_shaped(path, value))
        content = json.dumps(value).encode()  # NaN as NaN, lone surrogates as \ud800
    content_type = draw(
        st.sampled_from(
            [
                "application/json",
                "application/json; charset=latin-1",
                "application/merge-patch+json",
                "text/plain",
                "multipart/form-data",
                None,
            ]
        )
    )
    return method, path, content, content_type


def test_arbitrary_bodies_to_every_mutating_route_are_never_a_5xx(client: httpx.Client) -> None:
    @settings(
        max_examples=1000,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(_request())
    def check(request: tuple[str, str, bytes, str | None]) -> None:
        method, path, content, content_type = request
        r = post(client, path, content, content_type, method)
        assert r.status_code < 500, (method, path, content[:200], content_type, r.text)
        if r.status_code >= 400:
            json_error(r)
        elif r.status_code in (204, 303):  # signed out; a form's sign-in sent on
            assert path.startswith("/auth/"), (path, r.status_code)
        else:
            assert isinstance(r.json(), dict | list), r.text  # a valid request, done

    check()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_schema_violating_requests_to_every_route_are_a_4xx_with_a_json_message(
    api: LiveApi,
) -> None:
    import schemathesis
    from schemathesis.generation.modes import GenerationMode

    schema = schemathesis.openapi.from_url(f"{api.base_url}/openapi.json")
    failures: list[str] = []
    for op in schema.get_all_operations():
        operation: Any = op.ok()  # type: ignore[union-attr]
        definition = SCHEMA["paths"][operation.path][operation.method.lower()]
        if operation.path == "/api/events":
            continue  # an endless stream
        if not definition.get("parameters") and "requestBody" not in definition:
            continue  # nothing a request could get wrong

        @settings(
            max_examples=25,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(operation.as_strategy(generation_mode=GenerationMode.NEGATIVE))
        def check(case: Any) -> None:
            r = case.call(headers=auth(role_for(concrete(case.operation.path))))
            shown = r.content[:200].decode("utf-8", "replace")  # a PDF or photo is bytes
            where = f"{case.method} {case.formatted_path}: {r.status_code} {shown}"
            if r.status_code >= 500:
                failures.append(where)
            elif r.status_code >= 400:
                try:
                    body = r.json()
                except ValueError:
                    body = None
                if not (isinstance(body, dict) and body.get("detail")):
                    failures.append(f"{where}: not a JSON detail")

        check()
    assert failures == []

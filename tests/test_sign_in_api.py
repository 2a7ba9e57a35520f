"""Signing in over HTTP (docs/workbench.md): the session cookie stands for a bearer token
on every `/api` route, with the same roles, 401 and 403; a change made with the cookie
needs its CSRF token; failed sign-ins are slowed (429) and audited."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from fastapi import FastAPI

from ehswatch.config import PlantConfig
from ehswatch.roles import Actor
from ehswatch.simulators.plc import PlcSim
from tests.aio import eventually, run
from tests.parts import api_server, open_tickets
from tests.postgres import database_url, query
from tests.test_api import auth, plant, raise_alarm

FORM = "application/x-www-form-urlencoded"
ADMIN = Actor(name="admin", role="admin")
PEOPLE = {"li.na": ("operator", "rectify-it-1"), "zhang.wei": ("supervisor", "dust-free-26")}


@asynccontextmanager
async def signed_in_service(
    config: PlantConfig,
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    app, server = api_server(config)
    async with PlcSim(config.plcs[0]):
        task = asyncio.create_task(server.serve(), name="test:api")
        await eventually(lambda: server.started, what="the API")
        try:
            for name, (role, password) in PEOPLE.items():
                await app.state.desk.people.add(name, role, password, by=ADMIN)
            base = f"http://127.0.0.1:{config.api.port}"
            async with httpx.AsyncClient(base_url=base) as client:
                yield app, client
        finally:
            server.should_exit = True
            await task


async def sign_in(client: httpx.AsyncClient, name: str) -> str:
    r = await client.post("/auth/login", json={"username": name, "password": PEOPLE[name][1]})
    assert r.status_code == 200, r.text
    return str(r.json()["csrf_token"])


def audit_actions(tmp_path: Path) -> list[tuple[str, str]]:
    url = database_url(tmp_path, "db.sqlite")
    return [(a, b) for a, b in query(url, "SELECT actor, action FROM audit_log ORDER BY id")]


def test_signing_in_sets_an_httponly_samesite_session_cookie_and_a_csrf_cookie(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        async with signed_in_service(plant(tmp_path)) as (_, client):
            r = await client.post(
                "/auth/login", json={"username": "li.na", "password": "rectify-it-1"}
            )
            assert r.status_code == 200
            body = r.json()
            assert (body["name"], body["role"]) == ("li.na", "operator")
            cookies = {c.split("=")[0]: c.lower() for c in r.headers.get_list("set-cookie")}
            assert "httponly" in cookies["ehs_session"] and "samesite=lax" in cookies["ehs_session"]
            assert "httponly" not in cookies["ehs_csrf"]
            assert client.cookies["ehs_csrf"] == body["csrf_token"]
            me = await client.get("/auth/me")
            assert me.json()["name"] == "li.na" and me.json()["csrf_token"] == body["csrf_token"]

    run(main())


def test_the_session_cookie_is_a_caller_with_the_persons_role(tmp_path: Path) -> None:
    async def main() -> None:
        async with signed_in_service(plant(tmp_path)) as (app, client):
            assert (await client.get("/api/alarms")).status_code == 401
            csrf = await sign_in(client, "li.na")
            assert (await client.get("/api/alarms")).status_code == 200
            service = app.state.service
            raise_alarm(service)
            await eventually(
                lambda: any(a.id is not None for a in service.alarms.open.values()),
                what="the alarm stored",
            )
            (alarm,) = list(service.alarms.open.values())
            # An operator acknowledges (200) but may not reset an interlock (403, audited).
            r = await client.post(f"/api/alarms/{alarm.id}/ack", headers={"X-CSRF-Token": csrf})
            assert r.status_code == 200, r.text
            assert r.json()["acked_by"] == "li.na"
            r = await client.post("/api/interlocks/z1/reset", headers={"X-CSRF-Token": csrf})
            assert r.status_code == 403

    run(main())
    actions = audit_actions(tmp_path)
    assert ("li.na", "POST /api/interlocks/{zone}/reset refused") in actions


def test_a_change_with_the_session_cookie_and_no_csrf_token_is_refused_and_audited(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        async with signed_in_service(plant(tmp_path)) as (_app, client):
            csrf = await sign_in(client, "zhang.wei")
            missing = await client.post("/api/interlocks/z1/reset")
            wrong = await client.post("/api/interlocks/z1/reset", headers={"X-CSRF-Token": "x"})
            assert missing.status_code == wrong.status_code == 403
            assert "X-CSRF-Token" in missing.json()["detail"]
            right = await client.post("/api/interlocks/z1/reset", headers={"X-CSRF-Token": csrf})
            assert right.status_code == 409  # past the CSRF check: the zone is not tripped
            assert "not tripped" in right.json()["detail"]
            # A bearer token needs no CSRF token: no browser sends it by itself.
            bearer = await client.post("/api/interlocks/z1/reset", headers=auth("supervisor"))
            assert bearer.status_code == 409

    run(main())
    csrf_refusal = ("zhang.wei", "POST /api/interlocks/{zone}/reset refused")
    assert audit_actions(tmp_path).count(csrf_refusal) == 2  # missing, then wrong


def test_signing_out_ends_the_session_for_every_route(tmp_path: Path) -> None:
    async def main() -> None:
        async with signed_in_service(plant(tmp_path)) as (_, client):
            await sign_in(client, "li.na")
            token = client.cookies["ehs_session"]
            assert (await client.post("/auth/logout")).status_code == 204
            assert "ehs_session" not in client.cookies
            client.cookies.set("ehs_session", token)  # a copy kept by someone
            r = await client.get("/api/alarms")
            assert r.status_code == 401 and "sign in again" in r.json()["detail"]

    run(main())
    assert ("li.na", "signed out") in audit_actions(tmp_path)


def test_a_wrong_password_is_401_and_repeated_ones_are_429_with_retry_after(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        async with signed_in_service(plant(tmp_path)) as (_, client):
            for _ in range(5):
                r = await client.post("/auth/login", json={"username": "li.na", "password": "x"})
                assert r.status_code == 401
            r = await client.post(
                "/auth/login", json={"username": "li.na", "password": "rectify-it-1"}
            )
            assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
            assert "too many failed sign-ins" in r.json()["detail"]

    run(main())
    assert audit_actions(tmp_path).count(("li.na", "sign-in refused")) == 6


def test_a_form_sign_in_goes_on_to_the_workbench_never_to_another_site(tmp_path: Path) -> None:
    async def main() -> None:
        async with signed_in_service(plant(tmp_path)) as (_, client):
            for wanted, lands in (
                ("/app/hazards/3", "/app/hazards/3"),
                ("https://evil.example/", "/app/"),
                ("/app//evil.example", "/app/"),
            ):
                r = await client.post(
                    "/auth/login",
                    data={"username": "li.na", "password": "rectify-it-1", "next": wanted},
                )
                assert r.status_code == 303 and r.headers["location"] == lands
                assert "ehs_session" in client.cookies

    run(main())


@pytest.mark.parametrize(
    ("content", "headers", "status"),
    [
        (b"\xff\xfe\x00", {"content-type": "application/json"}, 422),
        (b'{"username": "li.na"}', {"content-type": "application/json"}, 422),
        (b'{"username": "li.na", "password": NaN}', {"content-type": "application/json"}, 422),
        (
            b"username=li.na&password=%ff%fe",
            {"content-type": "application/x-www-form-urlencoded"},
            401,
        ),
        (b"li.na rectify-it-1", {"content-type": "text/plain"}, 415),
    ],
)
def test_a_malformed_sign_in_is_a_clear_4xx(
    tmp_path: Path, content: bytes, headers: dict[str, str], status: int
) -> None:
    async def main() -> None:
        async with signed_in_service(plant(tmp_path)) as (_, client):
            r = await client.post("/auth/login", content=content, headers=headers)
            assert r.status_code == status, r.text
            assert "detail" in r.json()

    run(main())


def test_an_admin_manages_people_over_the_api_and_nobody_else_may(tmp_path: Path) -> None:
    async def main() -> None:
        async with signed_in_service(plant(tmp_path)) as (_, client):
            new = {"name": "zhao.min", "role": "operator", "password": "long-enough-1"}
            assert (
                await client.post("/api/people", json=new, headers=auth("gm"))
            ).status_code == 403
            added = await client.post("/api/people", json=new, headers=auth("admin"))
            assert added.status_code == 200 and added.json()["role"] == "operator"
            again = await client.post("/api/people", json=new, headers=auth("admin"))
            assert again.status_code == 409
            machine = {**new, "name": "operator.user"}  # a token user's name in the config
            r = await client.post("/api/people", json=machine, headers=auth("admin"))
            assert r.status_code == 422 and "machine user" in r.json()["detail"]
            short = {**new, "name": "qian.yu", "password": "short"}
            r = await client.post("/api/people", json=short, headers=auth("admin"))
            assert r.status_code == 422 and "at least 8" in r.json()["detail"]
            # Signed in, then disabled by the admin: the session ends at once.
            await client.post(
                "/auth/login", json={"username": "zhao.min", "password": "long-enough-1"}
            )
            assert (await client.get("/api/alarms")).status_code == 200
            off = await client.post("/api/people/zhao.min/disable", headers=auth("admin"))
            assert off.status_code == 200 and off.json()["disabled"] is True
            assert (await client.get("/api/alarms")).status_code == 401
            listed = (await client.get("/api/people", headers=auth("admin"))).json()
            assert {p["name"] for p in listed} == {"li.na", "zhang.wei", "zhao.min"}
            missing = await client.post("/api/people/nobody/enable", headers=auth("admin"))
            assert missing.status_code == 404

    run(main())
    actions = audit_actions(tmp_path)
    assert ("admin.user", "person added") in actions
    assert ("admin.user", "person disabled") in actions
    assert ("gm.user", "POST /api/people refused") in actions


def test_a_due_time_is_taken_in_iso_8601_with_its_offset_or_as_epoch_seconds(
    tmp_path: Path,
) -> None:
    async def main() -> list[tuple[int, Any]]:
        async with signed_in_service(plant(tmp_path)) as (app, client):
            service = app.state.service
            raise_alarm(service, 45.0)
            (t,) = await open_tickets(app.state.desk)
            due = datetime.fromtimestamp(t.created_at + 3600, ZoneInfo("Asia/Shanghai"))
            answers = []
            for given in (due.replace(tzinfo=None).isoformat(), "tomorrow", due.isoformat()):
                body = {"owner": "li.na", "due_at": given}
                r = await client.post(
                    f"/api/hazards/{t.id}/register", json=body, headers=auth("supervisor")
                )
                answers.append((r.status_code, r.json().get("due_at")))
            return [*answers, (0, t.created_at + 3600)]

    (naive, words, iso, (_, wanted)) = run(main())
    assert naive[0] == 422 and words[0] == 422  # an ISO time needs its offset
    assert iso == (200, pytest.approx(wanted, abs=1e-3))


def test_a_sign_in_posted_from_another_site_or_as_multipart_is_refused(tmp_path: Path) -> None:
    async def main() -> None:
        async with signed_in_service(plant(tmp_path)) as (_, client):
            given = {"username": "li.na", "password": "rectify-it-1"}
            r = await client.post(
                "/auth/login", data=given, headers={"Origin": "http://evil.example"}
            )
            assert r.status_code == 403 and "ehs_session" not in client.cookies
            r = await client.post("/auth/login", files={"username": (None, "li.na")})
            assert r.status_code == 415  # no uploads before anyone is signed in
            own = f"http://127.0.0.1:{client.base_url.port}"
            r = await client.post("/auth/login", data=given, headers={"Origin": own})
            assert r.status_code == 303 and "ehs_session" in client.cookies

    run(main())


def test_a_page_for_an_id_past_any_database_is_a_4xx(tmp_path: Path) -> None:
    async def main() -> None:
        async with signed_in_service(plant(tmp_path)) as (_, client):
            await sign_in(client, "li.na")
            for page in ("/app/alarms/99999999999999999999", "/app/hazards/0"):
                assert (await client.get(page)).status_code == 422, page

    run(main())


def test_a_thumbnail_that_is_not_a_small_photo_is_refused_with_its_photo(tmp_path: Path) -> None:
    jpeg = b"\xff\xd8\xff\xe0" + b"\x00" * 64

    async def main() -> tuple[int, int, list[Any]]:
        async with signed_in_service(plant(tmp_path)) as (app, client):
            raise_alarm(app.state.service, 45.0)
            desk = app.state.desk
            (t,) = await open_tickets(desk)
            await desk.hazards.register(
                t.id, Actor(name="zhang.wei", role="supervisor"), owner="li.na"
            )
            url = f"/api/hazards/{t.id}/evidence"
            bad = await client.post(
                url,
                files={"file": ("p.jpg", jpeg), "thumbnail": ("t.txt", b"not a photo")},
                headers=auth("supervisor"),
            )
            big = await client.post(
                url,
                files={"file": ("p.jpg", jpeg), "thumbnail": ("t.jpg", jpeg * 5000)},
                headers=auth("supervisor"),
            )
            listed = (await client.get(url, headers=auth("viewer"))).json()
            return bad.status_code, big.status_code, listed

    bad, big, listed = run(main())
    assert (bad, big, listed) == (415, 413, [])  # and the photo is not kept without it

"""The REST API (docs/api.md) over a real server: roles, errors, SSE, metrics, health, fuzzing."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from ehswatch.config import ROLES, PlantConfig, parse_config
from ehswatch.readings import ReadingBatch
from ehswatch.service import Service
from ehswatch.simulators.plc import PlcSim
from tests.aio import eventually, run
from tests.parts import api_server, open_tickets
from tests.postgres import database_url
from tests.servers import free_port

TOKENS: dict[str, str] = {role: f"{role}-token" for role in ROLES}


def plant(tmp_path: Path, extra: dict[str, Any] | None = None) -> PlantConfig:
    """The API tests' plant; `extra` sections replace its own (or are added)."""
    doc: dict[str, Any] = {
        "site": {"id": "plant-1", "name": "华东机加工厂", "timezone": "Asia/Shanghai"},
        "mqtt": {"url": f"mqtt://127.0.0.1:{free_port()}"},  # no broker: the collector retries
        "database": {"url": database_url(tmp_path, "db.sqlite")},
        "api": {"host": "127.0.0.1", "port": free_port()},
        "users": [
            {
                "name": f"{role}.user",
                "role": role,
                "token_sha256": hashlib.sha256(t.encode()).hexdigest(),
            }
            for role, t in TOKENS.items()
        ],
        "sensor_types": {
            "dust": {
                "unit": "mg/m3",
                "high": {"warning": 10, "alarm": 20, "interlock": 40},
                "deadband": 1,
                "stale_after_s": 3600,
            }
        },
        "plcs": [{"id": "plc-1", "host": "127.0.0.1", "port": free_port()}],
        "zones": [
            {
                "id": "z1",
                "name": "打磨车间1",
                "interlock": {
                    "plc": "plc-1",
                    "coil": 0,
                    "voting": "1oo1",
                    "sensor_types": ["dust"],
                },
            }
        ],
        "sensors": [{"id": "D-1", "name": "粉尘1", "type": "dust", "zone": "z1"}],
        "hazards": {"evidence_dir": str(tmp_path / "evidence")},
    }
    doc.update(extra or {})
    return parse_config(yaml.safe_dump(doc, allow_unicode=True), env={})


@asynccontextmanager
async def serve_app(config: PlantConfig) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    """The plant's app on a real server with its PLC simulated, and a client of it."""
    app, server = api_server(config)
    async with PlcSim(config.plcs[0]):
        task = asyncio.create_task(server.serve(), name="test:api")
        await eventually(lambda: server.started, what="the API")
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{config.api.port}") as client:
                yield app, client
        finally:
            server.should_exit = True
            await task


@asynccontextmanager
async def serve(config: PlantConfig) -> AsyncIterator[tuple[Service, httpx.AsyncClient]]:
    async with serve_app(config) as (app, client):
        yield app.state.service, client


def auth(role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[role]}"}


async def listed(client: httpx.AsyncClient, path: str, timeout: float = 10.0) -> list[Any]:
    """`path`'s list once it is not empty: the desk part lists what the control part has
    stored, a moment after the control part decided it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not (answer := (await client.get(path, headers=auth("viewer"))).json()):
        if loop.time() > deadline:
            raise AssertionError(f"{path} still empty after {timeout} s")
        await asyncio.sleep(0.05)
    return list(answer)


def raise_alarm(service: Service, value: float = 25.0) -> None:
    ev = service.stage.evaluator
    service.stage.evaluate(ReadingBatch.of([0], [value], [float(ev.last_ts[0]) + 1]))


# route, minimum role at the route, roles the domain allows beyond that (None: all above)
MUTATING: list[tuple[str, str, dict[str, Any] | None, str, set[str] | None]] = [
    ("POST", "/api/alarms/1/ack", None, "operator", None),
    ("POST", "/api/alarms/1/shelve", {"minutes": 10, "reason": "cleaning"}, "supervisor", None),
    ("POST", "/api/alarms/1/unshelve", None, "supervisor", None),
    ("POST", "/api/interlocks/z1/reset", None, "supervisor", None),
    (
        "POST",
        "/api/interlocks/z1/bypass",
        {"reason": "r", "measure": "m", "hours": 1},
        "supervisor",
        {"safety_director", "gm"},
    ),
    ("POST", "/api/interlocks/z1/bypass/end", None, "supervisor", None),
    ("POST", "/api/hazards/1/register", {"owner": "operator.user"}, "supervisor", None),
    ("POST", "/api/hazards/1/assign", {"owner": "operator.user"}, "supervisor", None),
    (
        "POST",
        "/api/people",
        {"name": "zhao.min", "role": "operator", "password": "long-enough-1"},
        "admin",
        None,
    ),
    ("POST", "/api/people/z1/disable", None, "admin", None),
    ("POST", "/api/people/z1/enable", None, "admin", None),
    ("POST", "/api/people/z1/password", {"password": "long-enough-2"}, "admin", None),
    ("POST", "/api/hazards/1/start", None, "operator", None),
    ("POST", "/api/hazards/1/confirm-stop-work", None, "supervisor", None),
    ("POST", "/api/owners/z1", {"team_leader": "supervisor.user"}, "admin", None),
    ("POST", "/api/hazards/1/accept-report", {"grade": "C"}, "supervisor", None),
    ("POST", "/api/hazards/1/dismiss-report", {"reason": "seen"}, "supervisor", None),
    ("POST", "/api/hazards/1/submit", {"measure": "fixed"}, "operator", None),
    ("POST", "/api/hazards/1/verify", {"passed": True}, "supervisor", None),
    ("POST", "/api/hazards/1/approve", None, "supervisor", None),
    (
        "POST",
        "/api/hazards/1/grade",
        {"grade": "C", "reason": "drift"},
        "supervisor",
        {"dept_head"},
    ),
]


def test_every_mutating_route_needs_a_token_and_a_high_enough_role_and_refusals_are_audited(
    tmp_path: Path,
) -> None:
    """Each 403 (the API's role check or the domain's) and each 409 is one audit entry
    "… refused" by the person refused."""
    config = plant(tmp_path)

    async def main() -> list[str]:
        problems = []
        refused: list[tuple[str, int]] = []
        async with serve(config) as (service, client):
            raise_alarm(service)
            await eventually(lambda: len(service.alarms.open) == 1, what="an alarm")
            for method, path, body, least, domain in MUTATING:
                r = await client.request(method, path, json=body)
                if r.status_code != 401:
                    problems.append(f"{path} without a token: {r.status_code}")
                r = await client.request(
                    method, path, json=body, headers={"Authorization": "Bearer nope"}
                )
                if r.status_code != 401:
                    problems.append(f"{path} with a wrong token: {r.status_code}")
                for role in ROLES:
                    allowed = ROLES.index(role) >= ROLES.index(least) and (
                        domain is None or role in domain
                    )
                    r = await client.request(method, path, json=body, headers=auth(role))
                    if r.status_code in (403, 409):
                        refused.append((f"{role}.user", r.status_code))
                    if allowed and r.status_code in (401, 403):
                        problems.append(f"{path} as {role}: {r.status_code} {r.text}")
                    if not allowed and r.status_code != 403:
                        problems.append(f"{path} as {role}: {r.status_code}, expected 403")
                    if r.status_code >= 500:
                        problems.append(f"{path} as {role}: {r.status_code}")
            log = (await client.get("/api/audit?limit=5000", headers=auth("admin"))).json()
            audited = sorted(e["actor"] for e in log if e["action"].endswith(" refused"))
            if audited != sorted(who for who, _ in refused):
                problems.append(
                    f"{len(refused)} refusals ({sum(c == 403 for _, c in refused)} of them "
                    f"403) but {len(audited)} audited"
                )
        return problems

    assert run(main(), timeout=120) == []


def test_reads_need_a_viewer_token(tmp_path: Path) -> None:
    config = plant(tmp_path)

    async def main() -> None:
        async with serve(config) as (_, client):
            for path in (
                "/api/sensors",
                "/api/zones",
                "/api/alarms",
                "/api/interlocks",
                "/api/hazards",
                "/api/audit",
                "/api/alarms/metrics",
                "/api/hazards/report",
            ):
                assert (await client.get(path)).status_code == 401, path
                r = await client.get(path, headers=auth("viewer"))
                assert r.status_code == 200, (path, r.text)
            sensors = (await client.get("/api/sensors?history=60", headers=auth("viewer"))).json()
            assert sensors[0]["id"] == "D-1" and sensors[0]["unit"] == "mg/m3"
            assert sensors[0]["setpoints"] == {
                "high.warning": 10,
                "high.alarm": 20,
                "high.interlock": 40,
            }

    run(main())


def test_refusals_and_unknown_ids_are_json_errors_with_a_reason(tmp_path: Path) -> None:
    config = plant(tmp_path)

    async def main() -> None:
        async with serve(config) as (_, client):
            r = await client.post("/api/interlocks/z1/reset", headers=auth("supervisor"))
            assert (r.status_code, r.json()) == (409, {"detail": "z1 is not tripped"})
            r = await client.post("/api/alarms/999/ack", headers=auth("operator"))
            assert r.status_code == 404 and "999" in r.json()["detail"]
            r = await client.post("/api/alarms/1/shelve", json={"minutes": -5}, headers=auth("gm"))
            assert r.status_code == 422 and r.json()["detail"]
            r = await client.post("/api/interlocks/nowhere/reset", headers=auth("gm"))
            assert r.status_code == 404

    run(main())


def test_the_event_stream_delivers_a_transition(tmp_path: Path) -> None:
    config = plant(tmp_path)

    async def main() -> dict[str, Any]:
        async with (
            serve(config) as (service, client),
            client.stream("GET", f"/api/events?access_token={TOKENS['viewer']}") as r,
        ):
            assert r.headers["content-type"].startswith("text/event-stream")
            lines = r.aiter_lines()
            assert await anext(lines) == ": ehswatch events"
            raise_alarm(service, 45.0)
            event = None
            async with asyncio.timeout(10):
                async for line in lines:
                    if line.startswith("data: "):
                        data = json.loads(line[6:])
                        if data["type"] == "alarm":
                            event = data
                            break
            await lines.aclose()  # type: ignore[attr-defined]
        assert event is not None
        return dict(event)

    event = run(main())
    assert event["event"] == "raised" and event["alarm"]["sensor"] == "D-1"
    assert event["alarm"]["tier"] == 3 and event["event_id"] == 1  # the plant's first event


def test_metrics_are_prometheus_text_and_health_lists_components(tmp_path: Path) -> None:
    config = plant(tmp_path)

    async def main() -> None:
        async with serve(config) as (service, client):
            raise_alarm(service)
            await eventually(lambda: len(service.alarms.open) == 1, what="an alarm")
            service.state.publish()  # what the next tick would publish
            text = (await client.get("/metrics")).text
            assert "# TYPE ehswatch_readings_total counter" in text
            assert "ehswatch_readings_total 1" in text
            assert "ehswatch_alarms_active 1" in text
            assert "ehswatch_interlocks_tripped 0" in text
            health = (await client.get("/health")).json()
            assert health["components"]["evaluator-stage"]["drain"]["running"] is True
            assert health["checks"]["mqtt"] == {"connected": False}
            assert health["status"] == "degraded"  # no broker here

    run(main())


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_no_route_answers_500_to_generated_requests(tmp_path: Path) -> None:
    import schemathesis
    from hypothesis import HealthCheck, settings

    config = plant(tmp_path)

    async def main() -> list[str]:
        failures: list[str] = []
        async with serve(config) as (service, client):
            raise_alarm(service)
            schema = await asyncio.to_thread(
                schemathesis.openapi.from_url, f"{client.base_url}/openapi.json"
            )
            for op in schema.get_all_operations():
                operation: Any = op.ok()  # type: ignore[union-attr]
                if operation.path == "/api/events":
                    continue  # an endless stream

                @settings(
                    max_examples=15,
                    deadline=None,
                    suppress_health_check=list(HealthCheck),
                    database=None,
                )
                def check(case: Any) -> None:
                    response = case.call(headers=auth("gm"))
                    if response.status_code >= 500:
                        failures.append(
                            f"{case.method} {case.formatted_path}: {response.status_code}"
                        )

                await asyncio.to_thread(_run_hypothesis, check, operation)
        return failures

    assert run(main(), timeout=300) == []


def _run_hypothesis(check: Any, operation: Any) -> None:
    from hypothesis import given

    given(operation.as_strategy())(check)()  # type: ignore[no-untyped-call]


def test_a_change_made_through_the_api_is_in_the_next_list_read(tmp_path: Path) -> None:
    # The lists a board polls are kept for up to a second; a change the control part
    # has answered for must not wait for its event, nor for that second.
    async def main() -> None:
        async with serve(plant(tmp_path)) as (service, client):
            raise_alarm(service, 25.0)
            await listed(client, "/api/alarms")
            for _ in range(6):
                (before,) = (await client.get("/api/alarms", headers=auth("viewer"))).json()
                shelved = before["state"].startswith("shelved")
                op = "unshelve" if shelved else "shelve"
                body = None if shelved else {"minutes": 10, "reason": "cleaning"}
                r = await client.post(
                    f"/api/alarms/{before['id']}/{op}", json=body, headers=auth("supervisor")
                )
                assert r.status_code == 200, r.text
                (after,) = (await client.get("/api/alarms", headers=auth("viewer"))).json()
                assert after["state"].startswith("shelved") != shelved, (op, after["state"])

    run(main(), timeout=60)


def test_every_action_answers_a_model_and_documents_its_refusals(tmp_path: Path) -> None:
    """From the OpenAPI description a client reads: each action's answer is a named
    schema, not a bare object, and its refusals are listed."""
    from ehswatch.api.app import create_app

    spec = create_app(plant(tmp_path)).openapi()
    actions = {
        path: op["post"]
        for path, op in spec["paths"].items()
        if "post" in op and path.startswith("/api/")
    }
    multipart = {"/api/hazards/{ticket_id}/evidence", "/api/cleaning/{zone}"}
    multipart |= {"/api/checkpoints/{checkpoint_id}/rounds", "/api/reports/{zone}"}
    assert set(actions) >= multipart
    assert len(actions) == len(MUTATING) + len(multipart)  # the uploads are multipart
    for path, op in actions.items():
        answer = op["responses"]["200"]["content"]["application/json"]["schema"]
        assert "$ref" in answer, (path, answer)
        assert {"401", "403", "404", "409"} <= set(op["responses"]), path
    login = spec["paths"]["/auth/login"]["post"]
    answer = login["responses"]["200"]["content"]["application/json"]["schema"]
    assert answer == {"$ref": "#/components/schemas/SignedIn"}
    assert {"303", "401", "422", "429"} <= set(login["responses"])
    assert set(login["requestBody"]["content"]) == {
        "application/json",
        "application/x-www-form-urlencoded",
    }


def test_the_answer_models_have_the_fields_their_sources_give() -> None:
    from ehswatch.api.models import Interlock
    from ehswatch.interlock.state import ZoneState

    public = ZoneState(zone="z").public(0.0)
    assert set(Interlock.model_fields) == set(public)
    Interlock.model_validate(public)  # and the types


def test_times_come_as_iso_8601_with_the_sites_offset_when_asked(tmp_path: Path) -> None:
    """`?times=iso`: every time of the answer as ISO 8601 text in the site's zone (+08:00
    here), the same instant as the epoch seconds of the default answer; nothing else
    changes, an action's answer too; another value is 422."""
    from datetime import datetime

    from ehswatch.api.iso_times import TIME_KEY

    def same_but_times(epoch: Any, text: Any, where: str = "") -> int:
        """Compare an epoch answer with its ISO one; the number of times compared."""
        if isinstance(epoch, dict):
            assert set(epoch) == set(text), where
            n = 0
            for k, v in epoch.items():
                if TIME_KEY.search(k) and isinstance(v, float | int) and v is not None:
                    when = datetime.fromisoformat(text[k])
                    assert when.utcoffset() is not None
                    assert when.utcoffset().total_seconds() == 8 * 3600, text[k]  # type: ignore[union-attr]
                    assert abs(when.timestamp() - v) < 0.001, (k, v, text[k])
                    n += 1
                else:
                    n += same_but_times(v, text[k], f"{where}.{k}")
            return n
        if isinstance(epoch, list):
            assert len(epoch) == len(text), where
            return sum(same_but_times(a, b, where) for a, b in zip(epoch, text, strict=True))
        assert epoch == text, where
        return 0

    async def main() -> None:
        async with serve_app(plant(tmp_path)) as (app, client):
            service = app.state.service
            raise_alarm(service, 45.0)  # interlock tier: an alarm, a trip, an A ticket
            await eventually(lambda: len(service.alarms.open) == 1, what="an alarm")
            await eventually(
                lambda: service.interlock.states["z1"].tripped, what="the zone tripped"
            )
            await open_tickets(app.state.desk)  # the alarm is stored before its ticket
            while not (await client.get("/api/interlocks", headers=auth("viewer"))).json()[0][
                "tripped"
            ]:  # the desk's view is the control part's last published state
                await asyncio.sleep(0.05)
            compared = 0
            for path in ("/api/alarms", "/api/interlocks", "/api/sensors", "/api/zones"):
                while True:  # one state read twice, around the ISO read (lists are cached)
                    epoch = (await client.get(path, headers=auth("viewer"))).json()
                    iso = await client.get(f"{path}?times=iso", headers=auth("viewer"))
                    assert iso.status_code == 200, iso.text
                    if epoch and epoch == (await client.get(path, headers=auth("viewer"))).json():
                        break
                compared += same_but_times(epoch, iso.json(), path)
            (ticket,) = (await client.get("/api/hazards", headers=auth("viewer"))).json()
            iso_ticket = (
                await client.get(f"/api/hazards/{ticket['id']}?times=iso", headers=auth("viewer"))
            ).json()
            compared += same_but_times(ticket, iso_ticket, "ticket")
            assert isinstance(iso_ticket["due_at"], str) and isinstance(ticket["due_at"], float)
            acked = await client.post("/api/alarms/1/ack?times=iso", headers=auth("operator"))
            assert acked.status_code == 200, acked.text
            assert datetime.fromisoformat(acked.json()["acked_at"]).utcoffset() is not None
            assert compared >= 7, compared  # first/last_at, 2 tripped_at, ts, created/due_at
            bogus = await client.get("/api/alarms?times=local", headers=auth("viewer"))
            assert bogus.status_code == 422, bogus.text
            refused = await client.get("/api/alarms?times=iso")  # an error is as it was
            assert refused.status_code == 401 and "detail" in refused.json()

    run(main(), timeout=60)

"""`Idempotency-Key` (docs/api.md): a POST sent again with its key is answered again, never
done again — per caller, per route, answers of 500 and over not kept."""

from __future__ import annotations

import asyncio
import hashlib
import time
from pathlib import Path

import httpx

from tests.aio import eventually, run
from tests.postgres import database_url, query
from tests.test_api import TOKENS, auth, plant, raise_alarm, serve


def audited(tmp_path: Path, action: str) -> int:
    url = database_url(tmp_path, "db.sqlite")
    ((n,),) = query(url, "SELECT count(*) FROM audit_log WHERE action = ?", (action,))
    return int(n)


async def an_alarm(service: object, client: httpx.AsyncClient) -> int:
    raise_alarm(service)  # type: ignore[arg-type]
    alarms = service.alarms  # type: ignore[attr-defined]
    await eventually(lambda: any(a.id for a in alarms.open.values()), what="an alarm stored")
    (alarm,) = alarms.open.values()
    return int(alarm.id)


def test_an_action_sent_twice_with_its_key_is_done_once_and_answered_twice(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        async with serve(plant(tmp_path)) as (service, client):
            aid = await an_alarm(service, client)
            headers = {**auth("operator"), "Idempotency-Key": "ack-7f3a"}
            first = await client.post(f"/api/alarms/{aid}/ack", headers=headers)
            again = await client.post(f"/api/alarms/{aid}/ack", headers=headers)
            assert first.status_code == again.status_code == 200
            assert again.json() == first.json()
            assert again.headers["idempotent-replayed"] == "true"
            assert "idempotent-replayed" not in first.headers
            # Without the key, the same request is done again: refused, already acked.
            third = await client.post(f"/api/alarms/{aid}/ack", headers=auth("operator"))
            assert third.status_code == 409

    run(main())
    assert audited(tmp_path, "alarm ack") == 1


def test_a_refusal_is_an_answer_kept_like_any_other(tmp_path: Path) -> None:
    async def main() -> None:
        async with serve(plant(tmp_path)) as (_, client):
            headers = {**auth("supervisor"), "Idempotency-Key": "reset-1"}
            answers = [await client.post("/api/interlocks/z1/reset", headers=headers) for _ in "ab"]
            assert [a.status_code for a in answers] == [409, 409], [a.headers for a in answers]
            assert answers[1].headers["idempotent-replayed"] == "true"

    run(main())
    assert audited(tmp_path, "reset refused") == 1


def test_keys_are_per_caller_and_per_route(tmp_path: Path) -> None:
    async def main() -> None:
        async with serve(plant(tmp_path)) as (_, client):
            key = {"Idempotency-Key": "same-key"}
            one = await client.post(
                "/api/interlocks/z1/reset", headers={**auth("supervisor"), **key}
            )
            other = await client.post("/api/interlocks/z1/reset", headers={**auth("gm"), **key})
            assert "idempotent-replayed" not in other.headers  # another caller: done for them
            assert one.status_code == other.status_code == 409
            elsewhere = await client.post(
                "/api/interlocks/z1/bypass/end", headers={**auth("supervisor"), **key}
            )
            assert elsewhere.status_code == 422
            assert "used for another request" in elsewhere.json()["detail"]

    run(main())
    assert audited(tmp_path, "reset refused") == 2


def test_a_malformed_key_is_a_clear_4xx(tmp_path: Path) -> None:
    async def main() -> None:
        async with serve(plant(tmp_path)) as (_, client):
            for key in ("x" * 129, "with space", "ключ"):
                headers = [(k.encode(), v.encode()) for k, v in auth("supervisor").items()]
                headers.append((b"Idempotency-Key", key.encode()))  # as bytes: any at all
                r = await client.post("/api/interlocks/z1/reset", headers=headers)
                assert r.status_code == 422, key
                assert "Idempotency-Key" in r.json()["detail"]

    run(main())
    assert audited(tmp_path, "reset refused") == 0


def test_two_copies_at_once_are_done_once(tmp_path: Path) -> None:
    async def main() -> list[int]:
        async with serve(plant(tmp_path)) as (service, client):
            aid = await an_alarm(service, client)
            headers = {**auth("operator"), "Idempotency-Key": "twice-at-once"}
            answers = await asyncio.gather(
                *(client.post(f"/api/alarms/{aid}/ack", headers=headers) for _ in range(2))
            )
            return sorted(a.status_code for a in answers)

    codes = run(main())
    assert codes in ([200, 200], [200, 409])  # replayed, or told it is still being done
    assert audited(tmp_path, "alarm ack") == 1


def test_the_same_key_with_another_body_is_refused_not_answered(tmp_path: Path) -> None:
    async def main() -> None:
        async with serve(plant(tmp_path)) as (_, client):
            headers = {**auth("supervisor"), "Idempotency-Key": "one-body"}
            url = "/api/interlocks/z1/reset"
            first = await client.post(url, json={"comment": "a"}, headers=headers)
            other = await client.post(url, json={"comment": "b"}, headers=headers)
            assert first.status_code == 409 and other.status_code == 422
            assert "used for another request" in other.json()["detail"]

    run(main())


def test_nobody_keeps_anything_and_an_abandoned_key_is_given_up(tmp_path: Path) -> None:
    async def main() -> None:
        async with serve(plant(tmp_path)) as (_, client):
            for k in range(20):  # not a caller: nothing kept for them
                r = await client.post(
                    "/api/interlocks/z1/reset",
                    headers={"Authorization": "Bearer nobody", "Idempotency-Key": f"k{k}"},
                )
                assert r.status_code == 401
            # A request whose process died while doing it: given up after a minute.
            headers = {**auth("supervisor"), "Idempotency-Key": "died"}
            caller = b"bearer:Bearer " + TOKENS["supervisor"].encode()
            digest = hashlib.sha256(caller + b"\0died").hexdigest()
            query(
                database_url(tmp_path, "db.sqlite"),
                "INSERT INTO idempotent_request (digest, path, request_sha256, at, status,"
                " content_type, body) VALUES (?, '/api/interlocks/z1/reset', '', ?, NULL,"
                " '', ?)",
                (digest, time.time() - 120, b""),
            )
            r = await client.post("/api/interlocks/z1/reset", headers=headers)
            assert r.status_code == 409 and "not tripped" in r.json()["detail"]

    run(main())
    rows = query(database_url(tmp_path, "db.sqlite"), "SELECT path, status FROM idempotent_request")
    assert rows == [("/api/interlocks/z1/reset", 409)]

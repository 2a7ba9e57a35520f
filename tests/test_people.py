"""People and their sessions (docs/workbench.md): argon2id passwords, sessions that end,
throttled sign-ins, every change and every sign-in audited; `ehswatch users`."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from ehswatch.db import Database
from ehswatch.people.directory import CHECKS_AT_ONCE, People, SignInRefused
from ehswatch.people.passwords import password_problem
from ehswatch.people.throttle import LoginThrottle
from ehswatch.roles import Actor, NotFound, Refused
from tests.aio import run
from tests.postgres import database_url, query

ADMIN = Actor(name="admin.li", role="admin")
ROOT = Path(__file__).resolve().parent.parent


class Hands:
    """Wall and monotonic time, moved by hand."""

    def __init__(self) -> None:
        self.wall = 1_800_000_000.0
        self.mono = 100.0

    def advance(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds


@asynccontextmanager
async def directory(tmp_path: Path, hands: Hands, **kw: float) -> AsyncIterator[People]:
    async with Database(database_url(tmp_path, "db.sqlite")) as db:
        yield People(
            db=db,
            clock=lambda: hands.wall,
            monotonic=lambda: hands.mono,
            **kw,  # type: ignore[arg-type]
        )


def audit_rows(tmp_path: Path) -> list[tuple[Any, ...]]:
    return query(
        database_url(tmp_path, "db.sqlite"),
        "SELECT actor, action, subject FROM audit_log ORDER BY id",
    )


def test_a_password_is_kept_only_as_its_argon2id_hash(tmp_path: Path) -> None:
    async def main() -> None:
        async with directory(tmp_path, Hands()) as people:
            await people.add("zhang.wei", "supervisor", "dust-free-2026", by=ADMIN)

    run(main())
    ((stored,),) = query(database_url(tmp_path, "db.sqlite"), "SELECT password_hash FROM person")
    assert str(stored).startswith("$argon2id$")
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("db.sqlite*"))
    assert b"dust-free-2026" not in raw
    assert audit_rows(tmp_path) == [("admin.li", "person added", "person:zhang.wei")]


def test_names_roles_and_passwords_are_checked_before_anything_is_stored(tmp_path: Path) -> None:
    async def main() -> None:
        async with directory(tmp_path, Hands()) as people:
            with pytest.raises(ValueError, match="a name is 1 to 64"):
                await people.add("zhang wei", "operator", "long-enough", by=ADMIN)
            with pytest.raises(ValueError, match="at least 8"):
                await people.add("zhang.wei", "operator", "short", by=ADMIN)
            with pytest.raises(ValueError, match="unknown role"):
                await people.add("zhang.wei", "boss", "long-enough", by=ADMIN)  # type: ignore[arg-type]
            await people.add("zhang.wei", "operator", "long-enough", by=ADMIN)
            with pytest.raises(Refused, match=r"already a person named zhang\.wei"):
                await people.add("zhang.wei", "gm", "long-enough", by=ADMIN)
            assert [p.name for p in await people.list()] == ["zhang.wei"]

    run(main())


@given(st.text(max_size=300))
def test_a_password_problem_is_said_for_every_password_that_cannot_be_used(pw: str) -> None:
    problem = password_problem(pw)
    usable = 8 <= len(pw) <= 256 and bool(pw.strip())
    assert (problem is None) == usable


def test_the_right_password_opens_a_session_whose_token_finds_the_person(tmp_path: Path) -> None:
    hands = Hands()

    async def main() -> None:
        async with directory(tmp_path, hands) as people:
            await people.add("li.na", "operator", "rectify-it-1", by=ADMIN, display_name="李娜")
            signed = await people.sign_in("li.na", "rectify-it-1", client="10.0.0.7")
            session = await people.session(signed.token)
            assert session is not None
            assert session.actor == Actor(name="li.na", role="operator")
            assert session.display_name == "李娜" and session.csrf == signed.session.csrf
            assert await people.session(signed.token + "x") is None

    run(main())
    ((digest,),) = query(
        database_url(tmp_path, "db.sqlite"), "SELECT token_sha256 FROM person_session"
    )
    assert len(str(digest)) == 64  # the token itself is never stored
    assert audit_rows(tmp_path)[-1] == ("li.na", "signed in", "person:li.na")


def test_a_wrong_password_and_an_unknown_name_get_the_same_refusal(tmp_path: Path) -> None:
    async def main() -> None:
        async with directory(tmp_path, Hands()) as people:
            await people.add("li.na", "operator", "rectify-it-1", by=ADMIN)
            with pytest.raises(SignInRefused) as wrong:
                await people.sign_in("li.na", "rectify-it-2", client="10.0.0.7")
            with pytest.raises(SignInRefused) as unknown:
                await people.sign_in("nobody", "rectify-it-1", client="10.0.0.7")
            assert str(wrong.value) == str(unknown.value)
            assert wrong.value.retry_after_s is None

    run(main())
    refused = [r for r in audit_rows(tmp_path) if r[1] == "sign-in refused"]
    assert refused == [
        ("li.na", "sign-in refused", "person:li.na"),
        ("nobody", "sign-in refused", "person:nobody"),
    ]


def test_repeated_failures_slow_further_sign_ins_even_with_the_right_password(
    tmp_path: Path,
) -> None:
    hands = Hands()

    async def main() -> None:
        async with directory(tmp_path, hands) as people:
            await people.add("li.na", "operator", "rectify-it-1", by=ADMIN)
            for _ in range(5):
                with pytest.raises(SignInRefused):
                    await people.sign_in("li.na", "guess", client="10.0.0.9")
            with pytest.raises(SignInRefused, match="too many failed sign-ins") as held:
                await people.sign_in("li.na", "rectify-it-1", client="10.0.0.7")
            assert held.value.retry_after_s == pytest.approx(1.0)
            # The guessing client is held for any other name it tries, too.
            with pytest.raises(SignInRefused, match="too many failed sign-ins"):
                await people.sign_in("zhou.qiang", "whatever", client="10.0.0.9")
            hands.advance(1.0)
            await people.sign_in("li.na", "rectify-it-1", client="10.0.0.7")

    run(main())
    throttled = [r for r in audit_rows(tmp_path) if r[1] == "sign-in refused"]
    assert len(throttled) == 7  # five wrong passwords, two attempts while held


def test_a_disabled_person_cannot_sign_in_and_their_sessions_end_at_once(tmp_path: Path) -> None:
    async def main() -> None:
        async with directory(tmp_path, Hands()) as people:
            await people.add("li.na", "operator", "rectify-it-1", by=ADMIN)
            signed = await people.sign_in("li.na", "rectify-it-1", client="c")
            await people.disable("li.na", by=ADMIN)
            assert await people.session(signed.token) is None
            with pytest.raises(SignInRefused):
                await people.sign_in("li.na", "rectify-it-1", client="c")
            await people.enable("li.na", by=ADMIN)
            await people.sign_in("li.na", "rectify-it-1", client="c")
            with pytest.raises(NotFound):
                await people.disable("nobody", by=ADMIN)

    run(main())


def test_a_new_password_ends_the_sessions_opened_with_the_old_one(tmp_path: Path) -> None:
    async def main() -> None:
        async with directory(tmp_path, Hands()) as people:
            await people.add("li.na", "operator", "rectify-it-1", by=ADMIN)
            signed = await people.sign_in("li.na", "rectify-it-1", client="c")
            await people.set_password("li.na", "rectify-it-2", by=ADMIN)
            assert await people.session(signed.token) is None
            with pytest.raises(SignInRefused):
                await people.sign_in("li.na", "rectify-it-1", client="c")
            await people.sign_in("li.na", "rectify-it-2", client="c")

    run(main())


def test_a_session_ends_after_its_idle_limit(tmp_path: Path) -> None:
    hands = Hands()

    async def main() -> None:
        async with directory(tmp_path, hands, idle_s=600.0, max_s=3600.0) as people:
            await people.add("li.na", "operator", "rectify-it-1", by=ADMIN)
            signed = await people.sign_in("li.na", "rectify-it-1", client="c")
            for _ in range(5):  # in use: each request within the idle limit keeps it
                hands.advance(300)
                assert await people.session(signed.token) is not None
            hands.advance(601)
            assert await people.session(signed.token) is None

    run(main())


def test_a_session_ends_at_its_absolute_limit_however_busy(tmp_path: Path) -> None:
    hands = Hands()

    async def main() -> None:
        async with directory(tmp_path, hands, idle_s=600.0, max_s=3600.0) as people:
            await people.add("li.na", "operator", "rectify-it-1", by=ADMIN)
            signed = await people.sign_in("li.na", "rectify-it-1", client="c")
            for _ in range(11):
                hands.advance(300)
                assert await people.session(signed.token) is not None
            hands.advance(300)  # 3600 s after sign-in
            assert await people.session(signed.token) is None

    run(main())


def test_signing_out_ends_the_session(tmp_path: Path) -> None:
    async def main() -> None:
        async with directory(tmp_path, Hands()) as people:
            await people.add("li.na", "operator", "rectify-it-1", by=ADMIN)
            signed = await people.sign_in("li.na", "rectify-it-1", client="c")
            assert await people.sign_out(signed.token) == Actor(name="li.na", role="operator")
            assert await people.session(signed.token) is None
            assert await people.sign_out(signed.token) is None

    run(main())
    assert audit_rows(tmp_path)[-1] == ("li.na", "signed out", "person:li.na")


# ------------------------------------------------------------------ the throttle, pure


def test_up_to_the_free_failures_cost_no_wait() -> None:
    t = LoginThrottle(free=5)
    for _ in range(5):
        assert t.wait_s(("name:a",), 10.0) == 0.0
        t.failed(("name:a",), 10.0)
    assert t.wait_s(("name:a",), 10.0) == 1.0


@given(st.integers(min_value=0, max_value=40))
def test_the_wait_doubles_with_each_further_failure_up_to_the_longest(extra: int) -> None:
    t = LoginThrottle(free=5, first_s=1.0, longest_s=900.0, window_s=1e9)
    for _ in range(5 + extra):
        t.failed(("k",), 0.0)
    assert t.wait_s(("k",), 0.0) == min(2.0**extra, 900.0)


def test_failures_older_than_the_window_are_forgotten() -> None:
    t = LoginThrottle(free=1, window_s=60.0)
    t.failed(("k",), 0.0)
    t.failed(("k",), 1.0)
    assert t.wait_s(("k",), 1.0) > 0
    assert t.wait_s(("k",), 61.5) == 0.0 and t.failures("k", 61.5) == 0


def test_made_up_names_cannot_grow_the_throttle_without_bound() -> None:
    t = LoginThrottle(max_keys=100)
    for i in range(1000):
        t.failed((f"name:{i}",), float(i))
    assert len(t._failures) <= 100


# ------------------------------------------------------------------ ehswatch users


def users(
    config: Path, *args: str, password: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "ehswatch", "users", *args, "--config", str(config)],
        input=password,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_the_users_command_adds_lists_sets_passwords_and_disables(tmp_path: Path) -> None:
    doc = yaml.safe_load((ROOT / "config" / "example.yaml").read_text(encoding="utf-8"))
    doc["database"] = {"url": database_url(tmp_path, "db.sqlite")}
    doc.pop("influxdb", None)
    config = tmp_path / "plant.yaml"
    config.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")

    added = users(config, "add", "zhang.wei", "--role", "supervisor", "--display-name", "张伟",
                  password="dust-free-2026\n")  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert added.stdout.strip() == "added zhang.wei (supervisor)"
    again = users(config, "add", "zhang.wei", "--role", "gm", password="dust-free-2026\n")
    assert again.returncode == 1 and "already a person named zhang.wei" in again.stderr
    machine = users(config, "add", "li.wei", "--role", "operator", password="long-enough\n")
    assert machine.returncode == 1 and "machine user of the config" in machine.stderr
    short = users(config, "add", "li.na", "--role", "operator", password="short\n")
    assert short.returncode == 1 and "at least 8 characters" in short.stderr
    listed = users(config, "list")
    assert listed.returncode == 0
    (row,) = listed.stdout.splitlines()[1:]
    assert row.split()[:4] == ["zhang.wei", "(张伟)", "supervisor", "active"]
    assert users(config, "passwd", "zhang.wei", password="dust-free-2027\n").returncode == 0
    assert users(config, "passwd", "nobody", password="dust-free-2027\n").returncode == 1
    assert users(config, "disable", "zhang.wei").returncode == 0
    assert "disabled" in users(config, "list").stdout

    async def main() -> None:
        async with directory(tmp_path, Hands()) as people:
            with pytest.raises(SignInRefused):
                await people.sign_in("zhang.wei", "dust-free-2027", client="c")

    run(main())
    actions = [a for actor, a, _ in audit_rows(tmp_path) if actor.startswith("cli:")]
    assert actions == ["person added", "password set", "person disabled"]


def test_a_burst_of_guesses_at_once_is_throttled_as_if_one_after_another(tmp_path: Path) -> None:
    async def main() -> list[str]:
        async with directory(tmp_path, Hands()) as people:
            await people.add("li.na", "operator", "rectify-it-1", by=ADMIN)

            async def guess(k: int) -> str:
                try:
                    await people.sign_in("li.na", f"guess-{k}", client="10.0.0.9")
                except SignInRefused as exc:
                    return "throttled" if exc.retry_after_s else "wrong"
                return "in"

            return list(await asyncio.gather(*(guess(k) for k in range(30))))

    answers = run(main())
    # The hand clock stands still: after the 5 free failures every guess waits; two are
    # checked at once, so one more may be checked beside the fifth (never 30).
    wrong = answers.count("wrong")
    assert 5 <= wrong <= 5 + CHECKS_AT_ONCE - 1 and answers.count("throttled") == 30 - wrong
    refused = [r for r in audit_rows(tmp_path) if r[1] == "sign-in refused"]
    assert len(refused) == wrong + 1  # the throttled ones audited once a minute, counted

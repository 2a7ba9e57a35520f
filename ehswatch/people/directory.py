"""`People`: the accounts of the people who sign in, and their sessions.

Contract (docs/workbench.md):
- `add`, `set_password`, `disable`, `enable` change an account, each audited in the same
  transaction (action ``person added`` … subject ``person:NAME``). Disabling ends the
  person's sessions at once.
- `sign_in(name, password, client=...)` checks the password (argon2id, in a thread: it
  takes tens of milliseconds) and opens a session: a random token (the cookie; only its
  SHA-256 is stored) and a CSRF token. A wrong name or password, a disabled account, or
  an attempt while throttled raises `SignInRefused`; every sign-in and every refusal is
  audited (``signed in`` / ``sign-in refused``).
- `session(token)` is the person behind a session token, or None when it is unknown,
  ended, past its idle limit or its absolute limit, or the person is disabled. The
  person's role is read fresh: a changed role counts at once.
- Session limits are wall-clock times kept in the database (a session outlives a
  restart); a wall clock stepped back lengthens them by the step.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import delete, func, select, update

from ehswatch import audit
from ehswatch.config import ROLES, Role
from ehswatch.db import Database
from ehswatch.people.passwords import hash_password, needs_rehash, password_problem, verify
from ehswatch.people.store import NAME_MAX, PersonRow, SessionRow
from ehswatch.people.throttle import LoginThrottle
from ehswatch.roles import Actor, NotFound, Refused

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@\-]{0,63}$")
# How long a looked-up session is believed without asking the database again: a person
# disabled by another process (the command line) is shut out within this.
SESSION_CACHE_S = 2.0
# last_seen is written at most this often per session (not on every request).
TOUCH_S = 60.0
# Password checks at once: each costs tens of milliseconds and 64 MiB, and a burst of
# them must not pin the cores the interlock shares (nor slip past the throttle: each
# check looks at the throttle only once the checks before it are counted).
CHECKS_AT_ONCE = 2
# A throttled attempt is audited at most this often per name and address (a flood of
# them is counted in `throttled`, not written row by row into the plant's database).
THROTTLED_AUDIT_S = 60.0


class SignInRefused(Exception):
    """A sign-in that did not succeed: the message is safe to show (it never says which
    of name and password was wrong). `retry_after_s` is set while throttled."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


@dataclass(frozen=True, kw_only=True, slots=True)
class Person:
    name: str
    display_name: str
    role: Role
    disabled: bool
    created_at: float
    password_set_at: float

    @classmethod
    def of(cls, row: PersonRow) -> Person:
        role = row.role if row.role in ROLES else "viewer"
        return cls(
            name=row.name,
            display_name=row.display_name,
            role=role,
            disabled=row.disabled,
            created_at=row.created_at,
            password_set_at=row.password_set_at,
        )

    @property
    def actor(self) -> Actor:
        return Actor(name=self.name, role=self.role)


@dataclass(frozen=True, kw_only=True, slots=True)
class Session:
    """A signed-in person: who, the CSRF token their page must send back, until when."""

    actor: Actor
    display_name: str
    csrf: str
    expires_at: float


@dataclass(frozen=True, kw_only=True, slots=True)
class SignedIn:
    session: Session
    token: str  # the session cookie's value: given once, never stored


def name_problem(name: str) -> str | None:
    if not NAME_RE.match(name):
        return (
            "a name is 1 to 64 letters, digits or . _ - @, starting with a letter or digit "
            "(e.g. zhang.wei)"
        )
    return None


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


class People:
    def __init__(
        self,
        *,
        db: Database,
        clock: Callable[[], float] = time.time,
        idle_s: float = 8 * 3600.0,
        max_s: float = 16 * 3600.0,
        throttle: LoginThrottle | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        machines: frozenset[str] = frozenset(),
    ) -> None:
        """`clock` is wall time (audit stamps, session limits); `monotonic` times the
        throttle and the session cache; `machines`: the config's token users' names,
        which no person may take."""
        self.db = db
        self.machines = machines
        self.clock = clock
        self.idle_s = idle_s
        self.max_s = max_s
        self.throttle = throttle if throttle is not None else LoginThrottle()
        self._monotonic = monotonic
        self._cache: dict[str, tuple[float, Session | None, float]] = {}  # digest → …
        self._checks = asyncio.Semaphore(CHECKS_AT_ONCE)
        self._throttled_audited: dict[tuple[str, ...], float] = {}
        self.throttled = 0  # attempts refused while throttled

    # ------------------------------------------------------------ accounts

    async def add(
        self, name: str, role: Role, password: str, *, by: Actor, display_name: str = ""
    ) -> Person:
        for problem in (name_problem(name), password_problem(password), _role_problem(role)):
            if problem:
                raise ValueError(problem)
        if name in self.machines:
            raise ValueError(
                f"{name} is a machine user of the config (its users:); "
                "a person needs a name of their own"
            )
        password_hash = await asyncio.to_thread(hash_password, password)
        now = self.clock()
        async with self.db.new_session() as s, s.begin():
            taken = await s.scalar(select(func.count()).where(PersonRow.name == name))
            if taken:
                raise Refused(f"there is already a person named {name}")
            row = PersonRow(
                name=name,
                display_name=display_name[:NAME_MAX],
                role=role,
                password_hash=password_hash,
                disabled=False,
                created_at=now,
                password_set_at=now,
            )
            s.add(row)
            audit.record(
                s,
                ts=now,
                actor=by,
                action="person added",
                subject=f"person:{name}",
                detail={"role": role, "display_name": display_name},
            )
        return Person.of(row)

    async def list(self) -> list[Person]:
        async with self.db.new_session() as s:
            rows = (await s.execute(select(PersonRow).order_by(PersonRow.name))).scalars()
            return [Person.of(r) for r in rows]

    async def get(self, name: str) -> Person:
        async with self.db.new_session() as s:
            row = await s.scalar(select(PersonRow).where(PersonRow.name == name))
        if row is None:
            raise NotFound(f"no person named {name}")
        return Person.of(row)

    async def names(self) -> set[str]:
        """The names of the people who may act (not disabled)."""
        async with self.db.new_session() as s:
            q = select(PersonRow.name).where(PersonRow.disabled.is_(False))
            return set((await s.execute(q)).scalars())

    async def set_password(self, name: str, password: str, *, by: Actor) -> None:
        """A new password; the person's sessions end (whoever knew the old one is out)."""
        if problem := password_problem(password):
            raise ValueError(problem)
        password_hash = await asyncio.to_thread(hash_password, password)
        await self._change(
            name,
            {"password_hash": password_hash, "password_set_at": self.clock()},
            by=by,
            action="password set",
            end_sessions=True,
        )

    async def disable(self, name: str, *, by: Actor) -> None:
        await self._change(
            name, {"disabled": True}, by=by, action="person disabled", end_sessions=True
        )

    async def enable(self, name: str, *, by: Actor) -> None:
        await self._change(name, {"disabled": False}, by=by, action="person enabled")

    async def _change(
        self,
        name: str,
        values: dict[str, object],
        *,
        by: Actor,
        action: str,
        end_sessions: bool = False,
    ) -> None:
        now = self.clock()
        async with self.db.new_session() as s, s.begin():
            changed = await s.execute(
                update(PersonRow).where(PersonRow.name == name).values(**values)
            )
            if not changed.rowcount:  # type: ignore[attr-defined]
                raise NotFound(f"no person named {name}")
            if end_sessions:
                await s.execute(delete(SessionRow).where(SessionRow.person == name))
            audit.record(s, ts=now, actor=by, action=action, subject=f"person:{name}")
        self._cache.clear()

    # ------------------------------------------------------------ sessions

    async def sign_in(self, name: str, password: str, *, client: str) -> SignedIn:
        keys = (f"name:{name.lower()[:NAME_MAX]}", f"client:{client}")
        async with self._checks:
            now_m = self._monotonic()
            if (wait := self.throttle.wait_s(keys, now_m)) > 0:
                self.throttled += 1
                last = self._throttled_audited.get(keys)
                if last is None or now_m - last >= THROTTLED_AUDIT_S:
                    if len(self._throttled_audited) > 10_000:
                        self._throttled_audited.clear()
                    self._throttled_audited[keys] = now_m
                    detail: dict[str, object] = {
                        "retry_after_s": round(wait, 1),
                        "throttled_so_far": self.throttled,
                    }
                    await self._refused(name, client, "throttled", detail)
                raise SignInRefused(
                    f"too many failed sign-ins; try again in {max(1, round(wait))} s", wait
                )
            async with self.db.new_session() as s:
                row = await s.scalar(select(PersonRow).where(PersonRow.name == name))
            stored = row.password_hash if row is not None else None
            matched = await asyncio.to_thread(verify, stored, password)
            if row is None or not matched or row.disabled:
                self.throttle.failed(keys, self._monotonic())
        if row is None or not matched or row.disabled:
            why = "disabled" if (row is not None and matched) else "wrong name or password"
            await self._refused(name, client, why, {})
            raise SignInRefused("wrong name or password, or the account is disabled")
        self.throttle.succeeded(keys[0])
        person = Person.of(row)
        token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        now = self.clock()
        session = Session(
            actor=person.actor,
            display_name=person.display_name,
            csrf=csrf,
            expires_at=now + self.max_s,
        )
        rehash = needs_rehash(row.password_hash)
        new_hash = await asyncio.to_thread(hash_password, password) if rehash else None
        async with self.db.new_session() as s, s.begin():
            s.add(
                SessionRow(
                    token_sha256=token_digest(token),
                    csrf=csrf,
                    person=name,
                    created_at=now,
                    last_seen=now,
                    expires_at=session.expires_at,
                )
            )
            if new_hash is not None:
                await s.execute(
                    update(PersonRow).where(PersonRow.name == name).values(password_hash=new_hash)
                )
            audit.record(
                s,
                ts=now,
                actor=person.actor,
                action="signed in",
                subject=f"person:{name}",
                detail={"client": client},
            )
        return SignedIn(session=session, token=token)

    async def _refused(self, name: str, client: str, why: str, detail: dict[str, object]) -> None:
        async with self.db.new_session() as s, s.begin():
            audit.record(
                s,
                ts=self.clock(),
                actor=Actor(name=name[:NAME_MAX] or "?", role="viewer"),
                action="sign-in refused",
                subject=f"person:{name[:NAME_MAX]}",
                detail={"why": why, "client": client, **detail},
            )

    async def session(self, token: str) -> Session | None:
        digest = token_digest(token)
        now_m = self._monotonic()
        cached = self._cache.get(digest)
        if cached is not None and now_m - cached[0] < SESSION_CACHE_S:
            session = cached[1]
            if session is None or session.expires_at > self.clock():
                return session
        session, seen = await self._look_up(digest)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[digest] = (now_m, session, seen)
        return session

    async def _look_up(self, digest: str) -> tuple[Session | None, float]:
        now = self.clock()
        async with self.db.new_session() as s, s.begin():
            found = (
                await s.execute(
                    select(SessionRow, PersonRow)
                    .join(PersonRow, PersonRow.name == SessionRow.person)
                    .where(SessionRow.token_sha256 == digest)
                )
            ).first()
            if found is None:
                return None, now
            srow, prow = found
            ended = now >= srow.expires_at or now - srow.last_seen >= self.idle_s
            if ended or prow.disabled:
                await s.execute(delete(SessionRow).where(SessionRow.id == srow.id))
                return None, now
            if now - srow.last_seen >= TOUCH_S:
                await s.execute(
                    update(SessionRow).where(SessionRow.id == srow.id).values(last_seen=now)
                )
            person = Person.of(prow)
            session = Session(
                actor=person.actor,
                display_name=person.display_name,
                csrf=srow.csrf,
                expires_at=min(srow.expires_at, now + self.idle_s),
            )
        return session, now

    async def sign_out(self, token: str) -> Actor | None:
        """End the session of `token`; who it was, if it was one."""
        digest = token_digest(token)
        self._cache.pop(digest, None)
        async with self.db.new_session() as s, s.begin():
            srow = await s.scalar(select(SessionRow).where(SessionRow.token_sha256 == digest))
            if srow is None:
                return None
            person = await s.scalar(select(PersonRow).where(PersonRow.name == srow.person))
            await s.execute(delete(SessionRow).where(SessionRow.id == srow.id))
            actor = Person.of(person).actor if person is not None else None
            if actor is not None:
                audit.record(
                    s,
                    ts=self.clock(),
                    actor=actor,
                    action="signed out",
                    subject=f"person:{actor.name}",
                )
        return actor


def _role_problem(role: str) -> str | None:
    return None if role in ROLES else f"unknown role {role!r}; roles: {', '.join(ROLES)}"

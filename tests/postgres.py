"""A throw-away PostgreSQL cluster for the tests and benchmarks, and which engine the
database tests run on.

`PostgresCluster` runs Debian's own server binaries (`initdb`, `pg_ctl`, from the
`postgresql` package) on a loopback port picked at run time, its data and socket in a
temporary directory; run as root, the server runs as the `postgres` user (PostgreSQL
refuses root). Each test gets a database of its own (`new_database`).

`database_url(workdir)`: SQLite in `workdir` by default; a new database of the session's
cluster when `EHSWATCH_TEST_DB=postgresql` (`make test` runs the database tests once per
engine). A missing binary is a failure with a clear message, never a skip.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import glob
import itertools
import os
import pwd
import re
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from tests.servers import ServerMissing, free_port, wait_listening

ENGINE_VARIABLE = "EHSWATCH_TEST_DB"


def engine() -> str:
    """The engine the database tests run on this time: "sqlite" or "postgresql"."""
    name = os.environ.get(ENGINE_VARIABLE, "sqlite")
    if name not in ("sqlite", "postgresql"):
        raise ValueError(f"{ENGINE_VARIABLE}={name!r}: sqlite or postgresql")
    return name


def _binary(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if found:
        return found[-1]  # the newest installed major version
    which = shutil.which(name)
    if which:
        return which
    raise ServerMissing(
        f"{name} is not installed: `make test` installs the Debian package postgresql when "
        "run as root (or: apt-get install postgresql)"
    )


class PostgresCluster:
    """`initdb` into a new directory, then `start` / `stop` / `kill` (SIGKILL, as a host
    loss) / `restart` the server on `port`, as a context manager too."""

    def __init__(self, workdir: Path | None = None) -> None:
        self.dir = Path(workdir or tempfile.mkdtemp(prefix="ehswatch-pg-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.data = self.dir / "data"
        self.port = free_port()
        self._user = None if os.geteuid() != 0 else pwd.getpwnam("postgres")
        self._names = itertools.count(1)
        self._proc: subprocess.Popen[bytes] | None = None
        self._migrated = False
        os.chmod(self.dir, 0o755)
        if self._user is not None:
            os.chown(self.dir, self._user.pw_uid, self._user.pw_gid)
        self._run(
            [_binary("initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
             "-E", "UTF8", "--locale=C.UTF-8"]
        )  # fmt: skip

    def _as_owner(self, command: list[str]) -> list[str]:
        return command if self._user is None else ["runuser", "-u", "postgres", "--", *command]

    def _run(self, command: list[str]) -> None:
        out = subprocess.run(self._as_owner(command), capture_output=True, check=False)
        if out.returncode != 0:
            raise RuntimeError(f"{command[0]} failed: {out.stderr.decode(errors='replace')}")

    def start(self) -> None:
        # The server itself (not pg_ctl): its pid is ours, for kill -9. Durability off:
        # a test cluster is thrown away.
        log = (self.dir / "server.log").open("ab")
        self._proc = subprocess.Popen(
            self._as_owner(
                [_binary("postgres"), "-D", str(self.data), "-p", str(self.port),
                 "-k", str(self.dir), "-c", "listen_addresses=127.0.0.1",
                 "-c", "fsync=off", "-c", "synchronous_commit=off",
                 "-c", "full_page_writes=off", "-c", "max_connections=200"]
            ),
            stdout=log, stderr=log,
        )  # fmt: skip
        log.close()
        wait_listening(self.port, timeout=30)

    def _signal(self, sig: int) -> None:
        if self._proc is None:
            return
        # runuser forwards nothing on SIGKILL: signal the server (its only child) itself
        pids = [self._proc.pid]
        pids += [int(p) for p in _children(self._proc.pid)]
        for pid in reversed(pids):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        try:
            self._proc.wait(15)
        except subprocess.TimeoutExpired:
            self._signal(signal.SIGKILL)
        self._proc = None

    def stop(self) -> None:
        self._signal(signal.SIGINT)  # PostgreSQL's fast shutdown

    def kill(self) -> None:
        self._signal(signal.SIGKILL)

    def restart(self) -> None:
        self.stop()
        self.start()

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{database}"

    def psql(self, sql: str, database: str = "postgres") -> str:
        out = subprocess.run(
            ["psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", database,
             "-v", "ON_ERROR_STOP=1", "-Atqc", sql],
            capture_output=True, check=False, text=True,
        )  # fmt: skip
        if out.returncode != 0:
            raise RuntimeError(f"psql: {out.stderr}")
        return out.stdout

    def new_database(self, *, migrated: bool = False) -> str:
        """A new database, empty or (`migrated`) a copy of one the migrations brought to
        the newest revision once (quicker than migrating each); its URL."""
        name = f"t{os.getpid()}_{next(self._names)}"
        if migrated:
            self.psql(f"CREATE DATABASE {name} TEMPLATE {self._template()}")
        else:
            self.psql(f"CREATE DATABASE {name}")
        return self.url(name)

    def _template(self) -> str:
        name = "ehswatch_migrated"
        if not self._migrated:
            from ehswatch.db import Database

            self.psql(f"CREATE DATABASE {name}")

            async def migrate() -> None:
                async with Database(self.url(name)):
                    pass

            _in_own_loop(migrate)
            self._migrated = True
        return name

    def remove(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.remove()


def _children(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []


_session: PostgresCluster | None = None


def session_cluster() -> PostgresCluster:
    """The cluster the whole test session shares (started on first use, removed at exit)."""
    global _session
    if _session is None:
        _session = PostgresCluster()
        _session.start()
        atexit.register(_session.remove)
    return _session


_given: dict[tuple[Path, str], str] = {}


def database_url(workdir: Path, name: str = "ehswatch.db", *, empty: bool = False) -> str:
    """The database a test runs on: SQLite `workdir/name`, or, when the session runs on
    PostgreSQL, a new database of its cluster (already migrated unless `empty`) — the
    same one each time a test asks with the same `workdir` and `name`, as the SQLite
    file would be."""
    if engine() == "postgresql":
        key = (Path(workdir), name)
        if key not in _given:
            _given[key] = session_cluster().new_database(migrated=not empty)
        return _given[key]
    return f"sqlite+aiosqlite:///{workdir}/{name}"


def query(url: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Run one statement on a test's database, outside the service (SQLite's `?`
    placeholders, on either engine); its rows. For checks and for faults the test makes."""
    if url.startswith("sqlite"):
        con = sqlite3.connect(url.split(":///", 1)[1])
        try:
            with con:
                return [tuple(r) for r in con.execute(sql, params).fetchall()]
        finally:
            con.close()
    numbered = iter(range(1, 1000))
    pg_sql = re.sub(r"\?", lambda _m: f"${next(numbered)}", sql)
    result: list[list[tuple[Any, ...]]] = []

    async def fetch() -> None:
        import asyncpg

        con = await asyncpg.connect(url.replace("postgresql+asyncpg", "postgresql"))
        try:
            result.append([tuple(r) for r in await con.fetch(pg_sql, *params)])
        finally:
            await con.close()

    _in_own_loop(fetch)
    return result[0]


def _in_own_loop(job: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run `job` to its end on an event loop of its own, in a thread: the caller may be
    inside a loop already."""
    failure: list[BaseException] = []

    def in_thread() -> None:
        try:
            asyncio.run(job())
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=in_thread, name="test-own-loop")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]


def table_names(url: str) -> set[str]:
    """The tables of a test's database, on either engine."""
    listing = (
        "SELECT name FROM sqlite_master WHERE type='table'"
        if url.startswith("sqlite")
        else "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
    )
    return {str(t) for (t,) in query(url, listing)}

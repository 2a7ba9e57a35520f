"""The project's database: SQLAlchemy 2 async, SQLite by default (`database.url`).

`Database` is an async context manager. Entering migrates the schema to the newest
revision (alembic, `ehswatch/migrations/`) and, on SQLite, turns on write-ahead logging
(a committed row survives `kill -9`) and makes the audit log append-only with triggers.
PostgreSQL by URL (``postgresql+asyncpg://…``; the driver is the `postgresql` extra):
the same migrations, and the audit log append-only by a trigger there too.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from sqlalchemy import Connection, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import Session

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig

MIGRATIONS = Path(__file__).parent / "migrations"


APPEND_ONLY_TRIGGERS = [
    """CREATE TRIGGER IF NOT EXISTS audit_log_no_update BEFORE UPDATE ON audit_log
       BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END""",
    """CREATE TRIGGER IF NOT EXISTS audit_log_no_delete BEFORE DELETE ON audit_log
       BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END""",
]


# PostgreSQL: the same rule as a trigger function, made once (a DROP and CREATE at every
# start would lock the table against every audited write while it waits), and TRUNCATE
# refused too.
PG_APPEND_ONLY = [
    """CREATE OR REPLACE FUNCTION audit_log_append_only() RETURNS trigger
       LANGUAGE plpgsql AS $$
       BEGIN RAISE EXCEPTION 'the audit log is append-only'; END $$""",
    """DO $$ BEGIN
         IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'audit_log_no_change') THEN
           CREATE TRIGGER audit_log_no_change BEFORE UPDATE OR DELETE ON audit_log
             FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
         END IF;
         IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'audit_log_no_truncate') THEN
           CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
             FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
         END IF;
       END $$""",
]
#: the advisory lock that takes instances starting at once through the migrations in turn
MIGRATION_LOCK = 0x45485357  # "EHSW"


class Database:
    """`migrate=False` for a process that uses a schema another one owns (the desk part:
    the control part, started first, has brought it up to date)."""

    def __init__(
        self, url: str, *, migrate: bool = True, on_commit: Callable[[], None] | None = None
    ) -> None:
        """`on_commit()` runs after each commit of a session of this database has been
        made durable (not before, as the engine's own commit event does)."""
        self.migrate = migrate
        parsed = make_url(url)
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        if self.is_sqlite and parsed.database not in (None, "", ":memory:"):
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        self.engine = create_async_engine(url)
        self._turns: AsyncEngine | None = None  # `turn`'s connections (PostgreSQL)
        if self.is_sqlite:
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        else:
            event.listen(
                self.engine.sync_engine, "before_cursor_execute", _no_nul_in_text, retval=True
            )
        sessions: type[Session] = type("DatabaseSession", (Session,), {})  # events: this one's
        if on_commit is not None:
            event.listen(sessions, "after_commit", lambda _session: on_commit())
        self.session = async_sessionmaker(
            self.engine, expire_on_commit=False, sync_session_class=sessions
        )

    async def __aenter__(self) -> Self:
        if not self.migrate:
            return self
        try:
            await self._migrate()
        except BaseException:
            await self.engine.dispose()  # no __aexit__ comes: nothing is left open
            raise
        return self

    async def _migrate(self) -> None:
        if self.is_sqlite:
            await self._migrate_sqlite()
            return
        async with self.engine.begin() as conn:
            # Instances starting at once: one migrates, the others wait for it here.
            await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK})
            await conn.run_sync(upgrade)
            for ddl in PG_APPEND_ONLY:
                await conn.execute(text(ddl))

    async def _migrate_sqlite(self) -> None:
        """The migrations in one write transaction taken up front (BEGIN IMMEDIATE), on a
        connection where Python's sqlite3 starts no transaction of its own: its default
        commits before each CREATE, so a process killed mid-migration would leave half a
        schema, and two processes starting at once would both migrate. Here the second
        waits for the first (busy_timeout) and then finds the schema up to date."""
        engine = create_async_engine(self.engine.url, isolation_level="AUTOCOMMIT")
        # Another process's migration may take longer than a write's usual wait.
        event.listen(
            engine.sync_engine, "connect", functools.partial(_sqlite_pragmas, busy_ms=120_000)
        )
        try:
            async with engine.connect() as conn:
                # A migration that rebuilds a table another one refers to (alembic's batch
                # mode copies, drops, renames) must not trip the foreign keys half-way;
                # they are checked whole before the commit instead. (The pragma has no
                # effect inside a transaction: it is set before it.)
                await conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
                await conn.exec_driver_sql("BEGIN IMMEDIATE")
                try:
                    await conn.run_sync(upgrade)
                    for ddl in APPEND_ONLY_TRIGGERS:
                        await conn.exec_driver_sql(ddl)
                    broken = (await conn.exec_driver_sql("PRAGMA foreign_key_check")).all()
                    if broken:
                        raise RuntimeError(f"the migrated schema breaks foreign keys: {broken}")
                except BaseException:
                    await conn.exec_driver_sql("ROLLBACK")
                    raise
                await conn.exec_driver_sql("COMMIT")
        finally:
            await engine.dispose()

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._turns is not None:
            await self._turns.dispose()
        await self.engine.dispose()

    def new_session(self) -> AsyncSession:
        return self.session()

    @contextlib.asynccontextmanager
    async def turn(self, job: str) -> AsyncIterator[bool]:
        """Whether this process has `job` to itself for the block: the work one process
        at a time must do (relay the outbox, take tickets in, send a channel's
        notifications, escalate deadlines) when several share the database. On
        PostgreSQL a transaction-level advisory lock on a connection of its own, held
        for the block and never waited for: False — another process is at it now and
        does this round's work. On SQLite, True: its writers take turns on the file."""
        if self.is_sqlite:
            yield True
            return
        if self._turns is None:
            # Its own small pool: a turn held over a slow round (a channel down, a
            # webhook timing out) never takes a connection the work itself needs.
            self._turns = create_async_engine(self.engine.url, pool_size=2, max_overflow=30)
        async with self._turns.connect() as conn, conn.begin():
            # A server or pooler that ends sessions idle in a transaction would release
            # the lock mid-round, and another process would do the round again.
            await conn.execute(text("SET LOCAL idle_in_transaction_session_timeout = 0"))
            got = await conn.scalar(
                text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": job_lock_key(job)}
            )
            yield bool(got)

    def insert(self, table: Any) -> Any:
        """An INSERT for this database's dialect, with its `on_conflict_do_…` (SQLite and
        PostgreSQL both have them, with the same arguments)."""
        if self.is_sqlite:
            from sqlalchemy.dialects.sqlite import insert as sqlite_insert

            return sqlite_insert(table)
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table)


def job_lock_key(job: str) -> int:
    """A job's advisory lock key: a stable signed 64-bit number from its name."""
    digest = hashlib.blake2b(f"ehswatch:{job}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def alembic_config(connection: Connection | None = None) -> AlembicConfig:
    # Imported here: a process that does not migrate never loads alembic.
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def upgrade(connection: Connection) -> None:
    """Bring the schema to the newest migration (alembic), on this connection."""
    from alembic import command

    command.upgrade(alembic_config(connection), "head")


NUL_STANDS_IN = "\ufffd"  # the replacement character, where a text held a NUL


def _holds_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_holds_nul(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_holds_nul(v) for v in value)
    return False


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", NUL_STANDS_IN)
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_clean(v) for v in value)
    return value


def _no_nul_in_text(
    _conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool
) -> tuple[str, Any]:
    """PostgreSQL refuses a text holding the NUL character (SQLite keeps it): whatever
    reached a statement with one — a comment, an MQTT payload's name — is kept with the
    replacement character in its place, rather than fail the write (a 500 on a page, or
    an alarm writer retrying a row it can never store). The API refuses such text first
    where it can."""
    # Looked through first: the parameters are copied only when one holds a NUL.
    return statement, _clean(parameters) if _holds_nul(parameters) else parameters


def _sqlite_pragmas(dbapi_connection: Any, _record: Any, busy_ms: int = 5000) -> None:
    cursor = dbapi_connection.cursor()
    # First: the wait applies to what follows (a journal mode set while another process
    # holds the file would otherwise fail at once, "database is locked").
    cursor.execute(f"PRAGMA busy_timeout={int(busy_ms)}")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across process kills
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()

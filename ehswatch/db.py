"""The project's database: SQLAlchemy 2 async, SQLite by default (`database.url`).

`Database` is an async context manager. Entering migrates the schema to the newest
revision (alembic, `ehswatch/migrations/`) and, on SQLite, turns on write-ahead logging
(a committed row survives `kill -9`) and makes the audit log append-only with triggers.
PostgreSQL works by URL (``postgresql+asyncpg://…``, driver installed separately); there
the audit log's append-only rule is the application's.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from sqlalchemy import Connection, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
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
        if self.is_sqlite:
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        sessions: type[Session] = type("DatabaseSession", (Session,), {})  # events: this one's
        if on_commit is not None:
            event.listen(sessions, "after_commit", lambda _session: on_commit())
        self.session = async_sessionmaker(
            self.engine, expire_on_commit=False, sync_session_class=sessions
        )

    async def __aenter__(self) -> Self:
        if not self.migrate:
            return self
        async with self.engine.begin() as conn:
            await conn.run_sync(upgrade)
            if self.is_sqlite:
                for ddl in APPEND_ONLY_TRIGGERS:
                    await conn.execute(text(ddl))
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.engine.dispose()

    def new_session(self) -> AsyncSession:
        return self.session()

    def insert(self, table: Any) -> Any:
        """An INSERT for this database's dialect, with its `on_conflict_do_…` (SQLite and
        PostgreSQL both have them, with the same arguments)."""
        if self.is_sqlite:
            from sqlalchemy.dialects.sqlite import insert as sqlite_insert

            return sqlite_insert(table)
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table)


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


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across process kills
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()

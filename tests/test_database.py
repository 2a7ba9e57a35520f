"""The database: migrated by alembic on start, migrations in step with the models."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, text

from ehswatch.db import Database
from ehswatch.schema import all_tables
from tests.aio import run


def test_start_migrates_an_empty_database_to_the_newest_revision(tmp_path: Path) -> None:
    async def main() -> list[object]:
        async with (
            Database(f"sqlite+aiosqlite:///{tmp_path}/ehswatch.db") as db,
            db.engine.connect() as conn,
        ):

            def diff(sync: Connection) -> list[object]:
                metadata = all_tables()
                return list(compare_metadata(MigrationContext.configure(sync), metadata))

            return await conn.run_sync(diff)

    assert run(main()) == []  # the migrations create exactly what the models describe
    con = sqlite3.connect(tmp_path / "ehswatch.db")
    assert con.execute("SELECT version_num FROM alembic_version").fetchall() == [("0004",)]
    tables = {t for (t,) in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {
        "audit_log",
        "interlock_zone",
        "alarm",
        "alarm_outbox",
        "notification",
        "sensor_service",
    } <= tables


def test_a_second_start_finds_nothing_to_migrate(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/ehswatch.db"

    async def twice() -> None:
        async with Database(url):
            pass
        async with Database(url):
            pass

    run(twice())
    con = sqlite3.connect(tmp_path / "ehswatch.db")
    assert con.execute("SELECT count(*) FROM alembic_version").fetchone() == (1,)


def test_on_commit_runs_once_the_commit_is_there_for_every_other_reader(tmp_path: Path) -> None:
    # A reader told of the change must find it: the callback comes after the commit.
    path = tmp_path / "db.sqlite"
    seen: list[int] = []

    def count_rows() -> None:
        with sqlite3.connect(path) as other:
            seen.append(other.execute("SELECT count(*) FROM audit_log").fetchone()[0])

    async def main() -> None:
        db = Database(f"sqlite+aiosqlite:///{path}", on_commit=count_rows)
        async with db, db.new_session() as s, s.begin():
            await s.execute(
                text(
                    "INSERT INTO audit_log (ts, actor, role, action, subject, detail, comment)"
                    " VALUES (1, 'a', 'gm', 'x', 'y', '{}', '')"
                )
            )

    run(main())
    assert seen == [1]

"""The database: migrated by alembic on start, migrations in step with the models."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, text

from ehswatch.db import Database
from ehswatch.schema import all_tables
from tests.aio import run
from tests.postgres import database_url, engine, query, table_names


def test_start_migrates_an_empty_database_to_the_newest_revision(tmp_path: Path) -> None:
    url = database_url(tmp_path, empty=True)

    async def main() -> list[object]:
        async with Database(url) as db, db.engine.connect() as conn:

            def diff(sync: Connection) -> list[object]:
                metadata = all_tables()
                return list(compare_metadata(MigrationContext.configure(sync), metadata))

            return await conn.run_sync(diff)

    assert run(main()) == []  # the migrations create exactly what the models describe
    assert query(url, "SELECT version_num FROM alembic_version") == [("0005",)]
    tables = table_names(url)
    assert {
        "audit_log",
        "interlock_zone",
        "alarm",
        "alarm_outbox",
        "notification",
        "sensor_service",
    } <= tables


def test_a_second_start_finds_nothing_to_migrate(tmp_path: Path) -> None:
    url = database_url(tmp_path, empty=True)

    async def twice() -> None:
        async with Database(url):
            pass
        async with Database(url):
            pass

    run(twice())
    assert query(url, "SELECT count(*) FROM alembic_version") == [(1,)]


def test_instances_starting_at_once_migrate_one_after_the_other(tmp_path: Path) -> None:
    """Several instances on one shared database start together: each waits for the one
    migrating (an advisory lock on PostgreSQL; on SQLite, the migration's write
    transaction taken up front); all come up,
    on one schema, with one version row and the audit log still append-only."""
    url = database_url(tmp_path, empty=True)

    async def together() -> None:
        async def start() -> None:
            async with Database(url):
                pass

        await asyncio.gather(*(start() for _ in range(4)))

    run(together())
    assert query(url, "SELECT version_num FROM alembic_version") == [("0005",)]
    query(url, "INSERT INTO audit_log (ts, actor, role, action, subject, detail, comment)"
               " VALUES (1, 'a', 'gm', 'x', 'y', '{}', '')")  # fmt: skip
    with pytest.raises(Exception, match="append-only"):
        query(url, "DELETE FROM audit_log")


def test_a_text_holding_nul_is_kept_with_the_replacement_character(tmp_path: Path) -> None:
    """PostgreSQL refuses the NUL character in text: a comment holding one is stored
    with U+FFFD in its place rather than fail the write; SQLite keeps it as it is."""
    url = database_url(tmp_path, empty=True)

    async def main() -> None:
        async with Database(url) as db, db.new_session() as s, s.begin():
            await s.execute(
                text(
                    "INSERT INTO audit_log (ts, actor, role, action, subject, detail, comment)"
                    " VALUES (1, 'a', 'gm', 'x', 'y', '{}', :c)"
                ),
                {"c": "dust\x00here"},
            )

    run(main())
    expected = "dust\x00here" if engine() == "sqlite" else "dust\ufffdhere"
    assert query(url, "SELECT comment FROM audit_log") == [(expected,)]


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


def test_a_migration_that_fails_midway_leaves_the_database_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """All of the migrations are one transaction (on SQLite too, where Python's sqlite3
    would commit before each CREATE): a start that fails after them — or a `kill -9`
    in the middle — leaves no half schema behind, and the next start migrates."""
    import ehswatch.db as db_module

    url = database_url(tmp_path, empty=True)
    real = db_module.upgrade

    def upgrade_then_fail(connection: Connection) -> None:
        real(connection)
        raise RuntimeError("the power went")

    async def start() -> None:
        async with Database(url):
            pass

    monkeypatch.setattr(db_module, "upgrade", upgrade_then_fail)
    with pytest.raises(RuntimeError, match="the power went"):
        run(start())
    assert table_names(url) == set()
    monkeypatch.setattr(db_module, "upgrade", real)
    run(start())
    assert query(url, "SELECT version_num FROM alembic_version") == [("0005",)]


def test_a_database_with_tickets_and_their_evidence_upgrades_to_the_newest_revision(
    tmp_path: Path,
) -> None:
    """A plant's database from before the governance migration, holding a ticket with a
    photo: the migration rebuilds the ticket table (alembic's batch copy on SQLite),
    which a photo's foreign key must not stop half-way; the rows come through."""
    from alembic import command
    from sqlalchemy.ext.asyncio import create_async_engine

    from ehswatch.db import alembic_config

    url = database_url(tmp_path, empty=True)

    async def at_0003() -> None:
        engine = create_async_engine(url)
        try:
            async with engine.begin() as conn:
                await conn.run_sync(lambda c: command.upgrade(alembic_config(c), "0003"))
        finally:
            await engine.dispose()

    run(at_0003())
    query(
        url,
        "INSERT INTO alarm (id, sensor, zone, sensor_type, kind, state, active, tier,"
        " peak_tier, first_at, last_at, acked_by, shelved_by, shelve_reason, transitions,"
        " chattering, escalations) VALUES (7, 'D-1', 'z1', 'dust', 'tier', 'unack_active',"
        " ?, 2, 2, 1, 1, '', '', '', 1, ?, 0)",
        (True, False),
    )
    query(
        url,
        "INSERT INTO hazard_ticket (id, alarm_id, sensor, zone, kind, grade, state,"
        " created_at, due_at, owner, registered_by, rectifier, measure, verifier, sent_back,"
        " approvals, reminded, escalation_level, recurrence, related, chronic, stop_work)"
        " VALUES (1, 7, 'D-1', 'z1', 'alarm', 'B', 'detected', 1, 2, '', '', '', '', '', 0,"
        " '[]', ?, 0, 0, '[]', ?, ?)",
        (False, False, False),
    )
    query(
        url,
        "INSERT INTO hazard_evidence (id, ticket_id, filename, content_type, size, sha256,"
        " path, uploaded_by, at) VALUES (1, 1, 'a.jpg', 'image/jpeg', 3, 'x', 'p', 'li', 1)",
    )

    async def start() -> None:
        async with Database(url):
            pass

    run(start())
    assert query(url, "SELECT version_num FROM alembic_version") == [("0005",)]
    assert query(url, "SELECT id, alarm_id FROM hazard_ticket") == [(1, 7)]
    assert query(url, "SELECT ticket_id, filename FROM hazard_evidence") == [(1, "a.jpg")]

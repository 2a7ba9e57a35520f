"""Alembic environment for ehswatch: run by `ehswatch.db.Database` on every start, on the
connection it hands over (``config.attributes["connection"]``)."""

from __future__ import annotations

from alembic import context

from ehswatch.schema import all_tables

metadata = all_tables()
connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only the application runs migrations
    raise RuntimeError("ehswatch migrations run from ehswatch.db.Database, on its connection")
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()

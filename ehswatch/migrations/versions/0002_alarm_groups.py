"""Alarm groups: a sensor fault grouped under its Modbus device's communication alarm.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("alarm", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("grouped_under", sa.String(length=64), nullable=False, server_default="")
        )
        batch_op.add_column(sa.Column("suppressed_by", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("alarm", schema=None) as batch_op:
        batch_op.drop_column("suppressed_by")
        batch_op.drop_column("grouped_under")

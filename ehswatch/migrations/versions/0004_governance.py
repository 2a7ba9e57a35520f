"""Dust governance: tickets not raised by an alarm (a missed cleaning, a patrol's
finding), stop-work confirmations, the responsibility map's edits, cleaning and patrol
records, closed shifts' figures and exposures, and the governance watch's cursor.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 22:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("hazard_ticket", schema=None) as batch_op:
        batch_op.alter_column("alarm_id", existing_type=sa.Integer(), nullable=True)
        batch_op.add_column(sa.Column("source", sa.String(length=160), nullable=True))
        batch_op.add_column(sa.Column("title", sa.Text(), nullable=False, server_default=""))
        batch_op.add_column(sa.Column("stop_work_confirmed_at", sa.Float(), nullable=True))
        batch_op.add_column(
            sa.Column(
                "stop_work_confirmed_by", sa.String(length=128), nullable=False, server_default=""
            )
        )
        batch_op.create_unique_constraint("uq_hazard_ticket_source", ["source"])
    # Stop-work tickets from before: their stop-work was handled without this step, so
    # they are not chased past the GM for a confirmation nobody could give then.
    op.execute(
        "UPDATE hazard_ticket SET stop_work_confirmed_at = created_at, "
        "stop_work_confirmed_by = '(before 0004)' WHERE stop_work"
    )
    op.create_table(
        "zone_owner",
        sa.Column("zone", sa.String(length=64), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("by", sa.String(length=128), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("zone", "role"),
    )
    op.create_table(
        "cleaning_record",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("zone", sa.String(length=64), nullable=False),
        sa.Column("shift", sa.String(length=64), nullable=False),
        sa.Column("shift_start", sa.Float(), nullable=False),
        sa.Column("shift_end", sa.Float(), nullable=False),
        sa.Column("by", sa.String(length=128), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("residue_mm", sa.Float(), nullable=False),
        sa.Column("items", sa.Text(), nullable=False),
        sa.Column("photo", sa.Text(), nullable=False),
        sa.Column("photo_sha256", sa.String(length=64), nullable=False),
        sa.Column("passed", sa.Boolean(), nullable=False),
        sa.Column("ticket_id", sa.Integer(), nullable=True),
        sa.Column("comment", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("zone", "shift_start"),
    )
    op.create_index("ix_cleaning_record_zone", "cleaning_record", ["zone"])
    op.create_index("ix_cleaning_record_shift_start", "cleaning_record", ["shift_start"])
    op.create_index("ix_cleaning_record_at", "cleaning_record", ["at"])
    op.create_table(
        "patrol_record",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("checkpoint", sa.String(length=64), nullable=False),
        sa.Column("zone", sa.String(length=64), nullable=False),
        sa.Column("window_start", sa.Float(), nullable=False),
        sa.Column("by", sa.String(length=128), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("answers", sa.Text(), nullable=False),
        sa.Column("passed", sa.Boolean(), nullable=False),
        sa.Column("ticket_id", sa.Integer(), nullable=True),
        sa.Column("comment", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_patrol_record_checkpoint", "patrol_record", ["checkpoint"])
    op.create_index("ix_patrol_record_zone", "patrol_record", ["zone"])
    op.create_index("ix_patrol_record_window_start", "patrol_record", ["window_start"])
    op.create_index("ix_patrol_record_at", "patrol_record", ["at"])
    op.create_table(
        "shift_figure",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("zone", sa.String(length=64), nullable=False),
        sa.Column("sensor_type", sa.String(length=64), nullable=False),
        sa.Column("shift", sa.String(length=64), nullable=False),
        sa.Column("shift_start", sa.Float(), nullable=False),
        sa.Column("shift_end", sa.Float(), nullable=False),
        sa.Column("max", sa.Float(), nullable=True),
        sa.Column("mean", sa.Float(), nullable=True),
        sa.Column("above_warning_s", sa.Float(), nullable=False),
        sa.Column("above_alarm_s", sa.Float(), nullable=False),
        sa.Column("above_interlock_s", sa.Float(), nullable=False),
        sa.Column("covered_s", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("zone", "sensor_type", "shift_start"),
    )
    op.create_index("ix_shift_figure_zone", "shift_figure", ["zone"])
    op.create_index("ix_shift_figure_shift_start", "shift_figure", ["shift_start"])
    op.create_table(
        "exposure_figure",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("sensor", sa.String(length=64), nullable=False),
        sa.Column("zone", sa.String(length=64), nullable=False),
        sa.Column("sensor_type", sa.String(length=64), nullable=False),
        sa.Column("shift", sa.String(length=64), nullable=False),
        sa.Column("shift_start", sa.Float(), nullable=False),
        sa.Column("shift_end", sa.Float(), nullable=False),
        sa.Column("twa", sa.Float(), nullable=True),
        sa.Column("peak", sa.Float(), nullable=True),
        sa.Column("limit", sa.Float(), nullable=False),
        sa.Column("measured_s", sa.Float(), nullable=False),
        sa.Column("ticket_id", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("sensor", "shift_start"),
    )
    op.create_index("ix_exposure_figure_sensor", "exposure_figure", ["sensor"])
    op.create_index("ix_exposure_figure_zone", "exposure_figure", ["zone"])
    op.create_index("ix_exposure_figure_shift_start", "exposure_figure", ["shift_start"])
    op.create_table(
        "near_miss",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("zone", sa.String(length=64), nullable=False),
        sa.Column("by", sa.String(length=128), nullable=False),
        sa.Column("anonymous", sa.Boolean(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("ticket_id", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_near_miss_zone", "near_miss", ["zone"])
    op.create_index("ix_near_miss_by", "near_miss", ["by"])
    op.create_index("ix_near_miss_at", "near_miss", ["at"])
    op.create_table(
        "governance_cursor",
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("until", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )


def downgrade() -> None:
    op.drop_table("governance_cursor")
    for name in ("at", "by", "zone"):
        op.drop_index(f"ix_near_miss_{name}", table_name="near_miss")
    op.drop_table("near_miss")
    for name in ("shift_start", "zone", "sensor"):
        op.drop_index(f"ix_exposure_figure_{name}", table_name="exposure_figure")
    op.drop_table("exposure_figure")
    op.drop_index("ix_shift_figure_shift_start", table_name="shift_figure")
    op.drop_index("ix_shift_figure_zone", table_name="shift_figure")
    op.drop_table("shift_figure")
    for name in ("at", "window_start", "zone", "checkpoint"):
        op.drop_index(f"ix_patrol_record_{name}", table_name="patrol_record")
    op.drop_table("patrol_record")
    for name in ("at", "shift_start", "zone"):
        op.drop_index(f"ix_cleaning_record_{name}", table_name="cleaning_record")
    op.drop_table("cleaning_record")
    op.drop_table("zone_owner")
    with op.batch_alter_table("hazard_ticket", schema=None) as batch_op:
        batch_op.drop_constraint("uq_hazard_ticket_source", type_="unique")
        batch_op.drop_column("stop_work_confirmed_by")
        batch_op.drop_column("stop_work_confirmed_at")
        batch_op.drop_column("title")
        batch_op.drop_column("source")
        batch_op.alter_column("alarm_id", existing_type=sa.Integer(), nullable=False)

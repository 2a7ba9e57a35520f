"""Initial schema: audit log, interlock zones, alarms and their outbox, notifications,
hazard tickets, evidence, outbound queue, outbox cursors.

Revision ID: 0001
Revises:
Create Date: 2026-11-24 00:56:22.741673
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "alarm",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("sensor", sa.String(length=64), nullable=False),
        sa.Column("zone", sa.String(length=64), nullable=False),
        sa.Column("sensor_type", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=32), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("tier", sa.Integer(), nullable=False),
        sa.Column("peak_tier", sa.Integer(), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("threshold", sa.Float(), nullable=True),
        sa.Column("first_at", sa.Float(), nullable=False),
        sa.Column("last_at", sa.Float(), nullable=False),
        sa.Column("acked_at", sa.Float(), nullable=True),
        sa.Column("acked_by", sa.String(length=128), nullable=False),
        sa.Column("shelved_until", sa.Float(), nullable=True),
        sa.Column("shelved_by", sa.String(length=128), nullable=False),
        sa.Column("shelve_reason", sa.Text(), nullable=False),
        sa.Column("closed_at", sa.Float(), nullable=True),
        sa.Column("transitions", sa.Integer(), nullable=False),
        sa.Column("chattering", sa.Boolean(), nullable=False),
        sa.Column("escalations", sa.Integer(), nullable=False),
        sa.Column("last_escalated_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("alarm", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_alarm_closed_at"), ["closed_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_alarm_first_at"), ["first_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_alarm_sensor"), ["sensor"], unique=False)
        batch_op.create_index(batch_op.f("ix_alarm_state"), ["state"], unique=False)
        batch_op.create_index(batch_op.f("ix_alarm_zone"), ["zone"], unique=False)

    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("ts", sa.Float(), nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("role", sa.String(length=32), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("subject", sa.String(length=128), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("comment", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_audit_log_action"), ["action"], unique=False)
        batch_op.create_index(batch_op.f("ix_audit_log_subject"), ["subject"], unique=False)
        batch_op.create_index(batch_op.f("ix_audit_log_ts"), ["ts"], unique=False)

    op.create_table(
        "hazard_outbound",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("ticket_id", sa.Integer(), nullable=False),
        sa.Column("ts", sa.Float(), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_try", sa.Float(), nullable=False),
        sa.Column("delivered_at", sa.Float(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("hazard_outbound", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_hazard_outbound_delivered_at"), ["delivered_at"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_hazard_outbound_next_try"), ["next_try"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_hazard_outbound_ticket_id"), ["ticket_id"], unique=False
        )

    op.create_table(
        "interlock_zone",
        sa.Column("zone", sa.String(length=64), nullable=False),
        sa.Column("tripped", sa.Boolean(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("tripped_at", sa.Float(), nullable=True),
        sa.Column("trip_votes", sa.Integer(), nullable=False),
        sa.Column("trip_cause", sa.Text(), nullable=False),
        sa.Column("bypass_until", sa.Float(), nullable=True),
        sa.Column("bypass_reason", sa.Text(), nullable=False),
        sa.Column("bypass_measure", sa.Text(), nullable=False),
        sa.Column("bypass_by", sa.Text(), nullable=False),
        sa.Column("pending", sa.Text(), nullable=False),
        sa.Column("output_fault", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("zone"),
    )
    op.create_table(
        "notification",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("key", sa.String(length=128), nullable=False),
        sa.Column("channel", sa.String(length=64), nullable=False),
        sa.Column("zone", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("next_try", sa.Float(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("sent_at", sa.Float(), nullable=True),
        sa.Column("grouped_in", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("key", "channel", name="uq_notification_key_channel"),
    )
    with op.batch_alter_table("notification", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_notification_channel"), ["channel"], unique=False)
        batch_op.create_index(batch_op.f("ix_notification_key"), ["key"], unique=False)
        batch_op.create_index(batch_op.f("ix_notification_next_try"), ["next_try"], unique=False)
        batch_op.create_index(batch_op.f("ix_notification_status"), ["status"], unique=False)

    op.create_table(
        "outbox_cursor",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("last_event_id", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "sensor_service",
        sa.Column("sensor", sa.String(length=64), nullable=False),
        sa.Column("out_of_service", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("by", sa.String(length=128), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("sensor"),
    )
    op.create_table(
        "alarm_outbox",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("alarm_id", sa.Integer(), nullable=False),
        sa.Column("ts", sa.Float(), nullable=False),
        sa.Column("event", sa.String(length=32), nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("published_at", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(
            ["alarm_id"],
            ["alarm.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("alarm_outbox", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_alarm_outbox_alarm_id"), ["alarm_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_alarm_outbox_published_at"), ["published_at"], unique=False
        )

    op.create_table(
        "hazard_ticket",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("alarm_id", sa.Integer(), nullable=False),
        sa.Column("sensor", sa.String(length=64), nullable=False),
        sa.Column("zone", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("grade", sa.String(length=1), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("due_at", sa.Float(), nullable=False),
        sa.Column("owner", sa.String(length=128), nullable=False),
        sa.Column("registered_by", sa.String(length=128), nullable=False),
        sa.Column("rectifier", sa.String(length=128), nullable=False),
        sa.Column("measure", sa.Text(), nullable=False),
        sa.Column("submitted_at", sa.Float(), nullable=True),
        sa.Column("verifier", sa.String(length=128), nullable=False),
        sa.Column("sent_back", sa.Integer(), nullable=False),
        sa.Column("approvals", sa.Text(), nullable=False),
        sa.Column("archived_at", sa.Float(), nullable=True),
        sa.Column("reminded", sa.Boolean(), nullable=False),
        sa.Column("escalation_level", sa.Integer(), nullable=False),
        sa.Column("recurrence", sa.Integer(), nullable=False),
        sa.Column("related", sa.Text(), nullable=False),
        sa.Column("chronic", sa.Boolean(), nullable=False),
        sa.Column("stop_work", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["alarm_id"],
            ["alarm.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("alarm_id"),
    )
    with op.batch_alter_table("hazard_ticket", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_hazard_ticket_created_at"), ["created_at"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_hazard_ticket_grade"), ["grade"], unique=False)
        batch_op.create_index(batch_op.f("ix_hazard_ticket_sensor"), ["sensor"], unique=False)
        batch_op.create_index(batch_op.f("ix_hazard_ticket_state"), ["state"], unique=False)
        batch_op.create_index(batch_op.f("ix_hazard_ticket_zone"), ["zone"], unique=False)

    op.create_table(
        "hazard_evidence",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("ticket_id", sa.Integer(), nullable=False),
        sa.Column("filename", sa.String(length=255), nullable=False),
        sa.Column("content_type", sa.String(length=64), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("uploaded_by", sa.String(length=128), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["ticket_id"],
            ["hazard_ticket.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("hazard_evidence", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_hazard_evidence_ticket_id"), ["ticket_id"], unique=False
        )


def downgrade() -> None:

    with op.batch_alter_table("hazard_evidence", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_hazard_evidence_ticket_id"))

    op.drop_table("hazard_evidence")
    with op.batch_alter_table("hazard_ticket", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_hazard_ticket_zone"))
        batch_op.drop_index(batch_op.f("ix_hazard_ticket_state"))
        batch_op.drop_index(batch_op.f("ix_hazard_ticket_sensor"))
        batch_op.drop_index(batch_op.f("ix_hazard_ticket_grade"))
        batch_op.drop_index(batch_op.f("ix_hazard_ticket_created_at"))

    op.drop_table("hazard_ticket")
    with op.batch_alter_table("alarm_outbox", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_alarm_outbox_published_at"))
        batch_op.drop_index(batch_op.f("ix_alarm_outbox_alarm_id"))

    op.drop_table("alarm_outbox")
    op.drop_table("sensor_service")
    op.drop_table("outbox_cursor")
    with op.batch_alter_table("notification", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_notification_status"))
        batch_op.drop_index(batch_op.f("ix_notification_next_try"))
        batch_op.drop_index(batch_op.f("ix_notification_key"))
        batch_op.drop_index(batch_op.f("ix_notification_channel"))

    op.drop_table("notification")
    op.drop_table("interlock_zone")
    with op.batch_alter_table("hazard_outbound", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_hazard_outbound_ticket_id"))
        batch_op.drop_index(batch_op.f("ix_hazard_outbound_next_try"))
        batch_op.drop_index(batch_op.f("ix_hazard_outbound_delivered_at"))

    op.drop_table("hazard_outbound")
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_log_ts"))
        batch_op.drop_index(batch_op.f("ix_audit_log_subject"))
        batch_op.drop_index(batch_op.f("ix_audit_log_action"))

    op.drop_table("audit_log")
    with op.batch_alter_table("alarm", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_alarm_zone"))
        batch_op.drop_index(batch_op.f("ix_alarm_state"))
        batch_op.drop_index(batch_op.f("ix_alarm_sensor"))
        batch_op.drop_index(batch_op.f("ix_alarm_first_at"))
        batch_op.drop_index(batch_op.f("ix_alarm_closed_at"))

    op.drop_table("alarm")

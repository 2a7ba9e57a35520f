"""Alarm tables: alarms, their outbox of events, notifications to send, sensors out of
service. An alarm change and its outbox event are written in one transaction."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import (
    Boolean,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    select,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from ehswatch.alarms.model import Alarm, AlarmKind, AlarmState
from ehswatch.db import Database
from ehswatch.tables import Base


class AlarmRecord(Base):
    __tablename__ = "alarm"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    sensor: Mapped[str] = mapped_column(String(64), index=True)
    zone: Mapped[str] = mapped_column(String(64), index=True)
    sensor_type: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(32), index=True)
    active: Mapped[bool] = mapped_column(Boolean)
    tier: Mapped[int] = mapped_column(Integer)
    peak_tier: Mapped[int] = mapped_column(Integer)
    value: Mapped[float | None] = mapped_column(Float, nullable=True)
    threshold: Mapped[float | None] = mapped_column(Float, nullable=True)
    first_at: Mapped[float] = mapped_column(Float, index=True)
    last_at: Mapped[float] = mapped_column(Float)
    acked_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    acked_by: Mapped[str] = mapped_column(String(128), default="")
    shelved_until: Mapped[float | None] = mapped_column(Float, nullable=True)
    shelved_by: Mapped[str] = mapped_column(String(128), default="")
    shelve_reason: Mapped[str] = mapped_column(Text, default="")
    closed_at: Mapped[float | None] = mapped_column(Float, nullable=True, index=True)
    transitions: Mapped[int] = mapped_column(Integer, default=1)
    chattering: Mapped[bool] = mapped_column(Boolean, default=False)
    escalations: Mapped[int] = mapped_column(Integer, default=0)
    last_escalated_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    # A fault grouped under a device's comm alarm: its source ("device:<id>") and id.
    grouped_under: Mapped[str] = mapped_column(String(64), default="", server_default="")
    suppressed_by: Mapped[int | None] = mapped_column(Integer, nullable=True)


FIELDS = [c.name for c in AlarmRecord.__table__.columns]


def to_alarm(r: AlarmRecord) -> Alarm:
    return alarm_from_row({k: getattr(r, k) for k in FIELDS})


def alarm_from_row(row: Mapping[Any, Any]) -> Alarm:
    """An alarm from its table row's columns (a Core result's mapping)."""
    d = dict(row)
    d["kind"] = AlarmKind(d["kind"])
    d["state"] = AlarmState(d["state"])
    return Alarm(**d)


def to_record(a: Alarm) -> AlarmRecord:
    d = {k: getattr(a, k) for k in FIELDS}
    if d["id"] is None:
        del d["id"]
    d["kind"] = str(a.kind)
    d["state"] = str(a.state)
    return AlarmRecord(**d)


def alarm_dict(a: Alarm) -> dict[str, Any]:
    d = {k: getattr(a, k) for k in FIELDS}
    d["kind"], d["state"] = str(a.kind), str(a.state)
    return d


async def recent_alarms(db: Database, *, include_closed: bool, limit: int) -> list[Alarm]:
    """The open alarms (with `include_closed`, closed ones too), the most recently
    changed first, at most `limit`: read as rows, not an ORM object per alarm."""
    q = select(*AlarmRecord.__table__.columns).order_by(AlarmRecord.last_at.desc()).limit(limit)
    if not include_closed:
        q = q.where(AlarmRecord.closed_at.is_(None))
    async with db.new_session() as s:
        return [alarm_from_row(row) for row in (await s.execute(q)).mappings()]


async def alarm_by_id(db: Database, alarm_id: int) -> Alarm | None:
    async with db.new_session() as s:
        q = select(*AlarmRecord.__table__.columns).where(AlarmRecord.id == alarm_id)
        row = (await s.execute(q)).mappings().first()
    return alarm_from_row(row) if row is not None else None


class OutboxRecord(Base):
    """One alarm event, stored with the alarm change and published afterwards."""

    __tablename__ = "alarm_outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)  # event id
    alarm_id: Mapped[int] = mapped_column(ForeignKey("alarm.id"), index=True)
    ts: Mapped[float] = mapped_column(Float)
    event: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(128), default="")
    payload: Mapped[str] = mapped_column(Text)  # the alarm after the event, JSON
    published_at: Mapped[float | None] = mapped_column(Float, nullable=True, index=True)

    def alarm(self) -> dict[str, Any]:
        return dict(json.loads(self.payload))


class NotificationRecord(Base):
    """A message to send to one channel. `key` names what it is about (``alarm-event:17``,
    ``ticket:4:overdue:2``); (key, channel) is unique, so re-relaying an event after a
    crash never sends twice."""

    __tablename__ = "notification"
    __table_args__ = (UniqueConstraint("key", "channel", name="uq_notification_key_channel"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(128), index=True)
    channel: Mapped[str] = mapped_column(String(64), index=True)
    zone: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))  # alarm | escalation | ticket
    payload: Mapped[str] = mapped_column(Text)  # JSON: the alarm and its event
    created_at: Mapped[float] = mapped_column(Float)
    next_try: Mapped[float] = mapped_column(Float, index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)  # pending|sent
    sent_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    grouped_in: Mapped[int | None] = mapped_column(Integer, nullable=True)  # a flood message
    last_error: Mapped[str] = mapped_column(Text, default="")


def notification_rows(
    *,
    key: str,
    channels: Sequence[str],
    zone: str,
    kind: str,
    payload: str,
    now: float,
    wait_s: float = 0.0,
) -> list[dict[str, Any]]:
    """One message about `key` for each channel, due `wait_s` from `now`."""
    return [
        {
            "key": key,
            "channel": c,
            "zone": zone,
            "kind": kind,
            "payload": payload,
            "created_at": now,
            "next_try": now + wait_s,
            "attempts": 0,
            "status": "pending",
            "last_error": "",
        }
        for c in channels
    ]


async def enqueue_notifications(
    db: Database, session: AsyncSession, rows: list[dict[str, Any]]
) -> None:
    """Queue `notification_rows` in the caller's transaction, in one statement; a (key,
    channel) already queued is left as it is (relaying an event again after a crash
    never sends it twice). The caller wakes the notifier once it has committed."""
    if rows:
        await session.execute(db.insert(NotificationRecord).values(rows).on_conflict_do_nothing())


class SensorServiceRecord(Base):
    """Sensors taken out of service: their alarms are suppressed until back in service."""

    __tablename__ = "sensor_service"

    sensor: Mapped[str] = mapped_column(String(64), primary_key=True)
    out_of_service: Mapped[bool] = mapped_column(Boolean)
    reason: Mapped[str] = mapped_column(Text, default="")
    by: Mapped[str] = mapped_column(String(128), default="")
    at: Mapped[float] = mapped_column(Float)

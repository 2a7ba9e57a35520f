"""Hazard tables: tickets (one per alarm episode: `alarm_id` is unique), evidence files,
the outbound webhook queue, and the desk's cursor over the alarm outbox."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Boolean, Float, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from ehswatch.hazards.model import Approval, HazardTicket, TicketState
from ehswatch.tables import Base


class TicketRecord(Base):
    __tablename__ = "hazard_ticket"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    # The alarm episode that raised it; None for a ticket the governance watch or a
    # patrol opened, which has its `source` instead ("cleaning:<zone>:<shift start>", …).
    alarm_id: Mapped[int | None] = mapped_column(ForeignKey("alarm.id"), unique=True, nullable=True)
    source: Mapped[str | None] = mapped_column(String(160), unique=True, nullable=True)
    title: Mapped[str] = mapped_column(Text, default="")
    sensor: Mapped[str] = mapped_column(String(64), index=True)
    zone: Mapped[str] = mapped_column(String(64), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    grade: Mapped[str] = mapped_column(String(1), index=True)
    state: Mapped[str] = mapped_column(String(16), index=True)
    created_at: Mapped[float] = mapped_column(Float, index=True)
    due_at: Mapped[float] = mapped_column(Float)
    owner: Mapped[str] = mapped_column(String(128), default="")
    registered_by: Mapped[str] = mapped_column(String(128), default="")
    rectifier: Mapped[str] = mapped_column(String(128), default="")
    measure: Mapped[str] = mapped_column(Text, default="")
    submitted_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    verifier: Mapped[str] = mapped_column(String(128), default="")
    sent_back: Mapped[int] = mapped_column(Integer, default=0)
    approvals: Mapped[str] = mapped_column(Text, default="[]")
    archived_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    reminded: Mapped[bool] = mapped_column(Boolean, default=False)
    escalation_level: Mapped[int] = mapped_column(Integer, default=0)
    recurrence: Mapped[int] = mapped_column(Integer, default=1)
    related: Mapped[str] = mapped_column(Text, default="[]")
    chronic: Mapped[bool] = mapped_column(Boolean, default=False)
    stop_work: Mapped[bool] = mapped_column(Boolean, default=False)
    stop_work_confirmed_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    stop_work_confirmed_by: Mapped[str] = mapped_column(String(128), default="")


FIELDS = [c.name for c in TicketRecord.__table__.columns]


def to_ticket(r: TicketRecord) -> HazardTicket:
    return ticket_from_row({k: getattr(r, k) for k in FIELDS})


def ticket_from_row(row: Mapping[Any, Any]) -> HazardTicket:
    """A ticket from its table row's columns (a Core result's mapping: lists of many
    tickets are read without an ORM object per row)."""
    d: dict[str, Any] = dict(row)
    d["state"] = TicketState(d["state"])
    d["approvals"] = tuple(Approval(**a) for a in json.loads(d["approvals"]))
    d["related"] = tuple(json.loads(d["related"]))
    d["source"] = d["source"] or ""
    return HazardTicket(**d)


def to_record(t: HazardTicket) -> TicketRecord:
    d = ticket_dict(t)
    d["approvals"] = json.dumps(d["approvals"], ensure_ascii=False)
    d["related"] = json.dumps(d["related"])
    d["source"] = d["source"] or None  # unique when given; alarm tickets have none
    if d["id"] is None:
        del d["id"]
    return TicketRecord(**d)


def ticket_dict(t: HazardTicket) -> dict[str, Any]:
    d: dict[str, Any] = {k: getattr(t, k) for k in FIELDS}
    d["state"] = str(t.state)
    d["approvals"] = [
        {"name": a.name, "role": a.role, "at": a.at, "acting_role": a.acting_role}
        for a in t.approvals
    ]
    d["related"] = list(t.related)
    return d


class EvidenceRecord(Base):
    __tablename__ = "hazard_evidence"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("hazard_ticket.id"), index=True)
    filename: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    path: Mapped[str] = mapped_column(Text)
    uploaded_by: Mapped[str] = mapped_column(String(128))
    at: Mapped[float] = mapped_column(Float)


class TicketOutboundRecord(Base):
    """A ticket change to push to the external platform, until it answers 2xx."""

    __tablename__ = "hazard_outbound"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    ticket_id: Mapped[int] = mapped_column(Integer, index=True)
    ts: Mapped[float] = mapped_column(Float)
    payload: Mapped[str] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_try: Mapped[float] = mapped_column(Float, index=True)
    delivered_at: Mapped[float | None] = mapped_column(Float, nullable=True, index=True)
    last_error: Mapped[str] = mapped_column(Text, default="")


class CursorRecord(Base):
    """How far a consumer has read the alarm outbox (its own cursor: nothing is skipped
    when it was down, nothing is read twice)."""

    __tablename__ = "outbox_cursor"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    last_event_id: Mapped[int] = mapped_column(Integer, default=0)

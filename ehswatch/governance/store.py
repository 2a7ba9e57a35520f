"""Governance tables: the responsibility map's edits, cleaning records, patrol records,
and how far the watch has looked for what was missed."""

from __future__ import annotations

from sqlalchemy import Boolean, Float, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from ehswatch.tables import Base


class ZoneOwnerRecord(Base):
    """An admin's edit of the responsibility map: `name` answers for `zone` as `role`
    (over the config's name; an empty name gives the config's back)."""

    __tablename__ = "zone_owner"

    zone: Mapped[str] = mapped_column(String(64), primary_key=True)
    role: Mapped[str] = mapped_column(String(16), primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    by: Mapped[str] = mapped_column(String(128))
    at: Mapped[float] = mapped_column(Float)


class CleaningRecord(Base):
    """A zone's cleaning at the end of a shift: one per zone and shift."""

    __tablename__ = "cleaning_record"
    __table_args__ = (UniqueConstraint("zone", "shift_start"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    zone: Mapped[str] = mapped_column(String(64), index=True)
    shift: Mapped[str] = mapped_column(String(64))
    shift_start: Mapped[float] = mapped_column(Float, index=True)
    shift_end: Mapped[float] = mapped_column(Float)
    by: Mapped[str] = mapped_column(String(128))
    at: Mapped[float] = mapped_column(Float, index=True)
    residue_mm: Mapped[float] = mapped_column(Float)
    items: Mapped[str] = mapped_column(Text)  # JSON: the items done
    photo: Mapped[str] = mapped_column(Text, default="")  # the stored file, or ""
    photo_sha256: Mapped[str] = mapped_column(String(64), default="")
    passed: Mapped[bool] = mapped_column(Boolean)
    ticket_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    comment: Mapped[str] = mapped_column(Text, default="")


class PatrolRecord(Base):
    """A checkpoint's round: who stood there, when, each item's answer and photo."""

    __tablename__ = "patrol_record"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    checkpoint: Mapped[str] = mapped_column(String(64), index=True)
    zone: Mapped[str] = mapped_column(String(64), index=True)
    window_start: Mapped[float] = mapped_column(Float, index=True)
    by: Mapped[str] = mapped_column(String(128))
    at: Mapped[float] = mapped_column(Float, index=True)
    answers: Mapped[str] = mapped_column(Text)  # JSON: [{item, value, passed, photo}]
    passed: Mapped[bool] = mapped_column(Boolean)
    ticket_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    comment: Mapped[str] = mapped_column(Text, default="")


class WatchCursor(Base):
    """How far the governance watch has looked for missed cleanings and rounds: what
    ended before `until` was looked at (nothing from before the watch first ran is)."""

    __tablename__ = "governance_cursor"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)  # "cleaning:<zone>"
    until: Mapped[float] = mapped_column(Float)


class ShiftFigureRecord(Base):
    """A closed shift's figures of one zone and sensor type (see `shift_figures`)."""

    __tablename__ = "shift_figure"
    __table_args__ = (UniqueConstraint("zone", "sensor_type", "shift_start"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    zone: Mapped[str] = mapped_column(String(64), index=True)
    sensor_type: Mapped[str] = mapped_column(String(64))
    shift: Mapped[str] = mapped_column(String(64))
    shift_start: Mapped[float] = mapped_column(Float, index=True)
    shift_end: Mapped[float] = mapped_column(Float)
    max: Mapped[float | None] = mapped_column(Float, nullable=True)
    mean: Mapped[float | None] = mapped_column(Float, nullable=True)
    above_warning_s: Mapped[float] = mapped_column(Float)
    above_alarm_s: Mapped[float] = mapped_column(Float)
    above_interlock_s: Mapped[float] = mapped_column(Float)
    covered_s: Mapped[float] = mapped_column(Float)


class ExposureRecord(Base):
    """A closed shift's exposure of one sensor whose type has a limit: its TWA and peak."""

    __tablename__ = "exposure_figure"
    __table_args__ = (UniqueConstraint("sensor", "shift_start"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    sensor: Mapped[str] = mapped_column(String(64), index=True)
    zone: Mapped[str] = mapped_column(String(64), index=True)
    sensor_type: Mapped[str] = mapped_column(String(64))
    shift: Mapped[str] = mapped_column(String(64))
    shift_start: Mapped[float] = mapped_column(Float, index=True)
    shift_end: Mapped[float] = mapped_column(Float)
    twa: Mapped[float | None] = mapped_column(Float, nullable=True)
    peak: Mapped[float | None] = mapped_column(Float, nullable=True)
    limit: Mapped[float] = mapped_column(Float)
    measured_s: Mapped[float] = mapped_column(Float)
    ticket_id: Mapped[int | None] = mapped_column(Integer, nullable=True)


class NearMissRecord(Base):
    """A report by anyone — a hazard seen, a near miss — and the ticket it entered as."""

    __tablename__ = "near_miss"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    zone: Mapped[str] = mapped_column(String(64), index=True)
    by: Mapped[str] = mapped_column(String(128), index=True)  # "" when anonymous
    anonymous: Mapped[bool] = mapped_column(Boolean)
    text: Mapped[str] = mapped_column(Text)
    at: Mapped[float] = mapped_column(Float, index=True)
    ticket_id: Mapped[int | None] = mapped_column(Integer, nullable=True)

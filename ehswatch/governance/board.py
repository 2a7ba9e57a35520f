"""The dust governance board's figures, per zone: the readings of the current and past
shifts, cleaning records done and missed, patrol rounds done and missed, open tickets by
grade with their progress and countdown, and this month's hazards against last month's
and the same month last year.

`store_figures` keeps the closed shifts the control part publishes (idempotent: a shift
is stored once, however often it is seen). `board` reads everything in one session.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from ehswatch.config import PlantConfig
from ehswatch.db import Database
from ehswatch.governance import patrols
from ehswatch.governance.shifts import month_span, on_at
from ehswatch.governance.store import (
    CleaningRecord,
    ExposureRecord,
    PatrolRecord,
    ShiftFigureRecord,
)
from ehswatch.hazards.model import TicketState
from ehswatch.hazards.store import TicketRecord

PAST_SHIFTS = 3
WEEK = 7 * 86400.0
PROGRESS = {  # how far along a ticket is, of its lifecycle, for the board's bars
    TicketState.REPORTED: 0.0,
    TicketState.DETECTED: 0.0,
    TicketState.REGISTERED: 0.2,
    TicketState.RECTIFYING: 0.4,
    TicketState.VERIFYING: 0.7,
    TicketState.APPROVING: 0.9,
    TicketState.ARCHIVED: 1.0,
}


async def store_figures(db: Database, published: dict[str, Any] | None) -> int:
    """Store the closed shifts in the control part's status (`shift_figures.closed`) not
    stored yet; how many rows were added."""
    closed = ((published or {}).get("shift_figures") or {}).get("closed") or []
    rows = [
        {
            "zone": row["zone"],
            "sensor_type": row["sensor_type"],
            "shift": shift["shift"],
            "shift_start": shift["start"],
            "shift_end": shift["end"],
            "max": row["max"],
            "mean": row["mean"],
            "above_warning_s": row["above_warning_s"],
            "above_alarm_s": row["above_alarm_s"],
            "above_interlock_s": row["above_interlock_s"],
            "covered_s": shift["covered_s"],
        }
        for shift in closed
        for row in shift["rows"]
    ]
    if not rows:
        return 0
    # Stored at once by whoever sees them first (the watch, a board read): a shift
    # already there is left as it is, never a conflict.
    q = (
        db.insert(ShiftFigureRecord)
        .values(rows)
        .on_conflict_do_nothing(index_elements=["zone", "sensor_type", "shift_start"])
    )
    async with db.new_session() as s, s.begin():
        result = await s.execute(q)
    return max(int(getattr(result, "rowcount", 0) or 0), 0)


def month_starts(now: float, zone: ZoneInfo) -> dict[str, tuple[float, float]]:
    """This month, last month and the same month last year, as [start, end) in epoch."""
    today = datetime.fromtimestamp(now, zone)
    y, m = today.year, today.month
    last = (y - 1, 12) if m == 1 else (y, m - 1)
    return {
        "this": month_span(y, m, zone),
        "last": month_span(*last, zone),
        "year_ago": month_span(y - 1, m, zone),
    }


def change(now_n: int, before: int) -> float | None:
    """The change from `before` to `now_n` as a fraction (−0.82: down 82 %), or None."""
    return None if before == 0 else round((now_n - before) / before, 3)


async def _count(s: AsyncSession, q: Any) -> int:
    return int(await s.scalar(q) or 0)


async def board(
    config: PlantConfig, db: Database, published: dict[str, Any] | None, now: float
) -> dict[str, Any]:
    """Every zone's governance figures (see the module), and the plant's totals."""
    tz = ZoneInfo(config.site.timezone)
    figures = (published or {}).get("shift_figures") or {}
    current = figures.get("current")
    months = month_starts(now, tz)
    checkpoints = config.governance.checkpoints
    shift_now = on_at(config.site.shifts, tz, now) if config.site.shifts else None
    zones: list[dict[str, Any]] = []
    async with db.new_session() as s:
        for zone in config.zones:
            z = zone.id
            past = list(
                (
                    await s.execute(
                        select(ShiftFigureRecord)
                        .where(ShiftFigureRecord.zone == z)
                        .order_by(ShiftFigureRecord.shift_start.desc())
                        .limit(PAST_SHIFTS * 8)
                    )
                ).scalars()
            )
            starts = sorted({r.shift_start for r in past}, reverse=True)[:PAST_SHIFTS]
            readings: dict[str, Any] = {
                "current": None
                if current is None
                else {
                    "shift": current["shift"],
                    "start": current["start"],
                    "end": current["end"],
                    "rows": [r for r in current["rows"] if r["zone"] == z],
                },
                "past": [
                    {
                        "shift": next(r.shift for r in past if r.shift_start == st),
                        "start": st,
                        "rows": [_figure(r) for r in past if r.shift_start == st],
                    }
                    for st in starts
                ],
            }
            exposed = list(
                (
                    await s.execute(
                        select(ExposureRecord)
                        .where(ExposureRecord.zone == z)
                        .order_by(ExposureRecord.shift_start.desc())
                        .limit(PAST_SHIFTS * 16)
                    )
                ).scalars()
            )
            readings["exposure"] = {
                "current": [e for e in (current or {}).get("exposure") or [] if e["zone"] == z],
                "past": [
                    {
                        "sensor": e.sensor,
                        "shift": e.shift,
                        "start": e.shift_start,
                        "twa": e.twa,
                        "peak": e.peak,
                        "limit": e.limit,
                        "ticket_id": e.ticket_id,
                    }
                    for e in exposed
                    if e.shift_start in starts or not starts
                ],
            }
            since = now - WEEK
            cleaning_done = await _count(
                s,
                select(func.count())
                .select_from(CleaningRecord)
                .where(CleaningRecord.zone == z, CleaningRecord.shift_start >= since),
            )
            cleaning_failed = await _count(
                s,
                select(func.count())
                .select_from(CleaningRecord)
                .where(
                    CleaningRecord.zone == z,
                    CleaningRecord.shift_start >= since,
                    CleaningRecord.passed.is_(False),
                ),
            )
            missed = Counter(
                (
                    await s.execute(
                        select(TicketRecord.kind).where(
                            TicketRecord.zone == z,
                            TicketRecord.kind.in_(("cleaning", "round")),
                            TicketRecord.created_at >= since,
                        )
                    )
                ).scalars()
            )
            this_shift = None
            if zone.cleaning is not None and shift_now is not None:
                recorded = await s.scalar(
                    select(CleaningRecord.id).where(
                        CleaningRecord.zone == z, CleaningRecord.shift_start == shift_now.start
                    )
                )
                this_shift = {
                    "shift": shift_now.name,
                    "ends": shift_now.end,
                    "recorded": recorded is not None,
                }
            rounds_done = await _count(
                s,
                select(func.count())
                .select_from(PatrolRecord)
                .where(PatrolRecord.zone == z, PatrolRecord.at >= since),
            )
            points = []
            for cp in checkpoints:
                if cp.zone != z:
                    continue
                start, end = patrols.window_at(cp, tz, now)
                done = await s.scalar(
                    select(PatrolRecord.id).where(
                        PatrolRecord.checkpoint == cp.id, PatrolRecord.window_start == start
                    )
                )
                points.append(
                    {"id": cp.id, "name": cp.name, "window_end": end, "done": done is not None}
                )
            open_rows = (
                await s.execute(
                    select(
                        TicketRecord.id,
                        TicketRecord.grade,
                        TicketRecord.state,
                        TicketRecord.due_at,
                        TicketRecord.owner,
                        TicketRecord.kind,
                        TicketRecord.title,
                        TicketRecord.sensor,
                    )
                    .where(TicketRecord.zone == z, TicketRecord.state != TicketState.ARCHIVED)
                    .order_by(TicketRecord.due_at)
                )
            ).all()
            tickets = [
                {
                    "id": r.id,
                    "grade": r.grade,
                    "state": r.state,
                    "due_at": r.due_at,
                    "owner": r.owner,
                    "what": r.title or f"{r.kind} {r.sensor}".strip(),
                    "progress": PROGRESS[TicketState(r.state)],
                    "overdue": r.due_at < now,
                }
                for r in open_rows
            ]
            by_month = {
                name: await _count(
                    s,
                    select(func.count())
                    .select_from(TicketRecord)
                    .where(
                        TicketRecord.zone == z,
                        TicketRecord.created_at >= a,
                        TicketRecord.created_at < b,
                    ),
                )
                for name, (a, b) in months.items()
            }
            zones.append(
                {
                    "id": z,
                    "name": zone.name,
                    "readings": readings,
                    "cleaning": {
                        "rule": zone.cleaning is not None,
                        "done_7d": cleaning_done,
                        "failed_7d": cleaning_failed,
                        "missed_7d": missed["cleaning"],
                        "this_shift": this_shift,
                    },
                    "patrols": {
                        "done_7d": rounds_done,
                        "missed_7d": missed["round"],
                        "checkpoints": points,
                    },
                    "tickets": {
                        "open": tickets,
                        "by_grade": dict(Counter(t["grade"] for t in tickets)),
                    },
                    "hazards": {
                        **by_month,
                        "vs_last_month": change(by_month["this"], by_month["last"]),
                        "vs_year_ago": change(by_month["this"], by_month["year_ago"]),
                    },
                }
            )
    totals = {key: sum(z["hazards"][key] for z in zones) for key in ("this", "last", "year_ago")}
    return {
        "now": now,
        "months": months,
        "zones": zones,
        "hazards": {
            **totals,
            "vs_last_month": change(totals["this"], totals["last"]),
            "vs_year_ago": change(totals["this"], totals["year_ago"]),
        },
    }


def _figure(r: ShiftFigureRecord) -> dict[str, Any]:
    return {
        "zone": r.zone,
        "sensor_type": r.sensor_type,
        "max": r.max,
        "mean": r.mean,
        "above_warning_s": r.above_warning_s,
        "above_alarm_s": r.above_alarm_s,
        "above_interlock_s": r.above_interlock_s,
        "covered_s": r.covered_s,
    }

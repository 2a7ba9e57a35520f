"""The risk heatmap: from the alarm and ticket history, each zone's risk by hour of the
week, and the riskiest periods and zones of a chosen range.

Each alarm episode counts at the hour it began, each ticket at the hour it opened, on
the site's clock (Monday 00:00–01:00 is hour 0, Sunday 23:00 hour 167). The score
weighs what happened by how bad it was: an alarm by its peak tier (warning 1, alarm 3,
interlock 9; an instrument or communication fault 1), a ticket by its grade (C 1, B 3,
A 9). `risk_grid` is the rule (pure numpy); `heatmap` reads the history.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import select

from ehswatch.alarms.store import AlarmRecord
from ehswatch.db import Database
from ehswatch.hazards.store import TicketRecord

HOURS = 7 * 24
TIER_WEIGHT = {1: 1.0, 2: 3.0, 3: 9.0}
GRADE_WEIGHT = {"C": 1.0, "B": 3.0, "A": 9.0}
TOP = 10


@dataclass(frozen=True, kw_only=True, slots=True)
class Grid:
    zones: tuple[str, ...]
    score: NDArray[np.float64]  # (zones, 168)
    alarms: NDArray[np.int64]
    tickets: NDArray[np.int64]


def hour_of_week(ts: float, zone: ZoneInfo) -> int:
    t = datetime.fromtimestamp(ts, zone)
    return t.weekday() * 24 + t.hour


def risk_grid(
    zones: Sequence[str],
    alarms: Sequence[tuple[str, float, float]],
    tickets: Sequence[tuple[str, float, float]],
    tz: ZoneInfo,
) -> Grid:
    """`alarms` and `tickets`: (zone, when, weight); events of other zones are left out."""
    index = {z: k for k, z in enumerate(zones)}
    score = np.zeros((len(zones), HOURS))
    counts = {"alarms": np.zeros((len(zones), HOURS), np.int64)}
    counts["tickets"] = np.zeros_like(counts["alarms"])
    for name, events in (("alarms", alarms), ("tickets", tickets)):
        for zone, ts, weight in events:
            k = index.get(zone)
            if k is None:
                continue
            h = hour_of_week(ts, tz)
            score[k, h] += weight
            counts[name][k, h] += 1
    return Grid(zones=tuple(zones), score=score, alarms=counts["alarms"], tickets=counts["tickets"])


def ranking(grid: Grid) -> dict[str, list[dict[str, Any]]]:
    """The riskiest (zone, weekday, hour) cells and the riskiest zones, highest first."""
    flat = np.argsort(-grid.score, axis=None, kind="stable")
    periods = []
    for f in flat[:TOP]:
        k, h = divmod(int(f), HOURS)
        if grid.score[k, h] <= 0:
            break
        periods.append(
            {
                "zone": grid.zones[k],
                "weekday": h // 24,  # 0 Monday … 6 Sunday
                "hour": h % 24,
                "score": float(grid.score[k, h]),
                "alarms": int(grid.alarms[k, h]),
                "tickets": int(grid.tickets[k, h]),
            }
        )
    totals = grid.score.sum(axis=1)
    zones = [
        {"zone": grid.zones[k], "score": float(totals[k])}
        for k in np.argsort(-totals, kind="stable")
        if totals[k] > 0
    ]
    return {"periods": periods, "zones": zones}


async def heatmap(
    db: Database, zones: Sequence[str], timezone: str, since: float, until: float
) -> dict[str, Any]:
    """The grid and its ranking for [since, until), from the database."""
    async with db.new_session() as s:
        alarm_rows = (
            await s.execute(
                select(
                    AlarmRecord.zone, AlarmRecord.first_at, AlarmRecord.peak_tier, AlarmRecord.kind
                ).where(AlarmRecord.first_at >= since, AlarmRecord.first_at < until)
            )
        ).all()
        ticket_rows = (
            await s.execute(
                select(TicketRecord.zone, TicketRecord.created_at, TicketRecord.grade).where(
                    TicketRecord.created_at >= since, TicketRecord.created_at < until
                )
            )
        ).all()
    alarms = [
        (z, ts, 1.0 if kind in ("fault", "comm") else TIER_WEIGHT.get(int(tier), 1.0))
        for z, ts, tier, kind in alarm_rows
    ]
    tickets = [(z, ts, GRADE_WEIGHT.get(g, 1.0)) for z, ts, g in ticket_rows]
    grid = risk_grid(zones, alarms, tickets, ZoneInfo(timezone))
    return {
        "since": since,
        "until": until,
        "zones": list(grid.zones),
        "score": grid.score.round(2).tolist(),
        "alarms": grid.alarms.tolist(),
        "tickets": grid.tickets.tolist(),
        "top": ranking(grid),
    }

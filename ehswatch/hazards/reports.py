"""`ticket_report`: the plant manager's figures from the tickets (pure: no I/O)."""

from __future__ import annotations

import statistics
from collections import Counter
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from ehswatch.hazards.model import HazardTicket, TicketState

_ONE_DAY = timedelta(days=1)


def ticket_report(tickets: list[HazardTicket], now: float, tz: ZoneInfo) -> dict[str, Any]:
    """The plant manager's figures: open tickets by grade, zone and state, the overdue
    ones, the chronic ones, the mean time to rectify, and each zone's tickets this month
    against last month (in the site's time zone)."""
    open_ = [t for t in tickets if t.open]
    rectify = [t.submitted_at - t.created_at for t in tickets if t.submitted_at is not None]
    this_month = datetime.fromtimestamp(now, tz).replace(
        day=1, hour=0, minute=0, second=0, microsecond=0
    )
    last_month = (this_month.replace(day=1) - _ONE_DAY).replace(day=1)
    per_zone: dict[str, dict[str, int]] = {}
    for t in tickets:
        when = datetime.fromtimestamp(t.created_at, tz)
        bucket = (
            "this_month" if when >= this_month else ("last_month" if when >= last_month else None)
        )
        if bucket:
            per_zone.setdefault(t.zone, {"this_month": 0, "last_month": 0})[bucket] += 1
    return {
        "by_grade": dict(Counter(t.grade for t in open_)),
        "by_zone": dict(Counter(t.zone for t in open_)),
        "by_state": dict(Counter(str(t.state) for t in tickets)),
        "overdue": [
            {
                "id": t.id,
                "grade": t.grade,
                "zone": t.zone,
                "sensor": t.sensor,
                "due_at": t.due_at,
                "owner": t.owner,
                "level": t.escalation_level,
            }
            for t in open_
            if t.state in (TicketState.DETECTED, TicketState.REGISTERED, TicketState.RECTIFYING)
            and now > t.due_at
        ],
        "chronic": [t.id for t in open_ if t.chronic],
        "mean_time_to_rectify_h": round(statistics.fmean(rectify) / 3600, 2) if rectify else None,
        "month_over_month": {
            z: {**v, "change": v["this_month"] - v["last_month"]}
            for z, v in sorted(per_zone.items())
        },
    }

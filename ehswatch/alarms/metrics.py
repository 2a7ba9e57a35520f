"""Alarm-system performance for the plant, in the manner of EEMUA 191.

- `alarms_last_10_min`, `avg_alarms_per_10_min` (over the last 24 h; EEMUA 191 calls
  about one per 10 minutes "manageable" for one operator in steady operation);
- `peak_alarms_per_10_min` and `flood_periods` (10-minute windows in the last 24 h with
  more than 10 alarms: EEMUA's flood);
- `active`, `unacknowledged`, `shelved`, `standing` (active for more than 24 h);
- `chattering` (alarms flagged chattering in the last 24 h);
- `median_time_to_ack_s`, `mean_time_to_ack_s` (alarms acknowledged in the last 24 h);
- `grouped`: open alarms grouped under a Modbus device's comm alarm. Those are not
  annunciated one by one, so the rates and flood counts above leave them out (their
  device alarm counts once).
"""

from __future__ import annotations

import statistics
from typing import Any

from sqlalchemy import select

from ehswatch.alarms.model import AlarmState
from ehswatch.alarms.store import AlarmRecord
from ehswatch.db import Database

DAY = 24 * 3600.0
TEN_MIN = 600.0
FLOOD_PER_10_MIN = 10


async def alarm_metrics(db: Database, now: float) -> dict[str, Any]:
    async with db.new_session() as session:
        recent = list(
            (
                await session.execute(select(AlarmRecord).where(AlarmRecord.first_at > now - DAY))
            ).scalars()
        )
        open_ = list(
            (
                await session.execute(select(AlarmRecord).where(AlarmRecord.closed_at.is_(None)))
            ).scalars()
        )
    grouped = sum(1 for a in open_ if a.grouped_under)
    recent = [a for a in recent if not a.grouped_under]
    buckets: dict[int, int] = {}
    for a in recent:
        k = int((now - a.first_at) // TEN_MIN)
        buckets[k] = buckets.get(k, 0) + 1
    acks = [a.acked_at - a.first_at for a in recent if a.acked_at is not None]
    return {
        "alarms_last_10_min": buckets.get(0, 0),
        "avg_alarms_per_10_min": round(len(recent) / (DAY / TEN_MIN), 3),
        "peak_alarms_per_10_min": max(buckets.values(), default=0),
        "flood_periods": sum(1 for n in buckets.values() if n > FLOOD_PER_10_MIN),
        "active": sum(1 for a in open_ if a.active),
        "unacknowledged": sum(
            1 for a in open_ if a.state in (AlarmState.UNACK_ACTIVE, AlarmState.UNACK_RETURNED)
        ),
        "shelved": sum(1 for a in open_ if a.state == AlarmState.SHELVED),
        "standing": sum(1 for a in open_ if a.active and a.first_at < now - DAY),
        "chattering": sum(1 for a in recent if a.chattering),
        "median_time_to_ack_s": round(statistics.median(acks), 1) if acks else None,
        "mean_time_to_ack_s": round(statistics.fmean(acks), 1) if acks else None,
        "grouped": grouped,
    }

"""The governance figures in InfluxDB, for Grafana's "dust governance" dashboard.

Every `SNAPSHOT_S` (60 s) the desk part writes one `governance` line per zone (tags
site, zone; fields: cleaning records done, failed and missed in the last 7 days, patrol
rounds done and missed, open tickets by grade and overdue, and this month's hazards),
and one `shift_figure` line per zone, sensor type and closed shift (tags site, zone,
type, shift; fields max, mean, above_warning_s, above_alarm_s, above_interlock_s,
covered_s) at the shift's start. Writing a closed shift again writes the same point:
InfluxDB keeps one. A failed write is logged and the next snapshot replaces it (these
are figures of what the database holds, not readings: nothing is lost).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

import numpy as np

from ehswatch.component import Component, Job
from ehswatch.config import InfluxSettings
from ehswatch.governance.desk import GovernanceDesk
from ehswatch.ingest.influx import InfluxWriter, WriteFailed
from ehswatch.ingest.lineprotocol import escape_tag, nanoseconds

log = logging.getLogger(__name__)
SNAPSHOT_S = 60.0


def _ns(ts: float) -> int:
    return nanoseconds(np.array([ts]))[0]


def governance_lines(site: str, board: dict[str, Any]) -> bytes:
    """The line protocol of a board (`governance.board.board`)."""
    now = _ns(board["now"])
    out = []
    for z in board["zones"]:
        tags = f"site={escape_tag(site)},zone={escape_tag(z['id'])}"
        grades = z["tickets"]["by_grade"]
        fields = {
            "cleaning_done_7d": z["cleaning"]["done_7d"],
            "cleaning_failed_7d": z["cleaning"]["failed_7d"],
            "cleaning_missed_7d": z["cleaning"]["missed_7d"],
            "rounds_done_7d": z["patrols"]["done_7d"],
            "rounds_missed_7d": z["patrols"]["missed_7d"],
            "open_a": grades.get("A", 0),
            "open_b": grades.get("B", 0),
            "open_c": grades.get("C", 0),
            "overdue": sum(1 for t in z["tickets"]["open"] if t["overdue"]),
            "hazards_month": z["hazards"]["this"],
        }
        body = ",".join(f"{k}={int(v)}i" for k, v in fields.items())
        out.append(f"governance,{tags} {body} {now}\n")
        for past in z["readings"]["past"]:
            for row in past["rows"]:
                values = {
                    "max": row["max"],
                    "mean": row["mean"],
                    "above_warning_s": row["above_warning_s"],
                    "above_alarm_s": row["above_alarm_s"],
                    "above_interlock_s": row["above_interlock_s"],
                    "covered_s": row["covered_s"],
                }
                body = ",".join(f"{k}={float(v)!r}" for k, v in values.items() if v is not None)
                kind, shift = escape_tag(row["sensor_type"]), escape_tag(past["shift"])
                shift_tags = f"{tags},type={kind},shift={shift}"
                out.append(f"shift_figure,{shift_tags} {body} {_ns(past['start'])}\n")
    return "".join(out).encode()


class GovernanceExport(Component):
    component_name = "governance-influx"

    def __init__(self, governance: GovernanceDesk, settings: InfluxSettings) -> None:
        self.governance = governance
        self.writer = InfluxWriter(settings)
        self.site = governance.config.site.id
        self.written = 0

    def jobs(self) -> Iterable[tuple[str, Job]]:
        yield "snapshot", self._loop

    async def _loop(self) -> None:
        while True:
            await self.write_once()
            await asyncio.sleep(SNAPSHOT_S)

    async def write_once(self) -> bool:
        """Write one snapshot; whether the server took it."""
        lines = governance_lines(self.site, await self.governance.board())
        try:
            await asyncio.to_thread(self.writer.write, lines)
        except WriteFailed as exc:
            log.warning("governance figures not written to InfluxDB: %s", exc)
            return False
        self.written += 1
        return True

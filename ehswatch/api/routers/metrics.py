"""`/metrics`: Prometheus text format (open, like any scrape target).

The control part's families come from its published status document (at most one tick
old); the per-sensor reading counters from the shared arrays (only sensors with a
count, so the answer stays small on a quiet plant of any size); then the desk part's own.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import APIRouter
from fastapi.responses import PlainTextResponse

from ehswatch.api.deps import DeskDep
from ehswatch.metrics import Family, render
from ehswatch.shared_state import StateUnavailable

router = APIRouter(tags=["metrics"])

PER_SENSOR = (
    (
        "late",
        "ehswatch_sensor_late_readings_total",
        "Readings older than their sensor's latest (taken raise-only), per sensor.",
    ),
    (
        "future",
        "ehswatch_sensor_future_readings_total",
        "Readings rejected as stamped too far ahead of the service clock, per sensor.",
    ),
    (
        "too_old",
        "ehswatch_sensor_too_old_readings_total",
        "Readings rejected as stamped further back than max_behind_s, per sensor.",
    ),
)


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics(desk: DeskDep) -> str:
    """Prometheus metrics of both parts."""
    sensors = desk.config.sensors

    def take(a: dict[str, Any], _written: int) -> list[tuple[Any, Any]]:
        out = []
        for key, *_ in PER_SENSOR:
            rows = np.flatnonzero(a[key])
            out.append((rows, a[key][rows].copy()))
        return out

    families: list[Family] = []
    up = 1
    try:
        published, counts = desk.read(take)
        families.extend(published.status.get("metrics", []))
    except StateUnavailable:
        up, counts = 0, [(np.zeros(0, np.intp), np.zeros(0, np.int64))] * len(PER_SENSOR)
    for (_, name, help_text), (rows, values) in zip(PER_SENSOR, counts, strict=True):
        samples = [
            [{"sensor": sensors[i].id}, int(v)]
            for i, v in zip(rows.tolist(), values.tolist(), strict=True)
        ]
        families.append([name, "counter", help_text, samples or [[{"sensor": "none"}, 0]]])
    families.append(
        ["ehswatch_control_part_up", "gauge", "1 while the control part publishes.", [[{}, up]]]
    )
    families.append(
        [
            "ehswatch_event_stream_clients",
            "gauge",
            "Open /api/events streams.",
            [[{}, desk.events.subscribers]],
        ]
    )
    return render(families)

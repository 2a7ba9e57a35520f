"""`/api/sensors` and `/api/zones`: live values, tiers, faults, setpoints, sparklines."""

from __future__ import annotations

import math
from typing import Any

from fastapi import APIRouter, Query

from ehswatch.api.deps import ServiceDep, Viewer
from ehswatch.thresholds.tier import LATCH_NAMES

router = APIRouter(prefix="/api", tags=["sensors"])


def _num(v: float) -> float | None:
    return round(float(v), 4) if math.isfinite(v) else None


@router.get("/sensors")
async def sensors(
    service: ServiceDep,
    _: Viewer,
    history: int = Query(0, ge=0, le=600, description="seconds of sparkline"),
) -> list[dict[str, Any]]:
    ev = service.stage.evaluator
    table = service.table
    tier, faulted, value, ts, reason = (
        ev.tier,
        ev.faulted,
        ev.last_value,
        ev.last_ts,
        ev.fault_reason,
    )
    out = []
    for i, s in enumerate(service.config.sensors):
        row: dict[str, Any] = {
            "id": s.id,
            "name": s.name,
            "zone": s.zone,
            "type": s.type,
            "unit": service.config.sensor_types[s.type].unit,
            "value": _num(value[i]),
            "ts": _num(ts[i]),
            "tier": int(tier[i]),
            "faulted": bool(faulted[i]),
            "fault_reason": int(reason[i]),
            "setpoints": {
                n: _num(v)
                for n, v in zip(LATCH_NAMES, table.setpoint[i], strict=True)
                if math.isfinite(v)
            },
        }
        if history:
            row["history"], row["history_tiers"] = service.history.of(i, history)
        out.append(row)
    return out


@router.get("/site")
async def site(service: ServiceDep, _: Viewer) -> dict[str, str]:
    s = service.config.site
    return {"id": s.id, "name": s.name, "timezone": s.timezone}


@router.get("/zones")
async def zones(service: ServiceDep, _: Viewer) -> list[dict[str, Any]]:
    out = []
    for z in service.config.zones:
        il = z.interlock
        out.append(
            {
                "id": z.id,
                "name": z.name,
                "interlock": None
                if il is None
                else {
                    "voting": il.voting,
                    "sensor_types": il.sensor_types,
                    "fault_counts_as_trip": il.fault_counts_as_trip,
                },
            }
        )
    return out

"""`/health`: which components are up (open, for load balancers and the wall screen).

`clock.wall_offset_s` is how far the wall clock has moved from the service clock since
start (decisions keep the service clock); beyond 1 s the status is `degraded`, with the
reason in `clock.reason`.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from ehswatch.api.deps import ServiceDep
from ehswatch.service import wall_offset_problem

router = APIRouter(tags=["health"])


@router.get("/health")
async def health(service: ServiceDep) -> dict[str, Any]:
    """Each component's jobs (running, restarts, last error) and its own signals."""
    components: dict[str, Any] = {}
    for c in service.components():
        components[c.component_name] = {
            name: {"running": h.running, "restarts": h.restarts, "last_error": h.last_error}
            for name, h in c.health.items()
        }
    checks: dict[str, Any] = {}
    if service.mqtt is not None:
        checks["mqtt"] = {"connected": service.mqtt.stats.connected}
    if service.modbus is not None:
        checks["modbus"] = {
            d: {"connected": s.connected, "errors": s.errors}
            for d, s in service.modbus.stats.items()
        }
    if service.sink is not None:
        checks["influxdb"] = {
            "server_up": service.sink.stats.server_up,
            "spool_bytes": service.sink.stats.spool_bytes,
        }
    if service.interlock is not None:
        checks["plcs"] = {
            p: {"connected": link.connected} for p, link in service.interlock.links.items()
        }
    checks["notification_channels"] = {
        c: {"down": s.down} for c, s in service.notifier.stats.items()
    }
    offset = service.clock.wall_offset()
    clock: dict[str, Any] = {"wall_offset_s": round(offset, 3)}
    clock_problem = wall_offset_problem(offset)
    if clock_problem is not None:
        clock["reason"] = clock_problem
    down = [n for n, jobs in components.items() for j in jobs.values() if not j["running"]]
    degraded = (
        bool(down)
        or (service.mqtt is not None and not service.mqtt.stats.connected)
        or any(not v["connected"] for v in checks.get("plcs", {}).values())
        or clock_problem is not None
    )
    return {
        "status": "degraded" if degraded else "ok",
        "uptime_s": round(service.clock() - service.started_at, 1),
        "components": components,
        "checks": checks,
        "clock": clock,
    }

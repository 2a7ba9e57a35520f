"""`/health` (open, for load balancers and the wall screen) and `/health/live` (for
process supervisors).

`/health` is `degraded` whenever a server, channel, device or PLC is down, readings are
spooled or dropped, a heartbeat is held back, a trip is not yet stored, an output is not
confirmed, a component job is not running or the wall clock was stepped — each with its
reason in `reasons` (see `ehswatch.health`). `clock.wall_offset_s` is how far the wall
clock has moved from the service clock since start (decisions keep the service clock).

`/health/live` answers 200 while the control path turns and 503 when it is stuck: the one
condition a restart of the process cures.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from ehswatch.api.deps import ServiceDep
from ehswatch.health import assess, liveness
from ehswatch.service import wall_offset_problem

router = APIRouter(tags=["health"])


@router.get("/health")
async def health(service: ServiceDep) -> dict[str, Any]:
    """Status with every reason it is degraded, each component's jobs, and the checks."""
    components: dict[str, Any] = {}
    for c in service.components():
        components[c.component_name] = {
            name: {"running": h.running, "restarts": h.restarts, "last_error": h.last_error}
            for name, h in c.health.items()
        }
    report = assess(service)
    offset = service.clock.wall_offset()
    clock: dict[str, Any] = {"wall_offset_s": round(offset, 3)}
    clock_problem = wall_offset_problem(offset)
    if clock_problem is not None:
        clock["reason"] = clock_problem
    return {
        "status": report.status,
        "reasons": list(report.reasons),
        "uptime_s": round(service.clock() - service.started_at, 1),
        "components": components,
        "checks": report.checks,
        "clock": clock,
    }


@router.get("/health/live", response_model=None)
async def live(service: ServiceDep) -> JSONResponse:
    """200 while the control path turns; 503 (restart me) when it is stuck."""
    alive, why = liveness(service)
    if alive:
        return JSONResponse({"alive": True})
    return JSONResponse({"alive": False, "reason": why}, status_code=503)

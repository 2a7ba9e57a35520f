"""`/health` (open, for load balancers and the wall screen) and `/health/live` (for
process supervisors).

`/health` is `degraded` whenever a server, channel, device or PLC is down, readings are
spooled or dropped, a heartbeat is held back, a trip is not yet stored, an output is not
confirmed, a component job is not running, the wall clock was stepped, or the control
part is silent — each with its reason in `reasons` (see `ehswatch.health`). The control
part's conditions come from the state it publishes every tick; the desk part adds its
own (its jobs, the notification channels, the command channel). `clock.wall_offset_s`
is how far the wall clock has moved from the control part's clock since its start.

`/health/live` answers 200 while the control path turns and 503 when it is stuck or
silent: the one condition a restart cures.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from ehswatch.api.deps import DeskDep
from ehswatch.clock import wall_offset_problem
from ehswatch.health import STUCK_AFTER_S, desk_health, jobs_health, jobs_not_running

router = APIRouter(tags=["health"])

#: a published state older than this: the control part is not turning
SILENT_AFTER_S = STUCK_AFTER_S + 1.0


@router.get("/health")
async def health(desk: DeskDep) -> dict[str, Any]:
    """Status with every reason it is degraded, each component's jobs, and the checks."""
    published, control = desk.status()
    own = jobs_not_running(desk.components())
    if not desk.link.connected:
        own.append(f"the command channel to the control part is down: {desk.link.last_error}")
    report = desk_health(
        control,
        None if published is None else published.age_s(),
        own,
        {c: ch.down for c, ch in desk.notifier.stats.items()},
    )
    clock: dict[str, Any] = {}
    components = jobs_health(desk.components())
    uptime = None
    if control is not None:
        offset = float(control.get("wall_offset_s", 0.0))
        clock["wall_offset_s"] = round(offset, 3)
        problem = wall_offset_problem(offset)
        if problem is not None:
            clock["reason"] = problem
        components = {**control.get("components", {}), **components}
        uptime = round(float(control["now"]) - float(control["started_at"]), 1)
    return {
        "status": report.status,
        "reasons": list(report.reasons),
        "uptime_s": uptime,
        "components": components,
        "checks": report.checks,
        "clock": clock,
        "desk": None if control is None else control.get("desk"),
    }


@router.get("/health/live", response_model=None)
async def live(desk: DeskDep) -> JSONResponse:
    """200 while the control path turns; 503 (restart me) when it is stuck or silent."""
    published, control = desk.status()
    if published is None or control is None:
        why = "the control part has not published its state"
    elif published.age_s() > SILENT_AFTER_S:
        why = f"the control part has published nothing for {published.age_s():.1f} s"
    elif not control.get("alive", False):
        why = str(control.get("alive_reason", "the control loop is stuck"))
    else:
        return JSONResponse({"alive": True})
    return JSONResponse({"alive": False, "reason": why}, status_code=503)

"""What `/health` says: `ok`, or `degraded` with every reason, read from the components.

The rule: the status is `degraded` whenever something a plant relies on is not doing
its job — a server, device, PLC or notification channel down, readings spooled or
dropped, a heartbeat held back, a trip not yet stored, an output the PLC did not
confirm, a component job not running, the wall clock stepped. Each such condition is one
line in `reasons`, written for the person on call. Nothing here waits on I/O: it reads
the state the components keep.

`liveness()` is the separate, narrower answer for process supervisors (systemd, a
container orchestrator): is the process's control path turning? A supervisor restarts
the process when it is not; it must not restart it for a broker or database outage,
which a restart does not cure.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ehswatch.component import Component

if TYPE_CHECKING:
    from ehswatch.control_parts import ControlParts

# The control loop turns at least four times a second; this long without a turn is a
# control path that is stuck.
STUCK_AFTER_S = 2.0


@dataclass(frozen=True, kw_only=True)
class HealthReport:
    status: str  # "ok" or "degraded"
    reasons: tuple[str, ...]
    checks: dict[str, Any] = field(default_factory=dict)


def jobs_health(components: Iterable[Component]) -> dict[str, Any]:
    """Each component's jobs: running, restarts, last error (for `/health`). Components
    of one kind (the PLC links, one per PLC) share their name; their jobs are named apart."""
    out: dict[str, Any] = {}
    for c in components:
        out.setdefault(c.component_name, {}).update(
            {
                name: {"running": h.running, "restarts": h.restarts, "last_error": h.last_error}
                for name, h in c.health.items()
            }
        )
    return out


def jobs_not_running(components: Iterable[Component]) -> list[str]:
    """One reason per component job that is not running (it failed and waits to restart)."""
    reasons = []
    for c in components:
        for name, h in c.health.items():
            if not h.running:
                why = f": {h.last_error}" if h.last_error else ""
                reasons.append(
                    f"{c.component_name}:{name} is not running (restarted {h.restarts} times){why}"
                )
    return reasons


def assess(service: ControlParts) -> HealthReport:
    """The control part's health now, with one reason per condition that degrades it
    (the desk part adds its own: notification channels, its jobs; see `desk_health`)."""
    from ehswatch.clock import wall_offset_problem

    reasons: list[str] = jobs_not_running(service.components())
    checks: dict[str, Any] = {}
    if service.mqtt is not None:
        st = service.mqtt.stats
        checks["mqtt"] = {"connected": st.connected}
        if not st.connected:
            reasons.append(f"MQTT broker not connected: {st.last_error or 'connecting'}")
    if service.modbus is not None:
        checks["modbus"] = {}
        for d, dev in service.modbus.stats.items():
            checks["modbus"][d] = {"connected": dev.connected, "errors": dev.errors}
            if not dev.connected:
                reasons.append(
                    f"Modbus device {d} not answering: {dev.last_error or 'not connected yet'}"
                )
    if service.sink is not None:
        sink = service.sink.status()
        checks["influxdb"] = sink
        if not sink["server_up"]:
            reasons.append("InfluxDB not reachable: readings are kept in the spool")
        if sink["spooling"]:
            reasons.append(f"{sink['spooling']} readings waiting in the spool")
        if sink["memory_points"] and not sink["server_up"]:
            reasons.append(f"{sink['memory_points']} readings held in memory")
        if sink.get("acked_not_durable") and sink["degraded"]:
            reasons.append(
                f"{sink['acked_not_durable']} MQTT readings acknowledged while storage could"
                " keep them only in memory"
            )
        if not sink["spool_ok"]:
            reasons.append(f"the spool cannot be written: {sink['spool_error']}")
        if sink["points_dropped"] and sink["degraded"]:
            why = ", ".join(f"{n} {r}" for r, n in sorted(sink["dropped_by_reason"].items()))
            reasons.append(f"{sink['points_dropped']} readings dropped by storage ({why})")
    if service.interlock is not None:
        il = service.interlock
        checks["plcs"] = {}
        for p, link in il.links.items():
            checks["plcs"][p] = {
                "connected": link.connected,
                "heartbeat_held_back": link.heartbeat_held_back,
            }
            if not link.connected:
                reasons.append(f"PLC {p} unreachable: {link.last_error or 'connecting'}")
            if link.heartbeat_held_back:
                reasons.append(
                    f"PLC {p} heartbeat held back: the interlock control loop is not turning"
                )
        for zone, zs in il.states.items():
            if not zs.latch_durable:
                reasons.append(f"interlock {zone}: trip not yet stored (latch not durable)")
            if zs.output_fault:
                reasons.append(f"interlock {zone}: the PLC did not confirm the output")
    clock_problem = wall_offset_problem(service.clock.wall_offset())
    if clock_problem is not None:
        reasons.append(clock_problem)
    return HealthReport(
        status="degraded" if reasons else "ok", reasons=tuple(reasons), checks=checks
    )


def liveness(service: ControlParts) -> tuple[bool, str]:
    """(alive, why not): the control path turned within `STUCK_AFTER_S`."""
    il = service.interlock
    if il is not None and not il.control_alive(STUCK_AFTER_S):
        return False, f"the interlock control loop has not turned for over {STUCK_AFTER_S:g} s"
    return True, ""


#: the control part publishes its state at every tick (at most 1 s); this long without a
#: new state, the desk part says the control part is not answering
CONTROL_SILENT_AFTER_S = 5.0


def desk_health(
    control: dict[str, Any] | None,
    control_age_s: float | None,
    own_reasons: list[str],
    channels: dict[str, bool],
) -> HealthReport:
    """What `/health` says, in the desk part: the control part's published report (or
    that it is silent), then the desk part's own conditions and notification channels
    (`channels`: id -> down)."""
    reasons: list[str] = []
    checks: dict[str, Any] = {}
    if control is None or control_age_s is None:
        reasons.append("the control part has not published its state: it is not running")
    else:
        reasons.extend(control.get("reasons", []))
        checks.update(control.get("checks", {}))
        if control_age_s > CONTROL_SILENT_AFTER_S:
            reasons.append(
                f"the control part has published nothing for {control_age_s:.0f} s:"
                " it is stuck or down"
            )
    reasons.extend(own_reasons)
    checks["notification_channels"] = {c: {"down": down} for c, down in channels.items()}
    reasons.extend(f"notification channel {c} is down" for c, down in channels.items() if down)
    return HealthReport(
        status="degraded" if reasons else "ok", reasons=tuple(reasons), checks=checks
    )

"""What the desk part may ask the control part to do: the command channel's handlers.

Each handler is the same call the API made in one process — the domain checks (roles,
states, two approvers) stay where the state is, in the control part — and answers the
same JSON the route returns. Arguments arrive validated by the desk part's request
models; they are read again here with their types, as from any peer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ehswatch.alarms.store import alarm_dict
from ehswatch.control_channel import Handler
from ehswatch.interlock.controller import InterlockController
from ehswatch.roles import Actor, NotFound

if TYPE_CHECKING:
    from ehswatch.control_parts import ControlParts


def control_handlers(service: ControlParts) -> dict[str, Handler]:
    alarms = service.alarms

    def interlock() -> InterlockController:
        if service.interlock is None:
            raise NotFound("this plant has no interlocked zones")
        return service.interlock

    async def ack(actor: Actor, a: dict[str, Any]) -> dict[str, Any]:
        return alarm_dict(await alarms.ack(int(a["alarm_id"]), actor, str(a.get("comment", ""))))

    async def shelve(actor: Actor, a: dict[str, Any]) -> dict[str, Any]:
        return alarm_dict(
            await alarms.shelve(
                int(a["alarm_id"]),
                actor,
                minutes=float(a["minutes"]),
                reason=str(a["reason"]),
                comment=str(a.get("comment", "")),
            )
        )

    async def unshelve(actor: Actor, a: dict[str, Any]) -> dict[str, Any]:
        return alarm_dict(
            await alarms.unshelve(int(a["alarm_id"]), actor, str(a.get("comment", "")))
        )

    async def zone_state(_: Actor, a: dict[str, Any]) -> dict[str, Any]:
        """A zone's state as the controller holds it now (a page just after an action
        must not show the state of the tick before it)."""
        states = interlock().states
        zone = str(a["zone"])
        if zone not in states:
            raise NotFound(f"no interlocked zone {zone}")
        return states[zone].public(service.clock())

    async def zone_states(_: Actor, a: dict[str, Any]) -> dict[str, Any]:
        """Every interlocked zone's state as the controller holds it now."""
        il = service.interlock
        now = service.clock()
        return {"zones": [] if il is None else [s.public(now) for s in il.states.values()]}

    async def reality(_: Actor, a: dict[str, Any]) -> dict[str, Any]:
        """Where a ticket was raised, now: the sensor's tier, fault and value (a source
        that is not a sensor, e.g. "zone:z1", reads as normal) and the zone's latch."""
        sensor, zone = str(a["sensor"]), str(a["zone"])
        stage = service.stage
        k = stage.table.index.get(sensor)
        il = service.interlock
        latched = il is not None and zone in il.states and il.states[zone].tripped
        if k is None:
            return {"tier": 0, "faulted": False, "value": None, "zone_latched": latched}
        ev = stage.evaluator
        value = float(ev.last_value[k])
        return {
            "tier": int(ev.tier[k]),
            "faulted": bool(ev.faulted[k]),
            "value": value if value == value else None,  # NaN: none yet
            "zone_latched": latched,
        }

    async def reset(actor: Actor, a: dict[str, Any]) -> dict[str, Any]:
        s = await interlock().reset(str(a["zone"]), actor, str(a.get("comment", "")))
        return s.public(service.clock())

    async def bypass(actor: Actor, a: dict[str, Any]) -> dict[str, Any]:
        s = await interlock().request_bypass(
            str(a["zone"]),
            actor,
            reason=str(a.get("reason", "")),
            measure=str(a.get("measure", "")),
            hours=float(a["hours"]),
            comment=str(a.get("comment", "")),
        )
        return s.public(service.clock())

    async def end_bypass(actor: Actor, a: dict[str, Any]) -> dict[str, Any]:
        s = await interlock().end_bypass(str(a["zone"]), actor, str(a.get("comment", "")))
        return s.public(service.clock())

    return {
        "alarm.ack": ack,
        "alarm.shelve": shelve,
        "alarm.unshelve": unshelve,
        "interlock.state": zone_state,
        "interlock.states": zone_states,
        "hazard.reality": reality,
        "interlock.reset": reset,
        "interlock.bypass": bypass,
        "interlock.bypass_end": end_bypass,
    }

"""`Router`: which channels hear about an alarm, and when it escalates (docs/alarms.md).

A route matches an alarm when every criterion it gives matches: `zones`, `tiers` (the
alarm's peak tier name — warning, alarm, interlock — or `fault` for an instrument fault
or a Modbus device that stopped answering), `sensor_types`. An alarm goes to the
`notify` channels of every matching route; if one of them has `escalate_after_s`, the
alarm escalates to its `escalate_to` channels after that long unacknowledged, and again
every `escalate_after_s` until acknowledged.
"""

from __future__ import annotations

from typing import Any

from ehswatch.alarms.model import Alarm, route_tier_of
from ehswatch.config import Notifications, Route


class Router:
    def __init__(self, notifications: Notifications) -> None:
        self.routes = list(notifications.routes)

    @staticmethod
    def _matches(route: Route, zone: str, tier: str, sensor_type: str) -> bool:
        m = route.match
        return (
            (m.zones is None or zone in m.zones)
            and (m.tiers is None or tier in m.tiers)
            and (m.sensor_types is None or sensor_type in m.sensor_types)
        )

    def _matching(self, a: Alarm | dict[str, Any]) -> list[Route]:
        if isinstance(a, dict):
            tier = route_tier_of(a["kind"], a["peak_tier"])
            zone, stype = a["zone"], a["sensor_type"]
        else:
            tier, zone, stype = a.route_tier, a.zone, a.sensor_type
        return [r for r in self.routes if self._matches(r, zone, tier, stype)]

    def channels(self, a: Alarm | dict[str, Any]) -> list[str]:
        return list(dict.fromkeys(c for r in self._matching(a) for c in r.notify))

    def escalation_channels(self, a: Alarm | dict[str, Any]) -> list[str]:
        return list(
            dict.fromkeys(c for r in self._matching(a) if r.escalate_after_s for c in r.escalate_to)
        )

    def escalate_after(self, a: Alarm | dict[str, Any]) -> float | None:
        delays = [
            r.escalate_after_s for r in self._matching(a) if r.escalate_after_s and r.escalate_to
        ]
        return min(delays) if delays else None

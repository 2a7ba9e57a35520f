"""`PredictionRelay`: predicted crossings to the notification routes that ask for them.

The control part publishes its predicted events with its state; every second the desk
part queues a message for each new *predicted* event to the channels of every route with
`predicted: true` whose match takes the sensor's zone, type and predicted tier. A
message is queued once per sensor and moment (the notification queue's own key), so
reading the same events again — after a restart of either part — sends nothing twice.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterable
from typing import Any

from ehswatch.alarms.store import enqueue_notifications, notification_rows
from ehswatch.component import Component, Job, Wakeable
from ehswatch.config import PlantConfig
from ehswatch.db import Database

TIER_NAMES = {2: "alarm", 3: "interlock"}
POLL_S = 1.0


class PredictionRelay(Component):
    component_name = "prediction-relay"

    def __init__(
        self,
        *,
        config: PlantConfig,
        db: Database,
        published: Callable[[], dict[str, Any] | None],
        notify_wake: Wakeable | None = None,
    ) -> None:
        self.config = config
        self.db = db
        self._published = published
        self._wake = notify_wake
        self.routes = [r for r in config.notifications.routes if r.predicted]
        self._seen: set[tuple[str, float]] = set()

    def jobs(self) -> Iterable[tuple[str, Job]]:
        if self.routes:
            yield "relay", self._loop

    async def _loop(self) -> None:
        while True:
            await self.relay_once()
            await asyncio.sleep(POLL_S)

    def channels_for(self, sensor: str, tier: int) -> list[str]:
        k = self.config.sensor_index.get(sensor)
        if k is None:
            return []
        s = self.config.sensors[k]
        out: list[str] = []
        for route in self.routes:
            m = route.match
            if m.zones is not None and s.zone not in m.zones:
                continue
            if m.sensor_types is not None and s.type not in m.sensor_types:
                continue
            if m.tiers is not None and TIER_NAMES.get(tier) not in m.tiers:
                continue
            out += [c for c in route.notify if c not in out]
        return out

    async def relay_once(self) -> int:
        """Queue the new predicted events; how many messages were queued."""
        events = ((self._published() or {}).get("predictions") or {}).get("events") or []
        rows: list[dict[str, Any]] = []
        for e in events:
            mark = (e["sensor"], float(e["at"]))
            if e["event"] != "predicted" or mark in self._seen:
                continue
            self._seen.add(mark)
            channels = self.channels_for(e["sensor"], int(e["tier"]))
            if channels:
                rows += notification_rows(
                    key=f"predicted:{e['sensor']}:{e['at']:.3f}",
                    channels=channels,
                    zone=e["zone"],
                    kind="predicted",
                    payload=json.dumps(e, ensure_ascii=False),
                    now=float(e["at"]),
                )
        if len(self._seen) > 10_000:
            self._seen = set(list(self._seen)[-5000:])
        if rows:
            async with self.db.new_session() as s, s.begin():
                await enqueue_notifications(self.db, s, rows)
            if self._wake is not None:
                self._wake.set()
        return len(rows)

"""`DeskPart`: everything a person looks at or acts through, beside the control part.

The desk part serves the API and the board, the event stream, the hazard desk (tickets,
their deadlines and escalations, reports) and the notifier (on-call messages). It is a
process of its own (`ehswatch.parts`): however big a page, an export or a report, it
cannot delay a trip or a heartbeat. What it knows of the control part it reads:
- sensor values, tiers, faults, counters and sparklines from the shared state file
  (`StateReader`), published by the control part once per tick;
- health, interlock states and the control part's metrics from the status document in
  that same file;
- alarms, tickets and the audit trail from the database;
- alarm and interlock changes, and wake-ups for its jobs, from the command channel,
  over which it also sends what needs the control part's authority (acknowledge,
  shelve, reset, bypass).
"""

from __future__ import annotations

import functools
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable, Hashable
from contextlib import AsyncExitStack
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import numpy as np
from numpy.typing import NDArray

from ehswatch.alarms.events import EventStream
from ehswatch.alarms.notifier import Notifier
from ehswatch.analytics.relay import PredictionRelay
from ehswatch.clock import ServiceClock
from ehswatch.component import Component, enter_all
from ehswatch.config import PlantConfig, SensorsById
from ehswatch.control_channel import ControlClient
from ehswatch.db import Database
from ehswatch.hazards.desk import HazardDesk
from ehswatch.hazards.model import HazardTicket, Reality
from ehswatch.people.directory import People
from ehswatch.roles import Actor
from ehswatch.run_dir import COMMAND_SOCKET, STATE_FILE
from ehswatch.shared_state import Published, StateReader, StateUnavailable
from ehswatch.thresholds.table import ThresholdTable
from ehswatch.thresholds.tier import LATCH_NAMES

log = logging.getLogger(__name__)
T = TypeVar("T")
PER_STATE_KEYS = 64
#: how long a list read from the database may be served again while no change is heard
#: of (see `DeskPart.recent`)
RECENT_S = 1.0


class DeskPart:
    def __init__(
        self, config: PlantConfig, run_dir: Path, *, clock: ServiceClock | None = None
    ) -> None:
        self.config = config
        self.run_dir = run_dir
        self.clock = clock if clock is not None else ServiceClock()
        zones = [z.id for z in config.zones]
        self.zone_ids = zones
        zone_index = {z: k for k, z in enumerate(zones)}
        #: each sensor's zone, as an index into `zone_ids`
        self.sensor_zone: NDArray[np.intp] = np.array(
            [zone_index[s.zone] for s in config.sensors], dtype=np.intp
        )
        #: bumped by every change this part makes (a commit of its own, an answer of the
        #: control part to a call) or hears of (an event from the control part): what
        #: `recent` kept before it is read anew
        self.changes = 0
        # The control part's schema; every commit of this part's own is a change.
        self.db = Database(config.database.url, migrate=False, on_commit=self._changed)
        self.events = EventStream()
        self.people = People(
            db=self.db,
            clock=self.clock,
            idle_s=config.api.session_idle_min * 60,
            max_s=config.api.session_max_h * 3600,
            machines=frozenset(u.name for u in config.users),
        )
        self.notifier = Notifier(config=config, db=self.db, clock=self.clock)
        self.hazards = HazardDesk(
            config=config,
            db=self.db,
            clock=self.clock,
            notify_wake=self.notifier.wake,
            reality=self._reality,
            published=lambda: self.status()[1],
        )
        self.prediction_relay = PredictionRelay(
            config=config,
            db=self.db,
            published=lambda: self.status()[1],
            notify_wake=self.notifier.wake,
        )
        self.link = ControlClient(run_dir / COMMAND_SOCKET, self._on_event, on_answer=self._changed)
        self.users = {u.token_sha256: Actor(name=u.name, role=u.role) for u in config.users}
        self.started_at = self.clock()
        self._reader: StateReader | None = None
        self._per_state: dict[Hashable, Any] = {}
        self._per_state_at = 0.0
        self._recent: dict[Hashable, tuple[int, float, Any]] = {}
        self._stack = AsyncExitStack()

    @functools.cached_property
    def sensor_prefixes(self) -> list[bytes]:
        """Each sensor's fixed fields (id, name, zone, type, unit, setpoints) as the start
        of its `/api/sensors` JSON object: built once, on first use."""
        config = self.config
        table = ThresholdTable.from_config(config)  # for the setpoints; not kept
        out = []
        for i, s in enumerate(config.sensors):
            setpoints = {
                n: round(float(v), 4)
                for n, v in zip(LATCH_NAMES, table.setpoint[i], strict=True)
                if math.isfinite(v)
            }
            fixed = {
                "id": s.id,
                "name": s.name,
                "zone": s.zone,
                "type": s.type,
                "unit": config.sensor_types[s.type].unit,
                "setpoints": setpoints,
            }
            out.append(json.dumps(fixed, ensure_ascii=False)[:-1].encode() + b",")
        return out

    def _changed(self, *_: object) -> None:
        self.changes += 1

    async def recent(
        self, key: Hashable, build: Callable[[], Awaitable[T]], max_age_s: float = RECENT_S
    ) -> T:
        """`await build()`, or what it gave less than `max_age_s` ago if no change has been
        heard of since: what ten boards ask every two seconds is read from the database
        about once a second. A change this part makes or hears of (`changes`) makes the
        next read fresh at once; `max_age_s` bounds what neither shows (an open alarm's
        latest value, written by the control part without an event)."""
        now = time.monotonic()
        hit = self._recent.get(key)
        if hit is not None and hit[0] == self.changes and now - hit[1] < max_age_s:
            kept: T = hit[2]
            return kept
        changes = self.changes  # before reading: a change meanwhile makes this stale
        value = await build()
        if len(self._recent) >= PER_STATE_KEYS:
            self._recent.clear()
        self._recent[key] = (changes, now, value)
        return value

    def _on_event(self, event: dict[str, Any]) -> None:
        if event.get("type") == "wake":
            what = event.get("what")
            if what == "hazards":
                self.hazards.wake.set()
            elif what == "notifier":
                self.notifier.wake.set()
            return
        self._changed()
        self.events.publish(event)

    def read(self, take: Callable[[dict[str, NDArray[Any]], int], T]) -> tuple[Published, T]:
        """A consistent copy of the control part's state (see `StateReader.read`);
        `StateUnavailable` while it has published none."""
        if self._reader is None:
            try:
                self._reader = StateReader(self.run_dir / STATE_FILE)
            except FileNotFoundError:
                raise StateUnavailable("the control part has not started") from None
        return self._reader.read(take)

    def status(self) -> tuple[Published | None, dict[str, Any] | None]:
        """The control part's latest status document, or (None, None) if there is none."""
        try:
            published, _ = self.read(lambda a, n: None)
        except StateUnavailable:
            return None, None
        return published, published.status

    def per_state(self, key: Hashable, published: Published, build: Callable[[], T]) -> T:
        """`build()` once per published state and `key`: what ten boards ask of the same
        state is computed once. Only the newest state's answers are kept, at most
        `PER_STATE_KEYS` of them."""
        if published.monotonic != self._per_state_at:
            self._per_state.clear()
            self._per_state_at = published.monotonic
        if key in self._per_state:
            value: T = self._per_state[key]
            return value
        value = build()
        if len(self._per_state) < PER_STATE_KEYS:
            self._per_state[key] = value
        return value

    def components(self) -> list[Component]:
        return [self.link, self.notifier, self.prediction_relay, *self.hazards.components()]

    async def _reality(self, t: HazardTicket, actor: Actor) -> Reality:
        """The plant now where `t` was raised, as the control part holds it (it does not
        answer: `ControlUnavailable`, and nothing is verified or archived on a guess)."""
        now = await self.link.call("hazard.reality", actor, sensor=t.sensor, zone=t.zone)
        sensor = SensorsById(self.config).get(t.sensor)
        unit = self.config.sensor_types[sensor.type].unit if sensor is not None else ""
        return Reality(
            tier=int(now["tier"]),
            faulted=bool(now["faulted"]),
            value=now["value"],
            unit=unit,
            zone_latched=bool(now["zone_latched"]),
        )

    async def __aenter__(self) -> Self:
        await enter_all(
            self._stack, [self.db, self.link, self.notifier, self.prediction_relay, self.hazards]
        )
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.events.close()
        try:
            await self._stack.__aexit__(et, e, tb)
        finally:
            if self._reader is not None:
                self._reader.close()

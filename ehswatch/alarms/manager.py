"""`AlarmManager`: evaluator transitions become alarms that people see and act on.

- As an evaluator-stage listener it only queues each evaluation; its own task turns the
  queued transitions and fault changes into alarm changes (`model`), and writes each
  change together with its outbox events in one transaction. The `AlarmRelay` publishes
  the outbox afterwards, so a crash between the two loses nothing.
- People act through `ack`, `shelve`, `unshelve`, `take_out_of_service`,
  `return_to_service`: role-checked, audited, outboxed like the rest.
- A scheduler pass (`run_schedule`, every second) ends shelves that expired and escalates
  alarms left unacknowledged past their route's `escalate_after_s`, again every
  `escalate_after_s` until someone acknowledges.
- A sensor that goes in or out of alarm 3 or more times within 60 s (configurable) is
  flagged chattering, once per episode; climbing through the tiers is not chattering.
- **Zone conditions** (`condition`): the interlock controller's alarms that belong to a
  zone, not to a sensor — an output the PLC did not confirm, a trip whose latch is not yet
  stored. Their source is ``zone:<id>`` and their kind one of `model.ZONE_KINDS`; they are
  ISA-18.2 episodes like any other (raised while the condition holds, returned when it
  ends, acknowledged by people), written through the same outbox and commit, so the relay
  publishes them, the notifier routes them by their tier (3: routes matching
  `interlock`) and the hazard desk opens their ticket (interlock: grade A). `condition`
  never waits: it queues the request, and the manager's own task writes it, in order; a
  request whose write fails stays queued and is written on the next pass.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import math
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Self

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from ehswatch.alarms import model
from ehswatch.alarms.model import ZONE_KINDS, Alarm, AlarmKind, AlarmState
from ehswatch.alarms.routing import Router
from ehswatch.alarms.store import (
    AlarmRecord,
    OutboxRecord,
    SensorServiceRecord,
    alarm_dict,
    to_alarm,
    to_record,
)
from ehswatch.audit import record
from ehswatch.component import Component, Job
from ehswatch.config import PlantConfig
from ehswatch.db import Database
from ehswatch.readings import ReadingBatch
from ehswatch.roles import SYSTEM, Actor, Forbidden, Refused
from ehswatch.thresholds.evaluator import Evaluator
from ehswatch.thresholds.outcome import Evaluation

log = logging.getLogger(__name__)

Change = tuple[Alarm, list[str], Actor, float]  # alarm after, events, who, when
ZONE_SOURCE = "zone:"  # the `sensor` of a zone condition's alarm: "zone:<id>"
ZONE_SENSOR_TYPE = "interlock"  # its `sensor_type`, for routes that match sensor types


@dataclass(frozen=True, slots=True)
class _ZoneRequest:
    source: str
    zone: str
    kind: AlarmKind
    active: bool
    tier: int
    message: str
    at: float


class AlarmManager(Component):
    component_name = "alarm-manager"

    def __init__(
        self,
        *,
        config: PlantConfig,
        evaluator: Evaluator,
        db: Database,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.evaluator = evaluator
        self.table = evaluator.table
        self.db = db
        self.router = Router(config.notifications)
        self._clock = clock
        self._sensor = {s.id: s for s in config.sensors}
        self._queue: list[Evaluation] = []
        self._wake = asyncio.Event()
        self.open: dict[tuple[str, AlarmKind], Alarm] = {}
        self.out_of_service: set[str] = set()
        self._recent: dict[str, deque[float]] = defaultdict(deque)
        self._lock = asyncio.Lock()
        self.on_commit: list[asyncio.Event] = []  # set after each commit: relay, hazard desk
        self._requests: deque[_ZoneRequest] = deque()  # zone conditions, in order
        # The state last asked for, per (source, kind): what the caller has handed over,
        # written or not yet.
        self.conditions: dict[tuple[str, AlarmKind], bool] = {}

    async def __aenter__(self) -> Self:
        async with self.db.new_session() as session:
            rows = (
                await session.execute(select(AlarmRecord).where(AlarmRecord.closed_at.is_(None)))
            ).scalars()
            for r in rows:
                a = to_alarm(r)
                self.open[(a.sensor, a.kind)] = a
            oos = (
                await session.execute(
                    select(SensorServiceRecord).where(SensorServiceRecord.out_of_service)
                )
            ).scalars()
            self.out_of_service = {r.sensor for r in oos}
        return await super().__aenter__()

    def jobs(self) -> Iterable[tuple[str, Job]]:
        yield "apply", self._apply_loop
        yield "schedule", self._schedule_loop

    # ------------------------------------------------------------ from the evaluator

    def on_evaluation(self, _: ReadingBatch, ev: Evaluation) -> None:
        if ev:
            self._queue.append(ev)
            self._wake.set()

    async def _apply_loop(self) -> None:
        if self._requests:
            self._wake.set()  # requests left by a pass that failed
        while True:
            await self._wake.wait()
            self._wake.clear()
            queued, self._queue = self._queue, []
            async with self._lock:
                await self._commit([c for ev in queued for c in self._changes(ev)])
                await self._apply_conditions()

    # ------------------------------------------------------------ zone conditions

    def condition(
        self,
        *,
        source: str,
        kind: AlarmKind,
        active: bool,
        tier: int = 3,
        message: str = "",
        at: float | None = None,
    ) -> None:
        """Raise (`active`) or return a zone condition's alarm; see the module docstring.

        `source` is ``zone:<id>``, `kind` one of `model.ZONE_KINDS`, `tier` the tier it is
        raised at (routes and the ticket grade follow it), `message` what happened (the
        audit entry's comment and the log line), `at` when (default: now). Asking for the
        state the condition is in already changes nothing. Never blocks, never waits.
        """
        if not source.startswith(ZONE_SOURCE) or len(source) == len(ZONE_SOURCE):
            raise ValueError(f"a zone condition's source is 'zone:<id>', not {source!r}")
        if kind not in ZONE_KINDS:
            raise ValueError(f"{kind!r} is not a zone condition kind")
        self.conditions[(source, kind)] = active
        self._requests.append(
            _ZoneRequest(
                source=source,
                zone=source[len(ZONE_SOURCE) :],
                kind=kind,
                active=active,
                tier=tier,
                message=message,
                at=self._clock() if at is None else at,
            )
        )
        self._wake.set()

    async def _apply_conditions(self) -> None:
        """Write the queued zone requests in order; one that fails stays queued."""
        while self._requests:
            r = self._requests[0]
            key = (r.source, r.kind)
            before = self.open.get(key)
            change = self._zone_change(r)
            if change is not None:
                try:
                    await self._commit(
                        [change], audit=("raised" if r.active else "returned", r.message)
                    )
                except BaseException:
                    if before is None:
                        self.open.pop(key, None)
                    else:
                        self.open[key] = before
                    raise
                level = logging.ERROR if r.active else logging.WARNING
                log.log(
                    level,
                    "alarm %s %s on %s: %s",
                    r.kind,
                    "raised" if r.active else "returned",
                    r.source,
                    r.message,
                )
            self._requests.popleft()

    def _zone_change(self, r: _ZoneRequest) -> Change | None:
        key = (r.source, r.kind)
        a = self.open.get(key)
        if a is not None and not a.open:
            a = None
        if a is None:
            if not r.active:
                return None
            a, events = model.raised(
                sensor=r.source,
                zone=r.zone,
                sensor_type=ZONE_SENSOR_TYPE,
                kind=r.kind,
                tier=r.tier,
                value=None,
                threshold=None,
                at=r.at,
            )
        elif a.active == r.active:
            return None
        else:
            a, events = model.condition(
                a,
                active=r.active,
                tier=r.tier if r.active else 0,
                value=None,
                threshold=None,
                at=r.at,
            )
        self.open[key] = a
        return (a, events, SYSTEM, r.at)

    def _changes(self, ev: Evaluation) -> list[Change]:
        ids = self.table.sensor_ids
        rows: list[tuple[float, str, AlarmKind, bool, int, float | None, float | None]] = []
        for i, _a, b, value, threshold, ts in ev.transitions.rows():
            rows.append((ts, ids[i], AlarmKind.TIER, b > 0, b, value, threshold))
        for i, on, _r, value, ts in ev.faults.rows():
            rows.append((ts, ids[i], AlarmKind.FAULT, on, 0, value, None))
        rows.sort(key=lambda r: r[0])
        out = []
        for ts, sid, kind, active, tier, value, threshold in rows:
            if sid in self.out_of_service:
                continue
            key = (sid, kind)
            a = self.open.get(key)
            if a is not None and not a.open:
                a = None  # that episode closed earlier in this batch: a new one begins
            # Chattering is going in and out of alarm, not a climb through the tiers.
            flips = a is None or a.active != active
            if a is None:
                if not active:
                    continue
                s = self._sensor[sid]
                a, events = model.raised(
                    sensor=sid,
                    zone=s.zone,
                    sensor_type=s.type,
                    kind=kind,
                    tier=tier,
                    value=value,
                    threshold=threshold,
                    at=ts,
                )
            else:
                a, events = model.condition(
                    a, active=active, tier=tier, value=value, threshold=threshold, at=ts
                )
            recent = self._recent[sid]
            if flips:
                recent.append(ts)
            window = self.config.alarms.chatter_window_s
            while recent and recent[0] < ts - window:
                recent.popleft()
            a, more = model.flag_chattering(a, len(recent), self.config.alarms.chatter_count)
            if more:
                log.warning(
                    "alarm %s on %s is chattering (%d transitions in %g s)",
                    a.kind,
                    sid,
                    len(recent),
                    window,
                )
            self.open[key] = a
            out.append((a, events + more, SYSTEM, ts))
        return out

    # ------------------------------------------------------------ people

    async def ack(self, alarm_id: int, actor: Actor, comment: str = "") -> Alarm:
        return await self._act(
            alarm_id, actor, "ack", comment, lambda a, now: model.ack(a, actor, now)
        )

    async def shelve(
        self, alarm_id: int, actor: Actor, *, minutes: float, reason: str, comment: str = ""
    ) -> Alarm:
        max_min = self.config.alarms.max_shelve_min
        return await self._act(
            alarm_id,
            actor,
            "shelve",
            comment,
            lambda a, now: model.shelve(
                a, actor, now, minutes=minutes, reason=reason, max_minutes=max_min
            ),
        )

    async def unshelve(self, alarm_id: int, actor: Actor, comment: str = "") -> Alarm:
        def take_off(a: Alarm, now: float) -> model.Outcome:
            if not actor.at_least("supervisor"):
                raise Forbidden(f"{actor.name} ({actor.role}) may not unshelve alarms")
            if a.state != AlarmState.SHELVED:
                raise Refused(f"alarm {a.id} is not shelved")
            return model.unshelve(a, now)

        return await self._act(alarm_id, actor, "unshelve", comment, take_off)

    async def _act(
        self,
        alarm_id: int,
        actor: Actor,
        action: str,
        comment: str,
        step: Callable[[Alarm, float], model.Outcome],
    ) -> Alarm:
        async with self._lock:
            now = self._clock()
            a = next((x for x in self.open.values() if x.id == alarm_id), None)
            if a is None:
                raise KeyError(f"no open alarm {alarm_id}")
            try:
                new, events = step(a, now)
            except (Refused, Forbidden) as exc:
                async with self.db.new_session() as session, session.begin():
                    record(
                        session,
                        ts=now,
                        actor=actor,
                        action=f"alarm {action} refused",
                        subject=f"alarm:{alarm_id}",
                        detail={"why": str(exc)},
                        comment=comment,
                    )
                raise
            self.open[(a.sensor, a.kind)] = new
            await self._commit([(new, events, actor, now)], audit=(action, comment))
            return self.open.get((a.sensor, a.kind), dataclasses.replace(new, id=a.id))

    async def take_out_of_service(self, sensor: str, actor: Actor, reason: str) -> None:
        await self._service(sensor, actor, reason, out=True)

    async def return_to_service(self, sensor: str, actor: Actor, reason: str = "") -> None:
        await self._service(sensor, actor, reason, out=False)

    async def _service(self, sensor: str, actor: Actor, reason: str, *, out: bool) -> None:
        if not actor.at_least("supervisor"):
            raise Forbidden(f"{actor.name} ({actor.role}) may not change a sensor's service state")
        if sensor not in self._sensor:
            raise KeyError(f"no sensor {sensor!r}")
        if out and not reason.strip():
            raise Refused("taking a sensor out of service needs a reason")
        async with self._lock:
            now = self._clock()
            changes: list[Change] = []
            for kind in AlarmKind:
                a = self.open.get((sensor, kind))
                if a is not None:
                    new, events = (
                        model.out_of_service(a, now) if out else model.back_in_service(a, now)
                    )
                    changes.append((new, events, actor, now))
            if out:
                self.out_of_service.add(sensor)
            else:
                self.out_of_service.discard(sensor)
            async with self.db.new_session() as session, session.begin():
                await session.merge(
                    SensorServiceRecord(
                        sensor=sensor, out_of_service=out, reason=reason, by=actor.name, at=now
                    )
                )
                record(
                    session,
                    ts=now,
                    actor=actor,
                    action="out of service" if out else "back in service",
                    subject=f"sensor:{sensor}",
                    detail={"reason": reason},
                )
                await self._write(session, changes)
            if not out:
                await self._commit(self._present_conditions(sensor, now))

    def _present_conditions(self, sensor: str, now: float) -> list[Change]:
        """Back in service: what the sensor shows now becomes a fresh alarm."""
        i = self.table.index[sensor]
        s = self._sensor[sensor]
        tier = int(self.evaluator.tier[i])
        value = float(self.evaluator.last_value[i])
        changes: list[Change] = []
        for kind, active in (
            (AlarmKind.TIER, tier > 0),
            (AlarmKind.FAULT, bool(self.evaluator.faulted[i])),
        ):
            if active:
                a, events = model.raised(
                    sensor=sensor,
                    zone=s.zone,
                    sensor_type=s.type,
                    kind=kind,
                    tier=tier if kind == AlarmKind.TIER else 0,
                    value=value if math.isfinite(value) else None,
                    threshold=None,
                    at=now,
                )
                self.open[(sensor, kind)] = a
                changes.append((a, events, SYSTEM, now))
        return changes

    # ------------------------------------------------------------ schedule

    async def _schedule_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            await self.run_schedule()

    async def run_schedule(self) -> None:
        """End expired shelves; escalate alarms unacknowledged for too long."""
        async with self._lock:
            now = self._clock()
            changes: list[Change] = []
            for key, a in list(self.open.items()):
                if (
                    a.state == AlarmState.SHELVED
                    and a.shelved_until is not None
                    and now >= a.shelved_until
                ):
                    a, events = model.unshelve(a, now)
                    self.open[key] = a
                    changes.append((a, events, SYSTEM, now))
                if not a.unacked:
                    continue
                after = self.router.escalate_after(a)
                since = a.last_escalated_at if a.last_escalated_at is not None else a.first_at
                if after is not None and now - since >= after:
                    a = dataclasses.replace(a, escalations=a.escalations + 1, last_escalated_at=now)
                    self.open[key] = a
                    changes.append((a, ["escalated"], SYSTEM, now))
                    log.warning(
                        "alarm %s (%s %s) unacknowledged for %.0f s: escalation %d",
                        a.id,
                        a.sensor,
                        a.kind,
                        now - a.first_at,
                        a.escalations,
                    )
            await self._commit(changes)

    # ------------------------------------------------------------ storage

    async def _commit(self, changes: list[Change], audit: tuple[str, str] | None = None) -> None:
        if not changes:
            return
        async with self.db.new_session() as session, session.begin():
            await self._write(session, changes, audit)
        for wake in self.on_commit:
            wake.set()

    async def _write(
        self, session: AsyncSession, changes: list[Change], audit: tuple[str, str] | None = None
    ) -> None:
        assigned: dict[tuple[str, AlarmKind, float], int] = {}  # episodes new in this batch
        for a, events, actor, ts in changes:
            episode = (a.sensor, a.kind, a.first_at)
            if a.id is None and episode in assigned:
                a = dataclasses.replace(a, id=assigned[episode])
            rec = await session.merge(to_record(a))
            await session.flush()
            a = dataclasses.replace(a, id=rec.id)
            assigned[episode] = rec.id
            payload = json.dumps(alarm_dict(a), ensure_ascii=False)
            for e in events:
                session.add(
                    OutboxRecord(alarm_id=rec.id, ts=ts, event=e, actor=actor.name, payload=payload)
                )
            if audit is not None:
                record(
                    session,
                    ts=ts,
                    actor=actor,
                    action=f"alarm {audit[0]}",
                    subject=f"alarm:{rec.id}",
                    detail={"state": str(a.state), "events": events},
                    comment=audit[1],
                )
            # Changes are written in the order they happened, so the last write of an
            # open episode is its newest state; a closed one leaves the cache, unless a
            # newer episode of the same sensor has taken its place meanwhile.
            key = (a.sensor, a.kind)
            current = self.open.get(key)
            if a.open:
                self.open[key] = a
            elif current is not None and current.first_at == a.first_at:
                del self.open[key]

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
- **Device conditions** (`on_device_status`, a listener of the Modbus collector): a
  device or gateway that stops answering is ONE alarm of kind `comm`, source
  ``device:<id>``, zone and sensor type those of most of its sensors, routed and graded
  as a fault — stored with its outbox event, relayed, notified and ticketed like any
  other. The FAULT alarms its sensors raise (or that reactivate) while it is down are
  **grouped** under it (`grouped_under`, `suppressed_by`): they are alarms — listed,
  stored, published, and the evaluator's faults still vote for interlocks, which never
  look at alarms — but the relay notifies none of them and the hazard desk opens no
  ticket for them, they never escalate, and they close when they return. When the
  device answers again its alarm returns; a grouped alarm whose sensor still reads
  faulted after that (a reading stamped at or after the device's return) is
  **released** — from then on an alarm of its own, notified and ticketed. Status
  changes are queued with the evaluations, in the order they were handed over (the
  collector hands a change over before the readings that follow from it), so the
  device alarm is written before the faults it groups.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import logging
import math
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Self

from sqlalchemy import insert, select, update
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
)
from ehswatch.audit import record
from ehswatch.component import Component, Job, Wakeable
from ehswatch.config import PlantConfig, SensorsById
from ehswatch.db import Database
from ehswatch.readings import ReadingBatch
from ehswatch.refusals import Refusal, refuse
from ehswatch.roles import SYSTEM, Actor, Forbidden, NotFound, Refused
from ehswatch.thresholds.evaluator import Evaluator
from ehswatch.thresholds.outcome import Evaluation

if TYPE_CHECKING:
    from ehswatch.ingest.modbus import DeviceStatus

log = logging.getLogger(__name__)

Change = tuple[Alarm, list[str], Actor, float]  # alarm after, events, who, when
ZONE_SOURCE = "zone:"  # the `sensor` of a zone condition's alarm: "zone:<id>"
ZONE_SENSOR_TYPE = "interlock"  # its `sensor_type`, for routes that match sensor types
DEVICE_SOURCE = "device:"  # the `sensor` of a device's comm alarm: "device:<id>"
#: after a device answers again, how long (s) a reading stamped before its return still
#: counts as one of the outage (its fault is grouped, not an alarm of its own)
RELEASE_GRACE_S = 10.0
Episode = tuple[str, AlarmKind, float]  # sensor, kind, first_at


@dataclass(frozen=True, slots=True)
class _ZoneRequest:
    source: str
    zone: str
    kind: AlarmKind
    active: bool
    tier: int
    message: str
    at: float


@dataclass(frozen=True, slots=True)
class _DeviceRequest:
    device: str
    up: bool
    at: float
    reason: str


def _most_common(values: list[str]) -> str:
    """The most frequent value; a tie goes to the one seen first."""
    counts: dict[str, int] = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    return max(counts, key=lambda v: counts[v])


class AlarmManager(Component):
    component_name = "alarm-manager"

    def __init__(
        self,
        *,
        config: PlantConfig,
        evaluator: Evaluator,
        db: Database,
        clock: Callable[[], float] = time.time,
        on_commit: Sequence[Wakeable] = (),
    ) -> None:
        """`on_commit`: set after each commit of alarm changes (the relay, the tickets)."""
        self.config = config
        self.evaluator = evaluator
        self.table = evaluator.table
        self.db = db
        self.router = Router(config.notifications)
        self._clock = clock
        self._sensor = SensorsById(config)
        # Evaluations and device status changes, in the order they were handed over.
        self._queue: list[Evaluation | _DeviceRequest] = []
        self._device_of = {s.id: s.modbus.device for s in config.sensors if s.modbus is not None}
        self._device_sensors: dict[str, list[str]] = defaultdict(list)
        for sid, dev in self._device_of.items():
            self._device_sensors[dev].append(sid)
        self._device_zone = {
            d: _most_common([self._sensor[s].zone for s in ss])
            for d, ss in self._device_sensors.items()
        }
        self._device_type = {
            d: _most_common([self._sensor[s].type for s in ss])
            for d, ss in self._device_sensors.items()
        }
        # Devices that answer again, and since when: their grouped alarms wait for a reading
        # stamped after that to clear them, or are released.
        self._releasing: dict[str, float] = {}
        # Devices that answer again, since when: set as the status change is handed over
        # (in order with the evaluations), dropped once none of their faults waits.
        self._answering: dict[str, float] = {}
        # Of their sensors: (the latest reading's time, faulted) as the evaluation handed
        # over last showed them (`_note_releasing`), for `_releases`.
        self._release_seen: dict[str, tuple[float, bool]] = {}
        self.devices: dict[str, bool] = {}  # device → up, as last handed over
        self._wake = asyncio.Event()
        self.open: dict[tuple[str, AlarmKind], Alarm] = {}
        self.out_of_service: set[str] = set()
        self._recent: dict[str, deque[float]] = defaultdict(deque)
        self._lock = asyncio.Lock()
        self.on_commit = tuple(on_commit)
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
        if self._answering and self._note_releasing():
            self._wake.set()  # a grouped fault may be released now, with no change of its own
        if ev:
            self._queue.append(ev)
            self._wake.set()

    def _note_releasing(self) -> bool:
        """What the grouped sensors of devices that answer again show as of this
        evaluation, kept for `_releases` (which runs later, when the evaluator may have
        moved on); whether one of them may be released now."""
        last_ts, faulted = self.evaluator.last_ts, self.evaluator.faulted
        index = self.table.index
        due = False
        for dev, up_at in self._answering.items():
            source = DEVICE_SOURCE + dev
            for sid in self._device_sensors[dev]:
                a = self.open.get((sid, AlarmKind.FAULT))
                if a is None or not a.active or a.grouped_under != source:
                    continue  # nothing of its waits for a release
                i = index[sid]
                seen = (float(last_ts[i]), bool(faulted[i]))
                self._release_seen[sid] = seen
                due = due or (seen[0] >= up_at and seen[1])
        return due

    async def _apply_loop(self) -> None:
        if self._requests or self._queue:
            self._wake.set()  # requests left by a pass that failed
        while True:
            await self._wake.wait()
            self._wake.clear()
            queued, self._queue = self._queue, []
            async with self._lock:
                if any(isinstance(q, _DeviceRequest) for q in queued):
                    await self._apply_with_devices(queued)
                else:
                    await self._commit(
                        [
                            c
                            for ev in queued
                            if not isinstance(ev, _DeviceRequest)
                            for c in self._changes(ev)
                        ]
                    )
                await self._apply_conditions()
                await self._commit(self._releases(self._clock()))

    # ------------------------------------------------------------ device conditions

    def on_device_status(self, status: DeviceStatus) -> None:
        """A Modbus device stopped answering (`up` false) or answers again; see the module
        docstring. Queued with the evaluations, in order; never blocks, never waits."""
        if status.device not in self._device_sensors:
            raise ValueError(f"no sensor reads from Modbus device {status.device!r}")
        self.devices[status.device] = status.up
        if status.up:
            self._answering[status.device] = status.at
        else:
            self._answering.pop(status.device, None)
        self._queue.append(
            _DeviceRequest(device=status.device, up=status.up, at=status.at, reason=status.reason)
        )
        self._wake.set()

    async def _apply_with_devices(self, queued: list[Evaluation | _DeviceRequest]) -> None:
        """Queued evaluations and device changes in one transaction, in order: each device
        change is written before the changes after it are worked out, so that the faults
        it groups know its alarm's id. If the transaction fails, the cache is restored and
        the whole pass is queued again."""
        before_open, before_releasing = dict(self.open), dict(self._releasing)
        wrote = False
        logs: list[tuple[Alarm, _DeviceRequest]] = []
        try:
            async with self.db.new_session() as session, session.begin():
                pending: list[Change] = []
                for item in queued:
                    if not isinstance(item, _DeviceRequest):
                        pending += self._changes(item)
                        continue
                    await self._write(session, pending)
                    wrote |= bool(pending)
                    pending = []
                    change = self._device_change(item)
                    if change is not None:
                        what = "raised" if not item.up else "returned"
                        message = item.reason if not item.up else "the device answers again"
                        await self._write(session, [change], audit=(what, message))
                        wrote = True
                        a = change[0]
                        logs.append((self.open.get((a.sensor, a.kind), a), item))
                    pending += self._regroup(item)
                await self._write(session, pending)
                wrote |= bool(pending)
        except BaseException:
            self.open.clear()
            self.open.update(before_open)
            self._releasing = before_releasing
            self._queue[:0] = queued
            raise
        if wrote:
            for wake in self.on_commit:
                wake.set()
        for a, r in logs:
            if r.up:
                log.warning("alarm %s returned: Modbus %s answers again", a.id, r.device)
            else:
                log.error(
                    "alarm %s: Modbus %s stopped answering (%s); the faults of its %d sensors "
                    "are grouped under this one alarm",
                    a.id,
                    r.device,
                    r.reason or "no answer",
                    len(self._device_sensors[r.device]),
                )

    def _device_change(self, r: _DeviceRequest) -> Change | None:
        source = DEVICE_SOURCE + r.device
        key = (source, AlarmKind.COMM)
        a = self.open.get(key)
        if a is not None and not a.open:
            a = None
        if not r.up:
            self._releasing.pop(r.device, None)
            if a is None:
                a, events = model.raised(
                    sensor=source,
                    zone=self._device_zone[r.device],
                    sensor_type=self._device_type[r.device],
                    kind=AlarmKind.COMM,
                    tier=0,
                    value=None,
                    threshold=None,
                    at=r.at,
                )
            elif a.active:
                return None
            else:
                a, events = model.condition(
                    a, active=True, tier=0, value=None, threshold=None, at=r.at
                )
        else:
            # Its grouped alarms (also those left by a restart) wait for fresh readings.
            self._releasing[r.device] = r.at
            if a is None or not a.active:
                return None
            a, events = model.condition(
                a, active=False, tier=0, value=None, threshold=None, at=r.at
            )
        self.open[key] = a
        return (a, events, SYSTEM, r.at)

    def _group_for(self, sensor: str, ts: float) -> Alarm | None:
        """The device alarm a fault of `sensor` raised at `ts` belongs under, if any."""
        dev = self._device_of.get(sensor)
        if dev is None:
            return None
        d = self.open.get((DEVICE_SOURCE + dev, AlarmKind.COMM))
        if d is None or not d.open or d.id is None or ts < d.first_at:
            return None  # no outage, or a fault from before it
        if d.active:
            return d
        up_at = self._releasing.get(dev)
        return d if up_at is not None and ts < up_at else None

    def _regroup(self, r: _DeviceRequest) -> list[Change]:
        """Down again: alarms still grouped under its previous episode join this one."""
        if r.up:
            return []
        source = DEVICE_SOURCE + r.device
        d = self.open.get((source, AlarmKind.COMM))
        if d is None or d.id is None:
            return []
        out: list[Change] = []
        for sid in self._device_sensors[r.device]:
            key = (sid, AlarmKind.FAULT)
            a = self.open.get(key)
            if a is None or not a.open or a.grouped_under != source or a.suppressed_by == d.id:
                continue
            a, events = model.regroup(a, d, r.at)
            self.open[key] = a
            out.append((a, events, SYSTEM, r.at))
        return out

    def _releases(self, now: float) -> list[Change]:
        """Grouped alarms of devices that answer again: released once their sensor has
        read since and is still faulted; the device leaves `_releasing` when none waits."""
        if not self._releasing:
            return []
        seen = self._release_seen
        out: list[Change] = []
        for dev, up_at in list(self._releasing.items()):
            source = DEVICE_SOURCE + dev
            waiting = False
            for sid in self._device_sensors[dev]:
                key = (sid, AlarmKind.FAULT)
                a = self.open.get(key)
                if a is None or not a.open or not a.active or a.grouped_under != source:
                    continue
                read_at, faulted = seen.get(sid, (-math.inf, False))
                if read_at >= up_at and faulted:
                    a, events = model.release(a, now)
                    self.open[key] = a
                    out.append((a, events, SYSTEM, now))
                    log.warning(
                        "alarm %s (%s fault) released: Modbus %s answers, the sensor does not",
                        a.id,
                        sid,
                        dev,
                    )
                else:
                    waiting = True
            if not waiting and now >= up_at + RELEASE_GRACE_S:
                del self._releasing[dev]
                if self._answering.get(dev) == up_at:  # not up again since
                    del self._answering[dev]
                    for sid in self._device_sensors[dev]:
                        self._release_seen.pop(sid, None)
        return out

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
            if kind == AlarmKind.FAULT and active and not a.grouped:
                under = self._group_for(sid, ts) if flips else None
                if under is not None:
                    a = model.group(a, under)  # its device stopped answering
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
                raise NotFound(f"no open alarm {alarm_id}")
            try:
                new, events = step(a, now)
            except (Refused, Forbidden) as exc:
                where = {"action": f"alarm {action}", "subject": f"alarm:{alarm_id}"}
                await refuse(self.db, Refusal.of(exc, actor=actor, comment=comment, **where), now)
            self.open[(a.sensor, a.kind)] = new
            await self._commit([(new, events, actor, now)], audit=(action, comment))
            return self.open.get((a.sensor, a.kind), dataclasses.replace(new, id=a.id))

    async def take_out_of_service(self, sensor: str, actor: Actor, reason: str) -> None:
        await self._service(sensor, actor, reason, out=True)

    async def return_to_service(self, sensor: str, actor: Actor, reason: str = "") -> None:
        await self._service(sensor, actor, reason, out=False)

    async def _service(self, sensor: str, actor: Actor, reason: str, *, out: bool) -> None:
        refused = functools.partial(
            Refusal,
            actor=actor,
            action="out of service" if out else "back in service",
            subject=f"sensor:{sensor}",
            detail={"reason": reason},
        )
        if not actor.at_least("supervisor"):
            why = f"{actor.name} ({actor.role}) may not change a sensor's service state"
            await refuse(self.db, refused(why=why, forbidden=True), self._clock())
        if sensor not in self._sensor:
            raise NotFound(f"no sensor {sensor!r}")
        if out and not reason.strip():
            why = "taking a sensor out of service needs a reason"
            await refuse(self.db, refused(why=why), self._clock())
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
                under = self._group_for(sensor, now) if kind == AlarmKind.FAULT else None
                if under is not None:
                    a = model.group(a, under)
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
                if not a.unacked or a.grouped:  # a grouped alarm: its device alarm escalates
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
        """Each episode's record (inserted, or updated to its newest state) and every
        change's outbox events, in bulk: a flood of thousands of alarms is a handful of
        statements, not thousands of round trips."""
        if not changes:
            return
        ids: dict[Episode, int] = {}
        newest: dict[Episode, Alarm] = {}
        for a, _events, _actor, _ts in changes:
            episode = (a.sensor, a.kind, a.first_at)
            if a.id is not None:
                ids[episode] = a.id
            newest[episode] = a
        new = [e for e in newest if e not in ids]
        known = [e for e in newest if e in ids]
        if new:
            # Each new row names its episode: no reliance on the order RETURNING gives.
            result = await session.execute(
                insert(AlarmRecord).returning(
                    AlarmRecord.id, AlarmRecord.sensor, AlarmRecord.kind, AlarmRecord.first_at
                ),
                [_columns(newest[e]) for e in new],
            )
            for rid, sensor, kind, first_at in result.tuples():
                ids[(sensor, AlarmKind(kind), first_at)] = rid
        if known:
            await session.execute(
                update(AlarmRecord), [{"id": ids[e], **_columns(newest[e])} for e in known]
            )
        outbox: list[dict[str, object]] = []
        for a, events, actor, ts in changes:
            rid = ids[(a.sensor, a.kind, a.first_at)]
            a = dataclasses.replace(a, id=rid)
            payload = json.dumps(alarm_dict(a), ensure_ascii=False)
            outbox += [
                {"alarm_id": rid, "ts": ts, "event": e, "actor": actor.name, "payload": payload}
                for e in events
            ]
            if audit is not None:
                record(
                    session,
                    ts=ts,
                    actor=actor,
                    action=f"alarm {audit[0]}",
                    subject=f"alarm:{rid}",
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
        if outbox:
            await session.execute(insert(OutboxRecord), outbox)


def _columns(a: Alarm) -> dict[str, object]:
    """The alarm's record columns, but its id."""
    d = alarm_dict(a)
    del d["id"]
    return d

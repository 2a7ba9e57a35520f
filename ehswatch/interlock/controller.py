"""`InterlockController`: the rules of SPEC §6, between the evaluator and the PLCs.

- **Trip.** After every evaluation that changed a tier or a fault, `vote()` runs for all
  zones. A zone whose vote holds is latched: the new state and its audit entry are
  committed to the database *first*, then the output command goes to the zone's PLC.
- **Latch and reset.** A latched zone stays tripped when the values fall. `reset()` needs
  a supervisor or above (else `Forbidden`), and is `Refused` while the vote holds or while
  any voting input is not valid and back past its interlock setpoint by the deadband. A
  reset writes the normal value, with the same readback. Nothing resets by itself.
- **Bypass.** `request_bypass()` by a safety_director and by a gm — two different people,
  one of each role, within `APPROVAL_WINDOW_S` of each other — with a reason and a
  compensating measure, for at most the zone's `max_bypass_h` (never over 24 h), and
  never on a zone that is tripped now. While bypassed, a holding vote does not latch
  and no trip is written (alarms still raise: they come from the evaluator, untouched);
  the audit log records each suppressed trip. At expiry (or `end_bypass()`), a vote that
  still holds trips at once.
- **Output fault.** A command the PLC has not confirmed within its `confirm_timeout_s` sets
  the zone's `output_fault` (an A-grade "interlock output fault"), logged as an error and
  audited; cleared when the PLC confirms.
- **Restart.** States are loaded from the database at start: a latched zone is latched
  again and its trip re-asserted by its `PlcLink`; a bypass keeps its expiry.
- Every change is audited, published retained on ``{prefix}/interlock/{zone}`` and
  written to the `interlock` measurement, when a publisher and a sink are given.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Iterable
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any, Self

from ehswatch.alarms.events import EventStream
from ehswatch.audit import record
from ehswatch.component import Component, Job
from ehswatch.config import MAX_BYPASS_HOURS, PlantConfig
from ehswatch.db import Database
from ehswatch.ingest.influx import InfluxSink
from ehswatch.interlock import store
from ehswatch.interlock.outputs import OutputPoint, PlcLink
from ehswatch.interlock.state import PendingBypass, ZoneState
from ehswatch.interlock.voting import VotingTable, clear_to_reset, vote
from ehswatch.publisher import RetainedPublisher
from ehswatch.readings import ReadingBatch
from ehswatch.roles import SYSTEM, Actor, Forbidden, Refused
from ehswatch.thresholds.evaluator import Evaluator
from ehswatch.thresholds.outcome import Evaluation

log = logging.getLogger(__name__)

APPROVAL_WINDOW_S = 15 * 60  # the second bypass approval must come within this
BYPASS_ROLES = ("safety_director", "gm")


class InterlockController(Component):
    component_name = "interlock"

    def __init__(
        self,
        *,
        config: PlantConfig,
        evaluator: Evaluator,
        db: Database,
        publisher: RetainedPublisher | None = None,
        sink: InfluxSink | None = None,
        clock: Callable[[], float] = time.time,
        reconcile_s: float = 1.0,
    ) -> None:
        self.config = config
        self.evaluator = evaluator
        self.table = evaluator.table
        self.voting = VotingTable.from_config(config, evaluator.table)
        self.db = db
        self.publisher = publisher
        self.sink = sink
        self._clock = clock
        self._settings = {z.id: z.interlock for z in config.zones if z.interlock is not None}
        self.states: dict[str, ZoneState] = {z: ZoneState(zone=z) for z in self.voting.zone_ids}
        self.links: dict[str, PlcLink] = {}
        for plc in config.plcs:
            outputs = [
                OutputPoint.of(z, il) for z, il in self._settings.items() if il.plc == plc.id
            ]
            if outputs or plc.heartbeat is not None:
                self.links[plc.id] = PlcLink(
                    plc, outputs, self._desired, self._output_report, reconcile_s=reconcile_s
                )
        self._recount = asyncio.Event()
        self._lock = asyncio.Lock()  # one state change at a time: commands and votes
        self._stack = AsyncExitStack()
        self._suppressed: set[str] = set()  # zones whose bypassed trip was audited
        self.stream: EventStream | None = None  # the API's live feed, when there is one

    # ------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Self:
        async with self.db.new_session() as session:
            stored = await store.load_all(session)
        for zone, s in stored.items():
            if zone in self.states:
                self.states[zone] = s
                if s.tripped:
                    log.warning(
                        "interlock %s: still latched from before the restart (seq %d); "
                        "re-asserting its output",
                        zone,
                        s.seq,
                    )
        await self._stack.__aenter__()
        try:
            for link in self.links.values():
                await self._stack.enter_async_context(link)
            await super().__aenter__()
        except BaseException:
            await self._stack.aclose()
            raise
        now = self._clock()
        for s in self.states.values():
            self._publish(s, now)
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            await super().__aexit__(et, e, tb)
        finally:
            await self._stack.__aexit__(et, e, tb)

    def jobs(self) -> Iterable[tuple[str, Job]]:
        yield "control", self._control

    # ------------------------------------------------------------ from the evaluator

    def on_evaluation(self, _: ReadingBatch, ev: Evaluation) -> None:
        """Evaluator stage listener: recount the votes when a tier or a fault changed."""
        if ev:
            self._recount.set()

    async def _control(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._recount.wait(), 1.0)
            self._recount.clear()
            async with self._lock:
                await self._expire()  # first: a bypass that ends lets a holding vote trip
                await self._apply_votes()

    async def _apply_votes(self) -> None:
        wanted, votes = vote(self.voting, self.evaluator.tier, self.evaluator.faulted)
        now = self._clock()
        for k, zone in enumerate(self.voting.zone_ids):
            s = self.states[zone]
            holds, n = bool(wanted[k]), int(votes[k])
            if holds != s.vote_holds or n != s.votes:
                s = self.states[zone] = dataclasses.replace(s, vote_holds=holds, votes=n)
                self._publish(s, now)
            if not holds:
                self._suppressed.discard(zone)
                continue
            if s.tripped:
                continue
            cause = self._voters_voting(k)
            if s.bypassed(now):
                if zone not in self._suppressed:
                    self._suppressed.add(zone)
                    await self._commit(
                        s, SYSTEM, "trip suppressed by bypass", {"votes": n, "sensors": cause}, now
                    )
                continue
            tripped = dataclasses.replace(
                s,
                tripped=True,
                seq=s.seq + 1,
                tripped_at=now,
                trip_votes=n,
                trip_cause=tuple(cause),
            )
            await self._commit(
                tripped, SYSTEM, "trip", {"votes": n, "sensors": cause, "seq": tripped.seq}, now
            )
            log.error(
                "INTERLOCK TRIP %s: %d vote(s) from %s; output command seq %d",
                zone,
                n,
                ", ".join(cause),
                tripped.seq,
            )
            self._command(zone)

    def _voters_voting(self, k: int) -> list[str]:
        tier, faulted = self.evaluator.tier, self.evaluator.faulted
        fault_trips = bool(self.voting.fault_trips[k])
        return [
            self.table.sensor_ids[s]
            for s in self.voting.voters_of(k).tolist()
            if (faulted[s] and fault_trips) or (not faulted[s] and tier[s] == 3)
        ]

    async def _expire(self) -> None:
        now = self._clock()
        for zone, s in list(self.states.items()):
            if s.bypass_until is not None and now >= s.bypass_until:
                ended = dataclasses.replace(
                    s, bypass_until=None, bypass_reason="", bypass_measure="", bypass_by=()
                )
                await self._commit(
                    ended,
                    SYSTEM,
                    "bypass expired",
                    {"until": s.bypass_until, "by": list(s.bypass_by)},
                    now,
                )
                self._recount.set()  # a vote that still holds trips now
            if s.pending is not None and now - s.pending.at > APPROVAL_WINDOW_S:
                s = self.states[zone]
                await self._commit(
                    dataclasses.replace(s, pending=None),
                    SYSTEM,
                    "bypass request expired",
                    {"by": s.pending.by if s.pending else ""},
                    now,
                )

    # ------------------------------------------------------------ commands from people

    async def reset(self, zone: str, actor: Actor, comment: str = "") -> ZoneState:
        async with self._lock:
            s = self._zone(zone)
            now = self._clock()
            if not actor.at_least("supervisor"):
                await self._refuse(
                    s, actor, "reset", "a reset needs a supervisor or above", now, comment
                )
                raise Forbidden(f"{actor.name} ({actor.role}) may not reset an interlock")
            if not s.tripped:
                await self._refuse(s, actor, "reset", "the zone is not tripped", now, comment)
                raise Refused(f"{zone} is not tripped")
            k = self.voting.zone_ids.index(zone)
            wanted, votes = vote(self.voting, self.evaluator.tier, self.evaluator.faulted)
            problems = []
            if wanted[k]:
                problems.append(
                    f"the {self._settings[zone].voting} vote still holds ({int(votes[k])} vote(s))"
                )
            problems += clear_to_reset(
                self.voting, k, self.table, self.evaluator.last_value, self.evaluator.faulted
            )
            if problems:
                why = "; ".join(problems)
                await self._refuse(s, actor, "reset", why, now, comment)
                raise Refused(f"{zone} cannot be reset yet: {why}")
            reset = dataclasses.replace(s, tripped=False, seq=s.seq + 1, output_fault=False)
            await self._commit(reset, actor, "reset", {"seq": reset.seq}, now, comment)
            log.warning(
                "interlock %s reset by %s (%s); output command seq %d",
                zone,
                actor.name,
                actor.role,
                reset.seq,
            )
            self._command(zone)
            return reset

    async def request_bypass(
        self,
        zone: str,
        actor: Actor,
        *,
        reason: str,
        measure: str,
        hours: float,
        comment: str = "",
    ) -> ZoneState:
        """First call: a pending request; the second, by the other role: the bypass."""
        async with self._lock:
            s = self._zone(zone)
            now = self._clock()
            limit = min(self._settings[zone].max_bypass_h, MAX_BYPASS_HOURS)
            why = None
            if actor.role not in BYPASS_ROLES:
                await self._refuse(
                    s,
                    actor,
                    "bypass",
                    "only a safety director and a general manager may approve a bypass",
                    now,
                    comment,
                )
                raise Forbidden(f"{actor.name} ({actor.role}) may not approve a bypass")
            pending = s.pending if s.pending and now - s.pending.at <= APPROVAL_WINDOW_S else None
            if pending is None and (not reason.strip() or not measure.strip()):
                # The second approver approves the first one's reason and measure.
                why = "a bypass needs a reason and a compensating measure"
            elif not 0 < hours <= limit:
                why = f"a bypass of {zone} lasts more than 0 and at most {limit:g} h"
            elif s.tripped:
                why = f"{zone} is tripped now: reset it first"
            elif s.bypassed(now):
                why = f"{zone} is already bypassed"
            elif pending is not None and pending.by == actor.name:
                why = "the second approval must come from a different person"
            elif pending is not None and pending.role == actor.role:
                why = f"the second approval must come from the {_other(pending.role)}"
            if why is not None:
                await self._refuse(s, actor, "bypass", why, now, comment)
                raise Refused(why)
            if pending is None:
                asked = dataclasses.replace(
                    s,
                    pending=PendingBypass(
                        by=actor.name,
                        role=actor.role,
                        at=now,
                        reason=reason,
                        measure=measure,
                        hours=hours,
                    ),
                )
                await self._commit(
                    asked,
                    actor,
                    "bypass requested",
                    {"reason": reason, "measure": measure, "hours": hours},
                    now,
                    comment,
                )
                return asked
            hours = min(hours, pending.hours)
            on = dataclasses.replace(
                s,
                pending=None,
                bypass_until=now + hours * 3600,
                bypass_reason=pending.reason,
                bypass_measure=pending.measure,
                bypass_by=(pending.by, actor.name),
            )
            await self._commit(
                on,
                actor,
                "bypass on",
                {
                    "until": on.bypass_until,
                    "hours": hours,
                    "by": list(on.bypass_by),
                    "reason": on.bypass_reason,
                    "measure": on.bypass_measure,
                },
                now,
                comment,
            )
            log.warning(
                "interlock %s BYPASSED until %s by %s",
                zone,
                time.strftime("%Y-%m-%d %H:%M", time.localtime(on.bypass_until)),
                " and ".join(on.bypass_by),
            )
            return on

    async def end_bypass(self, zone: str, actor: Actor, comment: str = "") -> ZoneState:
        async with self._lock:
            s = self._zone(zone)
            now = self._clock()
            if not actor.at_least("supervisor"):
                await self._refuse(
                    s, actor, "end bypass", "needs a supervisor or above", now, comment
                )
                raise Forbidden(f"{actor.name} ({actor.role}) may not end a bypass")
            if not s.bypassed(now):
                raise Refused(f"{zone} is not bypassed")
            ended = dataclasses.replace(
                s, bypass_until=None, bypass_reason="", bypass_measure="", bypass_by=()
            )
            await self._commit(ended, actor, "bypass ended", {}, now, comment)
            self._recount.set()
            return ended

    # ------------------------------------------------------------ outputs

    def _desired(self, zone: str) -> tuple[bool, int]:
        s = self.states[zone]
        return s.output_tripped(self._clock()), s.seq

    def _command(self, zone: str) -> None:
        link = self.links[self._settings[zone].plc]
        link.command(zone)

    def _output_report(self, zone: str, confirmed: bool, detail: str) -> None:
        s = self.states[zone]
        if confirmed == (not s.output_fault):
            return
        asyncio.get_running_loop().create_task(
            self._set_output_fault(zone, not confirmed, detail), name=f"interlock:output-{zone}"
        )

    async def _set_output_fault(self, zone: str, fault: bool, detail: str) -> None:
        async with self._lock:
            s = self.states[zone]
            if s.output_fault == fault:
                return
            now = self._clock()
            changed = dataclasses.replace(s, output_fault=fault)
            action = "output fault" if fault else "output confirmed"
            await self._commit(changed, SYSTEM, action, {"detail": detail}, now)
            if fault:
                log.error("A-grade: INTERLOCK OUTPUT FAULT %s: %s", zone, detail)
            else:
                log.warning("interlock %s output confirmed again: %s", zone, detail)

    # ------------------------------------------------------------ bookkeeping

    def _zone(self, zone: str) -> ZoneState:
        if zone not in self.states:
            raise KeyError(f"no interlocked zone {zone!r}")
        return self.states[zone]

    async def _commit(
        self,
        s: ZoneState,
        actor: Actor,
        action: str,
        detail: dict[str, Any],
        now: float,
        comment: str = "",
    ) -> None:
        """Store the new state with its audit entry, then publish it."""
        async with self.db.new_session() as session, session.begin():
            await store.save(session, s)
            record(
                session,
                ts=now,
                actor=actor,
                action=action,
                subject=f"zone:{s.zone}",
                detail=detail,
                comment=comment,
            )
        self.states[s.zone] = s
        self._publish(s, now)

    async def _refuse(
        self, s: ZoneState, actor: Actor, action: str, why: str, now: float, comment: str
    ) -> None:
        async with self.db.new_session() as session, session.begin():
            record(
                session,
                ts=now,
                actor=actor,
                action=f"{action} refused",
                subject=f"zone:{s.zone}",
                detail={"why": why},
                comment=comment,
            )
        log.warning(
            "interlock %s: %s by %s (%s) refused: %s", s.zone, action, actor.name, actor.role, why
        )

    def _publish(self, s: ZoneState, now: float) -> None:
        if self.stream is not None:
            self.stream.publish({"type": "interlock", "ts": now, "interlock": s.public(now)})
        if self.publisher is not None:
            prefix = self.config.mqtt.topic_prefix if self.config.mqtt else "ehs"
            self.publisher.publish(f"{prefix}/interlock/{s.zone}", {**s.public(now), "ts": now})
        if self.sink is not None:
            self.sink.submit_lines(self.sink.encoder.interlock(s.zone, influx_fields(s, now), now))


def influx_fields(s: ZoneState, now: float) -> dict[str, int | float]:
    """The `interlock` measurement's fields for a zone's state (all numbers)."""
    return {
        "tripped": int(s.tripped),
        "bypassed": int(s.bypassed(now)),
        "votes": s.votes,
        "vote_holds": int(s.vote_holds),
        "seq": s.seq,
        "output_fault": int(s.output_fault),
    }


def _other(role: str) -> str:
    return "gm" if role == "safety_director" else "safety director"

"""`InterlockController`: the interlock rules, between the evaluator and the PLCs.

- **Votes on events.** The evaluation listener only appends every evaluation to an inbox
  (never dropping, never blocking). The control loop drains it, in order, into the
  `EventVoter` (`timeline`): a zone trips if its vote held at ANY instant of the stream —
  a 100 ms overlap inside one batch, a spike up and down inside one batch, a fault that
  ended inside it, two batches evaluated before the loop ran. The voter also gives the
  current vote (published, and used by reset and bypass).
- **Output first.** A zone whose vote held and that is neither latched nor bypassed is
  latched in memory and its PLC output commanded at once; the trip (state and audit
  entry) is stored concurrently by the writer task, which retries with backoff until the
  database commits it. The coil never waits on the database. If the trip is not stored
  within `durable_within_s` (2 s), or a write fails, the zone's A-grade alarm "interlock
  latch not durable" is raised (`latch_durable` false); it returns when the write commits.
- **Heartbeat proves the control path alive.** The control loop turns at least every
  0.25 s (or half the shortest heartbeat period) and stamps each turn; the PLC links
  write the heartbeat only while that stamp is at most 2 × the heartbeat period old and
  the last turn did not fail.
- **Latch and reset.** A latched zone stays tripped when the values fall. `reset()` needs
  a supervisor or above (else `Forbidden`), and is `Refused` while the current vote
  holds or while any voting input is not valid and back past its interlock setpoint by
  the deadband. A reset is stored first, then writes the normal value (with readback);
  if the vote held again while the reset was being stored, the zone trips again at once
  instead. Nothing resets by itself.
- **Bypass.** `request_bypass()` by a safety_director and by a gm — two different people,
  one of each role, within `APPROVAL_WINDOW_S` of each other — with a reason and a
  compensating measure, for at most the zone's `max_bypass_h` (never over 24 h); refused
  on a zone tripped now and while its vote holds (latched or not). While bypassed, a
  vote that holds does not latch (each suppressed trip is audited; alarms still raise).
  At expiry (or `end_bypass()`), a vote that still holds trips at once.
- **Output fault, per command.** Every trip and every reset is a command with its own
  sequence number and its own confirmation record in the `PlcLink`. If that command is
  not read back within the PLC's `confirm_timeout_s`, the zone's `output_fault` is set
  and its A-grade alarm "interlock output fault" raised; only a confirmed readback of
  that command or a later one clears it — a reset does not.
- **Restart.** States are loaded from the database at start: a latched zone is latched
  again and its trip re-asserted by its `PlcLink`; a bypass keeps its expiry; a zone with
  an output fault has its last command tried again.
- Every change is audited, published retained on ``{prefix}/interlock/{zone}`` and
  written to the `interlock` measurement, when a publisher and a sink are given. Zone
  alarms go to the `AlarmManager` given (`condition`), handed off, never awaited.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import itertools
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from types import TracebackType
from typing import Any, NoReturn, Self

from ehswatch import audit
from ehswatch.alarms.events import EventStream
from ehswatch.alarms.manager import AlarmManager
from ehswatch.alarms.model import AlarmKind
from ehswatch.audit import entry_row, storable
from ehswatch.clock import ServiceClock
from ehswatch.component import LOOP_TICKER, Backoff, Component, Job, Ticker, woken
from ehswatch.config import MAX_BYPASS_HOURS, PlantConfig
from ehswatch.db import Database
from ehswatch.ingest.influx import InfluxSink
from ehswatch.interlock import store
from ehswatch.interlock.bypass import APPROVAL_WINDOW_S, BypassAsk, bypass_refusal
from ehswatch.interlock.outputs import OutputPoint, PlcLink
from ehswatch.interlock.rules import Act, decide
from ehswatch.interlock.state import PendingBypass, ZoneState
from ehswatch.interlock.timeline import RETENTION_S, EventVoter, Held, Inbox
from ehswatch.interlock.voting import VotingTable, clear_to_reset
from ehswatch.publisher import RetainedPublisher
from ehswatch.readings import ReadingBatch
from ehswatch.refusals import Refusal
from ehswatch.roles import SYSTEM, Actor, NotFound
from ehswatch.thresholds.evaluator import Evaluator
from ehswatch.thresholds.outcome import Evaluation

log = logging.getLogger(__name__)

DURABLE_WITHIN_S = 2.0  # a trip not stored by then raises "interlock latch not durable"
TURN_S = 0.25  # the control loop turns at least this often
WRITE_RETRY = Backoff(first=0.05, longest=2.0)  # the writer's, while the database refuses
FINAL_FLUSH_S = 5.0  # at stop, how long the writer may still try to store what is queued
TRIP_FIELDS = ("tripped", "seq", "tripped_at", "trip_votes", "trip_cause")
BYPASS_ON_FIELDS = ("bypass_until", "bypass_reason", "bypass_measure", "bypass_by")
BYPASS_FIELDS = (*BYPASS_ON_FIELDS, "pending")


@dataclass(frozen=True, slots=True)
class _Audit:
    actor: Actor
    action: str
    detail: dict[str, Any]
    ts: float
    comment: str = ""

    @classmethod
    def refused(cls, refusal: Refusal, ts: float) -> _Audit:
        r = refusal
        return cls(r.actor, r.audited_action, r.audited_detail, ts, r.comment)


@dataclass(slots=True)
class _Write:
    """One change for the database: a patch of the zone's row and its audit entries."""

    zone: str
    values: dict[str, Any]
    audits: list[_Audit]
    done: asyncio.Future[None] | None = None  # a person's command waits for it
    trip_seq: int | None = None  # the trip this write makes durable


@dataclass(slots=True)
class _Undurable:
    seq: int
    since: float
    alarmed: bool = False


class InterlockController(Component):
    component_name = "interlock"

    def __init__(
        self,
        *,
        config: PlantConfig,
        evaluator: Evaluator,
        db: Database,
        alarms: AlarmManager | None = None,
        publisher: RetainedPublisher | None = None,
        sink: InfluxSink | None = None,
        stream: EventStream | None = None,
        clock: Callable[[], float] | None = None,
        reconcile_s: float = 1.0,
        durable_within_s: float = DURABLE_WITHIN_S,
        retention_s: float = RETENTION_S,
        link_ticker: Ticker = LOOP_TICKER,
        fence: Callable[[], bool] | None = None,
    ) -> None:
        """`link_ticker` keeps the PLC links' time (heartbeat, re-assert, confirmations):
        the event loop's, or a test's hand-held one. `fence()`, when given, is asked
        before every PLC write: False — this instance no longer holds its control lease
        (`ehswatch.standby`) — and nothing is written."""
        self.config = config
        self.evaluator = evaluator
        self.table = evaluator.table
        self.voting = VotingTable.from_config(config, evaluator.table)
        self.db = db
        self.alarms = alarms
        self.publisher = publisher
        self.sink = sink
        self._clock: Callable[[], float] = clock if clock is not None else ServiceClock()
        self.durable_within_s = durable_within_s
        self._settings = {z.id: z.interlock for z in config.zones if z.interlock is not None}
        self._index = {z: k for k, z in enumerate(self.voting.zone_ids)}
        self.states: dict[str, ZoneState] = {z: ZoneState(zone=z) for z in self.voting.zone_ids}
        self.voter = EventVoter(
            self.voting,
            n_sensors=self.table.size,
            tier=evaluator.tier,
            faulted=evaluator.faulted,
            start_ts=self._clock(),
            retention_s=retention_s,
        )
        self.inbox = Inbox()
        periods = [p.heartbeat.period_s for p in config.plcs if p.heartbeat is not None]
        self.turn_s = min([TURN_S, *[p / 2 for p in periods]])
        self.links: dict[str, PlcLink] = {}
        for plc in config.plcs:
            outputs = [
                OutputPoint.of(z, il) for z, il in self._settings.items() if il.plc == plc.id
            ]
            if outputs or plc.heartbeat is not None:
                self.links[plc.id] = PlcLink(
                    plc,
                    outputs,
                    self._desired,
                    self._output_report,
                    reconcile_s=reconcile_s,
                    alive=self.control_alive,
                    found_tripped=self._found_tripped,
                    ticker=link_ticker,
                    fence=fence,
                )
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()  # one turn of the rules at a time (never held over I/O)
        self._people = asyncio.Lock()  # one person's command at a time (held over I/O)
        self._writes: deque[_Write] = deque()
        self._write_wake = asyncio.Event()
        self._write_failing = ""  # the last write error, while writes fail
        self._undurable: dict[str, _Undurable] = {}
        self._fault_seq: dict[str, int] = {}  # the command whose non-confirmation faulted
        self._alive_at: float | None = None  # loop time of the control loop's last turn
        self._turn_failed = False
        self._stack = AsyncExitStack()
        self._suppressed: set[str] = set()  # zones whose bypassed trip was audited
        self._last_held: dict[str, Held] = {}  # each zone's latest newly learned holding
        self.stream = stream  # the screens' live feed, when there is one
        self.turns = 0

    # ------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Self:
        # Alive as of the start: a control loop that has not turned within the liveness
        # window of its start is stuck like any other.
        self._alive_at = asyncio.get_running_loop().time()
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
        for zone, s in self.states.items():
            self._publish(s, now)
            # What is loaded is stored: no latch can be undurable. An output fault stands
            # until a command is confirmed: the last one is tried again.
            self._condition(zone, AlarmKind.NOT_DURABLE, False, "the zone's state is stored")
            self._condition(
                zone,
                AlarmKind.OUTPUT_FAULT,
                s.output_fault,
                f"output fault of command seq {s.seq} still unconfirmed at start",
            )
            if s.output_fault:
                self._fault_seq[zone] = s.seq
                self._command(zone)
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            await super().__aexit__(et, e, tb)
        finally:
            try:
                await self._final_flush()
            finally:
                await self._stack.__aexit__(et, e, tb)

    def jobs(self) -> Iterable[tuple[str, Job]]:
        yield "control", self._control
        yield "writer", self._writer

    # ------------------------------------------------------------ from the evaluator

    def on_evaluation(self, _: ReadingBatch, ev: Evaluation) -> None:
        """Evaluator stage listener: keep every evaluation, and take a turn of the rules
        at once when it changed something, so that a trip is commanded inside the
        evaluator's own turn of the event loop — before storage, alarms and tickets are
        even told of the evaluation. While a person's command holds the rules (never
        over I/O, but across an await), the control loop takes the turn instead."""
        self.inbox.put(ev)
        if not ev:
            return
        if self._lock.locked():
            self._wake.set()
            return
        try:
            self._guarded_turn()
        except Exception:
            # The control loop takes the turn again and fails visibly there (its job
            # restarts, and the heartbeat stops while it fails).
            log.exception("interlock: a turn of the rules failed")
            self._wake.set()

    # ------------------------------------------------------------ the control loop

    @contextlib.asynccontextmanager
    async def rules_held(self) -> AsyncIterator[None]:
        """Hold the rules (for tests and tools): evaluations queue in the inbox, and the
        turn they call for is taken by the control loop once the block ends."""
        async with self._lock:
            yield
        self._wake.set()

    def control_alive(self, max_age_s: float) -> bool:
        """Whether the control loop turned within `max_age_s` and its last turn worked."""
        if self._turn_failed or self._alive_at is None:
            return False
        return asyncio.get_running_loop().time() - self._alive_at <= max_age_s

    async def _control(self) -> None:
        while True:
            async with self._lock:
                self._guarded_turn()
            await woken(self._wake, self.turn_s)

    def _guarded_turn(self) -> None:
        try:
            self._turn()
        except BaseException:
            self._turn_failed = True
            raise
        self._turn_failed = False
        self._alive_at = asyncio.get_running_loop().time()
        self.turns += 1

    def _turn(self) -> None:
        """One pass of the rules; synchronous: nothing here waits on I/O."""
        now = self._clock()
        self._expire(now)  # first: a bypass that ends lets a holding vote trip
        held: dict[int, Held] = {}
        while len(self.inbox):
            for news in self.voter.feed(self.inbox.peek()):
                held.setdefault(news.zone, news)
            self.inbox.pop()
        votes, holds = self.voter.votes_now(), self.voter.holds_now()
        for k, zone in enumerate(self.voting.zone_ids):
            s = self.states[zone]
            n, now_holds = int(votes[k]), bool(holds[k])
            if now_holds != s.vote_holds or n != s.votes:
                s = self.states[zone] = dataclasses.replace(s, vote_holds=now_holds, votes=n)
                self._publish(s, now)
            h = held.get(k)
            if h is not None:
                self._last_held[zone] = h
            d = decide(
                s,
                held=h,
                holds_now=now_holds,
                # Who votes now matters only for a trip that has no held vote to name.
                voters_now=(
                    tuple(self.voter.voters_now(k))
                    if h is None and now_holds and not s.tripped
                    else ()
                ),
                now=now,
            )
            if d.vote_gone:
                self._suppressed.discard(zone)
            if d.act is Act.NOTHING:
                continue
            cause = [self.table.sensor_ids[i] for i in d.cause]
            at = d.at
            if d.act is Act.SUPPRESS:
                if zone not in self._suppressed:
                    self._suppressed.add(zone)
                    self._write(
                        zone,
                        (),
                        _Audit(
                            SYSTEM,
                            "trip suppressed by bypass",
                            {"votes": len(cause), "sensors": cause, "at": at},
                            now,
                        ),
                    )
                continue
            self._trip(zone, cause, at, now)
        self._check_durable(now)

    def _trip(
        self, zone: str, cause: list[str], at: float | None, now: float, why: str = ""
    ) -> None:
        """Latch, command the output, then queue the write: the coil never waits."""
        s = self.states[zone]
        tripped = dataclasses.replace(
            s,
            tripped=True,
            seq=s.seq + 1,
            tripped_at=now,
            trip_votes=len(cause),
            trip_cause=tuple(cause),
            latch_durable=False,
        )
        self.states[zone] = tripped
        self._command(zone)
        self._publish(tripped, now)
        log.error(
            "INTERLOCK TRIP %s: %d vote(s) from %s%s; output command seq %d%s",
            zone,
            len(cause),
            ", ".join(cause),
            "" if at is None else f" (the vote held at {at:.3f})",
            tripped.seq,
            f"; {why}" if why else "",
        )
        detail: dict[str, Any] = {
            "votes": len(cause),
            "sensors": cause,
            "seq": tripped.seq,
            "at": at,
        }
        if why:
            detail["why"] = why
        self._undurable[zone] = _Undurable(seq=tripped.seq, since=now)
        self._write(zone, TRIP_FIELDS, _Audit(SYSTEM, "trip", detail, now), trip_seq=tripped.seq)

    def _expire(self, now: float) -> None:
        for zone, s in list(self.states.items()):
            if s.bypass_until is not None and now >= s.bypass_until:
                ended = dataclasses.replace(
                    s, bypass_until=None, bypass_reason="", bypass_measure="", bypass_by=()
                )
                self.states[zone] = ended
                self._publish(ended, now)
                self._write(
                    zone,
                    BYPASS_ON_FIELDS,
                    _Audit(
                        SYSTEM,
                        "bypass expired",
                        {"until": s.bypass_until, "by": list(s.bypass_by)},
                        now,
                    ),
                )
                log.warning("interlock %s: bypass expired; the vote decides again", zone)
            s = self.states[zone]
            if s.pending is not None and now - s.pending.at > APPROVAL_WINDOW_S:
                lapsed = dataclasses.replace(s, pending=None)
                self.states[zone] = lapsed
                self._publish(lapsed, now)
                self._write(
                    zone,
                    ("pending",),
                    _Audit(SYSTEM, "bypass request expired", {"by": s.pending.by}, now),
                )

    def _check_durable(self, now: float) -> None:
        for zone, u in self._undurable.items():
            if u.alarmed:
                continue
            late = now - u.since >= self.durable_within_s
            if not (late or self._write_failing):
                continue
            u.alarmed = True
            why = self._write_failing or (
                f"the database has not committed it within {self.durable_within_s:g} s"
            )
            message = (
                f"interlock latch not durable: the trip of {zone} (command seq {u.seq}) is "
                f"not stored yet ({why}); the output stays tripped, a restart now would "
                "not re-assert it"
            )
            log.error("A-grade: %s", message)
            self._condition(zone, AlarmKind.NOT_DURABLE, True, message)

    # ------------------------------------------------------------ the writer

    def _write(
        self,
        zone: str,
        fields: Iterable[str],
        audit: _Audit | None,
        *,
        trip_seq: int | None = None,
        wait: bool = False,
        values: dict[str, Any] | None = None,
    ) -> asyncio.Future[None] | None:
        """Queue the zone's `fields` (from its state in memory, or `values`) and `audit`.
        Text that cannot be stored as UTF-8 (lone surrogates) is stored escaped: a change
        the database can never take would hold every later trip's write behind it."""
        if values is None:
            row = store.values_of(self.states[zone])
            values = {k: row[k] for k in fields}
        values = {k: storable(v) for k, v in values.items()}
        if audit is not None:
            audit = _Audit(
                audit.actor,
                storable(audit.action),
                storable(audit.detail),
                audit.ts,
                storable(audit.comment),
            )
        done = asyncio.get_running_loop().create_future() if wait else None
        self._writes.append(
            _Write(
                zone=zone,
                values=values,
                audits=[audit] if audit is not None else [],
                done=done,
                trip_seq=trip_seq,
            )
        )
        self._write_wake.set()
        return done

    async def _writer(self) -> None:
        retry = WRITE_RETRY.retrying()
        while True:
            if not self._writes:
                self._write_wake.clear()
                await self._write_wake.wait()
                continue
            batch = list(itertools.islice(self._writes, 200))
            try:
                await self._store(batch)
            except Exception as exc:
                why = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
                if not self._write_failing:
                    log.error(
                        "interlock: cannot store %d change(s): %s; retrying until it works",
                        len(batch),
                        why,
                    )
                self._write_failing = why
                self._wake.set()  # the control loop raises "latch not durable" at once
                await asyncio.sleep(retry.failed())
                continue
            if self._write_failing:
                log.warning("interlock: the database takes changes again")
            self._write_failing = ""
            retry.succeeded()
            for _ in batch:
                self._writes.popleft()
            self._stored(batch)

    async def _store(self, batch: list[_Write]) -> None:
        audits = [
            entry_row(
                ts=a.ts,
                actor=a.actor,
                action=a.action,
                subject=f"zone:{w.zone}",
                detail=a.detail,
                comment=a.comment,
            )
            for w in batch
            for a in w.audits
        ]
        async with self.db.new_session() as session, session.begin():
            for w in batch:
                if w.values:
                    await store.patch(self.db, session, w.zone, w.values)
            await audit.append(session, audits)

    def _stored(self, batch: list[_Write]) -> None:
        now = self._clock()
        for w in batch:
            if w.done is not None and not w.done.done():
                w.done.set_result(None)
            u = self._undurable.get(w.zone)
            if w.trip_seq is None or u is None or u.seq > w.trip_seq:
                continue
            del self._undurable[w.zone]
            s = self.states[w.zone] = dataclasses.replace(self.states[w.zone], latch_durable=True)
            self._publish(s, now)
            if u.alarmed:
                log.warning("interlock %s: the latch (seq %d) is stored now", w.zone, u.seq)
                self._condition(
                    w.zone,
                    AlarmKind.NOT_DURABLE,
                    False,
                    f"the trip of {w.zone} (command seq {u.seq}) is stored",
                )

    async def _final_flush(self) -> None:
        """At stop: one more try to store what is queued (the control loop is gone)."""
        if not self._writes:
            return
        batch = list(self._writes)
        try:
            async with asyncio.timeout(FINAL_FLUSH_S):
                await self._store(batch)
        except Exception as exc:
            log.error(
                "interlock: %d change(s) could not be stored before stopping: %s", len(batch), exc
            )
            for w in batch:
                if w.done is not None and not w.done.done():
                    w.done.set_exception(RuntimeError("the interlock controller stopped"))
            return
        self._writes.clear()
        self._stored(batch)

    async def _commit(
        self,
        zone: str,
        values: dict[str, Any],
        actor: Actor,
        action: str,
        detail: dict[str, Any],
        now: float,
        comment: str = "",
    ) -> None:
        """A person's change: queued behind every earlier change, and waited for."""
        done = self._write(
            zone, (), _Audit(actor, action, detail, now, comment), wait=True, values=values
        )
        assert done is not None
        await done

    # ------------------------------------------------------------ commands from people

    def _reset_problems(self, zone: str, k: int) -> list[str]:
        """Why the zone may not be reset now (empty: it may): the vote holds, or an input
        is faulted, at the interlock tier, or not back past its setpoint by the deadband."""
        problems = []
        if self.voter.holds_now()[k]:
            problems.append(
                f"the {self._settings[zone].voting} vote still holds "
                f"({int(self.voter.votes_now()[k])} vote(s))"
            )
        ev = self.evaluator
        return problems + clear_to_reset(
            self.voting, k, self.table, ev.last_value, ev.faulted, ev.tier
        )

    async def reset(self, zone: str, actor: Actor, comment: str = "") -> ZoneState:
        async with self._people:
            async with self._lock:
                self._guarded_turn()  # decide on everything that has happened
                s = self._zone(zone)
                k = self._index[zone]
                now = self._clock()
                refuse = functools.partial(
                    Refusal, actor=actor, action="reset", subject=f"zone:{zone}", comment=comment
                )
                refusal = None
                if not actor.at_least("supervisor"):
                    refusal = refuse(
                        why=f"{actor.name} ({actor.role}) may not reset an interlock: a reset "
                        "needs a supervisor or above",
                        forbidden=True,
                    )
                elif not s.tripped:
                    refusal = refuse(why=f"{zone} is not tripped")
                else:
                    problems = self._reset_problems(zone, k)
                    if problems:
                        refusal = refuse(why=f"{zone} cannot be reset yet: {'; '.join(problems)}")
                mark = int(self.voter.held_count[k])
            if refusal is not None:
                await self._refuse(zone, refusal, now)
            seq = s.seq + 1
            await self._commit(
                zone, {"tripped": False, "seq": seq}, actor, "reset", {"seq": seq}, now, comment
            )
            async with self._lock:
                self._guarded_turn()
                now = self._clock()
                reset = self.states[zone] = dataclasses.replace(
                    self.states[zone], tripped=False, seq=seq
                )
                log.warning(
                    "interlock %s reset by %s (%s); output command seq %d",
                    zone,
                    actor.name,
                    actor.role,
                    seq,
                )
                again = self._reset_problems(zone, k)
                if int(self.voter.held_count[k]) != mark or again:
                    # The vote held again, or an input went back inside its deadband or
                    # faulted, while the reset was being stored: trip again now, and the
                    # output never leaves its trip.
                    h = self._last_held.get(zone)
                    if self.voter.holds_now()[k] or h is None:
                        cause, at = self.voter.voters_now(k), None
                    else:
                        cause, at = list(h.sensors), h.at
                    why = "; ".join(again) or "the vote held again"
                    self._trip(
                        zone,
                        [self.table.sensor_ids[i] for i in cause],
                        at,
                        now,
                        why=f"{why} while the reset was being stored",
                    )
                else:
                    self._command(zone)
                    self._publish(reset, now)
                return self.states[zone]

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
        async with self._people:
            async with self._lock:
                self._guarded_turn()
                s = self._zone(zone)
                k = self._index[zone]
                now = self._clock()
                ask = BypassAsk(
                    zone=zone,
                    actor=actor,
                    reason=reason,
                    measure=measure,
                    hours=hours,
                    state=s,
                    now=now,
                    limit_h=min(self._settings[zone].max_bypass_h, MAX_BYPASS_HOURS),
                    voting=str(self._settings[zone].voting),
                    vote_holds=bool(self.voter.holds_now()[k]),
                    votes=int(self.voter.votes_now()[k]),
                )
                refused = bypass_refusal(ask)
                pending = ask.pending
                mark = int(self.voter.held_count[k])
            if refused is not None:
                await self._refuse(
                    zone,
                    Refusal(
                        actor=actor,
                        action="bypass",
                        subject=f"zone:{zone}",
                        why=refused.why(ask),
                        forbidden=refused.forbidden,
                        comment=comment,
                    ),
                    now,
                )
            if pending is None:
                asked = PendingBypass(
                    by=actor.name,
                    role=actor.role,
                    at=now,
                    reason=reason,
                    measure=measure,
                    hours=hours,
                )
                values = store.values_of(dataclasses.replace(s, pending=asked))
                await self._commit(
                    zone,
                    {"pending": values["pending"]},
                    actor,
                    "bypass requested",
                    {"reason": reason, "measure": measure, "hours": hours},
                    now,
                    comment,
                )
                async with self._lock:
                    s = self.states[zone] = dataclasses.replace(self.states[zone], pending=asked)
                    self._publish(s, self._clock())
                    return s
            hours = min(hours, pending.hours)
            on = dataclasses.replace(
                s,
                pending=None,
                bypass_until=now + hours * 3600,
                bypass_reason=pending.reason,
                bypass_measure=pending.measure,
                bypass_by=(pending.by, actor.name),
            )
            row = store.values_of(on)
            await self._commit(
                zone,
                {k_: row[k_] for k_ in BYPASS_FIELDS},
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
            withdrawn_audit: asyncio.Future[None] | None = None
            async with self._lock:
                self._guarded_turn()
                cur = self.states[zone]
                later = self._clock()
                if cur.tripped or self.voter.holds_now()[k] or self.voter.held_count[k] != mark:
                    # The vote came while the bypass was being stored: it never takes effect.
                    withdrawn = dataclasses.replace(
                        cur,
                        pending=None,
                        bypass_until=None,
                        bypass_reason="",
                        bypass_measure="",
                        bypass_by=(),
                    )
                    self.states[zone] = withdrawn
                    why = f"the vote of {zone} held while the bypass was being recorded"
                    self._write(
                        zone, BYPASS_FIELDS, _Audit(SYSTEM, "bypass withdrawn", {"why": why}, later)
                    )
                    refusal = Refusal(
                        actor=actor,
                        action="bypass",
                        subject=f"zone:{zone}",
                        why=f"{why}: a bypass is refused while the vote holds",
                        comment=comment,
                    )
                    # Waited for once the lock is let go (a trip may need it), and
                    # only then raised: audited, then refused.
                    withdrawn_audit = self._write(
                        zone, (), _Audit.refused(refusal, later), wait=True
                    )
                    self._publish(withdrawn, later)
                else:
                    s = self.states[zone] = dataclasses.replace(
                        cur,
                        pending=None,
                        bypass_until=on.bypass_until,
                        bypass_reason=on.bypass_reason,
                        bypass_measure=on.bypass_measure,
                        bypass_by=on.bypass_by,
                    )
                    self._publish(s, later)
            if withdrawn_audit is not None:
                await withdrawn_audit
                raise refusal.error()
            log.warning(
                "interlock %s BYPASSED until %s by %s",
                zone,
                time.strftime("%Y-%m-%d %H:%M", time.localtime(on.bypass_until)),
                " and ".join(on.bypass_by),
            )
            return s

    async def end_bypass(self, zone: str, actor: Actor, comment: str = "") -> ZoneState:
        async with self._people:
            s = self._zone(zone)
            now = self._clock()
            refuse = functools.partial(
                Refusal, actor=actor, action="end bypass", subject=f"zone:{zone}", comment=comment
            )
            if not actor.at_least("supervisor"):
                await self._refuse(
                    zone,
                    refuse(
                        why=f"{actor.name} ({actor.role}) may not end a bypass: it needs a "
                        "supervisor or above",
                        forbidden=True,
                    ),
                    now,
                )
            if not s.bypassed(now):
                await self._refuse(zone, refuse(why=f"{zone} is not bypassed"), now)
            ended = dataclasses.replace(
                s, bypass_until=None, bypass_reason="", bypass_measure="", bypass_by=()
            )
            row = store.values_of(ended)
            await self._commit(
                zone, {k: row[k] for k in BYPASS_ON_FIELDS}, actor, "bypass ended", {}, now, comment
            )
            async with self._lock:
                ended = self.states[zone] = dataclasses.replace(
                    self.states[zone],
                    bypass_until=None,
                    bypass_reason="",
                    bypass_measure="",
                    bypass_by=(),
                )
                self._publish(ended, self._clock())
                self._guarded_turn()  # a vote that still holds trips now
                return self.states[zone]

    # ------------------------------------------------------------ outputs

    def _found_tripped(self, zone: str) -> None:
        """From a PLC link at start: the zone's output is tripped, the zone not latched
        (a trip written before a crash and never stored). Latch it: only an authorised
        reset may bring the output back to normal."""
        s = self.states[zone]
        now = self._clock()
        if s.tripped or s.bypassed(now):  # a bypass inhibits the latch, as for a vote
            return
        self._trip(
            zone,
            [],
            None,
            now,
            why="its output was found tripped at the PLC at start (a trip not stored before "
            "a crash)",
        )

    def _desired(self, zone: str) -> tuple[bool, int]:
        s = self.states[zone]
        return s.output_tripped(self._clock()), s.seq

    def _command(self, zone: str) -> None:
        link = self.links[self._settings[zone].plc]
        link.command(zone, self.states[zone].seq)

    def _output_report(self, zone: str, seq: int, confirmed: bool, detail: str) -> None:
        """From the PLC link (synchronous): command `seq` confirmed, or overdue."""
        s = self.states[zone]
        now = self._clock()
        if confirmed:
            if not s.output_fault or seq < self._fault_seq.get(zone, 0):
                return
            s = self.states[zone] = dataclasses.replace(s, output_fault=False)
            self._fault_seq.pop(zone, None)
            self._write(
                zone,
                ("output_fault",),
                _Audit(SYSTEM, "output confirmed", {"seq": seq, "detail": detail}, now),
            )
            self._publish(s, now)
            log.warning("interlock %s output confirmed again: %s", zone, detail)
            self._condition(
                zone, AlarmKind.OUTPUT_FAULT, False, f"command seq {seq} confirmed: {detail}"
            )
            return
        self._fault_seq[zone] = max(seq, self._fault_seq.get(zone, 0))
        self._write(
            zone,
            ("output_fault",),
            _Audit(SYSTEM, "output fault", {"seq": seq, "detail": detail}, now),
            values={"output_fault": True},
        )
        message = f"interlock output fault: {zone}: {detail}"
        log.error("A-grade: INTERLOCK OUTPUT FAULT %s: %s", zone, detail)
        if not s.output_fault:
            s = self.states[zone] = dataclasses.replace(s, output_fault=True)
            self._publish(s, now)
            self._condition(zone, AlarmKind.OUTPUT_FAULT, True, message)

    def _condition(self, zone: str, kind: AlarmKind, active: bool, message: str) -> None:
        """Hand a zone alarm to the alarm manager (it queues its own work)."""
        if self.alarms is not None:
            self.alarms.condition(
                source=f"zone:{zone}", kind=kind, active=active, tier=3, message=message
            )

    # ------------------------------------------------------------ bookkeeping

    def _zone(self, zone: str) -> ZoneState:
        if zone not in self.states:
            raise NotFound(f"no interlocked zone {zone!r}")
        return self.states[zone]

    async def _refuse(self, zone: str, refusal: Refusal, now: float) -> NoReturn:
        """Store the refusal's audit entry (waited for, behind every earlier change),
        then raise it."""
        a = refusal.actor
        log.warning(
            "interlock %s: %s by %s (%s) refused: %s", zone, refusal.action, a.name, a.role,
            refusal.why,
        )  # fmt: skip
        done = self._write(zone, (), _Audit.refused(refusal, now), wait=True)
        assert done is not None
        await done
        raise refusal.error()

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
        "latch_durable": int(s.latch_durable),
    }

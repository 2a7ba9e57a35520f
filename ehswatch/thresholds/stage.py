"""`EvaluatorStage`: the long-lived job that runs the evaluator (docs/ingest.md).

It drains the `ReadingQueue` — everything that has arrived, as one micro-batch — into
`Evaluator.process`, and ticks the evaluator once a `tick_s` (default 1 s) so that delays
mature and silent sensors go stale when nothing arrives. Every evaluation is logged
(one line per transition or fault) and handed to the listeners registered with
`listen()`; listeners must not block (storage, alarms and interlocks queue their own
work), since evaluation never waits on I/O.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from zoneinfo import ZoneInfo

import numpy as np

from ehswatch.component import Component, Job
from ehswatch.ingest.queue import ReadingQueue
from ehswatch.readings import ReadingBatch
from ehswatch.thresholds.describe import describe
from ehswatch.thresholds.evaluator import Evaluator
from ehswatch.thresholds.outcome import Evaluation
from ehswatch.thresholds.table import ThresholdTable

log = logging.getLogger("ehswatch.transitions")

SLICE_READINGS = 50_000  # the most readings evaluated in one turn of the event loop
LOG_MOST = 50  # the most transitions and fault changes logged one by one per evaluation

Listener = Callable[[ReadingBatch, Evaluation], None]
#: told, after a drained batch (all its slices) went to the listeners, the queue number
#: of the last reading it covered (`ReadingQueue.drained`)
Covered = Callable[[int], None]


@dataclass
class StageStats:
    readings: int = 0
    batches: int = 0
    ticks: int = 0
    transitions: int = 0
    fault_changes: int = 0
    late: int = 0
    future: int = 0
    too_old: int = 0
    slices: int = 0  # parts of batches too large to evaluate in one turn of the loop
    last_batch_ms: float = 0.0
    max_batch_ms: float = 0.0


class EvaluatorStage(Component):
    component_name = "evaluator-stage"

    def __init__(
        self,
        *,
        table: ThresholdTable,
        queue: ReadingQueue,
        names: Mapping[str, str] | None = None,
        timezone: str = "UTC",
        tick_s: float = 1.0,
        clock: Callable[[], float] = time.time,
        evaluator: Evaluator | None = None,
        listeners: Sequence[Listener] = (),
        covered: Sequence[Covered] = (),
    ) -> None:
        """`listeners` are handed each evaluation, in their order (the interlock first:
        it commands a trip before anything else starts its work); `covered` as in
        `on_covered`. `evaluator`: the one the listeners were built with (default: a
        new one over `table`)."""
        self.table = table
        self.queue = queue
        self.evaluator = evaluator if evaluator is not None else Evaluator(table, start_ts=clock())
        self.stats = StageStats()
        self._names = names or {}
        self._tz = ZoneInfo(timezone)
        self._tick_s = tick_s
        self.slice_readings = SLICE_READINGS
        self._clock = clock
        self._listeners: list[Listener] = list(listeners)
        self._covered: list[Covered] = list(covered)

    def listen(self, listener: Listener) -> None:
        """One more listener, after those given at construction (tests and tools; the
        service hands all of its own to the constructor)."""
        self._listeners.append(listener)

    def on_covered(self, callback: Covered) -> None:
        """`callback(n)` once every reading numbered up to `n` by the queue has been
        handed to the listeners (the storage sink uses it for its durable watermark)."""
        self._covered.append(callback)

    def jobs(self) -> Iterable[tuple[str, Job]]:
        yield "drain", self._run

    def evaluate(self, batch: ReadingBatch) -> Evaluation:
        t0 = time.perf_counter()
        ev = self.evaluator.process(batch, self._clock())
        ms = (time.perf_counter() - t0) * 1e3
        s = self.stats
        s.readings += len(batch)
        s.batches += 1
        s.last_batch_ms = ms
        s.max_batch_ms = max(s.max_batch_ms, ms)
        self._publish(batch, ev)
        return ev

    def tick(self, now: float) -> Evaluation:
        ev = self.evaluator.tick(now)
        self.stats.ticks += 1
        self._publish(ReadingBatch.empty(), ev)
        return ev

    def _publish(self, batch: ReadingBatch, ev: Evaluation) -> None:
        # Listeners first (the interlock is the first of them: a trip is commanded
        # before anything else is done with the evaluation), the log after.
        for listener in self._listeners:
            listener(batch, ev)
        self.stats.late += ev.late
        self.stats.future += ev.future
        self.stats.too_old += ev.too_old
        if ev.too_old:
            log.warning(
                "rejected %d readings stamped further back than their sensor's horizon",
                ev.too_old,
            )
        if ev.late:
            log.warning("%d readings older than their sensor's latest (taken raise-only)", ev.late)
        if ev.future:
            log.warning(
                "rejected %d readings stamped too far ahead of the service clock", ev.future
            )
        if ev:
            self.stats.transitions += len(ev.transitions)
            self.stats.fault_changes += len(ev.faults)
            for line in describe(ev, self.table.sensor_ids, self._names, self._tz, LOG_MOST):
                log.info("%s", line)

    async def evaluate_in_slices(self, batch: ReadingBatch) -> None:
        """Evaluate a batch however large without holding the event loop: sorted by
        (sensor, timestamp) once, then evaluated `slice_readings` at a time, letting the
        loop turn in between (heartbeats, the API, other collectors). Each sensor's
        readings stay in timestamp order across the slices, so the result is the one
        evaluation of the whole batch would give; trips are commanded slice by slice."""
        n = len(batch)
        if n <= self.slice_readings:
            self.evaluate(batch)
            return
        key = np.where(np.isfinite(batch.ts), batch.ts, np.inf)
        ordered = batch.take(np.lexsort((key, batch.sensor)))
        for start in range(0, n, self.slice_readings):
            self.evaluate(ordered.part(start, start + self.slice_readings))
            self.stats.slices += 1
            await asyncio.sleep(0)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_tick = loop.time() + self._tick_s
        while True:
            batch = await self.queue.drain(within_s=max(0.0, next_tick - loop.time()))
            if len(batch):
                covered = self.queue.drained
                await self.evaluate_in_slices(batch)
                for callback in self._covered:
                    callback(covered)
            if loop.time() >= next_tick:
                self.tick(self._clock())
                next_tick = max(next_tick + self._tick_s, loop.time())

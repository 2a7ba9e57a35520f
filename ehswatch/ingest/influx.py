"""`InfluxSink`: every reading, alarm event and interlock change into InfluxDB (v2 API).

Contract:
- `submit()` is called by the evaluator stage with each evaluated batch; it only appends
  the columns to a queue (and, when memory is over its bound, drops the oldest readings
  and counts them), so storage never slows evaluation and never blocks. The sink's own
  task encodes line protocol in bulk (`LineEncoder`), one chunk of `batch_size` points at
  a time, and POSTs it to the v2 write API (`InfluxWriter`) in a worker thread, every
  `flush_interval_ms` or as soon as `batch_size` points wait. The next chunk is encoded
  while the previous one is on the wire.
- A write that fails (server down, 5xx, timeout, wrong token) marks the server down and
  keeps the chunk: in the on-disk `Spool` if it takes it, else in memory. Until the
  server answers again every new chunk is kept the same way. Memory is bounded by
  `memory_max_points` (pending readings included): over it, the oldest pending readings
  go to the spool if it takes them (a burst bigger than the bound, such as a broker's
  backlog after a restart, is kept even while the server is up); only when the spool
  refuses are the oldest readings in memory dropped, alarm and interlock events last,
  each point counted by reason in `stats.dropped_by_reason`.
- The replay task probes the server on its own while it is down (a write of zero points,
  backing off from 0.5 s to 5 s) — whether or not the spool works — and as soon as it
  answers, live data is written directly again and the backlog is replayed: the spool
  oldest first (if it can be read), then what memory holds, oldest first.
- A filesystem error on the spool (disk full, read-only, permission denied) is caught
  where it happens and becomes state (`stats.spool_ok`, `stats.spool_error`, counted in
  `stats.spool_errors`); the spool is tried again every `spool_retry_s` (at once when a
  replayed segment frees room). No job of the sink dies of it.
- A chunk the server refuses as malformed (400, 413, 422) is set aside in `rejected/`
  with the reason, logged, and not retried. Any other refusal (401/403: wrong token,
  404: no such bucket) keeps the data and retries: a configuration mistake must never
  throw telemetry away.
- On exit, whatever is still pending, in flight or in memory is put in the spool: the
  next start sends it. What the spool cannot take then is written directly if the server
  is up, else counted as dropped (`spool_full` for a full disk, `spool_unwritable`).
- Durable watermark (for acknowledge-after-durable, see docs/ingest.md): the stage tells
  the sink with `mark(n)`, after a drained batch went to every listener, that every
  reading numbered up to `n` by the `ReadingQueue` has been submitted. The sink calls its
  `on_durable` callbacks with the highest such `n` all of whose readings are safe from a
  process crash: written, in the spool (a returned `write()`; no fsync), or dropped and
  counted by the rules above (rejected by the evaluator, memory full, unencodable,
  refused as malformed). While nothing can be made durable (server down and spool
  failing) readings kept in memory do not hold the watermark back: they are counted in
  `stats.acked_not_durable` instead, so that the broker never stops delivering. While
  marks wait, pending readings are flushed within `ack_flush_s` (not `flush_interval`).
- `stats` counts points received, written, spooled, replayed, dropped (by reason),
  rejected; the spool's size and state; what memory holds; the last error.
  `status()` is the short summary for `/health` and the board.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlencode

import numpy as np
import urllib3
from numpy.typing import NDArray

from ehswatch.component import LOOP_TICKER, Backoff, Component, Job, Ticker, wait_set
from ehswatch.config import InfluxSettings, PlantConfig
from ehswatch.ingest.lineprotocol import LineEncoder, count_lines
from ehswatch.ingest.spool import EVENTS, READINGS, Segment, Spool, describe
from ehswatch.readings import ReadingBatch
from ehswatch.thresholds.outcome import Evaluation

log = logging.getLogger(__name__)
BACKOFF_S = (0.5, 5.0)
SPOOL_RETRY_S = 2.0
MEMORY_MAX_POINTS = 200_000
EXIT_WRITE_S = 5.0  # at exit, how long direct writes of what the spool refused may take
REFUSED_DATA = (400, 413, 422)  # malformed line protocol, body too large, unprocessable

#: reasons a point can be dropped for (keys of `SinkStats.dropped_by_reason`)
SPOOL_FULL = "spool_full"  # the spool's bound (oldest readings), or its disk full at exit
SPOOL_UNWRITABLE = "spool_unwritable"  # at exit: read-only, permission denied, …
SPOOL_CORRUPT = "spool_corrupt"  # damaged spool data found at start or before sending
MEMORY_FULL = "memory_full"  # server and spool both unavailable, memory over its bound
UNENCODABLE = "unencodable"  # a batch the encoder failed on (a bug: logged with traceback)
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


class WriteRejected(Exception):
    """The server refused the data itself (4xx): sending it again will not help."""


class WriteFailed(Exception):
    """The server could not be reached or failed (5xx, timeout): try again later."""


class InfluxWriter:
    """The InfluxDB v2 write API (`POST /api/v2/write`, line protocol, nanoseconds) over
    one pool of keep-alive connections, its errors translated. Thread-safe.

    Plain HTTP through urllib3, not a client library: the sink encodes line protocol
    itself, so all a write needs is one POST, and a client library would cost the
    control part tens of MB and a layer of objects per write."""

    def __init__(self, settings: InfluxSettings, timeout_ms: int = 10_000) -> None:
        base = settings.url.rstrip("/")
        query = urlencode({"org": settings.org, "bucket": settings.bucket, "precision": "ns"})
        self._url = f"{base}/api/v2/write?{query}"
        self._headers = {
            "Authorization": f"Token {settings.token}",
            "Content-Type": "text/plain; charset=utf-8",
            "Accept": "application/json",
        }
        self._http = urllib3.PoolManager(
            num_pools=1,
            maxsize=4,  # the sink has at most a few writes on the wire at once
            timeout=urllib3.Timeout(total=timeout_ms / 1000),
            retries=False,  # the sink retries, from its spool
        )

    def write(self, chunk: bytes) -> None:
        """Write line protocol; an empty chunk is a probe (does the server take writes?)."""
        try:
            response = self._http.request(
                "POST", self._url, body=chunk, headers=self._headers, preload_content=True
            )
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise WriteFailed(f"{type(exc).__name__}: {exc}") from None
        status = response.status
        if 200 <= status < 300:
            return
        text = response.data.decode("utf-8", "replace")
        detail = f"HTTP {status} {response.reason or ''}: {text[:300]}"
        # Only a refusal of the data itself sets it aside. A wrong token (401/403) or
        # bucket (404) is a configuration fault: keep the data and retry until fixed.
        if status in REFUSED_DATA:
            raise WriteRejected(detail)
        raise WriteFailed(detail)

    def close(self) -> None:
        self._http.clear()


@dataclass
class SinkStats:
    points_received: int = 0  # readings and event lines handed to the sink
    points_written: int = 0  # written directly
    points_spooled: int = 0  # put in the spool (counted again if put there twice)
    points_replayed: int = 0  # written later, from the spool or from memory
    points_rejected: int = 0  # refused by the server as malformed, set aside
    points_dropped: int = 0  # sum of dropped_by_reason
    dropped_by_reason: dict[str, int] = field(default_factory=dict)
    events_dropped: int = 0  # of those, alarm and interlock event lines
    memory_points: int = 0  # not yet written: pending, on the wire, kept while storage is away
    spool_points: int = 0
    spool_bytes: int = 0
    spool_segments: int = 0
    spool_ok: bool = True
    spool_error: str = ""
    spool_errors: int = 0
    spool_quarantined: int = 0  # damaged spool files or parts found
    server_up: bool = True
    probes: int = 0
    last_error: str = ""
    acked_not_durable: int = 0  # readings let past the watermark while nothing was durable
    durable_through: int = 0  # the watermark: queue number of the last reading safe


@dataclass(slots=True)
class _Chunk:
    kind: str
    data: bytes
    points: int
    lo: int = -1  # readings: the sink's position of the first (see `_advance`)
    forgiven: bool = False  # let past the watermark while nothing was durable


_Columns = tuple[
    NDArray[np.int32], NDArray[np.float64], NDArray[np.int8], NDArray[np.uint8], NDArray[np.float64]
]


class InfluxSink(Component):
    component_name = "influx-sink"

    def __init__(
        self,
        *,
        writer: Any,  # InfluxWriter, or anything with write(bytes) and close()
        encoder: LineEncoder,
        spool: Spool,
        batch_size: int = 5000,
        flush_interval_s: float = 1.0,
        backoff_s: tuple[float, float] = BACKOFF_S,
        memory_max_points: int = MEMORY_MAX_POINTS,
        spool_retry_s: float = SPOOL_RETRY_S,
        max_inflight: int = 2,
        ack_flush_s: float = 0.1,
        clock: Callable[[], float] = time.time,
        ticker: Ticker = LOOP_TICKER,
    ) -> None:
        """`clock` stamps what the sink writes of its own (wall time); `ticker` keeps its
        time: the flush interval, retry delays, when to try the spool again (the event
        loop's; tests move a hand-held one)."""
        self.writer = writer
        self.encoder = encoder
        self.spool = spool
        self.stats = SinkStats()
        self.batch_size = batch_size
        # At least two batches: the bound must never bite while the server keeps up.
        self.memory_max_points = max(memory_max_points, 2 * batch_size)
        self._interval = flush_interval_s
        self._backoff = backoff_s
        self._spool_retry_s = spool_retry_s
        self._max_inflight = max(1, max_inflight)
        self._clock = clock
        self._ticker = ticker
        self._pending: deque[_Columns] = deque()
        self._pending_points = 0
        self._pending_events: list[bytes] = []
        self._pending_event_points = 0
        self._memory: deque[_Chunk] = deque()  # kept while server and spool are away
        self._memory_points = 0
        self._held: dict[int, _Chunk] = {}  # taken out of the queues, not yet settled
        self._held_next = 0
        self._dropped: dict[str, int] = {}
        self._append_retry_at = 0.0
        self._read_retry_at = 0.0
        self._last_drop_log = -1e9
        self._wake = asyncio.Event()
        self._backlog = asyncio.Event()
        # The durable watermark: `_submitted` readings were ever queued here (positions
        # 0.._submitted-1); `_marks` pairs a position with the queue number it covers.
        self.on_durable: list[Callable[[int], None]] = []
        self._ack_flush_s = ack_flush_s
        self._ack_timer: asyncio.TimerHandle | None = None
        self._submitted = 0
        self._marks: deque[tuple[int, int]] = deque()
        self._refresh()

    @classmethod
    def from_config(
        cls,
        config: PlantConfig,
        sensor_ids: Iterable[str],
        *,
        clock: Callable[[], float] = time.time,
    ) -> Self:
        settings = config.influxdb
        assert settings is not None
        by_id = {s.id: s for s in config.sensors}
        encoder = LineEncoder(
            config.site.id, [(sid, by_id[sid].zone, by_id[sid].type) for sid in sensor_ids]
        )
        return cls(
            writer=InfluxWriter(settings),
            encoder=encoder,
            spool=Spool(settings.spool_dir, settings.spool_max_mb * 1024 * 1024),
            batch_size=settings.batch_size,
            flush_interval_s=settings.flush_interval_ms / 1000,
            memory_max_points=settings.memory_max_points,
            clock=clock,
        )

    # ------------------------------------------------------------ fed by others (cheap)

    def submit(self, batch: ReadingBatch, evaluation: Evaluation) -> None:
        """An evaluated batch: its readings (with their tiers) and its alarm events.
        Readings the evaluator rejected (stamped too far ahead) are not stored. Never
        blocks; over the memory bound the oldest readings held are dropped (counted)."""
        tiers = evaluation.reading_tier
        if len(batch) and evaluation.accepted.size and not evaluation.accepted.all():
            batch, tiers = batch.take(evaluation.accepted), tiers[evaluation.accepted]
        n = len(batch)
        if n:
            self._pending.append((batch.sensor, batch.value, tiers, batch.quality, batch.ts))
            self._pending_points += n
            self._submitted += n
            self.stats.points_received += n
        if evaluation:
            self._add_events(self.encoder.events(evaluation))
        if self._held_points() > self.memory_max_points:
            self._shed()
        self.stats.memory_points = self._unwritten_points()
        if self._pending_points >= self.batch_size or self._pending_events:
            self._wake.set()

    def mark(self, covered: int) -> None:
        """Every reading numbered up to `covered` by the queue has been submitted (the
        stage calls it after each drained batch). `on_durable` hears once they are safe."""
        self._marks.append((self._submitted, covered))
        self._advance()
        if self._marks and self._ack_timer is None and self._pending_points:
            loop = asyncio.get_running_loop()
            self._ack_timer = loop.call_later(self._ack_flush_s, self._ack_due)

    def _ack_due(self) -> None:
        self._ack_timer = None
        self._wake.set()

    def _advance(self) -> None:
        """Move the durable watermark past every mark whose readings are all safe."""
        if not self._marks:
            return
        nothing_durable = not self.stats.server_up and not self.spool.ok
        floor = self._submitted - self._pending_points  # the oldest reading pending
        for chunk in self._memory:
            if chunk.kind == READINGS and not chunk.forgiven:
                if nothing_durable:
                    chunk.forgiven = True
                    self.stats.acked_not_durable += chunk.points
                else:
                    floor = min(floor, chunk.lo)
        for chunk in self._held.values():
            if chunk.kind == READINGS and not chunk.forgiven:
                floor = min(floor, chunk.lo)
        through = self.stats.durable_through
        while self._marks and self._marks[0][0] <= floor:
            through = max(through, self._marks.popleft()[1])
        if through != self.stats.durable_through:
            self.stats.durable_through = through
            for callback in self.on_durable:
                callback(through)

    def submit_lines(self, chunk: bytes) -> None:
        """Event lines from other components (interlock changes, alarm states): the last
        to be dropped."""
        self._add_events(chunk)
        if self._held_points() > self.memory_max_points:
            self._shed()
        self.stats.memory_points = self._unwritten_points()
        self._wake.set()

    def _add_events(self, chunk: bytes) -> None:
        if not chunk:
            return
        if not chunk.endswith(b"\n"):
            chunk += b"\n"
        points = count_lines(chunk)
        self._pending_events.append(chunk)
        self._pending_event_points += points
        self.stats.points_received += points

    # ------------------------------------------------------------ status

    @property
    def pending_points(self) -> int:
        """Readings and event lines queued for the next flush (not yet taken by one)."""
        return self._pending_points + self._pending_event_points

    def status(self) -> dict[str, Any]:
        """Storage status for `/health` and the board (cheap; call it any time).

        - `server_up` (bool): the last write or probe reached InfluxDB and was taken.
        - `spooling` (int): points waiting in the on-disk spool; `spool_bytes` its size.
        - `memory_points` (int): points in memory not yet written: pending, on the wire
          (a write in flight), and what is kept while server and spool are both
          unavailable (all but those on the wire bounded by `memory_max_points`).
        - `dropped_by_reason` (dict str → int): points lost since start, by reason:
          `spool_full`, `spool_unwritable`, `spool_corrupt`, `memory_full`, `unencodable`.
          Only reasons that happened are present. `points_dropped` is their sum.
        - `spool_ok` (bool), `spool_error` (str): whether the last spool operation worked;
          if not, which one failed and why (e.g. "append: ENOSPC No space left on device").
        - `spool_quarantined` (int): damaged spool files or parts set aside since start.
        - `last_error` (str): the last write error.
        - `acked_not_durable` (int): MQTT readings acknowledged to the broker while
          neither the server nor the spool could take them (kept in memory only: a
          crash would lose them).
        - `degraded` (bool): True while the server is down, the spool is failing, or
          points are kept in memory because neither takes them: while it holds, telemetry
          is at risk. Drops alone do not make it degraded once storage works again (they
          stay counted in `dropped_by_reason`).

        The keys are stable; values are plain JSON types. Nothing here blocks or does I/O.
        """
        s = self.stats
        self._refresh()
        return {
            "server_up": s.server_up,
            "spooling": s.spool_points,
            "spool_bytes": s.spool_bytes,
            "memory_points": s.memory_points,
            "dropped_by_reason": dict(s.dropped_by_reason),
            "points_dropped": s.points_dropped,
            "spool_ok": s.spool_ok,
            "spool_error": s.spool_error,
            "spool_quarantined": s.spool_quarantined,
            "last_error": s.last_error,
            "acked_not_durable": s.acked_not_durable,
            "degraded": not s.server_up or not s.spool_ok or self._memory_points > 0,
        }

    # ------------------------------------------------------------ the sink's own tasks

    def jobs(self) -> Iterable[tuple[str, Job]]:
        yield "flush", self._flush_loop
        yield "replay", self._replay_loop

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            await super().__aexit__(et, e, tb)
        finally:
            try:
                await self._save_all()
            finally:
                self.writer.close()

    async def _flush_loop(self) -> None:
        while True:
            await self._ticker.wait(self._wake, self._interval)
            await self._flush()

    async def _flush(self) -> None:
        """Write what is pending, chunk by chunk; the next chunk is encoded while the
        previous one is on the wire."""
        loop = asyncio.get_running_loop()
        inflight: deque[tuple[int, asyncio.Future[None]]] = deque()
        for chunk in self._chunks(self._pending_points):
            token = self._hold(chunk)
            while len(inflight) >= self._max_inflight:
                await self._settle(*inflight.popleft())
            if not self.stats.server_up:
                self._release(token)
                self._stash(chunk)
                continue
            inflight.append((token, loop.run_in_executor(None, self.writer.write, chunk.data)))
        while inflight:
            await self._settle(*inflight.popleft())
        self.stats.memory_points = self._unwritten_points()
        self._advance()

    async def _settle(self, token: int, future: asyncio.Future[None]) -> None:
        chunk = self._held[token]
        try:
            await future
        except WriteRejected as exc:
            self._release(token)
            self._reject(chunk, str(exc))
        except Exception as exc:  # WriteFailed, or anything a writer may raise
            self._release(token)
            self._server_down(_reason(exc))
            self._stash(chunk)
        else:
            self._release(token)
            self.stats.points_written += chunk.points
            self._advance()

    def _chunks(self, budget: int) -> Iterator[_Chunk]:
        """Pending data as line-protocol chunks of `batch_size` points, events first,
        encoded one at a time as they are asked for; at most `budget` readings."""
        if self._pending_events:
            data, points = b"".join(self._pending_events), self._pending_event_points
            self._pending_events, self._pending_event_points = [], 0
            yield _Chunk(EVENTS, data, points)
        yield from self._reading_chunks(budget)

    def _reading_chunks(self, budget: int) -> Iterator[_Chunk]:
        """The oldest pending readings as chunks of `batch_size`, at most `budget`."""
        while budget > 0 and self._pending:
            group: list[_Columns] = []
            size = 0
            while self._pending and size < self.batch_size:
                cols = self._pending.popleft()
                n = len(cols[0])
                room = self.batch_size - size
                if n > room:  # split a big batch: chunks of batch_size on the wire
                    self._pending.appendleft(tuple(c[room:] for c in cols))  # type: ignore[arg-type]
                    cols = tuple(c[:room] for c in cols)  # type: ignore[assignment]
                    n = room
                group.append(cols)
                size += n
            lo = self._submitted - self._pending_points
            self._pending_points -= size
            budget -= size
            try:
                data = self._encode(group)
            except Exception:
                log.exception("could not encode %d readings for InfluxDB; dropped", size)
                self._drop(UNENCODABLE, _Chunk(READINGS, b"", size))
                continue
            yield _Chunk(READINGS, data, size, lo)

    def _encode(self, group: list[_Columns]) -> bytes:
        if len(group) == 1:
            return self.encoder.readings(*group[0])
        sensor, value, tier, quality, ts = (np.concatenate(c) for c in zip(*group, strict=True))
        return self.encoder.readings(sensor, value, tier, quality, ts)

    async def _replay_loop(self) -> None:
        """Probe the server while it is down; replay the backlog while it is up."""
        loop = asyncio.get_running_loop()
        retry = Backoff(first=self._backoff[0], longest=self._backoff[1]).retrying()
        while True:
            if not self.stats.server_up:
                await self._ticker.wait(asyncio.Event(), retry.failed())  # nothing wakes it
                self._check_spool()
                self._to_spool()  # the disk may have room again
                if await self._probe(loop):
                    self._server_back()
                    retry.succeeded()
                continue
            self._check_spool()
            item = self._next_backlog()
            if item is None:
                self._backlog.clear()
                if (timeout := self._backlog_timeout()) is None:
                    await wait_set(self._backlog, None)
                else:
                    await self._ticker.wait(self._backlog, timeout)
                continue
            segment, chunk, token = item
            try:
                await loop.run_in_executor(None, self.writer.write, chunk.data)
            except WriteRejected as exc:
                self._release(token)
                if segment is not None:
                    where = self.spool.set_aside(segment, str(exc))
                    self.stats.points_rejected += chunk.points
                    self.stats.last_error = str(exc)
                    log.error(
                        "InfluxDB refused %d spooled points (%s); set aside in %s",
                        chunk.points,
                        exc,
                        where,
                    )
                else:
                    self._reject(chunk, str(exc))
            except Exception as exc:  # WriteFailed, or anything a writer may raise
                self._release(token)
                self._server_down(_reason(exc))
                if segment is None:  # back where it was, at the head of memory
                    self._memory.appendleft(chunk)
                    self._memory_points += chunk.points
            else:
                self._release(token)
                self.stats.points_replayed += chunk.points
                if segment is not None and self.spool.remove(segment):
                    self._append_retry_at = 0.0  # room on the disk again
            self._refresh()

    async def _probe(self, loop: asyncio.AbstractEventLoop) -> bool:
        """A write of zero points: does the server take writes again?"""
        self.stats.probes += 1
        try:
            await loop.run_in_executor(None, self.writer.write, b"")
        except WriteRejected:
            return True  # it answered; the refusal is about the (empty) data
        except Exception as exc:
            self.stats.last_error = _reason(exc)
            return False
        return True

    def _next_backlog(self) -> tuple[Segment | None, _Chunk, int] | None:
        """The oldest thing waiting: a spool segment (if the spool can be read), else the
        oldest chunk in memory, held until settled (a segment stays in the spool)."""
        while len(self.spool) and self._ticker.now() >= self._read_retry_at:
            segment = self.spool.oldest()
            assert segment is not None
            try:
                data = self.spool.load(segment)
            except OSError:
                self._read_retry_at = self._ticker.now() + self._spool_retry_s
                self._refresh()
                break
            if data:
                return segment, _Chunk(segment.kind, data, count_lines(data)), -1
            self._refresh()  # nothing worth sending was left in it
        if self._memory:
            chunk = self._memory.popleft()
            self._memory_points -= chunk.points
            return None, chunk, self._hold(chunk)
        return None

    def _backlog_timeout(self) -> float | None:
        now = self._ticker.now()
        waits = []
        if len(self.spool):  # segments the spool could not read: try again later
            waits.append(self._read_retry_at - now)
        if not self.spool.ok:  # see whether the spool works again
            waits.append(self._append_retry_at - now)
        return max(min(waits), 0.01) if waits else None

    def _check_spool(self) -> None:
        """While the spool is failing, try it again every `spool_retry_s`."""
        if self.spool.ok or self._ticker.now() < self._append_retry_at:
            return
        if not self.spool.check():
            self._append_retry_at = self._ticker.now() + self._spool_retry_s
        self._refresh()

    # ------------------------------------------------------------ keeping and dropping

    def _stash(self, chunk: _Chunk) -> None:
        """Keep a chunk the server did not take: in the spool if it can, else memory."""
        self._memory.append(chunk)
        self._memory_points += chunk.points
        self._to_spool()
        if self._held_points() > self.memory_max_points:
            self._shed()
        self._backlog.set()
        self._refresh()

    def _to_spool(self) -> None:
        """Move what memory keeps to the spool, oldest first, while the spool takes it
        (memory only ever holds data newer than the spool's)."""
        if not self._memory or self._ticker.now() < self._append_retry_at:
            return
        while self._memory:
            chunk = self._memory[0]
            try:
                self.spool.append(chunk.kind, chunk.data, chunk.points)
            except OSError:
                self._append_retry_at = self._ticker.now() + self._spool_retry_s
                break
            self._memory.popleft()
            self._memory_points -= chunk.points
            self.stats.points_spooled += chunk.points
        self._refresh()

    def _held_points(self) -> int:
        """What the memory bound counts: pending, and kept while storage is away."""
        return self._pending_points + self._pending_event_points + self._memory_points

    def _unwritten_points(self) -> int:
        """What `memory_points` reports: everything in memory not yet written, the chunks
        on the wire included (a write in flight may still fail and be kept)."""
        return self._held_points() + sum(c.points for c in self._held.values())

    def _shed(self) -> None:
        """Over the memory bound: spill the oldest pending readings to the spool if it
        takes them (a burst the server cannot take at once, e.g. a broker's backlog
        after a restart, is kept, not dropped); what is still over is dropped: the oldest
        readings kept, then the oldest pending readings, and only then the oldest events."""
        self._spill()
        over = self._held_points() - self.memory_max_points
        memory = self._memory
        i = 0
        while over > 0 and i < len(memory):
            if memory[i].kind == READINGS:
                chunk = memory[i]
                del memory[i]
                self._memory_points -= chunk.points
                self._drop(MEMORY_FULL, chunk)
                over -= chunk.points
            else:
                i += 1
        while over > 0 and self._pending:
            cols = self._pending.popleft()
            n = len(cols[0])
            self._pending_points -= n
            self._drop(MEMORY_FULL, _Chunk(READINGS, b"", n))
            over -= n
        while over > 0 and memory:
            chunk = memory.popleft()
            self._memory_points -= chunk.points
            self._drop(MEMORY_FULL, chunk)
            over -= chunk.points
        while over > 0 and self._pending_events:
            data = self._pending_events.pop(0)
            n = count_lines(data)
            self._pending_event_points -= n
            self._drop(MEMORY_FULL, _Chunk(EVENTS, data, n))
            over -= n

    def _spill(self) -> None:
        """Move the oldest pending readings over the bound into the spool, encoded in
        chunks of `batch_size` (the cost a write would have had anyway). Only while memory
        keeps nothing the spool refused: memory only ever holds data newer than the
        spool's, and a refusing spool leaves the rest to `_shed`."""
        self._to_spool()
        over = self._held_points() - self.memory_max_points
        if over <= 0 or self._memory or not self.spool.ok:
            return
        for chunk in self._reading_chunks(over):
            self._memory.append(chunk)
            self._memory_points += chunk.points
        self._to_spool()
        self._backlog.set()

    def _drop(self, reason: str, chunk: _Chunk) -> None:
        self._dropped[reason] = self._dropped.get(reason, 0) + chunk.points
        if chunk.kind == EVENTS:
            self.stats.events_dropped += chunk.points
        self._refresh()
        now = self._ticker.now()
        if now - self._last_drop_log >= 10.0 or chunk.kind == EVENTS:
            self._last_drop_log = now
            log.error(
                "telemetry dropped (%s): %d %s now; %d points dropped since start, by reason %s",
                reason,
                chunk.points,
                "event lines" if chunk.kind == EVENTS else "readings",
                self.stats.points_dropped,
                self.stats.dropped_by_reason,
            )

    def _hold(self, chunk: _Chunk) -> int:
        token = self._held_next
        self._held_next += 1
        self._held[token] = chunk
        return token

    def _release(self, token: int) -> None:
        self._held.pop(token, None)

    async def _save_all(self) -> None:
        """At exit: everything not yet written into the spool; what it refuses is written
        directly if the server is up, else counted as dropped."""
        chunks = [*self._memory, *self._held.values(), *self._chunks(self._pending_points)]
        self._memory.clear()
        self._memory_points = 0
        self._held.clear()
        refused: list[tuple[_Chunk, OSError]] = []
        for chunk in chunks:
            try:
                self.spool.append(chunk.kind, chunk.data, chunk.points)
            except OSError as spool_exc:
                refused.append((chunk, spool_exc))
            else:
                self.stats.points_spooled += chunk.points
        deadline = asyncio.get_running_loop().time() + EXIT_WRITE_S
        for chunk, error in refused:
            if self.stats.server_up:
                try:
                    async with asyncio.timeout_at(deadline):
                        await asyncio.to_thread(self.writer.write, chunk.data)
                except Exception as write_exc:  # counted as dropped just below
                    self._server_down(_reason(write_exc))
                else:
                    self.stats.points_written += chunk.points
                    continue
            reason = SPOOL_FULL if error.errno in _DISK_FULL else SPOOL_UNWRITABLE
            self._drop(reason, chunk)
        self._refresh()

    # ------------------------------------------------------------ bookkeeping

    def _reject(self, chunk: _Chunk, reason: str) -> None:
        where = self.spool.reject(chunk.data, reason)
        self.stats.points_rejected += chunk.points
        self.stats.last_error = reason
        log.error(
            "InfluxDB refused %d points: %s (%s)",
            chunk.points,
            reason,
            f"set aside in {where}" if where else "could not be set aside: " + self.spool.error,
        )
        self._refresh()

    def _server_down(self, reason: str) -> None:
        if self.stats.server_up:
            log.warning(
                "InfluxDB write failed (%s): keeping telemetry in %s until it answers",
                reason,
                self.spool.root,
            )
        self.stats.server_up = False
        self.stats.last_error = reason
        self._backlog.set()

    def _server_back(self) -> None:
        log.info(
            "InfluxDB answers again: writing directly; replaying %d spooled and %d kept points",
            self.spool.points,
            self._memory_points,
        )
        self.stats.server_up = True
        self._backlog.set()
        self._wake.set()

    def _refresh(self) -> None:
        s, spool = self.stats, self.spool
        s.spool_bytes = spool.bytes
        s.spool_segments = len(spool)
        s.spool_points = spool.points
        s.spool_ok = spool.ok
        s.spool_error = spool.error
        s.spool_errors = spool.errors
        s.spool_quarantined = spool.quarantined
        s.memory_points = self._unwritten_points()
        dropped = dict(self._dropped)
        for reason, n in spool.dropped.items():
            dropped[reason] = dropped.get(reason, 0) + n
        s.dropped_by_reason = {r: n for r, n in sorted(dropped.items()) if n}
        s.points_dropped = sum(dropped.values())
        self._advance()


def _reason(exc: BaseException) -> str:
    if isinstance(exc, WriteFailed):
        return str(exc)
    if isinstance(exc, OSError):
        return describe(exc)
    return f"{type(exc).__name__}: {exc}"

"""`InfluxSink`: every reading, alarm event and interlock change into InfluxDB (v2 API).

Contract:
- `submit()` is called by the evaluator stage with each evaluated batch; it only appends
  the columns to a list, so storage never slows evaluation. The sink's own task encodes
  line protocol in bulk (`LineEncoder`) and writes it through influxdb-client's
  synchronous write API in a worker thread, every `flush_interval_ms` or as soon as
  `batch_size` points wait.
- A write that fails (server down, 5xx, timeout) goes to the on-disk `Spool` and the
  sink marks the server down: further chunks go straight to the spool while a replay task
  probes the server with the oldest segment, backing off from 0.5 s to 30 s. Once the
  server answers, the spool is replayed oldest first while live data is written directly
  again. A chunk the server refuses as malformed (400, 413, 422) is set aside in
  `rejected/` with the reason, logged, and not retried. Any other refusal (401/403: wrong
  token, 404: no such bucket) keeps the data in the spool and retries: a configuration
  mistake must never throw telemetry away.
- On exit, whatever is still pending is put in the spool: the next start sends it.
- `stats` counts points written, spooled, replayed, dropped (spool full), rejected; the
  spool's size; the last error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import numpy as np
import urllib3
from influxdb_client.client.influxdb_client import InfluxDBClient
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.rest import ApiException
from numpy.typing import NDArray

from ehswatch.component import Component, Job
from ehswatch.config import InfluxSettings, PlantConfig
from ehswatch.ingest.lineprotocol import LineEncoder, count_lines
from ehswatch.ingest.spool import EVENTS, READINGS, Spool
from ehswatch.readings import ReadingBatch
from ehswatch.thresholds.outcome import Evaluation

log = logging.getLogger(__name__)
BACKOFF_S = (0.5, 30.0)
REFUSED_DATA = (400, 413, 422)  # malformed line protocol, body too large, unprocessable


class WriteRejected(Exception):
    """The server refused the data itself (4xx): sending it again will not help."""


class WriteFailed(Exception):
    """The server could not be reached or failed (5xx, timeout): try again later."""


class InfluxWriter:
    """influxdb-client's synchronous write API with its errors translated. Thread-safe."""

    def __init__(self, settings: InfluxSettings, timeout_ms: int = 10_000) -> None:
        self._settings = settings
        self._client = InfluxDBClient(
            url=settings.url,
            token=settings.token,
            org=settings.org,
            timeout=timeout_ms,
            retries=False,  # the sink retries, from its spool
        )
        self._api = self._client.write_api(write_options=SYNCHRONOUS)

    def write(self, chunk: bytes) -> None:
        try:
            self._api.write(
                bucket=self._settings.bucket,
                org=self._settings.org,
                record=chunk,
                write_precision="ns",  # type: ignore[arg-type]  # the API takes the string too
            )
        except ApiException as exc:
            status = int(exc.status or 0)
            body = exc.body or b""
            text = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body)
            detail = f"HTTP {status} {exc.reason}: {text[:300]}"
            # Only a refusal of the data itself sets it aside. A wrong token (401/403) or
            # bucket (404) is a configuration fault: keep the data and retry until fixed.
            if status in REFUSED_DATA:
                raise WriteRejected(detail) from None
            raise WriteFailed(detail) from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise WriteFailed(f"{type(exc).__name__}: {exc}") from None

    def close(self) -> None:
        self._client.close()  # type: ignore[no-untyped-call]


@dataclass
class SinkStats:
    points_written: int = 0
    points_spooled: int = 0
    points_replayed: int = 0
    points_rejected: int = 0
    points_dropped: int = 0
    spool_bytes: int = 0
    spool_segments: int = 0
    server_up: bool = True
    last_error: str = ""


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
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.writer = writer
        self.encoder = encoder
        self.spool = spool
        self.stats = SinkStats()
        self.batch_size = batch_size
        self._interval = flush_interval_s
        self._backoff = backoff_s
        self._clock = clock
        self._pending: list[tuple[ReadingBatch, NDArray[np.int8]]] = []
        self._pending_points = 0
        self._pending_events: list[bytes] = []
        self._wake = asyncio.Event()
        self._spooled = asyncio.Event()
        self._refresh_spool_stats()
        if len(spool):
            self._spooled.set()

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
            clock=clock,
        )

    # ------------------------------------------------------------ fed by others (cheap)

    def submit(self, batch: ReadingBatch, evaluation: Evaluation) -> None:
        """An evaluated batch: its readings (with their tiers) and its alarm events.
        Readings the evaluator rejected (stamped too far ahead) are not stored."""
        tiers = evaluation.reading_tier
        if len(batch) and evaluation.accepted.size and not evaluation.accepted.all():
            batch, tiers = batch.take(evaluation.accepted), tiers[evaluation.accepted]
        if len(batch):
            self._pending.append((batch, tiers))
            self._pending_points += len(batch)
        if evaluation:
            self._pending_events.append(self.encoder.events(evaluation))
        if self._pending_points >= self.batch_size or self._pending_events:
            self._wake.set()

    def submit_lines(self, chunk: bytes) -> None:
        """Event lines from other components (interlock changes): never dropped."""
        self._pending_events.append(chunk)
        self._wake.set()

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
            for kind, chunk in self._take_chunks():
                self._spool(kind, chunk)
            self.writer.close()

    async def _flush_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval)
            self._wake.clear()
            for kind, chunk in self._take_chunks():
                await self._deliver(kind, chunk)

    def _take_chunks(self) -> list[tuple[str, bytes]]:
        """Pending data as line-protocol chunks of about `batch_size` points, events first."""
        chunks = [(EVENTS, b"".join(self._pending_events))] if self._pending_events else []
        self._pending_events = []
        pending, self._pending, self._pending_points = self._pending, [], 0
        group: list[tuple[ReadingBatch, NDArray[np.int8]]] = []
        size = 0
        for item in pending:
            group.append(item)
            size += len(item[0])
            if size >= self.batch_size:
                chunks.append((READINGS, self._encode(group)))
                group, size = [], 0
        if group:
            chunks.append((READINGS, self._encode(group)))
        return chunks

    def _encode(self, group: list[tuple[ReadingBatch, NDArray[np.int8]]]) -> bytes:
        b = ReadingBatch.concat([g for g, _ in group])
        tiers = np.concatenate([t for _, t in group])
        return self.encoder.readings(b.sensor, b.value, tiers, b.quality, b.ts)

    async def _deliver(self, kind: str, chunk: bytes) -> None:
        points = count_lines(chunk)
        if not self.stats.server_up:
            self._spool(kind, chunk)
            return
        try:
            await asyncio.to_thread(self.writer.write, chunk)
        except WriteRejected as exc:
            self._reject(chunk, points, str(exc))
        except WriteFailed as exc:
            self._server_down(str(exc))
            self._spool(kind, chunk)
        else:
            self.stats.points_written += points

    async def _replay_loop(self) -> None:
        delay = self._backoff[0]
        while True:
            segment = self.spool.oldest()
            if segment is None:
                self._spooled.clear()
                await self._spooled.wait()
                continue
            chunk = self.spool.read(segment)
            points = count_lines(chunk)
            try:
                await asyncio.to_thread(self.writer.write, chunk)
            except WriteRejected as exc:
                where = self.spool.set_aside(segment, str(exc))
                self.stats.points_rejected += points
                log.error(
                    "InfluxDB refused %d spooled points (%s); set aside in %s", points, exc, where
                )
            except WriteFailed as exc:
                self._server_down(str(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._backoff[1])
                continue
            else:
                self.spool.remove(segment)
                self.stats.points_replayed += points
                if not self.stats.server_up:
                    log.info(
                        "InfluxDB answers again; replaying the spool (%d segments left)",
                        len(self.spool),
                    )
                self.stats.server_up = True
            delay = self._backoff[0]
            self._refresh_spool_stats()

    # ------------------------------------------------------------ bookkeeping

    def _spool(self, kind: str, chunk: bytes) -> None:
        self.spool.append(kind, chunk)
        self.stats.points_spooled += count_lines(chunk)
        self._refresh_spool_stats()
        self._spooled.set()

    def _reject(self, chunk: bytes, points: int, reason: str) -> None:
        where = self.spool.reject(chunk, reason)
        self.stats.points_rejected += points
        self.stats.last_error = reason
        log.error("InfluxDB refused %d points: %s (set aside in %s)", points, reason, where)

    def _server_down(self, reason: str) -> None:
        if self.stats.server_up:
            log.warning(
                "InfluxDB write failed (%s): spooling to %s until it answers",
                reason,
                self.spool.root,
            )
        self.stats.server_up = False
        self.stats.last_error = reason

    def _refresh_spool_stats(self) -> None:
        self.stats.spool_bytes = self.spool.bytes
        self.stats.spool_segments = len(self.spool)
        self.stats.points_dropped = self.spool.dropped_points

"""The InfluxDB sink when storage cannot keep up: a full spool disk, a read-only spool,
a damaged spool at start — against a real VictoriaMetrics.

The spool lives on a tiny tmpfs mounted by the test when it runs as root (`mount -t
tmpfs -o size=256k`, remounted read-only for the read-only case, unmounted at the end).
Not root and not under CI: a simulation (a spool whose writes fail past a quota, and
directories made read-only with chmod). Under `CI=true` the real thing is required: not
being root, or a mount that fails, is a test failure, never a skip.
"""

from __future__ import annotations

import asyncio
import errno
import os
import subprocess
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ehswatch.component import LOOP_TICKER, Ticker
from ehswatch.config import InfluxSettings
from ehswatch.ingest.influx import InfluxSink, InfluxWriter
from ehswatch.ingest.lineprotocol import LineEncoder
from ehswatch.ingest.spool import QUARANTINE, READINGS, Spool
from ehswatch.readings import ReadingBatch
from ehswatch.thresholds import Evaluator, SensorThresholds, ThresholdTable
from tests.aio import HandTicker, eventually, run
from tests.servers import VictoriaMetrics, free_port

SENSORS = [("D-101", "polishing-1", "dust_al"), ("D-102", "polishing-1", "dust_al")]
TABLE = ThresholdTable.build(
    [
        SensorThresholds(sensor_id="D-101", high=(10.0, 20.0, 40.0)),
        SensorThresholds(sensor_id="D-102", high=(10.0, 20.0, 40.0)),
    ]
)
VOLUME_BYTES = 256 * 1024
IN_CI = os.environ.get("CI") == "true"


# ------------------------------------------------------------------ a small volume


class QuotaSpool(Spool):
    """Simulation for runs without root: writes past `quota` bytes on the volume fail
    with ENOSPC (after writing what fits, as a real full disk does), and while
    `read_only` every write fails with EROFS."""

    def __init__(self, directory: Path, max_bytes: int, volume: Volume) -> None:
        self.volume = volume
        super().__init__(directory, max_bytes)

    def _write(self, path: Path, data: bytes) -> None:  # type: ignore[override]
        if self.volume.simulated_read_only:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        room = self.volume.size - self.volume.used()
        if len(data) > room:
            path.write_bytes(data[: max(room, 0)])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        path.write_bytes(data)


class Volume:
    """A 256 KiB filesystem for the spool: a real tmpfs as root, else a simulation."""

    def __init__(self, path: Path, size: int) -> None:
        self.path = path
        self.size = size
        self.mounted = False
        self.simulated_read_only = False
        path.mkdir()
        if os.geteuid() == 0:
            done = subprocess.run(
                ["mount", "-t", "tmpfs", "-o", f"size={size // 1024}k", "tmpfs", str(path)],
                capture_output=True,
                text=True,
            )
            if done.returncode == 0:
                self.mounted = True
                return
            if IN_CI:
                pytest.fail(f"mount -t tmpfs failed under CI: {done.stderr.strip()}")
        elif IN_CI:
            pytest.fail("the spool fault tests must run as root under CI (they mount tmpfs)")

    def spool(self, max_bytes: int = 1 << 30) -> Spool:
        root = self.path / "spool"
        return Spool(root, max_bytes) if self.mounted else QuotaSpool(root, max_bytes, self)

    def used(self) -> int:
        return sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file())

    def read_only(self) -> None:
        if self.mounted:
            subprocess.run(["mount", "-o", "remount,ro", str(self.path)], check=True)
        elif os.geteuid() != 0:
            for d in [self.path, *(p for p in self.path.rglob("*") if p.is_dir())]:
                d.chmod(0o555)
        else:
            self.simulated_read_only = True

    def writable(self) -> None:
        if self.mounted:
            subprocess.run(["mount", "-o", "remount,rw", str(self.path)], check=True)
        elif os.geteuid() != 0:
            for d in [self.path, *(p for p in self.path.rglob("*") if p.is_dir())]:
                d.chmod(0o755)
        self.simulated_read_only = False

    def close(self) -> None:
        if self.mounted:
            subprocess.run(["umount", str(self.path)], check=True)
            self.mounted = False
        else:
            self.writable()


@pytest.fixture
def volume(tmp_path: Path) -> Iterator[Volume]:
    vol = Volume(tmp_path / "volume", VOLUME_BYTES)
    try:
        yield vol
    finally:
        vol.close()


@pytest.fixture
def vm(tmp_path: Path) -> Iterator[VictoriaMetrics]:
    with VictoriaMetrics(tmp_path) as server:
        yield server


# ------------------------------------------------------------------ helpers


def settings(url: str) -> InfluxSettings:
    return InfluxSettings(url=url, token="test-token", org="ehs", bucket="telemetry")


def make_sink(
    url: str, spool: Spool, *, memory_max_points: int = 200_000, ticker: Ticker = LOOP_TICKER
) -> InfluxSink:
    return InfluxSink(
        writer=InfluxWriter(settings(url), timeout_ms=2000),
        encoder=LineEncoder("plant-1", SENSORS),
        spool=spool,
        batch_size=500,
        flush_interval_s=0.05,
        backoff_s=(0.05, 0.5),
        memory_max_points=memory_max_points,
        spool_retry_s=0.2,
        ticker=ticker,
    )


def stream(n: int, start: float, sensor: int = 0) -> ReadingBatch:
    """n readings of one sensor, 1 ms apart (VictoriaMetrics keeps milliseconds)."""
    ts = start + np.arange(n) / 1000.0
    return ReadingBatch.of(np.full(n, sensor), 5.0 + (np.arange(n) % 100) / 100.0, ts)


def encoded(n: int, start: float, sensor: int = 0) -> bytes:
    b = stream(n, start, sensor)
    encoder = LineEncoder("plant-1", SENSORS)
    return encoder.readings(b.sensor, b.value, np.zeros(n, np.int8), b.quality, b.ts)


def stored(vm: VictoriaMetrics, sensor: str) -> int:
    series = vm.export(f'{{__name__="reading_value",sensor="{sensor}"}}')
    return len({t for s in series for t in s["timestamps"]})


async def feed(
    sink: InfluxSink, evaluator: Evaluator, n: int, start: float, sensor: int = 0, per: int = 100
) -> float:
    """Submit n readings in batches of `per`, letting the loop run between them; returns
    the longest `submit()` call, in seconds."""
    longest = 0.0
    for k in range(0, n, per):
        b = stream(min(per, n - k), start + k / 1000.0, sensor)
        ev = evaluator.process(b)
        t0 = time.perf_counter()
        sink.submit(b, ev)
        longest = max(longest, time.perf_counter() - t0)
        await asyncio.sleep(0)
    return longest


def no_restarts(sink: InfluxSink) -> bool:
    return all(h.restarts == 0 and h.running for h in sink.health.values()) and bool(sink.health)


# ------------------------------------------------------------------ disk full


def test_a_full_spool_disk_keeps_what_memory_can_counts_the_rest_and_stores_all_after_recovery(
    vm: VictoriaMetrics, volume: Volume
) -> None:
    sent_before, sent_down, sent_after = 500, 30_000, 5_000
    bound = 10_000
    start = round(time.time(), 3) - 600
    seen: dict[str, Any] = {}

    ticker = HandTicker()  # the sink's time: flush interval, retry delays

    async def main() -> InfluxSink:
        sink = make_sink(vm.url, volume.spool(), memory_max_points=bound, ticker=ticker)
        evaluator = Evaluator(TABLE, start_ts=start - 1)
        async with sink:
            await feed(sink, evaluator, sent_before, start)
            await ticker.until(
                lambda: sink.stats.points_written == sent_before, step=0.05, what="written"
            )
            vm.stop()
            longest = 0.0
            peak = 0
            for k in range(0, sent_down, 1000):  # 30 000 readings while the server is down
                longest = max(longest, await feed(sink, evaluator, 1000, start + 1 + k / 1000))
                peak = max(peak, sink.status()["memory_points"])
                await ticker.until(lambda: sink.pending_points == 0, step=0.05, what="flushed")

            def settled() -> bool:
                s = sink.status()
                return bool(s["spooling"] + s["memory_points"] + s["points_dropped"] == sent_down)

            await ticker.until(settled, step=0.05, timeout=30, what="every reading kept or counted")
            down = sink.status()
            seen.update(down=down, longest=longest, peak=max(peak, down["memory_points"]))
            assert no_restarts(sink), sink.health

            vm.start()
            # Once the sink has seen the server back, every reading from then on is stored.
            await ticker.until(lambda: sink.stats.server_up, step=0.05, what="the server back")
            await feed(sink, evaluator, sent_after, start + 100, sensor=1)
            await ticker.until(
                lambda: (
                    sink.stats.server_up
                    and sink.stats.memory_points == 0
                    and sink.stats.spool_segments == 0
                ),
                step=0.05,
                timeout=30,
                what="memory and spool replayed",
            )
            seen["up"] = sink.status()
            assert no_restarts(sink), sink.health
        return sink

    sink = run(main(), timeout=120)
    down = seen["down"]
    print(f"server down, spool disk full: {down}; longest submit {seen['longest']:.4f} s")
    # Down: the spool filled, the rest was kept in memory up to the bound, the overflow
    # was counted — and the flush job never failed.
    assert down["server_up"] is False and down["spool_ok"] is False
    assert "ENOSPC" in down["spool_error"] and down["degraded"] is True
    assert 0 < down["spooling"] < sent_down // 5  # a 256 KiB disk holds about 2000
    assert 0 < down["memory_points"] <= bound and seen["peak"] <= bound
    assert set(down["dropped_by_reason"]) == {"memory_full"}
    assert seen["longest"] < 0.1  # submit never waits on storage
    up = seen["up"]
    assert up["server_up"] and up["spool_ok"] and not up["degraded"]
    # Back: everything kept is stored; stored + dropped == sent; every reading sent after
    # the server came back is stored.
    dropped = sink.stats.points_dropped
    assert sink.stats.events_dropped == 0
    assert stored(vm, "D-101") + dropped == sent_before + sent_down
    assert stored(vm, "D-102") == sent_after
    # (Until the probe noticed the server, memory was still at its bound: readings sent
    # in that moment pushed out older ones, the oldest first.)
    assert dropped >= down["points_dropped"]
    assert not list((volume.path / "spool").rglob("*.tmp"))  # no partial file left behind


# ------------------------------------------------------------------ read-only


def test_a_read_only_spool_does_not_keep_the_sink_from_writing_once_the_server_is_back(
    vm: VictoriaMetrics, volume: Volume
) -> None:
    start = round(time.time(), 3) - 300
    seen: dict[str, Any] = {}

    async def main() -> InfluxSink:
        sink = make_sink(vm.url, volume.spool())
        evaluator = Evaluator(TABLE, start_ts=start - 1)
        async with sink:
            await feed(sink, evaluator, 500, start)
            await eventually(lambda: sink.stats.points_written >= 500, what="written")
            vm.stop()
            await feed(sink, evaluator, 1000, start + 1)  # spooled: the disk still works
            await eventually(lambda: sink.stats.spool_points == 1000, what="spooled")
            volume.read_only()
            await feed(sink, evaluator, 3000, start + 3)  # kept in memory: the disk refuses
            await eventually(lambda: sink.stats.memory_points == 3000, what="kept in memory")
            seen["down"] = sink.status()
            loop = asyncio.get_running_loop()
            vm.start()
            back_at = loop.time()
            await eventually(
                lambda: sink.stats.server_up and sink.stats.memory_points == 0,
                timeout=5,
                what="the probe noticed the server and memory was written",
            )
            await eventually(lambda: sink.stats.spool_segments == 0, what="spool replayed")
            seen["recovered_s"] = loop.time() - back_at
            await feed(sink, evaluator, 1000, start + 10, sensor=1)
            await eventually(
                lambda: sink.stats.points_written >= 500 + 1000, what="live writes again"
            )
            seen["up"] = sink.status()
            assert no_restarts(sink), sink.health
        return sink

    try:
        sink = run(main(), timeout=90)
    finally:
        volume.writable()
    down, up = seen["down"], seen["up"]
    print(f"read-only spool: {down}; stored again {seen['recovered_s']:.2f} s after restart")
    assert down["server_up"] is False and down["spool_ok"] is False
    assert ("EROFS" in down["spool_error"]) or ("EACCES" in down["spool_error"])
    assert down["dropped_by_reason"] == {} and down["degraded"]
    assert up["server_up"] and up["memory_points"] == 0 and up["dropped_by_reason"] == {}
    assert sink.stats.probes >= 1 and sink.stats.points_dropped == 0
    assert stored(vm, "D-101") == 500 + 1000 + 3000
    assert stored(vm, "D-102") == 1000


def test_a_spool_that_cannot_even_be_created_leaves_the_sink_running_from_memory(
    vm: VictoriaMetrics, volume: Volume
) -> None:
    start = round(time.time(), 3) - 200
    volume.read_only()  # before the spool's directories exist
    seen: dict[str, Any] = {}

    async def main() -> InfluxSink:
        spool = volume.spool()
        seen["at_start"] = (spool.ok, spool.error)
        sink = make_sink(vm.url, spool)
        evaluator = Evaluator(TABLE, start_ts=start - 1)
        async with sink:
            await feed(sink, evaluator, 500, start)
            await eventually(lambda: sink.stats.points_written >= 500, what="written")
            vm.stop()
            await feed(sink, evaluator, 2000, start + 1)
            await eventually(lambda: sink.stats.memory_points == 2000, what="kept in memory")
            vm.start()
            await eventually(
                lambda: sink.stats.server_up and sink.stats.memory_points == 0,
                timeout=5,
                what="written after the server came back",
            )
            assert no_restarts(sink), sink.health
        return sink

    try:
        sink = run(main(), timeout=60)
    finally:
        volume.writable()
    ok, error = seen["at_start"]
    if volume.mounted or os.geteuid() != 0:  # a real refusal of mkdir
        assert not ok and error.startswith("create:")
    assert sink.stats.points_dropped == 0
    assert stored(vm, "D-101") == 2500


# ------------------------------------------------------------------ damage at start


def test_a_damaged_spool_is_recovered_and_quarantined_at_start_and_the_sink_runs(
    vm: VictoriaMetrics, tmp_path: Path
) -> None:
    root = tmp_path / "spool"
    spool = Spool(root, 1 << 30)
    start = round(time.time(), 3) - 900
    n = 1000
    chunks = [encoded(n, start + k * 2.0) for k in range(6)]  # distinct timestamps each
    segs = [spool.append(READINGS, c) for c in chunks[:3]]
    expected_kept, expected_lost = n, 0  # segment 0 stays whole

    # 1: cut short mid-line (a crash of the machine, a full disk before ours was caught)
    cut = int(len(chunks[1]) * 0.6) + 37  # mid-line
    with segs[1].path.open("r+b") as f:
        f.truncate(cut)
    expected_kept += chunks[1][:cut].count(b"\n")
    expected_lost += n - chunks[1][:cut].count(b"\n")

    # 2: garbage over the middle, same size (only its CRC can tell)
    data = bytearray(chunks[2])
    lo, hi = len(data) // 3, len(data) // 3 + 700
    rng = np.random.default_rng(7)
    for i in range(lo, hi):  # random bytes, a NUL every 8th and at both ends
        if data[i] != 0x0A:  # keep the line breaks: exactly the lines touched are lost
            byte = int(rng.integers(0, 256))
            data[i] = 0 if byte == 0x0A or i % 8 == 0 or i in (lo, hi - 1) else byte
    segs[2].path.write_bytes(bytes(data))
    line_starts = [0, *(i + 1 for i, c in enumerate(chunks[2]) if c == 0x0A)][:-1]
    line_ends = [i for i, c in enumerate(chunks[2]) if c == 0x0A]
    touched = sum(1 for a, b in zip(line_starts, line_ends, strict=True) if a < hi and b >= lo)
    expected_kept += n - touched
    expected_lost += touched

    # 3: a temporary file left by a crash mid-append: half a chunk
    c3 = chunks[3]
    name = f"{9:016d}-{n}-{len(c3)}-{zlib.crc32(c3):08x}"
    (root / READINGS / f"{name}.tmp").write_bytes(c3[: len(c3) // 2 + 17])
    expected_kept += c3[: len(c3) // 2 + 17].count(b"\n")
    expected_lost += n - c3[: len(c3) // 2 + 17].count(b"\n")

    # 4: a file with a name we never write, full of garbage
    junk = bytes(rng.integers(0, 256, 4000, dtype=np.uint8)).replace(b"\n", b"")
    (root / READINGS / "garbage.lp").write_bytes(junk)

    # 5: a segment of an older version (named by seq alone) whose last line is cut
    c5 = chunks[4][: len(chunks[4]) - 20]
    (root / READINGS / f"{12:016d}.lp").write_bytes(c5)
    expected_kept += c5.count(b"\n")
    expected_lost += 1  # a name without a count: the cut line is what is known lost

    seen: dict[str, Any] = {}

    async def main() -> InfluxSink:
        sink = make_sink(vm.url, Spool(root, 1 << 30))
        seen["at_start"] = sink.status()
        async with sink:
            await eventually(lambda: sink.stats.spool_segments == 0, timeout=30, what="replayed")
            b = stream(200, start + 100, sensor=1)  # and live data goes on
            sink.submit(b, Evaluator(TABLE, start_ts=start + 99).process(b))
            await eventually(lambda: sink.stats.points_written >= 200, what="written")
            assert no_restarts(sink), sink.health
        return sink

    sink = run(main(), timeout=60)
    at_start = seen["at_start"]
    print(f"damaged spool: at start {at_start}; replayed {sink.stats.points_replayed}")
    # Recovered at start: the cut segment, the temporary file, the odd name, the old one.
    assert at_start["spool_quarantined"] == 4 and not at_start["degraded"]
    # The garbage in segment 2 is found by its CRC before it is sent.
    assert sink.stats.spool_quarantined == 5
    assert sink.stats.dropped_by_reason == {"spool_corrupt": expected_lost}
    assert sink.stats.points_replayed == expected_kept
    assert stored(vm, "D-101") == expected_kept
    assert stored(vm, "D-102") == 200
    assert sink.stats.points_rejected == 0  # nothing damaged reached the server
    parts = sorted(p.name for p in (root / QUARANTINE).iterdir() if p.suffix != ".reason")
    assert len(parts) == 5 and len(list((root / QUARANTINE).glob("*.reason"))) == 5
    assert not list((root / READINGS).iterdir())  # nothing left to send, nothing odd left
    # A second start finds nothing more to repair.
    again = Spool(root, 1 << 30)
    assert (len(again), again.quarantined, again.dropped) == (0, 0, {})


# ------------------------------------------------------------------ at exit


def test_at_exit_what_neither_the_spool_nor_the_server_takes_is_counted_by_reason(
    volume: Volume, tmp_path: Path
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens: every write fails
    start = round(time.time(), 3) - 100
    volume.read_only()

    async def main() -> InfluxSink:
        sink = make_sink(dead, volume.spool())
        async with sink:
            await feed(sink, Evaluator(TABLE, start_ts=start - 1), 1500, start)
            await eventually(lambda: sink.stats.memory_points == 1500, what="kept in memory")
            assert sink.stats.points_dropped == 0
        return sink

    try:
        sink = run(main())
    finally:
        volume.writable()
    assert sink.stats.dropped_by_reason == {"spool_unwritable": 1500}
    assert sink.stats.memory_points == 0 and sink.stats.points_spooled == 0


# ------------------------------------------------------------------ drop order


def test_alarm_and_interlock_events_are_the_last_to_go_when_memory_is_full(
    vm: VictoriaMetrics, volume: Volume
) -> None:
    start = round(time.time(), 3) - 400
    volume.read_only()  # no spool: memory alone, bounded at 1000 points
    seen: dict[str, Any] = {}

    ticker = HandTicker()

    async def main() -> InfluxSink:
        sink = make_sink(vm.url, volume.spool(), memory_max_points=1000, ticker=ticker)
        evaluator = Evaluator(TABLE, start_ts=start - 1)
        async with sink:
            await feed(sink, evaluator, 500, start)
            await ticker.until(lambda: sink.stats.points_written == 500, step=0.05, what="written")
            vm.stop()
            for k in range(20):  # 4000 readings; a rise to alarm and a fall in every 5th
                b = stream(200, start + 1 + k * 0.2)
                if k % 5 == 2:
                    b = ReadingBatch.of(b.sensor, np.where(np.arange(200) < 100, 30.0, 5.0), b.ts)
                sink.submit(b, evaluator.process(b))
                sink.submit_lines(
                    sink.encoder.interlock("polishing-1", {"tripped": k % 2}, start + 1 + k * 0.2)
                )
                await ticker.until(lambda: sink.pending_points == 0, step=0.05, what="flushed")
            await ticker.until(
                lambda: (
                    sink.stats.memory_points + sink.stats.points_dropped == 4000 + 8 + 20
                ),  # readings, tier events, interlock lines
                step=0.05,
                what="kept or counted",
            )
            seen["down"] = sink.status()
            vm.start()
            await ticker.until(
                lambda: sink.stats.server_up and sink.stats.memory_points == 0,
                step=0.05,
                what="written after the server came back",
            )
            assert no_restarts(sink), sink.health
        return sink

    try:
        sink = run(main(), timeout=60)
    finally:
        volume.writable()
    down = seen["down"]
    print(f"memory full, no spool: {down}")
    assert down["memory_points"] <= 1000 and down["dropped_by_reason"]["memory_full"] > 0
    assert sink.stats.events_dropped == 0  # readings went first: every event is kept
    tiers = vm.export('{__name__="alarm_event_tier",sensor="D-101"}')
    assert sum(len(e["values"]) for e in tiers) == 8  # 4 rises to alarm and 4 falls
    (interlock,) = vm.export('{__name__="interlock_tripped",zone="polishing-1"}')
    assert len(interlock["values"]) == 20
    assert stored(vm, "D-101") + sink.stats.points_dropped == 500 + 4000

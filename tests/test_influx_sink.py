"""The InfluxDB sink against VictoriaMetrics (InfluxDB v2 write API), outage included."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from ehswatch.component import LOOP_TICKER, Ticker
from ehswatch.config import InfluxSettings
from ehswatch.ingest.influx import InfluxSink, InfluxWriter, WriteFailed
from ehswatch.ingest.lineprotocol import LineEncoder
from ehswatch.ingest.spool import EVENTS, READINGS, Spool
from ehswatch.readings import ReadingBatch
from ehswatch.thresholds import Evaluation, Evaluator, SensorThresholds, ThresholdTable
from tests.aio import HandTicker, eventually, run
from tests.servers import VictoriaMetrics, free_port

ROOT = Path(__file__).resolve().parent.parent
SENSORS = [
    ("D-101", "polishing-1", "dust_al"),
    ("O2-301", "tank-farm", "o2"),
    ("G 1,x=y", "罐区", "ch4"),
]
TABLE = ThresholdTable.build(
    [
        SensorThresholds(sensor_id="D-101", high=(10.0, 20.0, 40.0), deadband=1.0),
        SensorThresholds(sensor_id="O2-301", low=(19.5, 18.0, 16.0)),
        SensorThresholds(sensor_id="G 1,x=y", high=(10.0, 25.0, 50.0)),
    ]
)


@pytest.fixture
def vm(tmp_path: Path) -> Iterator[VictoriaMetrics]:
    with VictoriaMetrics(tmp_path) as server:
        yield server


def settings(url: str, spool: Path, **kw: object) -> InfluxSettings:
    return InfluxSettings.model_validate(
        {
            "url": url,
            "token": "test-token",
            "org": "ehs",
            "bucket": "telemetry",
            "batch_size": 1000,
            "flush_interval_ms": 50,
            "spool_dir": str(spool),
            **kw,
        }
    )


def sink(
    s: InfluxSettings, max_bytes: int = 512 * 1024 * 1024, ticker: Ticker = LOOP_TICKER
) -> InfluxSink:
    return InfluxSink(
        writer=InfluxWriter(s, timeout_ms=2000),
        encoder=LineEncoder("plant-1", SENSORS),
        spool=Spool(s.spool_dir, max_bytes),
        batch_size=s.batch_size,
        flush_interval_s=s.flush_interval_ms / 1000,
        backoff_s=(0.05, 0.5),
        ticker=ticker,
    )


def evaluated(batch: ReadingBatch, evaluator: Evaluator | None = None) -> Evaluation:
    return (evaluator or Evaluator(TABLE, start_ts=float(batch.ts.min()) - 1)).process(batch)


def stream(n: int, start: float, sensor: int = 0) -> ReadingBatch:
    """n readings of one sensor, 1 ms apart (VictoriaMetrics keeps milliseconds)."""
    ts = start + np.arange(n) / 1000.0
    return ReadingBatch.of(np.full(n, sensor), 5.0 + (np.arange(n) % 100) / 100.0, ts)


def count_points(vm: VictoriaMetrics, sensor: str) -> int:
    series = vm.export(f'{{__name__="reading_value",sensor="{sensor}"}}')
    return len({t for s in series for t in s["timestamps"]})


def test_values_tags_tiers_and_quality_arrive_exactly(vm: VictoriaMetrics, tmp_path: Path) -> None:
    now = round(time.time(), 3)
    batch = ReadingBatch.of(
        [0, 1, 2, 0], [12.5, 20.9, math.nan, 25.25], [now, now, now, now + 0.5], [0, 0, 2, 0]
    )

    async def main() -> InfluxSink:
        async with sink(settings(vm.url, tmp_path / "spool")) as s:
            s.submit(batch, evaluated(batch))
            await eventually(lambda: s.stats.points_written >= 4 + 3, what="written")
        return s

    s = run(main())
    assert s.stats.points_spooled == 0 and s.stats.server_up
    (value,) = vm.export('{__name__="reading_value",sensor="D-101"}')
    assert value["metric"] == {
        "__name__": "reading_value",
        "site": "plant-1",
        "zone": "polishing-1",
        "sensor": "D-101",
        "type": "dust_al",
    }
    assert value["values"] == [12.5, 25.25]
    assert value["timestamps"] == [int(now * 1000), int(now * 1000) + 500]
    (tier,) = vm.export('{__name__="reading_tier",sensor="D-101"}')
    assert tier["values"] == [1, 2]  # warning at 12.5, alarm at 25.25
    # A NaN value is left out; the reading still records its tier and quality, and the
    # odd characters of the third sensor's id survive escaping.
    odd = {s["metric"]["__name__"]: s for s in vm.export('{sensor="G 1,x=y"}')}
    assert set(odd) == {
        "reading_tier",
        "reading_quality",
        "alarm_event_fault",
        "alarm_event_reason",
    }
    assert odd["reading_quality"]["values"] == [2]
    assert odd["reading_quality"]["metric"]["zone"] == "罐区"
    events = vm.export('{__name__="alarm_event_tier",sensor="D-101"}')
    assert [e["values"] for e in events] == [[1, 2]]
    faults = vm.export('{__name__="alarm_event_fault",sensor="G 1,x=y"}')
    assert [f["values"] for f in faults] == [[1]]


def test_readings_below_a_batch_are_written_once_the_flush_interval_passes(
    vm: VictoriaMetrics, tmp_path: Path
) -> None:
    """On the sink's own time (moved by hand): a part batch waits for the interval —
    not for the wall clock — and goes out once the interval has passed."""
    ticker = HandTicker()
    start = round(time.time(), 3) - 30

    async def main() -> None:
        async with sink(settings(vm.url, tmp_path / "spool"), ticker=ticker) as s:
            part = stream(10, start)  # a batch is 1000
            s.submit(part, evaluated(part))
            await eventually(lambda: ticker.looks > 5, what="the sink waits on its time")
            ticker.advance(0.049)  # just short of the 50 ms interval
            looked = ticker.looks
            await eventually(lambda: ticker.looks > looked + 5, what="the sink looks")
            assert s.pending_points == 10 and s.stats.points_written == 0
            ticker.advance(0.002)  # past it
            await eventually(lambda: s.stats.points_written == 10, what="written")

    run(main())


class HeldWriter:
    """A writer whose writes wait until released (its thread blocks, as on a slow link)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.started = threading.Event()
        self.points = 0

    def write(self, chunk: bytes) -> None:
        self.started.set()
        assert self.release.wait(10)
        self.points += chunk.count(b"\n")

    def close(self) -> None:
        self.release.set()


def test_a_write_on_the_wire_counts_as_not_yet_written(tmp_path: Path) -> None:
    """`memory_points` is everything not yet written: a test, a board or an operator who
    waits for 0 must not see it while the last chunk is still on its way."""
    ticker = HandTicker()
    writer = HeldWriter()
    start = round(time.time(), 3) - 30

    async def main() -> None:
        s = InfluxSink(
            writer=writer,
            encoder=LineEncoder("plant-1", SENSORS),
            spool=Spool(tmp_path / "spool", 1 << 20),
            batch_size=100,
            ticker=ticker,
        )
        async with s:
            b = stream(100, start)  # one whole batch: flushed at once
            s.submit(b, evaluated(b))
            await eventually(writer.started.is_set, what="the write begun")
            assert s.pending_points == 0 and s.status()["memory_points"] == 100
            writer.release.set()
            await eventually(lambda: s.stats.points_written == 100, what="written")
            assert s.status()["memory_points"] == 0 and writer.points == 100

    run(main())


def test_an_outage_loses_no_reading(vm: VictoriaMetrics, tmp_path: Path) -> None:
    start = round(time.time(), 3) - 60

    ticker = HandTicker()  # the sink's time: flush interval and retry delays

    async def main() -> InfluxSink:
        async with sink(settings(vm.url, tmp_path / "spool"), ticker=ticker) as s:
            first = stream(500, start)
            s.submit(first, evaluated(first))
            await ticker.until(lambda: s.stats.points_written == 500, step=0.05, what="written")
            vm.stop()
            evaluator = Evaluator(TABLE, start_ts=start)
            for k in range(100):  # 10 000 readings stream in while the server is down
                b = stream(100, start + 1 + k * 0.1)
                s.submit(b, evaluator.process(b))
                # Each batch is flushed (and spooled) on its own, on the sink's time.
                await ticker.until(lambda: s.stats.memory_points == 0, step=0.05, what="spooled")
            assert s.stats.points_spooled == 10_000
            assert not s.stats.server_up and s.stats.spool_bytes > 0
            vm.start()
            await ticker.until(
                lambda: s.stats.spool_segments == 0 and s.stats.server_up,
                step=0.05,
                timeout=30,
                what="the spool drained",
            )
        return s

    s = run(main(), timeout=90)
    stored = count_points(vm, "D-101")
    print(
        f"outage: spooled {s.stats.points_spooled}, replayed {s.stats.points_replayed}, "
        f"written live {s.stats.points_written}, stored {stored} of 10500 readings"
    )
    assert s.stats.points_replayed == s.stats.points_spooled >= 10_000
    assert s.stats.points_dropped == 0 and s.stats.points_rejected == 0
    assert stored == 10_500


def test_a_burst_over_the_memory_bound_goes_to_the_spool_not_dropped_while_the_server_is_up(
    vm: VictoriaMetrics, tmp_path: Path
) -> None:
    """A broker's backlog after a restart arrives faster than any server takes it: what
    is over `memory_max_points` is spilled to the spool and replayed, never dropped."""
    start = round(time.time(), 3) - 300
    bound = 10_000

    async def main() -> InfluxSink:
        s = sink(settings(vm.url, tmp_path / "spool"))
        s.memory_max_points = bound
        async with s:
            evaluator = Evaluator(TABLE, start_ts=start)
            for k in range(5):  # 50 000 readings between two turns of the sink's loop
                b = stream(10_000, start + k * 10)
                s.submit(b, evaluator.process(b))
                assert s.stats.memory_points <= bound
            assert s.stats.points_spooled > 0 and s.stats.server_up
            await eventually(
                lambda: s.stats.spool_segments == 0 and s.stats.memory_points == 0,
                timeout=30,
                what="everything written",
            )
        return s

    s = run(main(), timeout=60)
    assert s.stats.points_dropped == 0, s.stats.dropped_by_reason
    assert s.stats.points_replayed == s.stats.points_spooled
    assert count_points(vm, "D-101") == 50_000


def test_a_writer_killed_mid_replay_loses_nothing(vm: VictoriaMetrics, tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    spool = Spool(spool_dir, 1 << 30)
    encoder = LineEncoder("plant-1", SENSORS)
    start = round(time.time(), 3) - 600
    segments, per_segment = 40, 2500
    for k in range(segments):
        b = stream(per_segment, start + k * per_segment / 1000.0)
        spool.append(
            READINGS,
            encoder.readings(b.sensor, b.value, np.zeros(len(b), np.int8), b.quality, b.ts),
        )
    s = settings(vm.url, spool_dir)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.influx_replayer", s.model_dump_json()], cwd=ROOT, env=env
    )
    seg_dir = spool_dir / READINGS
    try:
        deadline = time.monotonic() + 30
        while len(list(seg_dir.glob("*.lp"))) > segments - 5:
            assert time.monotonic() < deadline, "replay did not start"
            time.sleep(0.002)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    left = len(list(seg_dir.glob("*.lp")))
    assert 0 < left < segments, f"killed at {left} of {segments} segments: not mid-replay"

    async def main() -> InfluxSink:
        async with sink(s) as again:
            await eventually(lambda: again.stats.spool_segments == 0, timeout=30, what="drained")
        return again

    again = run(main())
    stored = count_points(vm, "D-101")
    print(
        f"killed with {left} of {segments} segments left; the restarted sink replayed "
        f"{again.stats.points_replayed}; stored {stored} of {segments * per_segment}"
    )
    assert again.stats.points_replayed == left * per_segment
    assert stored == segments * per_segment


def test_a_full_spool_drops_the_oldest_readings_but_keeps_alarm_events(
    vm: VictoriaMetrics, tmp_path: Path
) -> None:
    start = round(time.time(), 3) - 120
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens: every write fails

    ticker = HandTicker()

    async def main() -> InfluxSink:
        s = sink(
            settings(dead, tmp_path / "spool", batch_size=200), max_bytes=60_000, ticker=ticker
        )
        evaluator = Evaluator(TABLE, start_ts=start)
        async with s:
            for k in range(40):  # 8000 readings, and a tier change every 10th batch
                b = stream(200, start + k * 0.2)
                if k % 10 == 5:
                    b = ReadingBatch.of(b.sensor, np.where(np.arange(200) < 100, 30.0, 5.0), b.ts)
                s.submit(b, evaluator.process(b))
                # Each batch is its own spool segment, so the oldest can be dropped whole.
                await ticker.until(lambda: s.stats.memory_points == 0, step=0.05, what="spooled")
            assert s.stats.points_spooled == s.stats.points_received == 8000 + 8  # and 8 events
        return s

    s = run(main())
    assert s.stats.points_dropped > 0
    kept = Spool(tmp_path / "spool", 1 << 30)
    assert kept.bytes <= 60_000 + 20_000  # the bound, plus events that are never dropped
    event_files = list((tmp_path / "spool" / EVENTS).glob("*.lp"))
    event_lines = sum(p.read_bytes().count(b"\n") for p in event_files)
    assert event_lines == 8  # 4 rises to alarm and 4 falls, every one kept

    # Replaying into a live server: the events all arrive, and the newest readings.
    async def replay() -> InfluxSink:
        async with sink(settings(vm.url, tmp_path / "spool")) as r:
            await eventually(lambda: r.stats.spool_segments == 0, timeout=30, what="drained")
        return r

    replayed = run(replay())
    events = vm.export('{__name__="alarm_event_tier",sensor="D-101"}')
    assert sum(len(e["values"]) for e in events) == 8
    assert count_points(vm, "D-101") == 8000 - s.stats.points_dropped
    assert replayed.stats.points_replayed == 8000 - s.stats.points_dropped + 8


def test_a_segment_the_server_refuses_is_set_aside_and_replay_goes_on(tmp_path: Path) -> None:
    # A spool segment cut short (a full disk, a crash of the machine): its last line is
    # incomplete and too long, and the server answers 400. It must be set aside with the
    # reason, never retried forever, and the segments after it must still be sent.
    with VictoriaMetrics(tmp_path, max_line_size=200) as vm:
        spool = Spool(tmp_path / "spool", 1 << 30)
        encoder = LineEncoder("plant-1", SENSORS)
        start = round(time.time(), 3) - 10
        good = stream(50, start)
        spool.append(READINGS, b"reading,site=plant-1,sensor=" + b"X" * 300 + b" value=1")
        spool.append(
            READINGS,
            encoder.readings(good.sensor, good.value, np.zeros(50, np.int8), good.quality, good.ts),
        )

        async def main() -> InfluxSink:
            async with sink(settings(vm.url, tmp_path / "spool")) as s:
                await eventually(lambda: s.stats.spool_segments == 0, what="drained")
            return s

        s = run(main())
        (reason,) = (tmp_path / "spool" / "rejected").glob("*.reason")
        assert "HTTP 400" in reason.read_text(encoding="utf-8")
        assert len(list((tmp_path / "spool" / "rejected").glob("*.lp"))) == 1
        assert s.stats.points_replayed == 50
        assert count_points(vm, "D-101") == 50


def test_a_wrong_token_keeps_the_data_and_retries(tmp_path: Path) -> None:
    vm = VictoriaMetrics(tmp_path)
    vm.args += ["-httpAuth.username=ehs", "-httpAuth.password=right"]
    with vm:
        b = stream(100, round(time.time(), 3) - 5)

        async def main() -> InfluxSink:
            async with sink(settings(vm.url, tmp_path / "spool")) as s:
                s.submit(b, evaluated(b))
                await eventually(lambda: s.stats.points_spooled == 100, what="spooled")
                await eventually(lambda: "HTTP 401" in s.stats.last_error, what="the refusal")
            return s

        s = run(main())
        assert s.stats.points_rejected == 0 and s.stats.points_written == 0
        assert not s.stats.server_up
        assert len(list((tmp_path / "spool" / READINGS).glob("*.lp"))) == 1  # kept for later


def test_what_is_pending_at_shutdown_is_spooled_and_sent_by_the_next_start(
    vm: VictoriaMetrics, tmp_path: Path
) -> None:
    start = round(time.time(), 3) - 30
    b = stream(300, start)

    async def first() -> None:
        s = sink(settings(vm.url, tmp_path / "spool", flush_interval_ms=60_000, batch_size=100_000))
        async with s:
            s.submit(b, evaluated(b))  # below batch size, long interval: still pending at exit

    async def second() -> InfluxSink:
        async with sink(settings(vm.url, tmp_path / "spool")) as s:
            await eventually(lambda: s.stats.spool_segments == 0, what="drained")
        return s

    run(first())
    assert len(list((tmp_path / "spool" / READINGS).glob("*.lp"))) == 1
    assert run(second()).stats.points_replayed == 300
    assert count_points(vm, "D-101") == 300


def test_a_write_is_the_influxdb_v2_write_request() -> None:
    # VictoriaMetrics ignores the token and the org: a local server checks what InfluxDB
    # itself reads from the request, and answers as InfluxDB does (204, then 503).
    import http.server
    import threading
    from urllib.parse import parse_qs, urlsplit

    seen: list[tuple[str, dict[str, list[str]], dict[str, str], bytes]] = []
    answers = [204, 503]

    class Influx(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            url = urlsplit(self.path)
            body = self.rfile.read(int(self.headers["Content-Length"]))
            seen.append((url.path, parse_qs(url.query), dict(self.headers), body))
            self.send_response(answers.pop(0))
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Influx)
    thread = threading.Thread(target=server.serve_forever, name="fake-influx", daemon=True)
    thread.start()
    try:
        s = settings(f"http://127.0.0.1:{server.server_port}/", Path("unused"))
        writer = InfluxWriter(s, timeout_ms=2000)
        writer.write(b"reading,site=a value=1 1\n")
        with pytest.raises(WriteFailed, match="HTTP 503"):
            writer.write(b"")
        writer.close()
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    path, query, headers, body = seen[0]
    assert path == "/api/v2/write"
    assert query == {"org": ["ehs"], "bucket": ["telemetry"], "precision": ["ns"]}
    assert headers["Authorization"] == "Token test-token"
    assert headers["Content-Type"].startswith("text/plain")
    assert body == b"reading,site=a value=1 1\n"
    assert seen[1][3] == b""  # the probe: a write of nothing


@hypothesis_settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=1, max_size=50))
def test_every_finite_value_is_written_as_text_that_reads_back_as_the_same_float(
    values: list[float],
) -> None:
    n = len(values)
    lines = (
        LineEncoder("plant-1", SENSORS)
        .readings(
            np.zeros(n, np.int32),
            np.array(values),
            np.zeros(n, np.int8),
            np.zeros(n, np.uint8),
            np.full(n, 1_764_000_000.0),
        )
        .decode()
        .splitlines()
    )
    assert len(lines) == n
    for line, v in zip(lines, values, strict=True):
        fields = line.split(" ")[-2]
        text = fields.split(",")[0].removeprefix("value=")
        assert float(text) == v and math.copysign(1, float(text)) == math.copysign(1, v)
        assert "e+" not in text or text == repr(v)  # either form: InfluxDB reads both

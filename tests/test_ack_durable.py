"""Acknowledge after durable, with a real broker: the collector holds its PUBACKs until
the sink's durable watermark covers them; while nothing can be made durable it lets
them go, counted (`acked_not_durable`). Evaluation never waits for either."""

from __future__ import annotations

import errno
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import pytest

from ehswatch.ingest.influx import InfluxSink, WriteFailed
from ehswatch.ingest.lineprotocol import LineEncoder
from ehswatch.ingest.mqtt import MqttCollector
from ehswatch.ingest.mqtt_wire import SessionOptions
from ehswatch.ingest.payloads import TelemetryDecoder
from ehswatch.ingest.queue import ReadingQueue
from ehswatch.ingest.spool import Spool
from ehswatch.readings import ReadingBatch
from ehswatch.thresholds import Evaluation, SensorThresholds, ThresholdTable
from ehswatch.thresholds.stage import EvaluatorStage
from tests.aio import eventually, run
from tests.servers import Mosquitto

TOPIC = "plant1/gas/O2-301"
TABLE = ThresholdTable.build([SensorThresholds(sensor_id="O2-301", low=(19.5, 18.0, 16.0))])
CLIENT_ID = "ehswatch-ack-test"


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    with Mosquitto(tmp_path) as b:
        yield b


class DownWriter:
    """InfluxDB down: every write fails. The first one can be held on a gate (a write
    still on the wire), so that the test sees PUBACKs wait."""

    def __init__(self, hold_first: bool = False) -> None:
        self.gate = threading.Event()
        if not hold_first:
            self.gate.set()
        self.calls = 0

    def write(self, chunk: bytes) -> None:
        self.calls += 1
        self.gate.wait(timeout=20)
        raise WriteFailed("connection refused (test)")

    def close(self) -> None:
        self.gate.set()


class ReadOnlySpool(Spool):
    def _write(self, path: Path, data: bytes) -> None:  # type: ignore[override]
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))


class Pipeline:
    """Collector → queue → stage → (evaluated here, and) the sink, wired as the service
    wires them."""

    def __init__(self, port: int, writer: DownWriter, spool: Spool) -> None:
        self.queue = ReadingQueue()
        self.stage = EvaluatorStage(table=TABLE, queue=self.queue, tick_s=0.2)
        self.sink = InfluxSink(
            writer=writer,
            encoder=LineEncoder("plant-1", [("O2-301", "tank-farm", "o2")]),
            spool=spool,
            batch_size=1000,
            flush_interval_s=5.0,  # long: acks waiting must make the sink flush sooner
            backoff_s=(0.05, 0.2),
            spool_retry_s=60.0,
        )
        self.evaluated: list[float] = []
        self.stage.listen(self._evaluated)
        self.stage.listen(self.sink.submit)
        self.stage.on_covered(self.sink.mark)
        self.collector = collector(port, self.queue)
        self.collector.ack_after_durable(self.sink.on_durable)

    def _evaluated(self, batch: ReadingBatch, ev: Evaluation) -> None:
        self.evaluated.extend(float(v) for v in batch.value)


def collector(port: int, queue: ReadingQueue) -> MqttCollector:
    decoder = TelemetryDecoder({TOPIC: 0}, {"O2-301": 0}, "ehs")
    options = SessionOptions(host="127.0.0.1", port=port, client_id=CLIENT_ID, keepalive_s=10)
    return MqttCollector(options=options, decoder=decoder, queue=queue, backoff=(0.05, 0.5))


async def publish(port: int, values: list[float]) -> None:
    async with aiomqtt.Client("127.0.0.1", port) as client:
        for v in values:
            await client.publish(TOPIC, json.dumps({"v": v}), qos=1)


async def redelivered(port: int) -> list[float]:
    """Reconnect the session: what the broker delivers before a fresh marker reading is
    what it still held unacknowledged."""
    queue = ReadingQueue()
    values: list[float] = []

    def take() -> list[float]:
        b = queue.drain_nowait()
        values.extend(float(v) for v in b.value)
        return values

    async with collector(port, queue) as c:
        await eventually(lambda: c.stats.connected, what="reconnected")
        await publish(port, [99.0])
        await eventually(lambda: 99.0 in take(), what="the marker")
    return values[: values.index(99.0)]


VALUES = [20.0 + i / 100 for i in range(50)]


def test_pubacks_wait_for_the_sink_and_go_out_once_spooled_while_influxdb_is_down(
    broker: Mosquitto, tmp_path: Path
) -> None:
    writer = DownWriter(hold_first=True)

    async def main() -> Pipeline:
        p = Pipeline(broker.port, writer, Spool(tmp_path / "spool", 1 << 30))
        async with p.sink, p.stage, p.collector:
            await eventually(lambda: p.collector.stats.connected, what="connected")
            await publish(broker.port, VALUES)
            # Evaluated at once; the PUBACKs wait while the write is on the wire.
            await eventually(lambda: len(p.evaluated) == len(VALUES), what="evaluated")
            await eventually(lambda: writer.calls >= 1, what="the write under way")
            assert p.collector.stats.acks_waiting == len(VALUES)
            assert p.sink.stats.durable_through == 0
            writer.gate.set()  # the write fails: server down, the chunk goes to the spool
            await eventually(lambda: p.collector.stats.acks_waiting == 0, what="acks sent")
            assert p.sink.stats.points_spooled == len(VALUES)
            assert p.sink.stats.durable_through == len(VALUES)
            assert p.sink.status()["acked_not_durable"] == 0
        return p

    p = run(main())
    assert p.evaluated == VALUES
    # The broker got every PUBACK: nothing is redelivered to the session.
    assert run(redelivered(broker.port)) == []


def test_pubacks_not_held_while_nothing_is_durable_and_counted_as_acked_not_durable(
    broker: Mosquitto, tmp_path: Path
) -> None:
    async def main() -> Pipeline:
        p = Pipeline(broker.port, DownWriter(), ReadOnlySpool(tmp_path / "spool", 1 << 30))
        async with p.sink, p.stage, p.collector:
            await eventually(lambda: p.collector.stats.connected, what="connected")
            await publish(broker.port, VALUES)
            await eventually(lambda: p.collector.stats.acks_waiting == 0, what="acks sent")
            await eventually(lambda: not p.sink.status()["server_up"], what="server down")
            status = p.sink.status()
            assert status["acked_not_durable"] == len(VALUES)
            assert not status["spool_ok"] and status["memory_points"] == len(VALUES)
            assert status["degraded"]
        return p

    p = run(main())
    assert p.evaluated == VALUES
    assert run(redelivered(broker.port)) == []


def test_pubacks_held_while_a_write_is_on_the_wire_are_redelivered_after_a_crash(
    broker: Mosquitto, tmp_path: Path
) -> None:
    """The collector goes away (as a crash would take it) while the readings it was
    given are not yet durable: the broker delivers them again."""
    writer = DownWriter(hold_first=True)

    async def main() -> None:
        p = Pipeline(broker.port, writer, Spool(tmp_path / "spool", 1 << 30))
        async with p.sink, p.stage:
            async with p.collector:
                await eventually(lambda: p.collector.stats.connected, what="connected")
                await publish(broker.port, VALUES)
                await eventually(lambda: len(p.evaluated) == len(VALUES), what="evaluated")
                await eventually(lambda: writer.calls >= 1, what="the write under way")
                assert p.collector.stats.acks_waiting == len(VALUES)
            writer.gate.set()

    run(main())
    assert run(redelivered(broker.port)) == VALUES

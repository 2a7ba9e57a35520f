"""The MQTT collector against a real mosquitto broker."""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator, Sequence
from pathlib import Path

import aiomqtt
import pytest

from ehswatch.config import MqttSettings
from ehswatch.ingest.mqtt import MqttCollector, session_options
from ehswatch.ingest.mqtt_wire import SessionOptions
from ehswatch.ingest.payloads import TelemetryDecoder
from ehswatch.ingest.queue import ReadingQueue
from ehswatch.readings import ReadingBatch
from ehswatch.simulators.gas_detector import GARBAGE
from tests.aio import eventually, run
from tests.servers import Mosquitto, free_port, make_certificates

IDS = {"G-201": 0, "O2-301": 1, "CH4-1": 2}


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    with Mosquitto(tmp_path) as b:
        yield b


def collector(
    port: int,
    queue: ReadingQueue,
    client_id: str = "ehswatch-test",
    decoder: TelemetryDecoder | None = None,
) -> MqttCollector:
    decoder = decoder or TelemetryDecoder({"plant1/gas/O2-301": 1}, IDS, "ehs")
    options = SessionOptions(host="127.0.0.1", port=port, client_id=client_id, keepalive_s=10)
    return MqttCollector(options=options, decoder=decoder, queue=queue, backoff=(0.05, 0.5))


class Received:
    def __init__(self, queue: ReadingQueue) -> None:
        self.queue = queue
        self.batches: list[ReadingBatch] = []

    def values(self) -> list[tuple[int, float]]:
        b = self.queue.drain_nowait()
        if len(b):
            self.batches.append(b)
        return [
            (int(s), float(v)) for b in self.batches for s, v in zip(b.sensor, b.value, strict=True)
        ]


async def publish(port: int, messages: list[tuple[str, bytes | str]], qos: int = 1) -> None:
    async with aiomqtt.Client("127.0.0.1", port) as client:
        for topic, payload in messages:
            await client.publish(topic, payload, qos=qos)


def test_readings_arrive_from_sensor_topics_the_telemetry_tree_and_batches(
    broker: Mosquitto,
) -> None:
    async def main() -> None:
        queue = ReadingQueue()
        got = Received(queue)
        async with collector(broker.port, queue) as c:
            await eventually(lambda: c.stats.connected, what="connected")
            await publish(
                broker.port,
                [
                    ("plant1/gas/O2-301", json.dumps({"v": 20.9, "ts": 1764000000000, "q": 0})),
                    ("ehs/telemetry/G-201", "1.25"),
                    (
                        "ehs/telemetry",
                        json.dumps([{"id": "CH4-1", "v": 3.5}, {"id": "G-201", "v": 2.5}]),
                    ),
                ],
            )
            await eventually(lambda: len(got.values()) == 4, what="4 readings")
        assert got.values() == [(1, 20.9), (0, 1.25), (2, 3.5), (0, 2.5)]
        assert c.stats.messages == 3 and c.stats.rejects.total == 0

    run(main())


def test_every_kind_of_garbage_is_counted_and_the_collector_keeps_going(broker: Mosquitto) -> None:
    async def main() -> None:
        queue = ReadingQueue()
        got = Received(queue)
        async with collector(broker.port, queue) as c:
            await eventually(lambda: c.stats.connected, what="connected")
            # A stamp far ahead of the clock is not garbage to the decoder: the evaluator
            # judges it (clock_skew), so it stays out of this count.
            garbage = [("ehs/telemetry/G-201", p) for p in GARBAGE if b'"ts": 9999' not in p]
            garbage += [
                ("ehs/telemetry/UNKNOWN", b"1.0"),
                ("ehs/telemetry", b"[{]"),
                ("ehs/telemetry", b'[{"id": 5, "v": 1}]'),
            ]
            await publish(broker.port, [*garbage, ("ehs/telemetry/G-201", b"7.5")])
            await eventually(
                lambda: got.values() == [(0, 7.5)], what="the good reading after the garbage"
            )
            assert c.stats.rejects.total == len(garbage)
            assert set(c.stats.rejects.by_reason) == {
                "not_json",
                "bad_type",
                "bad_timestamp",
                "too_large",
                "unknown_sensor",
            }
            assert c.stats.connected  # nothing crashed or disconnected

    run(main())


POISON = b'{"v": 1' + b"0" * 399 + b"}"  # float() of a 400-digit integer overflows


async def nothing_redelivered(port: int, client_id: str, decoder: TelemetryDecoder) -> None:
    """A new session under `client_id` gets only what is published now: whatever the
    previous one received was acknowledged (an unacknowledged QoS 1 message would be
    delivered again, ahead of the new one)."""
    queue = ReadingQueue()
    got = Received(queue)
    async with collector(port, queue, client_id=client_id, decoder=decoder) as c:
        await eventually(lambda: c.stats.connected, what="reconnected")
        await publish(port, [("ehs/telemetry/G-201", b"8.5")])
        await eventually(lambda: got.values() == [(0, 8.5)], what="the reading after")
        assert c.stats.rejects.total == 0


def test_a_poison_payload_is_counted_and_acknowledged_and_never_ends_the_session(
    broker: Mosquitto,
) -> None:
    async def main() -> None:
        queue = ReadingQueue()
        got = Received(queue)
        async with collector(broker.port, queue, client_id="plant-ingest") as c:
            await eventually(lambda: c.stats.connected, what="connected")
            await publish(
                broker.port, [("ehs/telemetry/G-201", POISON), ("ehs/telemetry/G-201", b"7.5")]
            )
            await eventually(lambda: got.values() == [(0, 7.5)], what="the reading after it")
            assert c.stats.rejects.by_reason == {"bad_value": 1}
            await publish(broker.port, [("ehs/telemetry/G-201", b"7.75")])
            await eventually(lambda: len(got.values()) == 2, what="one more reading")
            assert c.stats.rejects.by_reason == {"bad_value": 1}  # not delivered again
            session = c.health["session"]
            assert (session.restarts, session.last_error) == (0, "")
            assert c.stats.connects == 1 and c.stats.connected
        await nothing_redelivered(
            broker.port, "plant-ingest", TelemetryDecoder({"plant1/gas/O2-301": 1}, IDS, "ehs")
        )

    run(main())


class FailingDecoder(TelemetryDecoder):
    """A decoder with a bug: raises on any bulk that holds the payload ``boom``."""

    def decode(
        self, topics: Sequence[bytes], payloads: Sequence[bytes], now: float
    ) -> ReadingBatch:
        if b"boom" in payloads:
            raise RuntimeError("a decoder bug")
        return super().decode(topics, payloads, now)


def test_a_decoder_that_raises_drops_that_bulk_counted_and_acknowledged(
    broker: Mosquitto,
) -> None:
    async def main() -> None:
        queue = ReadingQueue()
        got = Received(queue)
        decoder = FailingDecoder({}, IDS, "ehs")
        async with collector(broker.port, queue, client_id="plant-ingest", decoder=decoder) as c:
            await eventually(lambda: c.stats.connected, what="connected")
            await publish(broker.port, [("ehs/telemetry/G-201", b"boom")])
            await eventually(lambda: c.stats.rejects.total == 1, what="the bulk counted")
            assert c.stats.rejects.by_reason == {"bad_value": 1}
            assert "decoder failed" in c.stats.rejects.last
            await publish(broker.port, [("ehs/telemetry/G-201", b"7.5")])
            await eventually(lambda: got.values() == [(0, 7.5)], what="the reading after it")
            assert c.stats.rejects.total == 1
            session = c.health["session"]
            assert (session.restarts, session.last_error) == (0, "")
            assert c.stats.connects == 1
        await nothing_redelivered(broker.port, "plant-ingest", FailingDecoder({}, IDS, "ehs"))

    run(main())


def test_broker_restart_the_collector_reconnects_and_readings_continue(broker: Mosquitto) -> None:
    async def main() -> None:
        queue = ReadingQueue()
        got = Received(queue)
        async with collector(broker.port, queue) as c:
            await eventually(lambda: c.stats.connected, what="connected")
            await publish(broker.port, [("ehs/telemetry/G-201", "1.0")])
            await eventually(lambda: got.values() == [(0, 1.0)], what="before the restart")
            broker.restart()
            await eventually(
                lambda: c.stats.connects >= 2 and c.stats.connected, timeout=15, what="reconnected"
            )
            await publish(broker.port, [("ehs/telemetry/G-201", "2.0")])
            await eventually(lambda: got.values() == [(0, 1.0), (0, 2.0)], what="after the restart")
        assert c.stats.last_error == "connection lost"

    run(main())


def test_persistent_session_delivers_what_arrived_while_the_collector_was_away(
    broker: Mosquitto,
) -> None:
    async def main() -> None:
        first = ReadingQueue()
        async with collector(broker.port, first, client_id="plant-ingest") as c:
            await eventually(lambda: c.stats.connected, what="session created")
        await publish(broker.port, [("ehs/telemetry/G-201", str(v)) for v in (1.0, 2.0, 3.0)])
        second = ReadingQueue()
        got = Received(second)
        async with collector(broker.port, second, client_id="plant-ingest"):
            await eventually(lambda: len(got.values()) == 3, what="the backlog")
        assert got.values() == [(0, 1.0), (0, 2.0), (0, 3.0)]

    run(main())


def test_messages_not_yet_handed_on_are_not_acknowledged_and_come_again(broker: Mosquitto) -> None:
    async def main() -> None:
        # A queue that is full: the collector cannot hand anything on, so it must not
        # acknowledge; when it dies the broker still holds the messages.
        stuck = ReadingQueue(high_water=1)
        await stuck.put(ReadingBatch.of([0], [0.0], [0.0]))
        async with collector(broker.port, stuck, client_id="plant-ingest") as c:
            await eventually(lambda: c.stats.connected, what="connected")
            await publish(
                broker.port, [("ehs/telemetry/G-201", "4.0"), ("ehs/telemetry/G-201", "5.0")]
            )
            await eventually(
                lambda: c.stats.messages == 0 and c.stats.connects == 1, what="blocked"
            )
        fresh = ReadingQueue()
        got = Received(fresh)
        async with collector(broker.port, fresh, client_id="plant-ingest"):
            await eventually(lambda: len(got.values()) >= 2, what="redelivery")
        assert [v for _, v in got.values()] == [4.0, 5.0]

    run(main())


def test_unreachable_broker_is_retried_with_backoff_and_counted() -> None:
    async def main() -> None:
        queue = ReadingQueue()
        async with collector(free_port(), queue) as c:
            await eventually(lambda: c.stats.connection_failures >= 3, what="retries")
        assert not c.stats.connected
        assert "connect to 127.0.0.1" in c.stats.last_error

    run(main())


def test_tls_and_credentials_from_config_reach_an_authenticating_broker(tmp_path: Path) -> None:
    certs = make_certificates(tmp_path)
    with Mosquitto(tmp_path, users={"ingest": "s3cret"}, tls=certs) as broker:
        settings = MqttSettings(
            url=f"mqtts://127.0.0.1:{broker.port}",
            username="ingest",
            password="s3cret",
            ca_file=str(certs.ca),
        )
        wrong = settings.model_copy(update={"password": "guess"})

        async def main() -> None:
            queue = ReadingQueue()
            got = Received(queue)
            decoder = TelemetryDecoder({}, IDS, "ehs")
            async with MqttCollector(
                options=session_options(settings, "plant-1"), decoder=decoder, queue=queue
            ) as c:
                await eventually(lambda: c.stats.connected, what="connected over TLS")
                tls = ssl.create_default_context(cafile=str(certs.ca))
                async with aiomqtt.Client(
                    "127.0.0.1", broker.port, username="ingest", password="s3cret", tls_context=tls
                ) as pub:
                    await pub.publish("ehs/telemetry/G-201", "3.25", qos=1)
                await eventually(lambda: got.values() == [(0, 3.25)], what="the reading")
            refused = MqttCollector(
                options=session_options(wrong, "plant-1"),
                decoder=TelemetryDecoder({}, IDS, "ehs"),
                queue=ReadingQueue(),
                backoff=(0.05, 0.2),
            )
            async with refused:
                await eventually(lambda: refused.stats.connection_failures >= 1, what="refusal")
            assert not refused.stats.connected
            assert "broker refused" in refused.stats.last_error

        run(main())


def test_plain_client_cannot_reach_a_tls_listener_and_is_counted(tmp_path: Path) -> None:
    certs = make_certificates(tmp_path)
    with Mosquitto(tmp_path, tls=certs) as broker:

        async def main() -> None:
            c = collector(broker.port, ReadingQueue())
            async with c:
                await eventually(lambda: c.stats.connection_failures >= 1, what="failure")
            assert not c.stats.connected

        run(main())

"""`MqttCollector`: gas detectors and other MQTT sensors into the `ReadingQueue`.

One session task keeps a persistent MQTT session (clean_session false, a stable client
id, QoS 1), so that while ehswatch restarts the broker keeps the detectors' messages. It
reconnects with exponential backoff (0.2 s doubling to 10 s) after any failure. Messages
arrive in bulk (see `mqtt_wire`); each bulk is decoded into one `ReadingBatch` and handed
to the queue at once (evaluation never waits on storage). Without storage it is
acknowledged then. With storage (`ack_after_durable`), its PUBACKs wait, with the queue
number of its last reading, until the sink's durable watermark covers it: the sink calls
`durable_through(n)` when it moves, and the PUBACKs it covers go out (on the connection
the messages came on; a lost connection's are redelivered by the broker). Bad payloads
are counted by reason (`rejects`); no payload ends the session (a message that did would
be redelivered forever).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Self
from urllib.parse import urlsplit

from ehswatch.component import Backoff, Component, Job, still_wanted
from ehswatch.config import MqttSettings, PlantConfig
from ehswatch.ingest.mqtt_wire import (
    PINGREQ,
    MqttWireError,
    SessionOptions,
    SubscriberProtocol,
    open_subscriber,
    puback_packets,
)
from ehswatch.ingest.payloads import Rejects, TelemetryDecoder
from ehswatch.ingest.queue import ReadingQueue
from ehswatch.readings import ReadingBatch
from ehswatch.thresholds.table import ThresholdTable

log = logging.getLogger(__name__)


@dataclass
class MqttStats:
    connected: bool = False
    connects: int = 0
    connection_failures: int = 0
    messages: int = 0
    readings: int = 0
    last_error: str = ""
    last_message_at: float | None = None
    acks_waiting: int = 0  # PUBACKs held until the readings they cover are durable
    ack_wait_last_s: float = 0.0  # arrival to PUBACK, the oldest of the latest sent
    ack_wait_max_s: float = 0.0  # and the longest since start
    rejects: Rejects = field(default_factory=Rejects)


def session_options(mqtt: MqttSettings, site_id: str) -> SessionOptions:
    """Broker address, identity, credentials and TLS from the `mqtt` config section."""
    url = urlsplit(mqtt.url)
    secure = url.scheme == "mqtts"
    return SessionOptions(
        host=url.hostname or "127.0.0.1",
        port=url.port or (8883 if secure else 1883),
        client_id=mqtt.client_id or f"ehswatch-{site_id}-ingest",
        username=mqtt.username,
        password=mqtt.password,
        ssl_context=ssl.create_default_context(cafile=mqtt.ca_file) if secure else None,
    )


class MqttCollector(Component):
    component_name = "mqtt-collector"

    """Async context manager owning the session task; see the module docstring."""

    def __init__(
        self,
        *,
        options: SessionOptions,
        decoder: TelemetryDecoder,
        queue: ReadingQueue,
        clock: Callable[[], float] = time.time,
        backoff: tuple[float, float] = (0.2, 10.0),
    ) -> None:
        self.options = options
        self.decoder = decoder
        self.queue = queue
        self.stats = MqttStats(rejects=decoder.rejects)
        self._clock = clock
        self._backoff = backoff
        self._after_durable = False
        self._through = 0  # the sink's durable watermark (a queue number)
        # (queue number of the bulk's last reading, its connection, packet ids, arrival)
        self._acks: deque[tuple[int, SubscriberProtocol, list[int], float]] = deque()

    def ack_after_durable(self, on_durable: list[Callable[[int], None]]) -> None:
        """Hold PUBACKs until the storage sink reports the readings durable: register
        with its `on_durable` callbacks (`InfluxSink.on_durable`)."""
        self._after_durable = True
        on_durable.append(self.durable_through)

    def durable_through(self, n: int) -> None:
        """Every reading numbered up to `n` by the queue is safe: send their PUBACKs."""
        self._through = max(self._through, n)
        acks, st = self._acks, self.stats
        if not acks or acks[0][0] > self._through:
            return
        now, oldest = time.monotonic(), acks[0][3]
        while acks and acks[0][0] <= self._through:
            _, protocol, ids, _ = acks.popleft()
            st.acks_waiting -= len(ids)
            if not protocol.closed.done():
                protocol.send(puback_packets(ids))
        st.ack_wait_last_s = now - oldest
        st.ack_wait_max_s = max(st.ack_wait_max_s, st.ack_wait_last_s)

    @classmethod
    def from_config(
        cls,
        config: PlantConfig,
        table: ThresholdTable,
        queue: ReadingQueue,
        *,
        clock: Callable[[], float] = time.time,
    ) -> Self:
        """`clock` stamps readings whose payload has no `ts` (the service passes its
        `ServiceClock`, so that a wall-clock step does not make them look old)."""
        assert config.mqtt is not None
        topics = {s.mqtt.topic: table.index[s.id] for s in config.sensors if s.mqtt is not None}
        # Sensors with no source of their own publish on {prefix}/telemetry/{id}; a
        # sensor read over Modbus may still be published there by a gateway.
        decoder = TelemetryDecoder(
            topics, table.index, config.mqtt.topic_prefix, sensor_ids=table.sensor_ids
        )
        return cls(
            options=session_options(config.mqtt, config.site.id),
            decoder=decoder,
            queue=queue,
            clock=clock,
        )

    def jobs(self) -> Iterable[tuple[str, Job]]:
        yield "session", self._run

    async def _run(self) -> None:
        retry = Backoff(first=self._backoff[0], longest=self._backoff[1]).retrying()
        while True:
            try:
                protocol = await open_subscriber(self.options, self.decoder.subscriptions())
            except (OSError, MqttWireError, TimeoutError) as exc:
                still_wanted()  # a connect cut short by a stop is no failure to retry
                self.stats.connection_failures += 1
                self.stats.last_error = f"connect to {self.options.host}:{self.options.port}: {exc}"
                delay = retry.failed()
                log.warning("MQTT: %s; retrying in %.1f s", self.stats.last_error, delay)
                await asyncio.sleep(delay)
                continue
            retry.succeeded()
            self.stats.connected = True
            self.stats.connects += 1
            log.info("MQTT: connected to %s:%d", self.options.host, self.options.port)
            try:
                await self._pump(protocol)
            finally:
                self.stats.connected = False
                if protocol.transport is not None:
                    protocol.transport.close()
            self.stats.last_error = "connection lost"
            log.warning("MQTT: connection lost; reconnecting")
            still_wanted()
            await asyncio.sleep(retry.policy.first)  # a lost session is not yet a failure

    async def _pump(self, protocol: SubscriberProtocol) -> None:
        keepalive = asyncio.create_task(self._keepalive(protocol), name="mqtt-collector:keepalive")
        try:
            while not protocol.closed.done():
                await protocol.arrived.wait()
                topics, payloads, packet_ids = protocol.take()
                if not topics:
                    continue
                now = self._clock()
                try:
                    batch = self.decoder.decode(topics, payloads, now)
                except Exception as exc:
                    # `decode` counts every bad payload itself and is not meant to raise;
                    # should it, drop these messages, counted, and still acknowledge them:
                    # ending the session before PUBACK would have the broker redeliver
                    # them forever, with every MQTT sensor blind meanwhile.
                    log.exception("MQTT: decoding %d messages failed; dropped", len(topics))
                    for topic in topics:
                        self.stats.rejects.add("bad_value", topic, f"decoder failed: {exc!r}"[:120])
                    batch = ReadingBatch.empty()
                await self.queue.put(batch)
                acks = [p for p in packet_ids if p]
                if acks and self._after_durable:
                    # Acknowledged once the sink has them safe (see `durable_through`).
                    self._acks.append((self.queue.readings_in, protocol, acks, time.monotonic()))
                    self.stats.acks_waiting += len(acks)
                    self.durable_through(self._through)
                elif acks:  # no storage: acknowledged once handed on
                    protocol.send(puback_packets(acks))
                self.stats.messages += len(topics)
                self.stats.readings += len(batch)
                self.stats.last_message_at = now
        finally:
            keepalive.cancel()
            await asyncio.gather(keepalive, return_exceptions=True)

    async def _keepalive(self, protocol: SubscriberProtocol) -> None:
        """Ping at half the keepalive; a broker silent for 1.5 keepalives is gone."""
        period = self.options.keepalive_s / 2
        loop = asyncio.get_running_loop()
        while not protocol.closed.done():
            await asyncio.sleep(period)
            if loop.time() - protocol.last_rx > 1.5 * self.options.keepalive_s:
                log.warning(
                    "MQTT: broker silent for %.0f s, dropping the connection",
                    loop.time() - protocol.last_rx,
                )
                if protocol.transport is not None:
                    protocol.transport.abort()
                return
            protocol.send(PINGREQ)

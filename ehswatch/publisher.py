"""`RetainedPublisher`: current states to MQTT, retained, QoS 1 (docs/alarms.md).

Other components call `publish(topic, payload)`; only the latest payload per topic is
kept until it is sent, because a retained topic is a state, not a history (the history
is in InfluxDB and the audit log). On every (re)connection it publishes
``{prefix}/status`` = ``online`` (retained), with a last will that makes the broker
publish ``offline`` there if ehswatch dies, and then re-sends every topic's latest
payload. It reconnects with backoff (0.5 s doubling to 10 s).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

import aiomqtt

from ehswatch.component import Backoff, Component, Job, still_wanted
from ehswatch.config import MqttSettings

log = logging.getLogger(__name__)


RECONNECT = Backoff(first=0.5, longest=10.0)


class RetainedPublisher(Component):
    component_name = "mqtt-publisher"

    def __init__(self, settings: MqttSettings, site_id: str) -> None:
        url = urlsplit(settings.url)
        self._host = url.hostname or "127.0.0.1"
        self._secure = url.scheme == "mqtts"
        self._port = url.port or (8883 if self._secure else 1883)
        self._settings = settings
        self._client_id = f"{settings.client_id or f'ehswatch-{site_id}'}-publisher"
        self.status_topic = f"{settings.topic_prefix}/status"
        self._latest: dict[str, bytes] = {}
        self._unsent: set[str] = set()
        self._wake = asyncio.Event()
        self.connected = False
        self.published = 0

    def publish(self, topic: str, payload: dict[str, Any] | bytes) -> None:
        data = (
            payload
            if isinstance(payload, bytes)
            else json.dumps(payload, ensure_ascii=False).encode()
        )
        self._latest[topic] = data
        self._unsent.add(topic)
        self._wake.set()

    def jobs(self) -> Iterable[tuple[str, Job]]:
        yield "session", self._run

    async def _run(self) -> None:
        retry = RECONNECT.retrying()
        will = aiomqtt.Will(self.status_topic, b"offline", qos=1, retain=True)
        tls = None
        if self._secure:
            import ssl

            tls = ssl.create_default_context(cafile=self._settings.ca_file)
        while True:
            # Before every (re)connect: a disconnect that swallowed our cancellation (the
            # client's exit on 3.11 can) ends the block as if nothing happened.
            still_wanted()
            try:
                async with aiomqtt.Client(
                    self._host,
                    self._port,
                    identifier=self._client_id,
                    username=self._settings.username,
                    password=self._settings.password,
                    will=will,
                    tls_context=tls,
                ) as client:
                    self.connected = True
                    retry.succeeded()
                    await client.publish(self.status_topic, b"online", qos=1, retain=True)
                    self._unsent = set(self._latest)
                    while True:
                        while self._unsent:
                            topic = self._unsent.pop()
                            await client.publish(topic, self._latest[topic], qos=1, retain=True)
                            self.published += 1
                        # A publish that met our cancellation may have swallowed it (its
                        # wait for the PUBACK is 3.11's wait_for): look before waiting.
                        still_wanted()
                        self._wake.clear()
                        await self._wake.wait()
            except aiomqtt.MqttError as exc:
                self.connected = False
                still_wanted()  # a disconnect on the way out is no reason to reconnect
                delay = retry.failed()
                log.warning("MQTT publisher: %s; reconnecting in %.1f s", exc, delay)
                await asyncio.sleep(delay)

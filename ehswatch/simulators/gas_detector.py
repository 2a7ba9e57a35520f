"""Gas detector simulator: publishes scenario readings over MQTT, like a detector gateway.

Each tick (1 / rate_hz) every scripted MQTT sensor publishes its sample at QoS 1: one
message per reading on the sensor's topic (`single`), or all readings in one array on
``{prefix}/telemetry`` (`batch`). A sensor in dropout publishes nothing; a sensor in a
garbage window publishes the next of `GARBAGE`, a catalogue of the malformed payloads a
collector must survive.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Literal

import aiomqtt

from ehswatch.component import Component, Job, still_wanted
from ehswatch.simulators.scenario import Script

log = logging.getLogger(__name__)

GARBAGE: tuple[bytes, ...] = (
    b"\x00\xffnot json at all",
    b'{"v": "high"}',
    b'{"v": 12.5, "ts": "yesterday"}',
    b'{"v": 1.0, "q": -1}',
    b"[1, 2",
    b'{"q": 0}',
    b"true",
    b'{"v": 1.0, "ts": 99999999999999}',
    b"9" * 5000,
)


class GasDetectorSim(Component):
    component_name = "gas-detector-sim"

    def __init__(
        self,
        *,
        host: str,
        port: int,
        sensors: Sequence[tuple[str, str]],
        scripts: dict[str, Script],
        rate_hz: float = 1.0,
        mode: Literal["single", "batch"] = "single",
        prefix: str = "ehs",
        start: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.host, self.port = host, port
        self._sensors = [(sid, topic) for sid, topic in sensors if sid in scripts]
        self._scripts = scripts
        self._period = 1.0 / rate_hz
        self._mode = mode
        self._prefix = prefix
        self._clock = clock
        self.t0 = clock() if start is None else start
        self.published = 0
        self._garbage = itertools.cycle(GARBAGE)

    def jobs(self) -> Iterable[tuple[str, Job]]:
        yield "publish", self._run

    def messages(self) -> list[tuple[str, bytes]]:
        """What one tick publishes now: (topic, payload) pairs."""
        now = self._clock()
        t = now - self.t0
        ts = int(now * 1000)
        out: list[tuple[str, bytes]] = []
        batch: list[dict[str, object]] = []
        for sid, topic in self._sensors:
            sample = self._scripts[sid].sample(t)
            if sample.value is None:
                continue
            if sample.garbage:
                out.append((topic, next(self._garbage)))
            elif self._mode == "batch":
                batch.append({"id": sid, "v": round(sample.value, 4), "ts": ts})
            else:
                out.append(
                    (topic, json.dumps({"v": round(sample.value, 4), "ts": ts, "q": 0}).encode())
                )
        if batch:
            out.append((f"{self._prefix}/telemetry", json.dumps(batch).encode()))
        return out

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                async with aiomqtt.Client(self.host, self.port) as client:
                    next_at = loop.time()
                    while True:
                        for topic, payload in self.messages():
                            await client.publish(topic, payload, qos=1)
                            self.published += 1
                        still_wanted()  # a publish can swallow our cancellation (3.11)
                        next_at = max(next_at + self._period, loop.time())
                        await asyncio.sleep(next_at - loop.time())
            except aiomqtt.MqttError as exc:
                still_wanted()
                log.warning("gas detector simulator: %s; reconnecting in 1 s", exc)
                await asyncio.sleep(1.0)

"""A large generated plant run as `ehswatch run`, with the load a plant puts on it.

Shared by the isolation tests (20 000 sensors) and `benchmarks/plant_soak.py` (100 000):
- `plant_doc()`: `sensors` dust sensors at 1 Hz over MQTT in zones of 500, plus `trips`
  zones of one CH4 detector each, voting 1oo1 on their own coil of one PLC with a
  heartbeat of `heartbeat_s`;
- `Load`: publishes every sensor once a second as batches on ``ehs/telemetry``;
- `board()` and `export()`: what ten open boards (each refresh of the board page) and a
  full export ask of the API;
- `Trips`: publishes the reading that trips the next zone and times it to the coil write
  the PLC simulator receives; the simulator's writes also give the heartbeat's gaps.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
import httpx
import yaml

from ehswatch.simulators.plc import PlcSim, PlcWrite

VIEWER = "soak-viewer"
ZONE_SIZE = 500
TRIP_SETPOINT = 50.0
BATCH = 1000  # readings per MQTT message


def plant_doc(
    work: Path,
    *,
    broker: int,
    plc: int,
    api: int,
    sensors: int,
    trips: int,
    heartbeat_s: float = 0.5,
    influx_url: str | None = None,
) -> dict[str, Any]:
    zones: list[dict[str, Any]] = [{"id": f"area-{k}"} for k in range(-(-sensors // ZONE_SIZE))]
    zones += [
        {
            "id": f"trip-{k}",
            "interlock": {"plc": "plc-1", "coil": k, "voting": "1oo1", "sensor_types": ["ch4"]},
        }
        for k in range(trips)
    ]
    doc: dict[str, Any] = {
        "site": {"id": "big", "name": "big plant"},
        "mqtt": {"url": f"mqtt://127.0.0.1:{broker}", "client_id": "ehswatch-big"},
        "database": {"url": f"sqlite+aiosqlite:///{work}/ehswatch.db"},
        "api": {"host": "127.0.0.1", "port": api},
        "hazards": {"evidence_dir": str(work / "evidence")},
        "users": [
            {
                "name": "board",
                "role": "viewer",
                "token_sha256": hashlib.sha256(VIEWER.encode()).hexdigest(),
            },
            # Who approves each grade's archive (a plant without them is refused).
            *(
                {
                    "name": f"{role}.big",
                    "role": role,
                    "token_sha256": hashlib.sha256(f"{role}-big".encode()).hexdigest(),
                }
                for role in ("supervisor", "dept_head", "safety_director", "gm")
            ),
        ],
        "sensor_types": {
            "dust": {
                "unit": "mg/m3",
                "high": {"warning": 10, "alarm": 20, "interlock": 40},
                "deadband": 1,
                "stale_after_s": 3600,
            },
            "ch4": {
                "unit": "%LEL",
                "high": {"warning": 10, "alarm": 25, "interlock": TRIP_SETPOINT},
                "deadband": 2,
                "stale_after_s": 3600,
            },
        },
        "plcs": [
            {
                "id": "plc-1",
                "host": "127.0.0.1",
                "port": plc,
                "heartbeat": {"register": 200, "period_s": heartbeat_s},
            }
        ],
        "zones": zones,
        "sensors": [
            {"id": f"D-{i}", "type": "dust", "zone": f"area-{i // ZONE_SIZE}"}
            for i in range(sensors)
        ]
        + [{"id": f"T-{k}", "type": "ch4", "zone": f"trip-{k}"} for k in range(trips)],
    }
    if influx_url is not None:
        doc["influxdb"] = {
            "url": influx_url,
            "token": "soak",
            "org": "ehs",
            "bucket": "telemetry",
            "spool_dir": str(work / "spool"),
        }
    return doc


def write_config(work: Path, doc: dict[str, Any]) -> Path:
    path = work / "plant.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    return path


@dataclass
class Load:
    """Every one of `sensors` sensors once a second, in batches of `BATCH` readings, until
    `stopping` is set; then one QoS 1 message whose PUBACK says that the broker has
    every batch before it (`flushed`), so that `sent` counts what the broker got."""

    broker: int
    sensors: int
    sent: int = 0
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    flushed: bool = False

    async def run(self) -> None:
        client = aiomqtt.Client("127.0.0.1", self.broker)
        await client.__aenter__()
        try:
            loop = asyncio.get_running_loop()
            start = loop.time()
            second = 0
            batches = range(0, self.sensors, BATCH)
            while not self.stopping.is_set():
                # Spread over the second, as a plant's gateways are not in step.
                for k, lo in enumerate(batches):
                    ts = int(time.time() * 1000)
                    items = ",".join(
                        f'{{"id":"D-{i}","v":{3 + (i + second) % 5 / 10},"ts":{ts}}}'
                        for i in range(lo, min(lo + BATCH, self.sensors))
                    )
                    await client.publish("ehs/telemetry", f"[{items}]", qos=0)
                    self.sent += min(BATCH, self.sensors - lo)
                    due = start + second + (k + 1) / len(batches)
                    if self.stopping.is_set():
                        break
                    await asyncio.sleep(max(0.0, due - loop.time()))
                second += 1
            await client.publish("soak/flushed", b"", qos=1)
            self.flushed = True
        finally:
            await _leave(client)

    async def stop(self, task: asyncio.Task[None], timeout: float = 30.0) -> None:
        """Stop `run()` (its task) after the batch it is sending and the flush; cancel it
        if that takes longer than `timeout`."""
        self.stopping.set()
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(task)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def _leave(client: aiomqtt.Client) -> None:
    """aiomqtt's exit waits for the broker to close the connection after DISCONNECT, and
    under load paho can wait for that for ever: at most 5 s, then its socket is closed."""
    try:
        async with asyncio.timeout(5.0):
            await client.__aexit__(None, None, None)
    except TimeoutError:
        sock = client._client.socket()  # paho's client: aiomqtt has no public way
        if sock is not None:
            sock.close()


def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {VIEWER}"}


BOARD_REFRESH_S = 2.0  # as the board page (ehswatch/api/board/index.html) refreshes


async def board(http: httpx.AsyncClient, zone: str, stats: dict[str, float]) -> None:
    """One open board, asking what the board page asks on each refresh: the zone
    summaries, the alarms, the tickets, and the sensors of the zone it shows, with ten
    minutes of sparkline."""
    while True:
        t = time.perf_counter()
        answers = list(
            await asyncio.gather(
                http.get("/api/zones", headers=auth()),
                http.get("/api/alarms?limit=200", headers=auth()),
                http.get("/api/hazards", headers=auth()),
            )
        )
        answers.append(
            await http.get(f"/api/sensors?zone={zone}&history=600&limit=500", headers=auth())
        )
        for r in answers:
            r.raise_for_status()
        stats["board_requests"] = stats.get("board_requests", 0) + len(answers)
        stats["board_bytes"] = stats.get("board_bytes", 0) + sum(len(r.content) for r in answers)
        stats["board_max_s"] = max(stats.get("board_max_s", 0.0), time.perf_counter() - t)
        await asyncio.sleep(BOARD_REFRESH_S)


async def export(http: httpx.AsyncClient, stats: dict[str, float], *, loop: bool) -> None:
    """A full export of every sensor with ten minutes of sparkline."""
    while True:
        t = time.perf_counter()
        size = 0
        async with http.stream(
            "GET", "/api/sensors?limit=1000000&history=600", headers=auth(), timeout=120
        ) as r:
            r.raise_for_status()
            async for chunk in r.aiter_bytes():
                size += len(chunk)
        stats["exports"] = stats.get("exports", 0) + 1
        stats["export_bytes"] = size
        stats["export_s"] = round(time.perf_counter() - t, 3)
        if not loop:
            return


@dataclass
class Trips:
    """Publishes the reading that trips zone `trip-k` and times it to coil k's write."""

    broker: int
    next: int = 0
    latencies_s: list[float] = field(default_factory=list)
    _sent: dict[int, float] = field(default_factory=dict)
    _done: dict[int, asyncio.Event] = field(default_factory=dict)

    def on_write(self, write: PlcWrite) -> None:
        if write.table == "coil" and write.address in self._sent and write.values[0]:
            k = write.address
            if k in self._done and not self._done[k].is_set():
                self.latencies_s.append(time.time() - self._sent[k])
                self._done[k].set()

    async def trip(self, client: aiomqtt.Client, timeout: float = 10.0) -> float:
        k = self.next
        self.next += 1
        self._done[k] = asyncio.Event()
        self._sent[k] = time.time()
        await client.publish(f"ehs/telemetry/T-{k}", json.dumps({"v": 62.5}), qos=1)
        async with asyncio.timeout(timeout):
            await self._done[k].wait()
        return self.latencies_s[-1]


def heartbeat_stamps(plc: PlcSim) -> list[float]:
    """When the PLC simulator received each heartbeat write."""
    assert plc.plc.heartbeat is not None
    reg = plc.plc.heartbeat.address
    return [w.ts for w in plc.writes if w.table == "register" and w.address == reg]


def heartbeat_gaps(plc: PlcSim, since: float) -> float:
    """The longest time between two heartbeat writes after `since` (and up to now);
    `since` itself when there were none."""
    stamps = [t for t in heartbeat_stamps(plc) if t >= since]
    if not stamps:
        return time.time() - since
    return max((b - a for a, b in itertools.pairwise([*stamps, time.time()])), default=0.0)


async def until_answering(http: httpx.AsyncClient, timeout: float = 60.0) -> dict[str, Any]:
    """The first /health answer that shows the control part subscribed to the broker."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        with contextlib.suppress(httpx.TransportError, ValueError):
            report: dict[str, Any] = (await http.get("/health")).json()
            if report.get("checks", {}).get("mqtt", {}).get("connected"):
                return report
        if loop.time() > deadline:
            raise AssertionError("the service did not come up")
        await asyncio.sleep(0.2)


def load_main() -> None:
    """`python -m tests.big_plant BROKER_PORT SENSORS COUNT_FILE`: `Load` in a process of
    its own (so that a benchmark's timing and PLC simulator are not starved by it),
    writing how many readings it sent to COUNT_FILE every second and when stopped."""
    import signal
    import sys

    port, sensors, count_file = int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
    load = Load(port, sensors)

    async def main() -> None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, load.stopping.set)
        task = asyncio.create_task(load.run(), name="load")
        while not load.stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(load.stopping.wait(), 1.0)
            count_file.write_text(str(load.sent))
        await load.stop(task)
        if not load.flushed:
            raise SystemExit("the load could not flush its last batches to the broker")
        count_file.write_text(str(load.sent))

    asyncio.run(main())


def watch_main() -> None:
    """`python -m tests.big_plant watch API_PORT STATS_FILE`: ten `board()` clients and
    one `export()` in a process of their own (so that reading the answers does not delay
    a benchmark's PLC simulator and its stamps), writing their stats as JSON to
    STATS_FILE when stopped."""
    import signal
    import sys

    port, stats_file = int(sys.argv[2]), Path(sys.argv[3])

    async def main() -> None:
        stats: dict[str, float] = {}
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=120) as http:
            tasks = [
                asyncio.create_task(board(http, f"area-{k}", stats), name=f"watch:board-{k}")
                for k in range(10)
            ]
            tasks.append(asyncio.create_task(export(http, stats, loop=False), name="watch:export"))
            await stop.wait()
            for task in tasks:
                task.cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
        failures = [r for r in results if not isinstance(r, asyncio.CancelledError | None)]
        stats["failures"] = len(failures)
        stats_file.write_text(json.dumps(stats))

    asyncio.run(main())


if __name__ == "__main__":
    import sys

    if sys.argv[1:2] == ["watch"]:
        watch_main()
    else:
        load_main()

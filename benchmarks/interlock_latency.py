"""Interlock latency: MQTT publish of the reading that completes a vote → coil written at
the PLC, against a floor measured in the same run. Prints one JSON object.

The service runs as its own process (`ehswatch run`) on a generated plant: `--samples`
zones, each 1oo1 over one CH4 detector and one coil of a simulated PLC, plus 200 detectors
without interlocks that a separate publisher process floods with single-reading messages
(`--background` per second). For each sample, this process publishes one reading above
the interlock setpoint and times, on one clock, from just before the publish to the PLC
simulator receiving the coil write.

The floor is the same path with no ehswatch: a tiny subscriber process (aiomqtt, pymodbus)
subscribed like the service to every per-sensor telemetry topic of the same mosquitto at
QoS 1, so it takes the same background flood. It decodes every message, and on a reading
of `F-k` at or above the setpoint writes coil k of a second PLC simulator of the same kind
(no read-back: only the write is timed). It is timed exactly like the service, from the
same publisher, with the same pacing. Both subscribers and the background load run for
the whole measurement; the floor's samples are taken first, so that the service's own
work after its trips (the read-back and re-assert of tripped outputs, alarms, storage)
cannot inflate the floor. `p99_over_floor` is `p99_ms / floor_p99_ms`.

Usage: python benchmarks/interlock_latency.py [--samples N] [--background MSGS_PER_S]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiomqtt  # noqa: E402
import yaml  # noqa: E402
from pymodbus.client import AsyncModbusTcpClient  # noqa: E402

from ehswatch.config import parse_config  # noqa: E402
from ehswatch.simulators.plc import PlcSim, PlcWrite  # noqa: E402
from tests.servers import Mosquitto, free_port, start_service  # noqa: E402

BACKGROUND_SENSORS = 200
SETPOINT = 50  # %LEL: the CH4 interlock setpoint of the generated plant
TRIP_PAYLOAD = '{"v": 62.5}'
SERVICE_TOPIC = "ehs/telemetry/G-"  # + k: the reading that trips zone k of the service
FLOOR_TOPIC = "ehs/telemetry/F-"  # + k: the reading that trips coil k of the floor
TELEMETRY_FILTER = "ehs/telemetry/+"  # what the service subscribes to (at QoS 1)
COIL_TIMEOUT_S = 10.0


def plant(work: Path, broker: int, plc: int, samples: int) -> dict[str, Any]:
    zones = [
        {
            "id": f"z{k}",
            "interlock": {"plc": "plc-1", "coil": k, "voting": "1oo1", "sensor_types": ["ch4"]},
        }
        for k in range(samples)
    ]
    zones.append({"id": "background"})
    sensors = [{"id": f"G-{k}", "type": "ch4", "zone": f"z{k}"} for k in range(samples)]
    sensors += [
        {"id": f"B-{j}", "type": "ch4", "zone": "background"} for j in range(BACKGROUND_SENSORS)
    ]
    return {
        "site": {"id": "bench", "name": "bench"},
        "mqtt": {"url": f"mqtt://127.0.0.1:{broker}", "client_id": "ehswatch-bench"},
        "database": {"url": f"sqlite+aiosqlite:///{work}/ehswatch.db"},
        "api": {"host": "127.0.0.1", "port": free_port()},
        "sensor_types": {
            "ch4": {
                "unit": "%LEL",
                "high": {"warning": 10, "alarm": 25, "interlock": SETPOINT},
                "deadband": 2,
                "stale_after_s": 3600,
            }
        },
        "plcs": [
            {
                "id": "plc-1",
                "host": "127.0.0.1",
                "port": plc,
                "heartbeat": {"register": 1000, "period_s": 1.0},
            }
        ],
        "zones": zones,
        "sensors": sensors,
    }


async def background(port: int, rate: int) -> None:
    """Publish `rate` normal single-reading messages per second until killed."""
    async with aiomqtt.Client("127.0.0.1", port) as client:
        loop = asyncio.get_running_loop()
        tick, sent, start = 0.01, 0, loop.time()
        while True:
            due = int((loop.time() - start) * rate)
            while sent < due:
                await client.publish(
                    f"ehs/telemetry/B-{sent % BACKGROUND_SENSORS}",
                    f'{{"v": {1.0 + sent % 7 / 10}}}',
                    qos=0,
                )
                sent += 1
            if sent % (rate * 5) < rate // 100 + 1:
                print(json.dumps({"sent": sent, "elapsed": loop.time() - start}), flush=True)
            await asyncio.sleep(tick)


async def floor_subscriber(broker: int, plc: int, unit: int) -> None:
    """The floor: the trip with no ehswatch. Prints `ready` once subscribed, runs until
    killed."""
    modbus = AsyncModbusTcpClient("127.0.0.1", port=plc, timeout=2.0, retries=0)
    if not await modbus.connect():
        raise SystemExit(f"floor: cannot connect to the PLC simulator on port {plc}")
    try:
        async with aiomqtt.Client("127.0.0.1", broker) as client:
            await client.subscribe(TELEMETRY_FILTER, qos=1)
            print("ready", flush=True)
            async for message in client.messages:
                payload = message.payload
                if not isinstance(payload, bytes | bytearray | str):
                    continue
                value = json.loads(payload).get("v")
                topic = message.topic.value
                if (
                    topic.startswith(FLOOR_TOPIC)
                    and isinstance(value, int | float)
                    and value >= SETPOINT
                ):
                    coil = int(topic[len(FLOOR_TOPIC) :])
                    rr = await modbus.write_coil(coil, True, device_id=unit)
                    if rr.isError():
                        raise SystemExit(f"floor: the PLC refused coil {coil}: {rr}")
    finally:
        modbus.close()


class Trips:
    """The first write of 1 to each coil of a PLC simulator, and when it arrived."""

    def __init__(self) -> None:
        self.arrived: dict[int, float] = {}
        self._events: dict[int, asyncio.Event] = {}

    def on_write(self, w: PlcWrite) -> None:
        if w.table == "coil" and w.values == (1,) and w.address not in self.arrived:
            self.arrived[w.address] = w.ts
            self._event(w.address).set()

    def _event(self, address: int) -> asyncio.Event:
        return self._events.setdefault(address, asyncio.Event())

    async def wait(self, address: int, what: str) -> float:
        try:
            await asyncio.wait_for(self._event(address).wait(), COIL_TIMEOUT_S)
        except TimeoutError:
            raise RuntimeError(
                f"{what}: coil {address} not written within {COIL_TIMEOUT_S:g} s"
            ) from None
        return self.arrived[address]


async def trip_latencies(
    client: aiomqtt.Client, topic: str, trips: Trips, samples: int, what: str
) -> tuple[list[float], float]:
    """Publish one tripping reading to `topic`+k for each k in turn; ms from just before
    each publish to coil k arriving at the simulator, and the seconds it all took."""
    latencies = []
    t_start = time.perf_counter()
    for k in range(samples):
        t0 = time.perf_counter()
        await client.publish(f"{topic}{k}", TRIP_PAYLOAD, qos=0)
        latencies.append((await trips.wait(k, what) - t0) * 1000)
        await asyncio.sleep(0.02)
    return latencies, time.perf_counter() - t_start


async def service_ready(service: asyncio.subprocess.Process, plc: PlcSim) -> str | None:
    """None once the service beats its PLC's heartbeat, else why it does not."""
    deadline = time.perf_counter() + 30.0
    while len(plc.heartbeats) < 2:
        if service.returncode is not None:
            return f"ehswatch exited with status {service.returncode}"
        if time.perf_counter() > deadline:
            return "ehswatch did not beat its PLC heartbeat within 30 s"
        await asyncio.sleep(0.05)
    return None


def summary(latencies: list[float]) -> tuple[float, float, float]:
    """p50, p99 and max, in ms, rounded."""
    ordered = sorted(latencies)
    return (
        round(statistics.median(ordered), 2),
        round(ordered[max(0, int(len(ordered) * 0.99) - 1)], 2),
        round(ordered[-1], 2),
    )


async def measure(work: Path, samples: int, rate: int) -> dict[str, Any]:
    with Mosquitto(work) as broker:
        doc = plant(work, broker.port, free_port(), samples)
        (work / "plant.yaml").write_text(yaml.safe_dump(doc), encoding="utf-8")
        plc_cfg = parse_config(yaml.safe_dump(doc), env={}).plcs[0]
        floor_cfg = plc_cfg.model_copy(update={"id": "floor", "port": free_port()})
        trips, floor_trips = Trips(), Trips()
        size = max(samples, 1001) + 1
        latencies: list[float] = []
        duration = 0.0
        error: str | None = None
        async with (
            PlcSim(plc_cfg, size=size, clock=time.perf_counter, on_write=trips.on_write) as plc,
            PlcSim(floor_cfg, size=size, clock=time.perf_counter, on_write=floor_trips.on_write),
        ):
            env = {**os.environ, "PYTHONUNBUFFERED": "1"}
            service = await start_service(work / "plant.yaml", work / "service.log")
            floor = await asyncio.create_subprocess_exec(
                sys.executable,
                __file__,
                "--floor-subscriber",
                str(broker.port),
                str(floor_cfg.port),
                str(floor_cfg.unit),
                stdout=asyncio.subprocess.PIPE,
                env=env,
            )
            load = await asyncio.create_subprocess_exec(
                sys.executable,
                __file__,
                "--background-publisher",
                str(broker.port),
                str(rate),
                stdout=asyncio.subprocess.PIPE,
                env=env,
            )
            try:
                assert floor.stdout is not None
                line = await asyncio.wait_for(floor.stdout.readline(), 30.0)
                if line.strip() != b"ready":
                    raise RuntimeError(f"the floor subscriber did not start: {line!r}")
                error = await service_ready(service, plc)
                await asyncio.sleep(2.0)  # let the background load settle
                async with aiomqtt.Client("127.0.0.1", broker.port) as client:
                    floor_latencies, _ = await trip_latencies(
                        client, FLOOR_TOPIC, floor_trips, samples, "floor"
                    )
                    if error is None:
                        try:
                            latencies, duration = await trip_latencies(
                                client, SERVICE_TOPIC, trips, samples, "ehswatch"
                            )
                        except RuntimeError as exc:
                            error = str(exc)
            finally:
                for proc in (load, floor, service):
                    with contextlib.suppress(ProcessLookupError):
                        proc.terminate()
                out, _ = await load.communicate()
                await floor.communicate()
                await service.wait()
        reports = [json.loads(line) for line in out.decode().splitlines() if line.strip()]
        bg_rate = reports[-1]["sent"] / reports[-1]["elapsed"] if reports else 0.0
    floor_p50, floor_p99, _ = summary(floor_latencies)
    result: dict[str, Any] = {"p50_ms": None, "p99_ms": None, "max_ms": None}
    if latencies:
        p50, p99, worst = summary(latencies)
        result = {"p50_ms": p50, "p99_ms": p99, "max_ms": worst}
    result |= {
        "floor_p50_ms": floor_p50,
        "floor_p99_ms": floor_p99,
        "p99_over_floor": round(p99 / floor_p99, 2) if latencies else None,
        "background_msgs_per_s": round(bg_rate),
        "samples": len(latencies),
        "duration_s": round(duration, 1),
    }
    if error is not None:
        tail = (work / "service.log").read_text(encoding="utf-8", errors="replace").splitlines()
        result["error"] = " | ".join([error, *tail[-3:]])
    return result


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--background-publisher":
        asyncio.run(background(int(sys.argv[2]), int(sys.argv[3])))
        return
    if len(sys.argv) == 5 and sys.argv[1] == "--floor-subscriber":
        asyncio.run(floor_subscriber(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])))
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=300)
    ap.add_argument("--background", type=int, default=2500)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = asyncio.run(measure(Path(tmp), args.samples, args.background))
    print(json.dumps(result))
    if "error" in result:
        sys.exit(1)


if __name__ == "__main__":
    main()

"""Interlock latency: MQTT publish of the reading that completes a vote → coil written at
the PLC. Prints one JSON object.

The service runs as its own process (`ehswatch run`) on a generated plant: `--samples`
zones, each 1oo1 over one CH4 detector and one coil of a simulated PLC, plus 200 detectors
without interlocks that a separate publisher process floods with single-reading messages
(`--background` per second). For each sample, this process publishes one reading above
the interlock setpoint and times, on one clock, from just before the publish to the PLC
simulator receiving the coil write.

Usage: python benchmarks/interlock_latency.py [--samples N] [--background MSGS_PER_S]
"""

from __future__ import annotations

import argparse
import asyncio
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

from ehswatch.config import parse_config  # noqa: E402
from ehswatch.simulators.plc import PlcSim, PlcWrite  # noqa: E402
from tests.servers import Mosquitto, free_port  # noqa: E402

BACKGROUND_SENSORS = 200


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
                "high": {"warning": 10, "alarm": 25, "interlock": 50},
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


async def measure(work: Path, samples: int, rate: int) -> dict[str, Any]:
    with Mosquitto(work) as broker:
        doc = plant(work, broker.port, free_port(), samples)
        (work / "plant.yaml").write_text(yaml.safe_dump(doc), encoding="utf-8")
        plc_cfg = parse_config(yaml.safe_dump(doc), env={}).plcs[0]
        arrived: dict[int, float] = {}
        events: dict[int, asyncio.Event] = {}

        def on_write(w: PlcWrite) -> None:
            if w.table == "coil" and w.values == (1,) and w.address not in arrived:
                arrived[w.address] = w.ts
                events.setdefault(w.address, asyncio.Event()).set()

        async with PlcSim(
            plc_cfg, size=max(samples, 1001) + 1, clock=time.perf_counter, on_write=on_write
        ) as plc:
            env = {**os.environ, "PYTHONUNBUFFERED": "1"}
            with (work / "service.log").open("ab") as log:
                service = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "ehswatch",
                    "run",
                    "--config",
                    str(work / "plant.yaml"),
                    stdout=log,
                    stderr=asyncio.subprocess.STDOUT,
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
                while len(plc.heartbeats) < 2:
                    await asyncio.sleep(0.05)
                await asyncio.sleep(2.0)  # let the background load settle
                latencies = []
                async with aiomqtt.Client("127.0.0.1", broker.port) as client:
                    t_start = time.perf_counter()
                    for k in range(samples):
                        ev = events.setdefault(k, asyncio.Event())
                        t0 = time.perf_counter()
                        await client.publish(f"ehs/telemetry/G-{k}", '{"v": 62.5}', qos=0)
                        await asyncio.wait_for(ev.wait(), 10)
                        latencies.append((arrived[k] - t0) * 1000)
                        await asyncio.sleep(0.02)
                    duration = time.perf_counter() - t_start
            finally:
                load.terminate()
                out, _ = await load.communicate()
                service.terminate()
                await service.wait()
        reports = [json.loads(line) for line in out.decode().splitlines() if line.strip()]
        bg_rate = reports[-1]["sent"] / reports[-1]["elapsed"] if reports else 0.0
    latencies.sort()
    return {
        "p50_ms": round(statistics.median(latencies), 2),
        "p99_ms": round(latencies[max(0, int(len(latencies) * 0.99) - 1)], 2),
        "max_ms": round(latencies[-1], 2),
        "background_msgs_per_s": round(bg_rate),
        "samples": len(latencies),
        "duration_s": round(duration, 1),
    }


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--background-publisher":
        asyncio.run(background(int(sys.argv[2]), int(sys.argv[3])))
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=300)
    ap.add_argument("--background", type=int, default=2500)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        print(json.dumps(asyncio.run(measure(Path(tmp), args.samples, args.background))))


if __name__ == "__main__":
    main()

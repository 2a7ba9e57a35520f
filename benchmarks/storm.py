"""Alarm storm: 10 000 sensors on 100 Modbus gateways, and every gateway dies at once.
Prints one JSON object.

Three processes: the gateways (one process, 100 pymodbus TCP listeners, each answering
for its 100 float32 sensors with a steady reading), the service (`ehswatch run`, its own
process, polling every gateway each second), and this one, which plays the PLC (a PLC
simulator whose heartbeat register the service writes every `period_s`), a webhook
receiver for the notifications, and the stopwatch. Once the service reads every gateway,
the gateway process is killed (SIGKILL: every connection drops at the same instant).

Printed:
- `settle_s`: from the kill to the last alarm and the last ticket stored (this process
  reads the service's SQLite database every 0.1 s, until the counts hold still for
  `QUIET_S` seconds);
- `alarms_opened` (the device comm alarms and the sensor faults grouped under them),
  `device_alarms`, `grouped_faults`, `tickets_opened`, `notifications_sent` (webhook
  messages the receiver took);
- `max_heartbeat_gap_s`: the longest gap between two heartbeat writes at the PLC
  simulator, from `WARMUP_S` before the kill until the storm has settled, and
  `period_s`, the heartbeat period.

Goals: `settle_s` ≤ 5, `tickets_opened` ≤ 100, `max_heartbeat_gap_s` ≤ 2 × `period_s`.

Usage: python benchmarks/storm.py [--devices 100] [--sensors-per-device 100]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import signal
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import yaml  # noqa: E402
from pymodbus.constants import ExcCodes  # noqa: E402

from ehswatch.config import ModbusPoint, parse_config  # noqa: E402
from ehswatch.ingest.registers import encode  # noqa: E402
from ehswatch.simulators.modbus_server import READ_HOLDING, ModbusServerSim  # noqa: E402
from ehswatch.simulators.plc import PlcSim, PlcWrite  # noqa: E402
from tests.fakes import RobotServer  # noqa: E402
from tests.servers import free_port, start_service  # noqa: E402

PERIOD_S = 1.0  # the PLC heartbeat period
HEARTBEAT_REGISTER = 1000
QUIET_S = 3.0  # the storm has settled when nothing new is stored for this long
WARMUP_S = 2.0  # heartbeat gaps are measured from this long before the kill
READING = 3.0  # mg/m3: every sensor reads a steady, normal value


def plant(work: Path, gateways: list[int], per_device: int, plc: int, hook: str) -> dict[str, Any]:
    sensors = [
        {
            "id": f"D-{d}-{k}",
            "type": "dust",
            # Gateway 0's first three sensors guard the interlocked hall (2oo3, fail-safe).
            "zone": "hall" if d == 0 and k < 3 else f"z{d}",
            "modbus": {"device": f"gw-{d}", "register": 2 * k},
        }
        for d in range(len(gateways))
        for k in range(per_device)
    ]
    return {
        "site": {"id": "storm", "name": "storm"},
        "database": {"url": f"sqlite+aiosqlite:///{work}/ehswatch.db"},
        "api": {"host": "127.0.0.1", "port": free_port()},
        "sensor_types": {
            "dust": {
                "unit": "mg/m3",
                "high": {"warning": 10, "alarm": 20, "interlock": 40},
                "deadband": 1.0,
                "stale_after_s": 3600,
            }
        },
        "modbus_devices": [
            {
                "id": f"gw-{d}",
                "host": "127.0.0.1",
                "port": port,
                "poll_interval_s": 1.0,
                "timeout_s": 0.5,
                "retries": 1,
            }
            for d, port in enumerate(gateways)
        ],
        "plcs": [
            {
                "id": "plc-1",
                "host": "127.0.0.1",
                "port": plc,
                "heartbeat": {"register": HEARTBEAT_REGISTER, "period_s": PERIOD_S},
            }
        ],
        "zones": [
            {
                "id": "hall",
                "interlock": {
                    "plc": "plc-1",
                    "coil": 0,
                    "voting": "2oo3",
                    "sensor_types": ["dust"],
                },
            },
            *({"id": f"z{d}"} for d in range(len(gateways))),
        ],
        "sensors": sensors,
        "notifications": {
            "channels": [{"id": "hook", "type": "webhook", "url": hook}],
            "routes": [{"match": {"tiers": ["fault"]}, "notify": ["hook"]}],
        },
        "hazards": {"evidence_dir": str(work / "evidence")},
    }


# ------------------------------------------------------------------ the gateways' process


class SteadyGateway(ModbusServerSim):
    """A gateway whose holding registers hold `READING` as float32 for every sensor."""

    def __init__(self, port: int, per_device: int) -> None:
        super().__init__(
            host="127.0.0.1",
            port=port,
            unit=1,
            registers=2 * per_device,
            bits=16,
            on_request=self._answer,
        )
        self._words = encode(READING, ModbusPoint(device="x", register=0)) * per_device

    async def _answer(
        self,
        fc: int,
        start: int,
        address: int,
        count: int,
        registers: list[int],
        values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        if fc != READ_HOLDING or values is not None:
            return ExcCodes.ILLEGAL_FUNCTION
        registers[:] = self._words[: len(registers)]
        return None


async def serve_gateways(ports: list[int], per_device: int) -> None:
    """Serve every gateway until killed; prints `ready` once all listen."""
    async with contextlib.AsyncExitStack() as stack:
        for port in ports:
            await stack.enter_async_context(SteadyGateway(port, per_device))
        print("ready", flush=True)
        await asyncio.Event().wait()


# ------------------------------------------------------------------ the stopwatch


def counts(db: Path) -> tuple[int, int, int, int]:
    """Alarms, device alarms, grouped faults, tickets stored (committed) so far."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5.0)
    try:
        (alarms, devices, grouped) = con.execute(
            "SELECT count(*), coalesce(sum(kind = 'comm'), 0), "
            "coalesce(sum(grouped_under != ''), 0) FROM alarm"
        ).fetchone()
        (tickets,) = con.execute("SELECT count(*) FROM hazard_ticket").fetchone()
    except sqlite3.OperationalError:  # not migrated yet
        return 0, 0, 0, 0
    finally:
        con.close()
    return int(alarms), int(devices), int(grouped), int(tickets)


async def all_gateways_read(api: str, devices: int, service: Any) -> None:
    """Until /health shows every gateway connected and polled without errors."""
    deadline = time.monotonic() + 90.0
    async with httpx.AsyncClient() as client:
        while True:
            if service.returncode is not None:
                raise RuntimeError(f"ehswatch exited with status {service.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError("the service did not read every gateway within 90 s")
            with contextlib.suppress(httpx.HTTPError):
                health = (await client.get(f"{api}/health", timeout=2.0)).json()
                modbus = health.get("checks", {}).get("modbus", {})
                if len(modbus) == devices and all(m["connected"] for m in modbus.values()):
                    return
            await asyncio.sleep(0.2)


def distinct_ports(n: int) -> list[int]:
    """`n` free loopback ports, no two alike."""
    ports: dict[int, None] = {}
    while len(ports) < n:
        ports[free_port()] = None
    return list(ports)


async def measure(work: Path, devices: int, per_device: int) -> dict[str, Any]:
    *ports, plc, api = distinct_ports(devices + 2)
    with RobotServer() as robots:
        doc = plant(work, ports, per_device, plc, f"{robots.url}/hook")
        doc["api"]["port"] = api
        (work / "plant.yaml").write_text(yaml.safe_dump(doc), encoding="utf-8")
        config = parse_config(yaml.safe_dump(doc), env={})
        beats: list[float] = []

        def on_write(w: PlcWrite) -> None:
            if w.table == "register" and w.address == HEARTBEAT_REGISTER:
                beats.append(w.ts)

        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        async with PlcSim(
            config.plcs[0], size=HEARTBEAT_REGISTER + 1, clock=time.monotonic, on_write=on_write
        ):
            gateways = await asyncio.create_subprocess_exec(
                sys.executable,
                __file__,
                "--serve-gateways",
                json.dumps(ports),
                str(per_device),
                stdout=asyncio.subprocess.PIPE,
                env=env,
            )
            service = await start_service(work / "plant.yaml", work / "service.log")
            try:
                assert gateways.stdout is not None
                line = await asyncio.wait_for(gateways.stdout.readline(), 60.0)
                if line.strip() != b"ready":
                    raise RuntimeError(f"the gateways did not start: {line!r}")
                await all_gateways_read(f"http://127.0.0.1:{doc['api']['port']}", devices, service)
                await asyncio.sleep(WARMUP_S)  # a few polls of every gateway, beats before
                db = work / "ehswatch.db"
                before = counts(db)
                # Every gateway dies at once.
                killed = time.monotonic()
                gateways.send_signal(signal.SIGKILL)
                await gateways.wait()
                last, last_change = before, killed
                while time.monotonic() - last_change < QUIET_S:
                    if time.monotonic() - killed > 60.0:
                        break
                    await asyncio.sleep(0.1)
                    now = counts(db)
                    if now != last:
                        last, last_change = now, time.monotonic()
                settled = time.monotonic()
                # A gap still open at either edge of the window counts too.
                edges = [
                    killed - WARMUP_S,
                    *(b for b in beats if killed - WARMUP_S <= b <= settled),
                    settled,
                ]
                gaps = [b - a for a, b in itertools.pairwise(edges)]
            finally:
                for proc in (gateways, service):
                    with contextlib.suppress(ProcessLookupError):
                        proc.terminate()
                await gateways.wait()
                await service.wait()
        sent = len(robots.delivered("/hook"))
    alarms, device_alarms, grouped, tickets = (a - b for a, b in zip(last, before, strict=True))
    return {
        "settle_s": round(last_change - killed, 2),
        "alarms_opened": alarms,
        "device_alarms": device_alarms,
        "grouped_faults": grouped,
        "tickets_opened": tickets,
        "notifications_sent": sent,
        "max_heartbeat_gap_s": round(max(gaps), 3),
        "period_s": PERIOD_S,
        "sensors": devices * per_device,
        "devices": devices,
    }


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--serve-gateways":
        asyncio.run(serve_gateways(json.loads(sys.argv[2]), int(sys.argv[3])))
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", type=int, default=100)
    ap.add_argument("--sensors-per-device", type=int, default=100)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = asyncio.run(measure(Path(tmp), args.devices, args.sensors_per_device))
    print(json.dumps(result))


if __name__ == "__main__":
    main()

"""The trip path on real protocol traffic: MQTT batches through mosquitto into the whole
service, trips read at a PLC simulator over Modbus TCP. One test per way naive code
misses a trip: a transient inside one batch, a gateway listing its buffer newest first,
a device clock ahead for one reading, a poison payload before the reading that trips."""

from __future__ import annotations

import json
import math
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
import yaml

from ehswatch.config import PlantConfig, parse_config
from ehswatch.service import Service
from ehswatch.simulators.plc import PlcSim
from tests.aio import eventually, run
from tests.servers import Mosquitto, free_port

ZONES = {  # zone: (voting, sensors, coil, sensor type)
    "ch4-room": ("2oo2", ["CH-1", "CH-2"], 0, "ch4"),
    "grinder": ("1oo1", ["D-1"], 1, "dust"),
    "spike": ("1oo1", ["S-1"], 2, "ch4"),
    "clock": ("1oo1", ["K-1"], 3, "ch4"),
    "poison": ("1oo1", ["P-1"], 4, "ch4"),
}


HEARTBEAT_S = 0.2


def plant(broker_port: int, plc_port: int, workdir: Path) -> PlantConfig:
    doc: dict[str, Any] = {
        "site": {"id": "plant-1", "name": "test"},
        "mqtt": {"url": f"mqtt://127.0.0.1:{broker_port}", "client_id": f"ehs-{broker_port}"},
        "database": {"url": f"sqlite+aiosqlite:///{workdir}/ehswatch.db"},
        "api": {"host": "127.0.0.1", "port": free_port()},
        "sensor_types": {
            "ch4": {
                "unit": "%LEL",
                "high": {"warning": 10, "alarm": 25, "interlock": 50},
                "deadband": 2.0,
                "stale_after_s": 3600,
            },
            "dust": {
                "unit": "mg/m3",
                "high": {"warning": 10, "alarm": 20, "interlock": 40},
                "deadband": 1.0,
                "on_delay_s": 2.0,
                "stale_after_s": 3600,
            },
        },
        "plcs": [
            {
                "id": "plc-1",
                "host": "127.0.0.1",
                "port": plc_port,
                "heartbeat": {"register": 100, "period_s": HEARTBEAT_S},
            }
        ],
        "zones": [
            {
                "id": z,
                "interlock": {"plc": "plc-1", "coil": coil, "voting": v, "sensor_types": [t]},
            }
            for z, (v, _, coil, t) in ZONES.items()
        ],
        "sensors": [
            {"id": s, "type": t, "zone": z} for z, (_, ss, _, t) in ZONES.items() for s in ss
        ],
        "hazards": {"evidence_dir": str(workdir / "evidence")},
    }
    return parse_config(yaml.safe_dump(doc), env={})


@dataclass
class Plant:
    service: Service
    plc: PlcSim
    port: int

    async def publish(self, topic: str, payload: bytes | str) -> None:
        async with aiomqtt.Client("127.0.0.1", self.port) as client:
            await client.publish(topic, payload, qos=1)

    async def batch(self, readings: list[tuple[str, float, float]]) -> None:
        """One message on the batch topic: (sensor, value, ts in seconds)."""
        items = [{"id": s, "v": v, "ts": round(ts * 1000)} for s, v, ts in readings]
        await self.publish("ehs/telemetry", json.dumps(items))

    def coil(self, zone: str) -> bool:
        return self.plc.coils.get(ZONES[zone][2], False)

    async def trips(self, zone: str) -> None:
        await eventually(lambda: self.coil(zone), timeout=10, what=f"{zone} tripped at the PLC")
        assert self.service.interlock is not None
        assert self.service.interlock.states[zone].tripped


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    with Mosquitto(tmp_path) as b:
        yield b


@asynccontextmanager
async def running(broker: Mosquitto, workdir: Path) -> AsyncIterator[Plant]:
    config = plant(broker.port, free_port(), workdir)
    async with PlcSim(config.plcs[0]) as plc, Service(config, tick_s=0.2) as service:
        assert service.mqtt is not None and service.interlock is not None
        await eventually(
            lambda: service.mqtt is not None and service.mqtt.stats.connected, what="MQTT session"
        )
        await eventually(
            lambda: (
                service.interlock is not None
                and all(link.connected for link in service.interlock.links.values())
            ),
            what="PLC link",
        )
        yield Plant(service, plc, broker.port)


def test_a_2oo2_transient_inside_one_batch_trips(broker: Mosquitto, tmp_path: Path) -> None:
    async def main() -> None:
        async with running(broker, tmp_path) as p:
            t = time.time()
            # Both channels at the interlock tier together for 100 ms, inside one batch.
            await p.batch(
                [("CH-1", 60, t), ("CH-2", 61, t + 0.1), ("CH-1", 5, t + 0.2), ("CH-2", 5, t + 0.3)]
            )
            await p.trips("ch4-room")
            assert not any(p.coil(z) for z in ZONES if z != "ch4-room")

    run(main())


def test_one_channel_at_a_time_does_not_trip_a_2oo2_zone(broker: Mosquitto, tmp_path: Path) -> None:
    """The other side of the vote: channels at the interlock tier one after the other."""

    async def main() -> None:
        async with running(broker, tmp_path) as p:
            t = time.time()
            await p.batch(
                [
                    ("CH-1", 60, t),
                    ("CH-1", 5, t + 0.1),
                    ("CH-2", 61, t + 0.2),
                    ("CH-2", 5, t + 0.3),
                    ("S-1", 60, t + 0.4),
                ]
            )
            await p.trips("spike")  # the batch was evaluated
            assert not p.coil("ch4-room")

    run(main())


def test_a_spike_inside_one_batch_trips_1oo1(broker: Mosquitto, tmp_path: Path) -> None:
    async def main() -> None:
        async with running(broker, tmp_path) as p:
            t = time.time()
            await p.batch([("S-1", 5, t), ("S-1", 55, t + 0.05), ("S-1", 5, t + 0.1)])
            await p.trips("spike")

    run(main())


def test_a_gateway_listing_its_buffer_newest_first_trips(broker: Mosquitto, tmp_path: Path) -> None:
    async def main() -> None:
        async with running(broker, tmp_path) as p:
            t = time.time() - 5
            # 45 mg/m3 held for 2.5 s (the on-delay is 2 s), listed newest first.
            readings = [("D-1", 45.0, t + k * 0.5) for k in range(6)]
            await p.batch([("D-1", 3.0, t - 0.5), *readings][::-1])
            await p.trips("grinder")
            assert p.service.stage.stats.late == 0

    run(main())


def test_a_device_clock_ahead_for_one_reading_blinds_nothing(
    broker: Mosquitto, tmp_path: Path
) -> None:
    async def main() -> None:
        async with running(broker, tmp_path) as p:
            t = time.time()
            await p.publish("ehs/telemetry/K-1", json.dumps({"v": 3.0, "ts": round(t * 1000)}))
            # One reading stamped 50 s ahead: rejected and counted, not the latest.
            ahead = {"v": 3.0, "ts": round((t + 50) * 1000)}
            await p.publish("ehs/telemetry/K-1", json.dumps(ahead))
            k = p.service.table.index["K-1"]
            ev = p.service.stage.evaluator
            await eventually(lambda: ev.future_count[k] == 1, what="the reading ahead rejected")
            # The true reading that follows is taken, and trips.
            await p.publish(
                "ehs/telemetry/K-1", json.dumps({"v": 70.0, "ts": round(t * 1000) + 500})
            )
            await p.trips("clock")
            assert ev.late_count[k] == 0

    run(main())


def test_a_poison_payload_before_the_reading_that_trips_blinds_nothing(
    broker: Mosquitto, tmp_path: Path
) -> None:
    async def main() -> None:
        async with running(broker, tmp_path) as p:
            await p.publish("ehs/telemetry/P-1", b'{"v": 1' + b"0" * 400 + b"}")
            await p.publish("ehs/telemetry", b"[" * 100_000)
            await p.publish("ehs/telemetry/P-1", b"\xff\xfe\x00garbage")
            await p.publish("ehs/telemetry/P-1", b"77.5")
            await p.trips("poison")
            assert p.service.mqtt is not None
            assert p.service.mqtt.stats.rejects.total == 3
            assert all(h.restarts == 0 for h in p.service.mqtt.health.values())

    run(main())


def test_a_nan_then_a_good_value_trips_as_a_fault_vote(broker: Mosquitto, tmp_path: Path) -> None:
    async def main() -> None:
        async with running(broker, tmp_path) as p:
            t = time.time()
            assert not math.isnan(t)
            await p.publish(
                "ehs/telemetry",
                f'[{{"id": "P-1", "v": NaN, "ts": {round(t * 1000)}}},'
                f' {{"id": "P-1", "v": 3.0, "ts": {round(t * 1000) + 100}}}]',
            )
            await p.trips("poison")

    run(main())


def test_a_100_000_reading_replay_keeps_the_heartbeat_and_the_api_on_pace(
    broker: Mosquitto, tmp_path: Path
) -> None:
    """A gateway replaying its buffer: 100 000 readings of one sensor stamped ten minutes
    ago, in five messages. The heartbeat keeps its period, and the replay's own
    interlock reading still trips (taken raise-only: they are older than the latest)."""

    async def main() -> None:
        async with running(broker, tmp_path) as p:
            t = time.time()
            await p.batch([("S-1", 3.0, t)])
            await eventually(lambda: p.service.stage.stats.readings >= 1, what="first reading")
            hb_before = len(p.plc.heartbeats)
            base = t - 600
            for part in range(5):
                readings = [
                    ("S-1", 60.0 if k == 99_999 else 3.0, base + k * 0.005)
                    for k in range(part * 20_000, (part + 1) * 20_000)
                ]
                await p.batch(readings)
            await eventually(
                lambda: p.service.stage.stats.readings >= 100_001, timeout=30, what="the replay"
            )
            await p.trips("spike")
            await eventually(
                lambda: len(p.plc.heartbeats) >= hb_before + 5, what="heartbeats meanwhile"
            )
            stamps = [w.ts for w in p.plc.writes if w.table == "register" and w.address == 100]
            gaps = [
                b - a for a, b in zip(stamps[hb_before:], stamps[hb_before + 1 :], strict=False)
            ]
            assert len(gaps) >= 3
            assert max(gaps) <= 2 * HEARTBEAT_S, f"heartbeat gap {max(gaps):.3f} s"
            # Late readings (older than the sensor's latest) are counted, none is lost.
            assert p.service.stage.stats.late == 100_000

    run(main())

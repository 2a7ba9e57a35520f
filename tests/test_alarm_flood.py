"""Alarm floods from a dead Modbus gateway (ISA-18.2 state-based suppression): a device
that stops answering is ONE comm alarm and ONE hazard ticket; its sensors' faults are
grouped under it — listed, still voting for interlocks, but neither notified nor
ticketed one by one. Through the whole service, against pymodbus simulators over real
Modbus TCP, a PLC simulator and a fake webhook receiver; and the grouping rules on the
alarm manager alone, with readings handed in."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import yaml

from ehswatch.alarms import model
from ehswatch.alarms.events import EventStream
from ehswatch.alarms.manager import AlarmManager
from ehswatch.alarms.model import AlarmKind, AlarmState
from ehswatch.alarms.relay import AlarmRelay
from ehswatch.config import ModbusDevice, ModbusPoint, PlantConfig, parse_config
from ehswatch.db import Database
from ehswatch.hazards.desk import HazardDesk
from ehswatch.ingest.modbus import DeviceStatus, ModbusCollector
from ehswatch.ingest.queue import ReadingQueue
from ehswatch.ingest.registers import RegisterPlan
from ehswatch.readings import Quality, ReadingBatch
from ehswatch.roles import Actor
from ehswatch.service import Service
from ehswatch.simulators.dust_monitor import DustMonitorSim
from ehswatch.simulators.plc import PlcSim
from ehswatch.simulators.scenario import Sample, Scenario, compile_scripts
from ehswatch.thresholds.stage import EvaluatorStage
from ehswatch.thresholds.table import ThresholdTable
from tests.aio import eventually, run
from tests.fakes import RobotServer
from tests.parts import both_parts
from tests.servers import free_port

GATEWAY_SENSORS = [f"D-{k}" for k in range(50)]  # all on gw-1; D-0..D-2 vote for "hall"
HALL = GATEWAY_SENSORS[:3]
SINGLE = "S-1"  # alone on gw-2
DEVICE = "device:gw-1"
LI = Actor(name="li.wei", role="operator")


# ------------------------------------------------------------------ the plant


def plant(workdir: Path, robots: RobotServer, ports: dict[str, int]) -> PlantConfig:
    device = {"host": "127.0.0.1", "poll_interval_s": 0.1, "timeout_s": 0.2, "retries": 0}
    sensors: list[dict[str, Any]] = [
        {
            "id": sid,
            "type": "dust",
            "zone": "hall" if sid in HALL else "line",
            "modbus": {"device": "gw-1", "register": 2 * k},
        }
        for k, sid in enumerate(GATEWAY_SENSORS)
    ]
    sensors.append(
        {"id": SINGLE, "type": "dust", "zone": "booth", "modbus": {"device": "gw-2", "register": 0}}
    )
    doc: dict[str, Any] = {
        "site": {"id": "plant-1", "name": "test"},
        "database": {"url": f"sqlite+aiosqlite:///{workdir}/ehswatch.db"},
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
            {"id": "gw-1", "port": ports["gw-1"], **device},
            {"id": "gw-2", "port": ports["gw-2"], **device},
        ],
        "plcs": [{"id": "plc-1", "host": "127.0.0.1", "port": ports["plc"]}],
        "zones": [
            {
                "id": "hall",
                "interlock": {
                    "plc": "plc-1",
                    "coil": 0,
                    "voting": "2oo3",
                    "sensor_types": ["dust"],
                    "fault_counts_as_trip": True,
                },
            },
            {"id": "line"},
            {"id": "booth"},
        ],
        "sensors": sensors,
        "notifications": {
            "channels": [{"id": "hook", "type": "webhook", "url": f"{robots.url}/hook"}],
            "routes": [{"match": {"tiers": ["fault"]}, "notify": ["hook"]}],
        },
        "hazards": {"evidence_dir": str(workdir / "evidence")},
    }
    return parse_config(yaml.safe_dump(doc), env={})


class Gateway(DustMonitorSim):
    """A dust-monitor gateway whose sensors read a steady 3 mg/m3; while `broken`, it
    answers every read with an exception (a device that answers, with bad data)."""

    def __init__(self, config: PlantConfig, device: str) -> None:
        dev = next(d for d in config.modbus_devices if d.id == device)
        points = [
            (s.id, s.modbus)
            for s in config.sensors
            if s.modbus is not None and s.modbus.device == device
        ]
        sc = Scenario.model_validate(
            {"name": device, "sensors": {sid: {"baseline": 3.0} for sid, _ in points}}
        )
        super().__init__(dev, points, compile_scripts(sc))
        self.broken = False

    def samples(self) -> dict[str, Sample]:
        s = super().samples()
        return {k: Sample(v.value, garbage=True) for k, v in s.items()} if self.broken else s


@dataclass
class Plant:
    service: Service
    gw1: Gateway
    gw2: Gateway
    plc: PlcSim
    robots: RobotServer
    db_path: Path

    def rows(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        con = sqlite3.connect(self.db_path)
        try:
            return con.execute(sql, args).fetchall()
        finally:
            con.close()

    def open_alarms(self, kind: str) -> list[dict[str, Any]]:
        """Open alarms of a kind as the API lists them (straight from the database)."""
        cols = ["id", "sensor", "kind", "state", "active", "grouped_under", "suppressed_by"]
        rows = self.rows(
            f"SELECT {', '.join(cols)} FROM alarm WHERE kind = ? AND closed_at IS NULL", kind
        )
        return [dict(zip(cols, r, strict=True)) for r in rows]

    def device_alarm(self) -> dict[str, Any] | None:
        found = [a for a in self.open_alarms("comm") if a["sensor"] == DEVICE]
        return found[0] if found else None

    def settled(self) -> bool:
        """Every outbox event stored so far is relayed and read by the hazard desk."""
        (last,) = self.rows("SELECT coalesce(max(id), 0) FROM alarm_outbox")[0]
        (unpublished,) = self.rows("SELECT count(*) FROM alarm_outbox WHERE published_at IS NULL")[
            0
        ]
        cursor = self.rows("SELECT last_event_id FROM outbox_cursor WHERE name = 'hazard-desk'")
        return unpublished == 0 and bool(cursor) and cursor[0][0] == last

    def tickets(self) -> list[tuple[str, str, str]]:
        return [
            (str(s), str(k), str(g))
            for s, k, g in self.rows("SELECT sensor, kind, grade FROM hazard_ticket ORDER BY id")
        ]

    def alarm_notifications(self) -> list[str]:
        """The sensor of each alarm notification queued (any channel, any state)."""
        return [
            json.loads(p)["alarm"]["sensor"]
            for (p,) in self.rows(
                "SELECT payload FROM notification WHERE kind = 'alarm' ORDER BY id"
            )
        ]

    async def answering(self) -> None:
        """Both gateways read, every sensor has a value."""
        modbus = self.service.modbus
        assert modbus is not None
        await eventually(
            lambda: all(s.up for s in modbus.status.values()) and len(modbus.status) == 2,
            what="both gateways up",
        )
        ev = self.service.stage.evaluator
        await eventually(lambda: bool(np.isfinite(ev.last_value).all()), what="every sensor read")

    async def gateway_dies(self) -> dict[str, Any]:
        """gw-1 goes away; its one comm alarm and 50 grouped faults are stored; returns the
        device alarm."""
        await self.gw1.stop()
        await eventually(
            lambda: self.device_alarm() is not None, timeout=10, what="the device alarm"
        )
        dev = self.device_alarm()
        assert dev is not None
        await eventually(
            lambda: (
                len([a for a in self.open_alarms("fault") if a["suppressed_by"] == dev["id"]])
                == len(GATEWAY_SENSORS)
            ),
            timeout=10,
            what="50 faults grouped under the device alarm",
        )
        return dev


def ports() -> dict[str, int]:
    return {"gw-1": free_port(), "gw-2": free_port(), "plc": free_port()}


@asynccontextmanager
async def running(tmp_path: Path, robots: RobotServer) -> AsyncIterator[Plant]:
    config = plant(tmp_path, robots, ports())
    async with (
        PlcSim(config.plcs[0]) as plc,
        Gateway(config, "gw-1") as gw1,
        Gateway(config, "gw-2") as gw2,
        both_parts(config, tick_s=0.2) as (service, _desk),
    ):
        p = Plant(service, gw1, gw2, plc, robots, tmp_path / "ehswatch.db")
        await p.answering()
        yield p


# ------------------------------------------------------------------ through the service


def test_a_gateway_that_dies_is_one_alarm_and_one_ticket(tmp_path: Path) -> None:
    with RobotServer() as robots:

        async def main() -> None:
            async with running(tmp_path, robots) as p:
                dev = await p.gateway_dies()
                assert (dev["state"], dev["active"]) == (AlarmState.UNACK_ACTIVE, 1)
                await eventually(p.settled, timeout=10, what="relay and hazard desk caught up")
                # One comm alarm; the 50 sensor faults are alarms too, listed with their
                # group, every one of them.
                assert [a["sensor"] for a in p.open_alarms("comm")] == [DEVICE]
                faults = p.open_alarms("fault")
                assert sorted(a["sensor"] for a in faults) == sorted(GATEWAY_SENSORS)
                assert {(a["grouped_under"], a["suppressed_by"]) for a in faults} == {
                    (DEVICE, dev["id"])
                }
                assert all(a["state"] == AlarmState.UNACK_ACTIVE for a in faults)
                cached = p.service.alarms.open[("D-7", AlarmKind.FAULT)]
                assert cached.grouped and cached.suppressed_by == dev["id"]
                # One ticket, for the device, graded as a fault; none per sensor.
                assert p.tickets() == [(DEVICE, "comm", "C")]
                # One notification: the device alarm, not 50 (nor one flood of 50).
                assert p.alarm_notifications() == [DEVICE]
                await eventually(
                    lambda: len(robots.delivered("/hook")) == 1, timeout=10, what="the message"
                )
                (message,) = robots.delivered("/hook")
                assert message["kind"] == "alarm"
                assert [a["sensor"] for a in message["alarms"]] == [DEVICE]
                assert "COMM LOST" in message["title"]

        run(main(), timeout=90)


def test_the_grouped_faults_still_vote_and_trip_the_interlock(tmp_path: Path) -> None:
    with RobotServer() as robots:

        async def main() -> None:
            async with running(tmp_path, robots) as p:
                interlock = p.service.interlock
                assert interlock is not None
                assert not interlock.states["hall"].tripped and not p.plc.coils.get(0)
                await p.gateway_dies()
                # The hall's 2oo3 is fail-safe: its lost sensors vote, grouped or not.
                await eventually(
                    lambda: p.plc.coils.get(0, False), timeout=10, what="hall tripped at the PLC"
                )
                assert interlock.states["hall"].tripped
                assert bool(p.service.stage.evaluator.faulted[:3].all())

        run(main(), timeout=90)


def test_the_gateway_answers_again_its_alarm_returns_and_the_faults_clear(
    tmp_path: Path,
) -> None:
    with RobotServer() as robots:

        async def main() -> None:
            async with running(tmp_path, robots) as p:
                dev = await p.gateway_dies()
                await p.gw1.start()
                await eventually(
                    lambda: (d := p.device_alarm()) is not None and not d["active"],
                    timeout=15,
                    what="the device alarm returned",
                )
                returned = p.device_alarm()
                assert returned is not None and returned["id"] == dev["id"]
                assert returned["state"] == AlarmState.UNACK_RETURNED  # waits for its ack
                # The sensors read good again: their grouped faults returned and closed
                # (nobody was asked to acknowledge them); nothing released on its own.
                await eventually(
                    lambda: p.open_alarms("fault") == [], timeout=10, what="faults cleared"
                )
                assert not p.service.stage.evaluator.faulted.any()
                await eventually(p.settled, timeout=10, what="relay and hazard desk caught up")
                assert p.tickets() == [(DEVICE, "comm", "C")]
                assert p.alarm_notifications() == [DEVICE]
                events = p.rows(
                    "SELECT o.event FROM alarm_outbox o JOIN alarm a ON a.id = o.alarm_id "
                    "WHERE a.sensor = 'D-7' ORDER BY o.id"
                )
                assert [e for (e,) in events] == ["raised", "returned", "closed"]
                # An operator acknowledges the one alarm: it closes.
                alarms = p.service.alarms
                await alarms.ack(dev["id"], LI)
                assert p.device_alarm() is None

        run(main(), timeout=90)


def test_a_single_sensor_fault_on_a_healthy_device_is_its_own_alarm_and_ticket(
    tmp_path: Path,
) -> None:
    with RobotServer() as robots:

        async def main() -> None:
            async with running(tmp_path, robots) as p:
                p.gw2.broken = True  # it answers, with an exception: the sensor is BAD
                await eventually(
                    lambda: [a["sensor"] for a in p.open_alarms("fault")] == [SINGLE],
                    timeout=10,
                    what="the sensor's fault alarm",
                )
                await eventually(p.settled, timeout=10, what="relay and hazard desk caught up")
                (fault,) = p.open_alarms("fault")
                assert (fault["grouped_under"], fault["suppressed_by"]) == ("", None)
                assert p.open_alarms("comm") == []  # the device answers: no device alarm
                modbus = p.service.modbus
                assert modbus is not None and modbus.status["gw-2"].up
                assert p.tickets() == [(SINGLE, "fault", "C")]
                assert p.alarm_notifications() == [SINGLE]
                await eventually(
                    lambda: len(robots.delivered("/hook")) == 1, timeout=10, what="the message"
                )

        run(main(), timeout=90)


# ------------------------------------------------------------------ the collector's status


def test_the_collector_hands_over_down_once_before_the_lost_readings_and_up_once() -> None:
    dev = ModbusDevice.model_validate(
        {
            "id": "gw",
            "host": "127.0.0.1",
            "port": free_port(),
            "poll_interval_s": 0.05,
            "timeout_s": 0.2,
            "retries": 0,
        }
    )
    points = [(f"P-{k}", ModbusPoint(device="gw", register=2 * k)) for k in range(4)]
    sc = Scenario.model_validate(
        {"name": "t", "sensors": {sid: {"baseline": 2.0} for sid, _ in points}}
    )

    async def main() -> None:
        queue = ReadingQueue()
        seen: list[tuple[bool, list[int]]] = []

        def listener(status: DeviceStatus) -> None:
            # What the queue holds when the change is handed over: never a reading that
            # follows from it.
            seen.append((status.up, sorted(set(queue.drain_nowait().quality.tolist()))))

        plan = RegisterPlan.build([(k, p) for k, (_, p) in enumerate(points)])
        async with DustMonitorSim(dev, points, compile_scripts(sc)) as sim:
            collector = ModbusCollector(devices=[(dev, plan)], queue=queue, on_status=[listener])
            async with collector:
                await eventually(lambda: len(seen) == 1, what="up")
                await sim.stop()
                await eventually(lambda: collector.stats["gw"].errors >= 3, what="retries")
                assert collector.status["gw"].up is False
                assert collector.status["gw"].reason
                await sim.start()
                await eventually(lambda: len(seen) == 3, timeout=10, what="up again")
                assert collector.status["gw"].up
        assert [up for up, _ in seen] == [True, False, True]  # one change each, no repeats
        assert Quality.COMM_LOST not in seen[1][1]
        assert Quality.COMM_LOST not in seen[0][1]

    run(main())


# ------------------------------------------------------------------ the manager alone

T0 = 1_800_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def small_plant(tmp_path: Path) -> PlantConfig:
    doc: dict[str, Any] = {
        "site": {"id": "plant-1", "name": "test"},
        "database": {"url": f"sqlite+aiosqlite:///{tmp_path}/db.sqlite"},
        "sensor_types": {
            "dust": {
                "unit": "mg/m3",
                "high": {"warning": 10, "alarm": 20, "interlock": 40},
                "stale_after_s": 3600,
            }
        },
        "modbus_devices": [{"id": "gw", "host": "127.0.0.1", "port": 9}],
        "zones": [{"id": "a"}, {"id": "b"}],
        "sensors": [
            {
                "id": f"M-{k}",
                "type": "dust",
                "zone": "a" if k < 2 else "b",
                "modbus": {"device": "gw", "register": 2 * k},
            }
            for k in range(5)
        ],
        "notifications": {
            "channels": [{"id": "hook", "type": "webhook", "url": "http://127.0.0.1:9/hook"}],
            "routes": [
                {
                    "match": {"tiers": ["fault"]},
                    "notify": ["hook"],
                    "escalate_after_s": 60,
                    "escalate_to": ["hook"],
                }
            ],
        },
        "hazards": {"evidence_dir": str(tmp_path / "evidence")},
    }
    return parse_config(yaml.safe_dump(doc), env={})


@dataclass
class Rig:
    clock: Clock
    stage: EvaluatorStage
    alarms: AlarmManager
    relay: AlarmRelay
    desk: HazardDesk
    db_path: Path

    def read(self, values: dict[str, float], quality: int = 0) -> None:
        self.clock.now += 1.0
        idx = self.stage.table.index
        self.stage.evaluate(
            ReadingBatch.of(
                [idx[s] for s in values],
                list(values.values()),
                [self.clock.now] * len(values),
                [quality] * len(values),
            )
        )

    def device(self, up: bool) -> None:
        self.clock.now += 0.5
        self.alarms.on_device_status(
            DeviceStatus(device="gw", up=up, at=self.clock.now, reason="" if up else "no answer")
        )

    async def settle(self) -> None:
        await eventually(
            lambda: not self.alarms._queue and not self.alarms._wake.is_set(), what="written"
        )
        async with self.alarms._lock:
            pass
        while await self.relay.relay_once():
            pass
        while await self.desk.intake_once():
            pass

    def fault(self, sensor: str) -> model.Alarm | None:
        return self.alarms.open.get((sensor, AlarmKind.FAULT))

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        con = sqlite3.connect(self.db_path)
        try:
            return con.execute(sql).fetchall()
        finally:
            con.close()

    def notified(self) -> list[str]:
        return [
            json.loads(p)["alarm"]["sensor"]
            for (p,) in self.rows("SELECT payload FROM notification ORDER BY id")
        ]

    def tickets(self) -> list[str]:
        return [s for (s,) in self.rows("SELECT sensor FROM hazard_ticket ORDER BY id")]


@asynccontextmanager
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    config = small_plant(tmp_path)
    clock = Clock()
    stage = EvaluatorStage(
        table=ThresholdTable.from_config(config), queue=ReadingQueue(), clock=clock
    )
    async with Database(config.database.url) as db, httpx.AsyncClient() as client:
        alarms = AlarmManager(config=config, evaluator=stage.evaluator, db=db, clock=clock)
        relay = AlarmRelay(config=config, db=db, stream=EventStream(), clock=clock)
        desk = HazardDesk(config=config, db=db, clock=clock, client=client)
        stage.listen(alarms.on_evaluation)
        async with alarms:
            yield Rig(clock, stage, alarms, relay, desk, tmp_path / "db.sqlite")


ALL = [f"M-{k}" for k in range(5)]
NAN = float("nan")


def test_the_device_alarm_takes_the_zone_of_most_of_its_sensors(tmp_path: Path) -> None:
    async def main() -> None:
        async with rig(tmp_path) as r:
            r.device(up=False)
            r.read(dict.fromkeys(ALL, NAN), quality=Quality.COMM_LOST)
            await r.settle()
            dev = r.alarms.open[("device:gw", AlarmKind.COMM)]
            assert (dev.zone, dev.sensor_type, dev.route_tier) == ("b", "dust", "fault")
            assert all(r.fault(s).suppressed_by == dev.id for s in ALL)  # type: ignore[union-attr]
            assert r.notified() == ["device:gw"] and r.tickets() == ["device:gw"]

    run(main())


def test_a_grouped_fault_never_escalates_its_device_alarm_does(tmp_path: Path) -> None:
    async def main() -> None:
        async with rig(tmp_path) as r:
            r.device(up=False)
            r.read(dict.fromkeys(ALL, NAN), quality=Quality.COMM_LOST)
            await r.settle()
            r.clock.now += 61
            await r.alarms.run_schedule()
            dev = r.alarms.open[("device:gw", AlarmKind.COMM)]
            assert dev.escalations == 1
            assert all(r.fault(s).escalations == 0 for s in ALL)  # type: ignore[union-attr]

    run(main())


def test_a_sensor_still_faulted_after_its_device_answers_is_released_as_its_own_alarm(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        async with rig(tmp_path) as r:
            r.device(up=False)
            r.read(dict.fromkeys(ALL, NAN), quality=Quality.COMM_LOST)
            await r.settle()
            r.device(up=True)
            # The device answers: four sensors read good, M-3 reads bad.
            r.read({s: 3.0 for s in ALL if s != "M-3"})
            r.read({"M-3": 3.0}, quality=Quality.BAD)
            await eventually(lambda: not (a := r.fault("M-3")) or not a.grouped, what="release")
            await r.settle()
            m3 = r.fault("M-3")
            assert m3 is not None and m3.active and not m3.grouped and m3.suppressed_by is None
            assert m3.state == AlarmState.UNACK_ACTIVE
            assert all(r.fault(s) is None for s in ALL if s != "M-3")  # cleared and closed
            assert r.alarms.open[("device:gw", AlarmKind.COMM)].active is False
            # From now on an alarm of its own: notified and ticketed.
            assert r.notified() == ["device:gw", "M-3"]
            assert r.tickets() == ["device:gw", "M-3"]
            events = r.rows(
                "SELECT o.event FROM alarm_outbox o JOIN alarm a ON a.id = o.alarm_id "
                "WHERE a.sensor = 'M-3' ORDER BY o.id"
            )
            assert [e for (e,) in events] == ["raised", "released"]

    run(main())


def test_a_fault_from_before_the_outage_keeps_its_own_alarm(tmp_path: Path) -> None:
    async def main() -> None:
        async with rig(tmp_path) as r:
            r.read({"M-0": 3.0}, quality=Quality.BAD)  # the sensor itself, device healthy
            await r.settle()
            own = r.fault("M-0")
            assert own is not None and not own.grouped
            r.device(up=False)
            r.read(dict.fromkeys(ALL, NAN), quality=Quality.COMM_LOST)
            await r.settle()
            assert r.fault("M-0") == own  # still its own: it was annunciated already
            assert all(r.fault(s).grouped for s in ALL[1:])  # type: ignore[union-attr]
            assert r.tickets() == ["M-0", "device:gw"]

    run(main())


def test_a_device_down_again_before_its_sensors_recover_takes_them_into_the_new_alarm(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        async with rig(tmp_path) as r:
            r.device(up=False)
            r.read(dict.fromkeys(ALL, NAN), quality=Quality.COMM_LOST)
            await r.settle()
            first = r.alarms.open[("device:gw", AlarmKind.COMM)]
            await r.alarms.ack(first.id or 0, LI)
            r.device(up=True)  # answers, closes the acknowledged episode, then dies again
            r.device(up=False)
            r.read(dict.fromkeys(ALL, NAN), quality=Quality.COMM_LOST)
            await r.settle()
            second = r.alarms.open[("device:gw", AlarmKind.COMM)]
            assert second.id != first.id and second.active
            assert {r.fault(s).suppressed_by for s in ALL} == {second.id}  # type: ignore[union-attr]
            assert r.tickets() == ["device:gw", "device:gw"]

    run(main())

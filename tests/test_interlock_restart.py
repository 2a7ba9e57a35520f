"""`kill -9` of the real service with a zone latched (and the latch stored), then a start:
still latched, output re-asserted; the broker announces the death (last will) and the
latched state (retained)."""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
from pathlib import Path
from typing import Any

import aiomqtt
import yaml
from pymodbus.client import AsyncModbusTcpClient

from ehswatch.config import parse_config
from ehswatch.simulators.plc import PlcSim
from tests.aio import eventually, run
from tests.servers import Mosquitto, free_port, start_service
from tests.test_interlock import ZHANG, rig


def plant(tmp_path: Path, broker_port: int, plc_port: int) -> dict[str, Any]:
    return {
        "site": {"id": "plant-1", "name": "test"},
        "mqtt": {"url": f"mqtt://127.0.0.1:{broker_port}", "client_id": "ehswatch-kill-test"},
        "database": {"url": f"sqlite+aiosqlite:///{tmp_path}/ehswatch.db"},
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
                "port": plc_port,
                "heartbeat": {"register": 100, "period_s": 0.2},
            }
        ],
        "zones": [
            {
                "id": "tank-farm",
                "interlock": {"plc": "plc-1", "coil": 0, "voting": "1oo1", "sensor_types": ["ch4"]},
            }
        ],
        "sensors": [{"id": "G-301", "type": "ch4", "zone": "tank-farm"}],
    }


def latched(tmp_path: Path) -> bool:
    db = sqlite3.connect(tmp_path / "ehswatch.db")
    try:
        rows = db.execute("SELECT tripped FROM interlock_zone").fetchall()
    except sqlite3.OperationalError:
        return False  # not migrated yet
    finally:
        db.close()
    return rows == [(1,)]


def _column(workdir: Path, sql: str) -> list[str]:
    """One column of a query on the service's database ([] before it is migrated)."""
    db = sqlite3.connect(workdir / "ehswatch.db")
    try:
        return [v for (v,) in db.execute(sql)]
    except sqlite3.OperationalError:
        return []
    finally:
        db.close()


def alarm_events(workdir: Path) -> list[str]:
    return _column(workdir, "SELECT event FROM alarm_outbox ORDER BY id")


def audit_actions(workdir: Path) -> list[str]:
    return _column(workdir, "SELECT action FROM audit_log")


async def retained(port: int, topic: str) -> bytes:
    async with aiomqtt.Client("127.0.0.1", port) as client:
        await client.subscribe(topic, qos=1)
        async with asyncio.timeout(5):
            async for message in client.messages:
                assert isinstance(message.payload, bytes)
                return message.payload
    raise AssertionError("unreachable")


def test_kill_9_with_a_zone_latched_then_start_it_is_still_latched_and_the_coil_is_set(
    tmp_path: Path,
) -> None:
    with Mosquitto(tmp_path) as broker:
        doc = plant(tmp_path, broker.port, free_port())
        config_file = tmp_path / "plant.yaml"
        config_file.write_text(yaml.safe_dump(doc), encoding="utf-8")
        plc_cfg = parse_config(yaml.safe_dump(doc), env={}).plcs[0]
        log = tmp_path / "service.log"

        async def start() -> asyncio.subprocess.Process:
            return await start_service(config_file, log)

        async def main() -> None:
            plc = PlcSim(plc_cfg)
            async with plc:
                service = await start()
                await eventually(
                    lambda: len(plc.heartbeats) >= 2, timeout=20, what="the service up"
                )
                async with aiomqtt.Client("127.0.0.1", broker.port) as pub:
                    await pub.publish("ehs/telemetry/G-301", json.dumps({"v": 62.0}), qos=1)
                await eventually(lambda: plc.coils.get(0) is True, timeout=10, what="the trip")
                # Output first: the coil is written before the latch is stored. Once stored
                # (`latch_durable`), a kill cannot lose it.
                await eventually(lambda: latched(tmp_path), timeout=10, what="the latch stored")
                async with asyncio.timeout(10):  # and the broker is told so
                    while not json.loads(
                        await retained(broker.port, "ehs/interlock/tank-farm")
                    ).get("latch_durable"):
                        await asyncio.sleep(0.05)
                # The alarm is committed apart from the latch (after it: the output first):
                # killed before that commit, the episode would come back only with the
                # sensor's next reading. This test is of the ticket's way across a
                # restart, from the outbox: kill once the event is in it.
                await eventually(
                    lambda: "raised" in alarm_events(tmp_path), timeout=10, what="the alarm"
                )
                service.send_signal(signal.SIGKILL)
                await service.wait()
            # The broker tells everyone the service died.
            assert await retained(broker.port, "ehs/status") == b"offline"

            plc = PlcSim(plc_cfg)  # the PLC restarted too: its outputs are off
            async with plc:
                assert plc.coils == {}
                service = await start()
                await eventually(lambda: plc.coils.get(0) is True, timeout=20, what="re-asserted")
                state = json.loads(await retained(broker.port, "ehs/interlock/tank-farm"))
                assert state["tripped"] is True and state["seq"] == 1
                assert await retained(broker.port, "ehs/status") == b"online"
                # The desk part opens the alarm's ticket (from the outbox, across restarts).
                await eventually(
                    lambda: "ticket opened" in audit_actions(tmp_path), timeout=20, what="ticket"
                )
                service.send_signal(signal.SIGINT)
                assert await service.wait() == 0

        try:
            run(main(), timeout=90)
        except AssertionError as exc:  # say what the service said, not only what was late
            tail = log.read_text("utf-8", "replace")[-3000:] if log.exists() else "(no log)"
            raise AssertionError(f"{exc}\n--- service log, last lines ---\n{tail}") from exc
        db = sqlite3.connect(tmp_path / "ehswatch.db")
        assert db.execute("SELECT tripped, seq FROM interlock_zone").fetchall() == [(1, 1)]
        actions = [a for (a,) in db.execute("SELECT action FROM audit_log")]
        assert actions.count("trip") == 1  # latched once, re-asserted after the restart
        assert "ticket opened" in actions  # the alarm opened its hazard ticket
        text = log.read_text(encoding="utf-8")
        assert "still latched from before the restart" in text
        assert "Traceback" not in text


class TrippedAtStart(PlcSim):
    """A PLC whose coil 0 is tripped when ehswatch starts: the trip of a zone that a
    crash kept from being stored (the window "latch not durable" reports)."""

    async def start(self) -> None:
        await super().start()
        client = AsyncModbusTcpClient(self.plc.host, port=self.plc.port)
        try:
            assert await client.connect()
            await client.write_coil(0, True, device_id=self.plc.unit)
        finally:
            client.close()


def test_an_output_found_tripped_at_start_latches_its_zone(tmp_path: Path) -> None:
    async def main() -> None:
        async with rig(tmp_path, plc_class=TrippedAtStart) as r:
            await eventually(lambda: r.state("z1oo1").tripped, what="z1oo1 latched")
            assert r.plc.coils.get(0) is True
            assert not r.state("z1oo2").tripped
            await eventually(lambda: r.state("z1oo1").latch_durable, what="stored")
            last = [e for e in await r.audit() if e.action == "trip"][-1]
            assert "found tripped at the PLC at start" in last.details()["why"]
            # Only an authorised reset brings it back to normal, on a valid reading.
            r.read({"A1": 2.0})
            s = await r.controller.reset("z1oo1", ZHANG)
            assert not s.tripped
            await eventually(lambda: r.plc.coils.get(0) is False, what="reset written")

    run(main())

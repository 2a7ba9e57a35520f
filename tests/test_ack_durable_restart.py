"""The real service as a subprocess, a real broker with persistence and a real
VictoriaMetrics: `kill -9` mid-stream loses no MQTT reading (acknowledged only once
durable), and readings the broker queued while the service was down are evaluated when
it starts (alarm and ticket at the reading's time)."""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
import yaml

from tests.aio import eventually, run
from tests.servers import Mosquitto, VictoriaMetrics, free_port, start_service

O2 = {
    "unit": "%vol",
    "low": {"warning": 19.5, "alarm": 18.0, "interlock": 16.0},
    "high": {"warning": 23.5, "alarm": 25.0},
    "stale_after_s": 3600,
}
TOPIC = "plant1/gas/O2-301"


@pytest.fixture
def vm(tmp_path: Path) -> Iterator[VictoriaMetrics]:
    (tmp_path / "vm").mkdir()
    with VictoriaMetrics(tmp_path / "vm") as server:
        yield server


def plant(tmp_path: Path, broker_port: int, influx_url: str) -> dict[str, Any]:
    return {
        "site": {"id": "plant-1", "name": "test"},
        "mqtt": {"url": f"mqtt://127.0.0.1:{broker_port}", "client_id": "ehswatch-ack-kill"},
        "influxdb": {
            "url": influx_url,
            "token": "test-token",
            "org": "ehs",
            "bucket": "telemetry",
            "spool_dir": str(tmp_path / "spool"),
        },
        "database": {"url": f"sqlite+aiosqlite:///{tmp_path}/ehswatch.db"},
        "api": {"host": "127.0.0.1", "port": free_port()},
        "sensor_types": {"o2": O2},
        "zones": [{"id": "tank-farm"}],
        "sensors": [{"id": "O2-301", "type": "o2", "zone": "tank-farm", "mqtt": {"topic": TOPIC}}],
        "hazards": {"evidence_dir": str(tmp_path / "evidence")},
    }


class ServiceProcess:
    """`ehswatch run` in a subprocess, its output appended to one log."""

    def __init__(self, tmp_path: Path, doc: dict[str, Any]) -> None:
        self.config = tmp_path / "plant.yaml"
        self.config.write_text(yaml.safe_dump(doc), encoding="utf-8")
        self.log = tmp_path / "service.log"
        self.log.touch()
        self.proc: asyncio.subprocess.Process | None = None

    def connects(self) -> int:
        return self.log.read_text(encoding="utf-8").count("MQTT: connected to")

    async def start(self) -> None:
        before = self.connects()
        self.proc = await start_service(self.config, self.log)
        await eventually(
            lambda: self.connects() > before, timeout=30, what="the service's MQTT session"
        )

    async def stop(self, sig: signal.Signals) -> int:
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(sig)
        return await self.proc.wait()


def stored(vm: VictoriaMetrics) -> set[int]:
    series = vm.export('{__name__="reading_value",sensor="O2-301"}', settle_s=1.0)
    return {t for s in series for t in s["timestamps"]}


def test_kill_9_mid_stream_loses_no_mqtt_reading(tmp_path: Path, vm: VictoriaMetrics) -> None:
    n, rate = 6000, 1000.0
    with Mosquitto(tmp_path, persistence=True) as broker:
        service = ServiceProcess(tmp_path, plant(tmp_path, broker.port, vm.url))
        t0_ms = int(time.time() * 1000)
        expected = {t0_ms + i for i in range(n)}  # distinct milliseconds

        async def main() -> None:
            await service.start()
            try:
                async with aiomqtt.Client("127.0.0.1", broker.port) as pub:
                    loop = asyncio.get_running_loop()
                    began = loop.time()
                    for i in range(n):
                        if i % 10 == 0:  # keep to the rate: 10 readings per 10 ms
                            await asyncio.sleep(max(0.0, began + i / rate - loop.time()))
                        payload = json.dumps({"v": 20.9, "ts": t0_ms + i})
                        await pub.publish(TOPIC, payload, qos=1)
                        if i == n // 3:
                            assert await service.stop(signal.SIGKILL) == -signal.SIGKILL
                            restart = asyncio.create_task(service.start())
                    await restart
                missing: set[int] = set()

                def all_stored() -> bool:
                    missing.clear()
                    missing.update(expected - stored(vm))
                    return not missing

                try:
                    await eventually(all_stored, timeout=30, what="every reading stored")
                except AssertionError:
                    raise AssertionError(f"{len(missing)} of {n} readings missing") from None
            finally:
                if service.proc is not None:
                    await service.stop(signal.SIGINT)

        run(main(), timeout=120)
        text = service.log.read_text(encoding="utf-8")
        assert "Traceback" not in text, text


def test_readings_queued_at_the_broker_while_the_service_was_down_are_evaluated(
    tmp_path: Path,
) -> None:
    with Mosquitto(tmp_path, persistence=True) as broker:
        # No InfluxDB section: acknowledged after hand-over; the backlog is the broker's.
        doc = plant(tmp_path, broker.port, "http://unused")
        del doc["influxdb"]
        service = ServiceProcess(tmp_path, doc)

        async def main() -> float:
            await service.start()  # the persistent session exists from now on
            assert await service.stop(signal.SIGINT) == 0
            stamp = round(time.time() - 5.0, 3)  # while the service was down
            async with aiomqtt.Client("127.0.0.1", broker.port) as pub:
                payload = json.dumps({"v": 15.0, "ts": int(stamp * 1000)})
                await pub.publish(TOPIC, payload, qos=1)
            await service.start()
            try:
                await eventually(lambda: len(tickets(tmp_path)) == 1, timeout=20, what="ticket")
            finally:
                assert await service.stop(signal.SIGINT) == 0
            return stamp

        stamp = run(main(), timeout=90)
        rows = alarms(tmp_path)
        assert len(rows) == 1, rows
        sensor, tier, value, first_at = rows[0]
        assert (sensor, tier, value) == ("O2-301", 3, 15.0)
        assert first_at == pytest.approx(stamp, abs=0.002)
        assert tickets(tmp_path)[0][0] == "O2-301"
        text = service.log.read_text(encoding="utf-8")
        assert "Traceback" not in text and "O2-301" in text, text


def query(tmp_path: Path, sql: str) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(tmp_path / "ehswatch.db")
    try:
        return db.execute(sql).fetchall()
    except sqlite3.OperationalError:
        return []  # not migrated yet
    finally:
        db.close()


def alarms(tmp_path: Path) -> list[tuple[Any, ...]]:
    return query(tmp_path, "SELECT sensor, peak_tier, value, first_at FROM alarm")


def tickets(tmp_path: Path) -> list[tuple[Any, ...]]:
    return query(tmp_path, "SELECT sensor, grade FROM hazard_ticket")

"""`/health` tells the truth: `degraded`, with the reason, whenever something the plant
relies on is down; `/health/live` answers the one question a process supervisor asks."""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from ehswatch.config import PlantConfig, parse_config
from tests.aio import eventually, run
from tests.servers import Mosquitto, free_port
from tests.test_api import plant, serve


def variant(config: PlantConfig, tmp_path: Path, **changes: Any) -> PlantConfig:
    """The API tests' plant with some sections replaced."""
    doc = yaml.safe_load(yaml.safe_dump(config.model_dump(mode="json", exclude_none=True)))
    doc = copy.deepcopy(doc)
    for key, value in changes.items():
        doc[key] = value
    return parse_config(yaml.safe_dump(doc, allow_unicode=True), env={})


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    with Mosquitto(tmp_path) as b:
        yield b


def test_health_is_ok_with_no_reason_when_everything_answers(
    broker: Mosquitto, tmp_path: Path
) -> None:
    base = plant(tmp_path)
    config = variant(base, tmp_path, mqtt={"url": broker.url})

    async def main() -> None:
        async with serve(config) as (service, client):
            await eventually(
                lambda: service.mqtt is not None and service.mqtt.stats.connected, what="MQTT"
            )
            assert service.interlock is not None
            await eventually(
                lambda: all(link.connected for link in service.interlock.links.values()), what="PLC"
            )
            service.state.publish()  # what the next tick publishes, now
            body = (await client.get("/health")).json()
            assert (body["status"], body["reasons"]) == ("ok", [])
            # Each PLC link is a component of its own, its job named by its PLC.
            links = body["components"]["plc-link"]
            assert set(links) == set(service.interlock.links)
            assert all(j["running"] for j in links.values())
            live = await client.get("/health/live")
            assert (live.status_code, live.json()) == (200, {"alive": True})

    run(main())


def test_health_is_degraded_with_the_reason_while_the_broker_is_down(tmp_path: Path) -> None:
    config = plant(tmp_path)  # its broker's port has nobody listening

    async def main() -> None:
        async with serve(config) as (service, client):
            service.state.publish()
            body = (await client.get("/health")).json()
            assert body["status"] == "degraded"
            assert any(r.startswith("MQTT broker not connected") for r in body["reasons"])
            # A broker outage is not the process's fault: a restart would not cure it.
            assert (await client.get("/health/live")).status_code == 200

    run(main())


def test_health_names_an_unreachable_plc(broker: Mosquitto, tmp_path: Path) -> None:
    base = plant(tmp_path)
    plcs = [
        base.plcs[0].model_dump(mode="json", exclude_none=True),
        {  # nobody listens there
            "id": "plc-2",
            "host": "127.0.0.1",
            "port": free_port(),
            "heartbeat": {"register": 100, "period_s": 0.5},
        },
    ]
    config = variant(base, tmp_path, mqtt={"url": broker.url}, plcs=plcs)

    async def main() -> None:
        async with serve(config) as (service, client):
            await eventually(
                lambda: service.mqtt is not None and service.mqtt.stats.connected, what="MQTT"
            )
            service.state.publish()
            body = (await client.get("/health")).json()
            assert body["status"] == "degraded"
            assert [r for r in body["reasons"] if r.startswith("PLC plc-2 unreachable")]
            assert not [r for r in body["reasons"] if r.startswith("PLC plc-1")]

    run(main())


def test_liveness_is_503_while_the_control_loop_is_stuck_and_200_after(
    broker: Mosquitto, tmp_path: Path
) -> None:
    config = variant(plant(tmp_path), tmp_path, mqtt={"url": broker.url})

    async def main() -> None:
        async with serve(config) as (service, client):
            assert service.interlock is not None
            assert (await client.get("/health/live")).status_code == 200
            async with service.interlock.rules_held():  # the control loop cannot turn
                t0 = time.monotonic()
                while (await client.get("/health/live")).status_code == 200:
                    assert time.monotonic() - t0 < 10, "liveness never failed"
                live = await client.get("/health/live")
                assert live.status_code == 503
                assert "control loop" in live.json()["reason"]
            await eventually(
                lambda: service.interlock is not None and service.interlock.control_alive(2.0),
                what="turning again",
            )
            service.state.publish()
            assert (await client.get("/health/live")).status_code == 200

    run(main())


def test_health_says_storage_is_down_and_what_it_keeps(broker: Mosquitto, tmp_path: Path) -> None:
    influx = {
        "url": f"http://127.0.0.1:{free_port()}",  # nobody listens there
        "token": "t",
        "org": "ehs",
        "bucket": "telemetry",
        "flush_interval_ms": 100,
        "spool_dir": str(tmp_path / "spool"),
    }
    config = variant(plant(tmp_path), tmp_path, mqtt={"url": broker.url}, influxdb=influx)

    async def main() -> None:
        async with serve(config) as (service, client):
            from tests.test_api import raise_alarm

            raise_alarm(service)
            assert service.sink is not None
            await eventually(
                lambda: service.sink is not None and not service.sink.status()["server_up"],
                what="server down",
            )
            service.state.publish()
            body = (await client.get("/health")).json()
            assert body["status"] == "degraded"
            assert "InfluxDB not reachable: readings are kept in the spool" in body["reasons"]
            assert body["checks"]["influxdb"]["server_up"] is False

    run(main())

"""Every decision runs on a clock that never goes backward: a step of the wall clock (NTP,
an RTC fix) blinds no sensor, moves no timer, and is shown on /health and in the log."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import re
import signal
from pathlib import Path
from typing import Any

import aiomqtt
import httpx
import pytest
import yaml

from ehswatch.api.routers.health import health
from ehswatch.clock import ServiceClock, SteppableClock
from ehswatch.config import PlantConfig, parse_config
from ehswatch.service import ClockWatch
from ehswatch.simulators.plc import PlcSim
from ehswatch.thresholds import Tier
from tests.aio import eventually, run
from tests.parts import both_parts
from tests.servers import Mosquitto, ServerMissing, free_port, start_service

FAKETIME_LIB = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1")
TEN_MINUTES = 600.0


# ------------------------------------------------------------------ the clock itself


def test_the_service_clock_never_goes_backward_when_the_wall_clock_steps_600_s() -> None:
    clocks = SteppableClock()
    clock = clocks.service_clock()
    seen = [clock()]
    for step in (-TEN_MINUTES, +TEN_MINUTES, +TEN_MINUTES, -TEN_MINUTES, -TEN_MINUTES):
        clocks.advance(0.5)
        seen.append(clock())
        clocks.step_wall(step)
        seen.append(clock())  # the step itself changes nothing
        clocks.advance(0.5)
        seen.append(clock())
    assert seen == [seen[0] + 0.5 * k for k in (0, 1, 1, 2, 3, 3, 4, 5, 5, 6, 7, 7, 8, 9, 9, 10)]
    assert all(b >= a for a, b in itertools.pairwise(seen))


def test_the_service_clock_starts_at_the_wall_time_and_follows_only_the_monotonic_clock() -> None:
    clocks = SteppableClock(start=1_800_000_000.0)
    clock = clocks.service_clock()
    assert clock() == 1_800_000_000.0
    clocks.step_wall(-TEN_MINUTES)
    clocks.advance(2.0)
    assert clock() == 1_800_000_002.0
    assert clocks.wall() == 1_800_000_002.0 - TEN_MINUTES


def test_the_service_clock_holds_its_time_if_its_monotonic_source_goes_back() -> None:
    mono = [100.0]
    clock = ServiceClock(wall=lambda: 1_800_000_000.0, monotonic=lambda: mono[0])
    mono[0] = 105.0
    assert clock() == 1_800_000_005.0
    mono[0] = 90.0  # a faulty source
    assert clock() == 1_800_000_005.0


def test_wall_offset_reports_a_step_of_the_wall_clock() -> None:
    clocks = SteppableClock()
    clock = clocks.service_clock()
    assert clock.wall_offset() == 0.0
    clocks.step_wall(-TEN_MINUTES)
    assert clock.wall_offset() == -TEN_MINUTES
    clocks.advance(3.0)
    assert clock.wall_offset() == -TEN_MINUTES  # the offset stays until the wall clock moves
    clocks.step_wall(+TEN_MINUTES)
    assert clock.wall_offset() == 0.0
    clocks.step_wall(+TEN_MINUTES)
    assert clock.wall_offset() == +TEN_MINUTES


def test_a_new_service_clock_takes_the_wall_time_again() -> None:
    clocks = SteppableClock()
    before = clocks.service_clock()
    clocks.advance(10.0)
    clocks.step_wall(-TEN_MINUTES)
    after_restart = clocks.service_clock()
    assert after_restart() == clocks.wall() == before() - TEN_MINUTES
    assert after_restart.wall_offset() == 0.0


def test_the_clock_watch_warns_once_when_the_wall_clock_moves_more_than_a_second(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clocks = SteppableClock()
    watch = ClockWatch(clocks.service_clock())
    caplog.set_level(logging.INFO, logger="ehswatch.service")

    def warnings() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]

    clocks.step_wall(0.9)  # drift within tolerance: nothing to say
    watch.check()
    assert warnings() == []
    clocks.step_wall(-TEN_MINUTES - 0.9)
    for _ in range(5):
        assert watch.check() == -TEN_MINUTES
        clocks.advance(1.0)
    assert len(warnings()) == 1
    assert "wall clock stepped or drifted by -600.0 s since start" in warnings()[0]
    clocks.step_wall(+TEN_MINUTES)
    watch.check()
    assert any("back within" in r.getMessage() for r in caplog.records)
    clocks.step_wall(+TEN_MINUTES)  # a new excursion is a new warning
    watch.check()
    watch.check()
    assert len(warnings()) == 2
    assert "by +600.0 s" in warnings()[1]


# ------------------------------------------------------------------ the whole service

DUST = {
    "unit": "mg/m3",
    "high": {"warning": 10, "alarm": 20, "interlock": 40},
    "deadband": 1.0,
    "stale_after_s": 3600,
}


def plant_doc(tmp_path: Path, broker_port: int, plc_port: int) -> dict[str, Any]:
    """One milling zone, interlocked 1oo1 on a PLC, with a dust monitor that publishes bare
    numbers over MQTT (so the service stamps its readings itself)."""
    return {
        "site": {"id": "plant-1", "name": "test"},
        "mqtt": {
            "url": f"mqtt://127.0.0.1:{broker_port}",
            "client_id": f"ehswatch-clock-test-{broker_port}",
        },
        "database": {"url": f"sqlite+aiosqlite:///{tmp_path}/ehswatch.db"},
        "api": {"host": "127.0.0.1", "port": free_port()},
        "sensor_types": {"dust": DUST},
        "plcs": [
            {
                "id": "plc-1",
                "host": "127.0.0.1",
                "port": plc_port,
                "heartbeat": {"register": 100, "period_s": 0.1},
            }
        ],
        "zones": [
            {
                "id": "mill",
                "interlock": {
                    "plc": "plc-1",
                    "coil": 0,
                    "voting": "1oo1",
                    "sensor_types": ["dust"],
                },
            }
        ],
        "sensors": [{"id": "D-1", "type": "dust", "zone": "mill"}],
        "hazards": {"evidence_dir": str(tmp_path / "evidence")},
    }


def parse(doc: dict[str, Any]) -> PlantConfig:
    return parse_config(yaml.safe_dump(doc), env={})


def test_readings_stamped_by_the_service_keep_being_evaluated_across_wall_steps_and_trip(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ehswatch.service")
    with Mosquitto(tmp_path) as broker:
        config = parse(plant_doc(tmp_path, broker.port, free_port()))
        clocks = SteppableClock()

        async def main() -> None:
            plc = PlcSim(config.plcs[0])
            parts = both_parts(config, tick_s=0.1, clock=clocks.service_clock())
            async with (
                plc,
                parts as (service, desk),
                aiomqtt.Client("127.0.0.1", broker.port) as pub,
            ):
                assert service.mqtt is not None and service.interlock is not None
                await eventually(lambda: service.mqtt.stats.connected, what="MQTT connected")
                d1 = service.table.index["D-1"]
                stamps: list[float] = []

                async def read(value: float) -> None:
                    clocks.advance(1.0)  # the dust monitor's next sample, a second later
                    expected = service.clock()
                    await pub.publish("ehs/telemetry/D-1", f"{value}", qos=1)
                    await eventually(
                        lambda: service.stage.evaluator.last_ts[d1] == expected,
                        what=f"the reading {value} evaluated at the service's time",
                    )
                    stamps.append(float(service.stage.evaluator.last_ts[d1]))

                async def report_now() -> dict[str, Any]:
                    service.state.publish()  # what the next tick publishes, now
                    return await health(desk)

                for v in (3.0, 3.2):
                    await read(v)
                assert (await report_now())["clock"] == {"wall_offset_s": 0.0}

                clocks.step_wall(-TEN_MINUTES)  # NTP steps the wall clock ten minutes back
                for v in (3.1, 3.3):
                    await read(v)
                report = await report_now()
                assert report["clock"] == {
                    "wall_offset_s": -600.0,
                    "reason": "wall clock stepped or drifted by -600.0 s since start",
                }
                assert report["status"] == "degraded"
                await eventually(
                    lambda: service.clock_watch.wall_off,
                    timeout=3,
                    what="the clock watch to see it",
                )

                await read(45.0)  # at the interlock tier, after the step
                assert service.stage.evaluator.tier[d1] == Tier.INTERLOCK
                await eventually(lambda: plc.coils.get(0) is True, what="the trip at the PLC")
                assert service.interlock.states["mill"].tripped

                clocks.step_wall(+TEN_MINUTES)  # and forward again
                for v in (44.0, 3.0):
                    await read(v)
                report = await report_now()
                assert report["clock"] == {"wall_offset_s": 0.0}
                # Only the clock is back: the latch holds until an authorised reset.
                assert service.interlock.states["mill"].tripped and plc.coils.get(0) is True

                assert stamps == [stamps[0] + k for k in range(len(stamps))]
                # None taken as late (raise-only) or rejected as ahead; no clock_skew FAULT.
                assert service.stage.stats.late == service.stage.stats.future == 0
                assert not service.stage.evaluator.faulted[d1]
                assert service.mqtt.stats.readings == len(stamps)

        run(main(), timeout=30)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert sum("wall clock stepped or drifted" in w for w in warnings) == 1


# ------------------------------------------------------------------ the real process


def faketime_library() -> Path:
    """libfaketime, or a failure that says how to get it (never a skip; CI must prove it)."""
    for candidate in (
        FAKETIME_LIB,
        *sorted(Path("/usr/lib").glob("*/faketime/" + FAKETIME_LIB.name)),
    ):
        if candidate.is_file():
            return candidate
    raise ServerMissing(
        f"{FAKETIME_LIB} is missing: `make test` installs the Debian package faketime "
        "when run as root (or: apt-get install faketime)"
    )


READINGS = "ehswatch_readings_total"


def metric(text: str, name: str) -> float:
    """The sum of a metric's samples in Prometheus text (any labels)."""
    values = re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.MULTILINE)
    assert values, f"{name} not in /metrics"
    return sum(float(v) for v in values)


def test_the_real_service_under_a_wall_clock_stepped_back_600_s_still_trips_the_plc(
    tmp_path: Path,
) -> None:
    library = faketime_library()
    offset_file = tmp_path / "faketime"
    offset_file.write_text("+0\n", encoding="utf-8")
    with Mosquitto(tmp_path) as broker:
        doc = plant_doc(tmp_path, broker.port, free_port())
        config_file = tmp_path / "plant.yaml"
        config_file.write_text(yaml.safe_dump(doc), encoding="utf-8")
        config = parse(doc)
        api = f"http://127.0.0.1:{config.api.port}"
        log = tmp_path / "service.log"
        env = {
            "LD_PRELOAD": str(library),
            "FAKETIME_TIMESTAMP_FILE": str(offset_file),
            "FAKETIME_NO_CACHE": "1",
            "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        }

        async def main() -> str:
            plc = PlcSim(config.plcs[0])
            async with plc, httpx.AsyncClient(base_url=api, timeout=5) as http:
                service = await start_service(config_file, log, env)
                try:
                    report: dict[str, Any] = {}

                    async def poll_health() -> None:
                        nonlocal report
                        try:
                            report = (await http.get("/health")).json()
                        except httpx.TransportError:
                            report = {}

                    async def health_shows(predicate: Any, what: str) -> None:
                        loop = asyncio.get_running_loop()
                        deadline = loop.time() + 15
                        await poll_health()
                        while not predicate(report):
                            assert loop.time() < deadline, f"/health never showed {what}: {report}"
                            assert service.returncode is None, log.read_text(encoding="utf-8")
                            await asyncio.sleep(0.1)
                            await poll_health()

                    await health_shows(
                        lambda r: r.get("checks", {}).get("mqtt", {}).get("connected"),
                        "the service up and subscribed",
                    )
                    assert report["clock"]["wall_offset_s"] == pytest.approx(0.0, abs=0.5)
                    async with aiomqtt.Client("127.0.0.1", broker.port) as pub:
                        await pub.publish("ehs/telemetry/D-1", b"3.0", qos=1)

                        async def readings() -> float:
                            return metric(
                                (await http.get("/metrics")).text, "ehswatch_readings_total"
                            )

                        loop = asyncio.get_running_loop()
                        deadline = loop.time() + 10
                        while await readings() < 1:
                            assert loop.time() < deadline, "the first reading was not evaluated"
                            await asyncio.sleep(0.05)

                        # The wall clock of the service's process goes ten minutes back
                        # (the file replaced at once: libfaketime reads it at every call).
                        stepped = tmp_path / "faketime.new"
                        stepped.write_text("-600\n", encoding="utf-8")
                        os.replace(stepped, offset_file)
                        await health_shows(
                            lambda r: "reason" in r.get("clock", {}), "the wall clock's step"
                        )
                        assert report["clock"]["wall_offset_s"] == pytest.approx(-600.0, abs=0.5)
                        assert re.fullmatch(
                            r"wall clock stepped or drifted by -(599|600)\.\d s since start",
                            report["clock"]["reason"],
                        ), report["clock"]
                        assert report["status"] == "degraded"

                        for value in (12.0, 25.0, 62.0):  # warning, alarm, interlock
                            await pub.publish("ehs/telemetry/D-1", f"{value}".encode(), qos=1)
                        await eventually(
                            lambda: plc.coils.get(0) is True, what="the trip at the PLC's coil"
                        )
                    # /metrics shows the state the control part published at its last tick.
                    deadline = asyncio.get_running_loop().time() + 5
                    while metric(text := (await http.get("/metrics")).text, READINGS) < 4:
                        assert asyncio.get_running_loop().time() < deadline, text
                        await asyncio.sleep(0.1)
                    assert metric(text, READINGS) == 4
                    assert metric(text, "ehswatch_sensor_late_readings_total") == 0
                    assert metric(text, "ehswatch_sensor_future_readings_total") == 0
                    final = (await http.get("/health")).json()
                    assert final["checks"]["plcs"]["plc-1"]["connected"] is True
                    assert final["clock"]["wall_offset_s"] == pytest.approx(-600.0, abs=0.5)
                    await eventually(  # the clock watch looks once a second
                        lambda: "wall clock stepped" in log.read_text(encoding="utf-8"),
                        timeout=5,
                        what="the warning in the log",
                    )
                    # Let the trip's consequences (alarm, hazard ticket raised to grade A)
                    # finish before the stop: this test is about time, not about a stop in
                    # the middle of their database writes.
                    await eventually(
                        lambda: "MAJOR HAZARD" in log.read_text(encoding="utf-8"),
                        timeout=10,
                        what="the hazard desk done with the trip",
                    )
                    running = log.read_text(encoding="utf-8")  # the log of the stepped run
                finally:
                    if service.returncode is None:
                        service.send_signal(signal.SIGINT)
                    code = await service.wait()
            assert code == 0, log.read_text(encoding="utf-8")
            return running

        running = run(main(), timeout=45)
    assert "Traceback" not in running, running
    assert "older than their sensor's latest" not in running, running
    assert "ahead of the service clock" not in running, running
    assert len(re.findall(r"WARNING .*wall clock stepped or drifted by -", running)) == 1, running
    assert "D-1" in running and "→ INTERLOCK" in running, running

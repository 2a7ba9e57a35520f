"""Scenarios, the simulators, and the whole intake path driven by them."""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from ehswatch.config import ConfigError, load_config, parse_config
from ehswatch.readings import ReadingBatch
from ehswatch.service import Service
from ehswatch.simulators.runner import Simulation
from ehswatch.simulators.scenario import Scenario, Script, SensorScript
from ehswatch.thresholds import Evaluation, Tier
from tests.aio import eventually, run
from tests.servers import Mosquitto, VictoriaMetrics, free_port

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ROOT / "ehswatch" / "simulators" / "scenarios"
EXAMPLE = ROOT / "config" / "example.yaml"


def script(**kw: Any) -> Script:
    return Script("S", SensorScript.model_validate(kw), seed=1)


def test_ramp_climbs_linearly_then_holds() -> None:
    s = script(baseline=4.0, events=[{"at": 10, "ramp_to": 44, "over": 20}])
    assert [s.sample(t).value for t in (0, 10, 20, 30, 100)] == [4.0, 4.0, 24.0, 44.0, 44.0]


def test_second_ramp_starts_where_the_first_left_off() -> None:
    s = script(
        baseline=0.0,
        events=[{"at": 0, "ramp_to": 10, "over": 10}, {"at": 5, "ramp_to": 0, "over": 5}],
    )
    assert [s.sample(t).value for t in (5, 7.5, 10)] == [5.0, 2.5, 0.0]


def test_spike_flatline_dropout_and_garbage_windows() -> None:
    s = script(
        baseline=1.0,
        noise=0.5,
        events=[
            {"at": 2, "spike": 60, "for": 1},
            {"at": 5, "flatline": 2},
            {"at": 8, "dropout": 2},
            {"at": 11, "garbage": 1},
        ],
    )
    assert s.sample(2.5).value == 60
    assert s.sample(5.2).value == s.sample(6.9).value == 1.0  # stuck, no noise
    assert s.sample(9).value is None
    assert s.sample(11.5).garbage and not s.sample(12.5).garbage


def test_a_seed_makes_a_run_repeatable() -> None:
    a = script(baseline=4.0, noise=1.0)
    b = script(baseline=4.0, noise=1.0)
    other = Script("S", SensorScript(baseline=4.0, noise=1.0), seed=2)
    times = [0.0, 0.3, 1.7, 10.0]
    assert [a.sample(t) for t in times] == [b.sample(t) for t in times]
    assert [a.sample(t) for t in times] != [other.sample(t) for t in times]


def test_scenario_errors_are_named(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: x\nsensors:\n  D-101: {baseline: 1, events: [{at: 1, spike: 5, dropout: 3}]}\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as info:
        Scenario.load(bad)
    assert info.value.errors == [
        "sensors.D-101.events.0: "
        "an event is exactly one of ramp_to, spike, flatline, dropout, garbage"
    ]


@pytest.mark.parametrize("name", ["normal_day", "dust_buildup", "gas_leak", "sensor_failure"])
def test_shipped_scenarios_script_the_example_plant(name: str) -> None:
    scenario = Scenario.load(SCENARIOS / f"{name}.yaml")
    config = load_config(ROOT / scenario.plant, env={})
    assert set(scenario.sensors) == {s.id for s in config.sensors}


# ------------------------------------------------------------------ the whole intake path


def plant_on_free_ports(broker_port: int, workdir: Path) -> dict[str, Any]:
    """The example plant, its devices and PLCs moved to free loopback ports, its database
    and spool into `workdir`."""
    doc: dict[str, Any] = copy.deepcopy(yaml.safe_load(EXAMPLE.read_text(encoding="utf-8")))
    doc["mqtt"]["url"] = f"mqtt://127.0.0.1:{broker_port}"
    doc["mqtt"]["client_id"] = f"ehswatch-test-{broker_port}"
    for section in ("modbus_devices", "plcs"):
        for item in doc[section]:
            item["port"] = free_port()
    for d in doc["modbus_devices"]:
        d["poll_interval_s"] = 0.25
    del doc["influxdb"]
    doc["database"]["url"] = f"sqlite+aiosqlite:///{workdir}/ehswatch.db"
    doc["api"] = {"host": "127.0.0.1", "port": free_port()}
    doc["hazards"]["evidence_dir"] = str(workdir / "evidence")
    return doc


BUILD_UP = {
    "name": "fast build-up",
    "seed": 5,
    "rate_hz": 4,
    "sensors": {
        "D-101": {"baseline": 3.5, "noise": 0.2, "events": [{"at": 0.5, "ramp_to": 48, "over": 5}]},
        "D-102": {"baseline": 4.0, "noise": 0.2},
        "G-301": {"baseline": 0.5, "events": [{"at": 0.5, "ramp_to": 60, "over": 3}]},
        "O2-301": {"baseline": 20.9},
        "W-201": {"baseline": 3.0},
    },
}


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    with Mosquitto(tmp_path) as b:
        yield b


def test_scenario_drives_zones_from_normal_through_warning_and_alarm_to_interlock(
    broker: Mosquitto, tmp_path: Path
) -> None:
    doc = plant_on_free_ports(broker.port, tmp_path)
    vm = VictoriaMetrics(tmp_path)
    doc["influxdb"] = {
        "url": vm.url,
        "token": "t",
        "org": "ehs",
        "bucket": "telemetry",
        "flush_interval_ms": 100,
        "spool_dir": str(tmp_path / "spool"),
    }
    config = parse_config(yaml.safe_dump(doc, allow_unicode=True), env={})
    scenario = Scenario.model_validate(BUILD_UP)

    async def main() -> list[tuple[str, int, int]]:
        steps: list[tuple[str, int, int]] = []
        async with Simulation(config, scenario), Service(config, tick_s=0.2) as service:
            ids = service.table.sensor_ids

            def record(_: ReadingBatch, ev: Evaluation) -> None:
                steps.extend((ids[s], a, b) for s, a, b, *_ in ev.transitions.rows())

            service.stage.listen(record)
            await eventually(
                lambda: (
                    ("D-101", Tier.ALARM, Tier.INTERLOCK) in steps
                    and ("G-301", Tier.ALARM, Tier.INTERLOCK) in steps
                ),
                timeout=30,
                what="both zones at the interlock tier",
            )
            assert service.modbus is not None and service.mqtt is not None
            assert all(s.errors == 0 for s in service.modbus.stats.values())
            assert service.mqtt.stats.rejects.total == 0
        return steps

    with vm:
        steps = run(main())
        # The readings reached storage with their tiers (G-301 has no on-delay: the
        # reading that crossed carries tier 3), and every transition as an alarm event
        # (D-101's interlock matured on its 2 s delay, possibly after its last reading).
        (tiers,) = vm.export('{__name__="reading_tier",sensor="G-301"}')
        assert max(tiers["values"]) == Tier.INTERLOCK
        for sensor in ("D-101", "G-301"):
            (rises,) = vm.export(f'{{__name__="alarm_event_tier",kind="tier",sensor="{sensor}"}}')
            assert rises["values"] == [Tier.WARNING, Tier.ALARM, Tier.INTERLOCK]
    for sensor in ("D-101", "G-301"):
        assert [(a, b) for s, a, b in steps if s == sensor] == [
            (Tier.NORMAL, Tier.WARNING),
            (Tier.WARNING, Tier.ALARM),
            (Tier.ALARM, Tier.INTERLOCK),
        ]
    # Sensors the scenario leaves alone stay normal (D-102, W-201, O2-301 read their
    # baselines; the unscripted ones read 0, inside their normal band or stale → FAULT).
    assert not [s for s, _, _ in steps if s in ("D-102", "W-201", "O2-301")]


def test_run_and_simulate_commands_end_to_end_and_stop_cleanly_on_ctrl_c(
    broker: Mosquitto, tmp_path: Path
) -> None:
    plant = tmp_path / "plant.yaml"
    plant.write_text(
        yaml.safe_dump(plant_on_free_ports(broker.port, tmp_path), allow_unicode=True),
        encoding="utf-8",
    )
    scenario = tmp_path / "scenario.yaml"
    scenario.write_text(yaml.safe_dump({**BUILD_UP, "plant": str(plant)}), encoding="utf-8")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cli = [sys.executable, "-m", "ehswatch"]
    sim = subprocess.Popen(
        [*cli, "simulate", "--scenario", str(scenario)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    svc = subprocess.Popen(
        [*cli, "run", "--config", str(plant)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    try:
        assert svc.stdout is not None
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            line = svc.stdout.readline()
            lines.append(line)
            if "D-101" in line and "→ INTERLOCK" in line:
                break
        else:
            raise AssertionError("no interlock transition in the service log:\n" + "".join(lines))
    finally:
        for p in (svc, sim):
            p.send_signal(signal.SIGINT)
        out_svc, _ = svc.communicate(timeout=15)
        out_sim, _ = sim.communicate(timeout=15)
    assert svc.returncode == 0, out_svc
    assert sim.returncode == 0, out_sim
    log = "".join(lines) + out_svc
    assert "ehswatch running: plant-1" in log
    assert "WARNING → ALARM" in log
    assert log.rstrip().endswith("ehswatch stopped")
    assert "Traceback" not in log + out_sim


def test_a_port_in_use_is_one_clear_line_not_a_traceback(tmp_path: Path) -> None:
    import socket

    doc = plant_on_free_ports(free_port(), tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        doc["api"]["port"] = taken.getsockname()[1]
        plant = tmp_path / "plant.yaml"
        plant.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
        done = subprocess.run(
            [sys.executable, "-m", "ehswatch", "run", "--config", str(plant)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert done.returncode == 1
    assert "ehswatch: could not start: the API could not start on 127.0.0.1:" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout

"""A bad config is refused at start with every error as `path.to.key: message`
(docs/configuration.md)."""

from __future__ import annotations

import copy
import re
import subprocess
import sys
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, ValidationError

from ehswatch.config import ConfigError, PlantConfig, load_config, parse_config
from ehswatch.names import listed
from ehswatch.thresholds import ThresholdTable

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config" / "example.yaml"
CLI = [sys.executable, "-m", "ehswatch"]


@pytest.fixture
def plant() -> dict[str, Any]:
    """The example plant as a plain document, to be broken one way per test."""
    doc = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    assert isinstance(doc, dict)
    return copy.deepcopy(doc)


def errors_of(doc: dict[str, Any], env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(yaml.safe_dump(doc, allow_unicode=True), env=env or {})
    return info.value.errors


def sensor(doc: dict[str, Any], sensor_id: str) -> dict[str, Any]:
    return next(s for s in doc["sensors"] if s["id"] == sensor_id)


def zone(doc: dict[str, Any], zone_id: str) -> dict[str, Any]:
    return next(z for z in doc["zones"] if z["id"] == zone_id)


def test_example_plant_is_valid_and_realistic() -> None:
    config = load_config(EXAMPLE, env={})
    assert len(config.zones) >= 3
    assert len(config.sensors) >= 14
    units = {config.sensor_types[s.type].unit for s in config.sensors}
    assert {"mg/m3", "%MEC", "°C", "%", "%LEL", "%vol"} <= units
    assert config.influxdb is not None and config.influxdb.token == "ehswatch-dev-token"


def test_check_config_prints_a_summary_and_exits_0() -> None:
    done = subprocess.run(
        [*CLI, "check-config", str(EXAMPLE)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert (
        done.stdout.strip()
        == "ok: plant-1: 4 zones, 15 sensors, 4 interlocks, 3 Modbus devices, 3 PLCs"
    )


def test_check_config_names_a_wrong_type_an_unknown_zone_and_a_disordered_tier_set(
    plant: dict[str, Any], tmp_path: Path
) -> None:
    plant["modbus_devices"][0]["poll_interval_s"] = "fast"
    sensor(plant, "G-303")["zone"] = "tank-farmm"
    plant["sensor_types"]["dust_wood"]["high"] = {"warning": 18, "alarm": 15, "interlock": 30}
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(plant, allow_unicode=True), encoding="utf-8")
    done = subprocess.run(
        [*CLI, "check-config", str(bad)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    assert any(
        line.strip().startswith("modbus_devices.dm-polish.poll_interval_s: ") for line in lines
    )
    assert any(
        line.strip().startswith("sensors.G-303.zone: unknown zone 'tank-farmm'") for line in lines
    )
    assert any(
        line.strip().startswith("sensor_types.dust_wood.high: tiers out of order") for line in lines
    )


def test_unreadable_or_broken_yaml_is_one_clear_line(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("site: {id: plant-1\nzones: []\n", encoding="utf-8")
    done = subprocess.run(
        [*CLI, "check-config", str(broken)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 2
    assert f"{broken}:" in done.stderr and "YAML syntax error" in done.stderr
    missing = subprocess.run(
        [*CLI, "check-config", str(tmp_path / "nope.yaml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert missing.returncode == 2 and "cannot read" in missing.stderr
    assert "Traceback" not in done.stderr + missing.stderr


def test_secrets_come_from_the_environment(plant: dict[str, Any]) -> None:
    plant["influxdb"]["token"] = "${INFLUX_TOKEN}"
    config = parse_config(yaml.safe_dump(plant), env={"INFLUX_TOKEN": "s3cret"})
    assert config.influxdb is not None and config.influxdb.token == "s3cret"


def test_a_token_with_a_line_break_is_refused_at_start(plant: dict[str, Any]) -> None:
    # A secret pasted with its newline: sent as an HTTP header, every write would fail.
    plant["influxdb"]["token"] = "${INFLUX_TOKEN}"
    errors = errors_of(plant, env={"INFLUX_TOKEN": "s3cret\n"})
    assert errors == ["influxdb.token: the token holds a line break or another control character"]


def test_a_default_stands_for_an_unset_or_empty_variable_as_in_a_shell(
    plant: dict[str, Any],
) -> None:
    plant["influxdb"]["token"] = "${INFLUX_TOKEN:-dev-token}"
    for env, token in (({}, "dev-token"), ({"INFLUX_TOKEN": ""}, "dev-token"),
                       ({"INFLUX_TOKEN": "s3cret"}, "s3cret")):  # fmt: skip
        config = parse_config(yaml.safe_dump(plant), env=env)
        assert config.influxdb is not None and config.influxdb.token == token


def test_unset_secret_without_default_is_an_error_at_its_key(plant: dict[str, Any]) -> None:
    plant["influxdb"]["token"] = "${INFLUX_TOKEN}"
    assert errors_of(plant) == ["influxdb.token: environment variable INFLUX_TOKEN is not set"]


def test_unknown_key_is_refused(plant: dict[str, Any]) -> None:
    sensor(plant, "D-101")["setpoint"] = 12
    assert errors_of(plant) == [
        "sensors.D-101.setpoint: unknown key (check the spelling against docs/configuration.md)"
    ]


def test_ids_are_unique(plant: dict[str, Any]) -> None:
    sensor(plant, "D-102")["id"] = "D-101"
    assert "sensors.D-101: duplicate id" in errors_of(plant)


def test_sensor_type_must_exist(plant: dict[str, Any]) -> None:
    sensor(plant, "D-101")["type"] = "dust_mg"
    assert any(
        e.startswith("sensors.D-101.type: unknown sensor type 'dust_mg'") for e in errors_of(plant)
    )


def test_modbus_device_must_exist(plant: dict[str, Any]) -> None:
    sensor(plant, "D-101")["modbus"]["device"] = "dm-9"
    assert any(
        e.startswith("sensors.D-101.modbus.device: unknown Modbus device 'dm-9'")
        for e in errors_of(plant)
    )


def test_interlock_plc_must_exist(plant: dict[str, Any]) -> None:
    zone(plant, "polishing-1")["interlock"]["plc"] = "plc-9"
    assert any(
        e.startswith("zones.polishing-1.interlock.plc: unknown PLC 'plc-9'")
        for e in errors_of(plant)
    )


def test_modbus_sensor_needs_a_device_and_mqtt_sensor_a_topic(plant: dict[str, Any]) -> None:
    del sensor(plant, "D-101")["modbus"]["device"]
    sensor(plant, "G-301")["mqtt"] = {}
    errs = errors_of(plant)
    assert "sensors.D-101.modbus.device: Field required" in errs
    assert "sensors.G-301.mqtt.topic: Field required" in errs


def test_low_tier_set_must_descend(plant: dict[str, Any]) -> None:
    plant["sensor_types"]["o2"]["low"] = {"warning": 18.0, "alarm": 19.5}
    assert any(
        e.startswith(
            "sensor_types.o2.low: tiers out of order: low warning 18 must be above alarm 19.5"
        )
        for e in errors_of(plant)
    )


def test_low_and_high_sets_must_not_overlap(plant: dict[str, Any]) -> None:
    plant["sensor_types"]["o2"]["high"] = {"warning": 19.0}
    assert any(e.startswith("sensor_types.o2: low setpoints") for e in errors_of(plant))


def test_per_sensor_override_is_checked_after_merging(plant: dict[str, Any]) -> None:
    sensor(plant, "D-102")["high"] = {"interlock": 15}
    assert any(
        e.startswith(
            "sensors.D-102.high: tiers out of order: high alarm 20 must be below interlock 15"
        )
        for e in errors_of(plant)
    )


def test_per_sensor_override_replaces_only_the_keys_it_names() -> None:
    config = load_config(EXAMPLE, env={})
    table = ThresholdTable.from_config(config)
    d102 = table.setpoint[table.index["D-102"]]
    assert d102[:3].tolist() == [10.0, 20.0, 35.0]
    o2 = table.setpoint[table.index["O2-301"]]
    assert o2[:2].tolist() == [23.5, 25.0] and o2[3:].tolist() == [19.5, 18.0, 16.0]


def test_voting_cannot_need_more_votes_than_sensors(plant: dict[str, Any]) -> None:
    zone(plant, "polishing-1")["interlock"]["voting"] = "3oo3"
    assert any(
        e.startswith(
            "zones.polishing-1.interlock.voting: 3oo3 needs 3 votes but zone polishing-1 has only 2"
        )
        for e in errors_of(plant)
    )


def test_voting_names_exactly_the_sensors_of_its_types(plant: dict[str, Any]) -> None:
    zone(plant, "woodworking-1")["interlock"]["voting"] = "2oo2"
    assert any(
        e.startswith(
            "zones.woodworking-1.interlock.voting: 2oo2 names 2 voters but zone woodworking-1 has 3"
        )
        for e in errors_of(plant)
    )


def test_voting_form_is_m_oo_n_with_m_at_most_n(plant: dict[str, Any]) -> None:
    zone(plant, "polishing-1")["interlock"]["voting"] = "2of2"
    zone(plant, "tank-farm")["interlock"]["voting"] = "3oo2"
    errs = errors_of(plant)
    assert any(
        e.startswith("zones.polishing-1.interlock.voting: voting '2of2' is not of the form MooN")
        for e in errs
    )
    assert any(
        e.startswith("zones.tank-farm.interlock.voting: voting '3oo2': M must not exceed N")
        for e in errs
    )


def test_two_zones_cannot_drive_one_output(plant: dict[str, Any]) -> None:
    zone(plant, "collector-1")["interlock"]["coil"] = 0
    assert any(
        e.startswith(
            "zones.collector-1.interlock.coil: plc-1 coil 0 is already the output of "
            "zones.polishing-1"
        )
        for e in errors_of(plant)
    )


def test_bypass_is_capped_at_24_hours(plant: dict[str, Any]) -> None:
    zone(plant, "polishing-1")["interlock"]["max_bypass_h"] = 48
    assert any(e.startswith("zones.polishing-1.interlock.max_bypass_h: ") for e in errors_of(plant))


def test_route_channels_must_exist(plant: dict[str, Any]) -> None:
    plant["notifications"]["routes"][0]["escalate_to"] = ["pager"]
    assert any(
        e.startswith("notifications.routes.0.escalate_to: unknown channel 'pager'")
        for e in errors_of(plant)
    )


def test_a_route_matches_only_sensor_types_that_exist(plant: dict[str, Any]) -> None:
    plant["notifications"]["routes"][1]["match"]["sensor_types"] = ["dust_al", "dust_alu"]
    assert errors_of(plant) == [
        "notifications.routes.1.match.sensor_types: unknown sensor type 'dust_alu'; known: "
        + listed(sorted(plant["sensor_types"]))
    ]


def test_a_grade_nobody_configured_may_approve_is_refused(plant: dict[str, Any]) -> None:
    """A B ticket needs a department head's approval: a plant whose users hold no such
    role could never archive one."""
    plant["users"] = [u for u in plant["users"] if u["role"] != "dept_head"]
    assert errors_of(plant) == [
        "hazards.grades.B.approvers: no configured user holds the role dept_head, so a grade "
        "B ticket could never be archived"
    ]
    del plant["hazards"]["grades"]  # the defaults: B takes a stand-in, and a GM is there
    parse_config(yaml.safe_dump(plant, allow_unicode=True), env={})
    plant["users"] = [u for u in plant["users"] if u["role"] in ("viewer", "operator")]
    assert errors_of(plant)[1] == (
        "hazards.grades.B.approvers (the default: dept_head): no configured user holds the "
        "role dept_head, so a grade B ticket could never be archived"
    )
    plant["users"] = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))["users"]
    plant["users"] = [u for u in plant["users"] if u["role"] != "dept_head"]
    plant["hazards"]["grades"] = {
        "A": {"deadline_h": 2, "stop_work": True, "approvers": ["gm", "safety_director"]},
        "B": {"deadline_h": 24, "approvers": ["safety_director"]},
        "C": {"deadline_h": 72, "approvers": ["team_leader"]},  # a supervisor approves
    }
    parse_config(yaml.safe_dump(plant, allow_unicode=True), env={})  # every grade held
    plant["users"] = [u for u in plant["users"] if u["role"] != "supervisor"]
    assert errors_of(plant) == [
        "hazards.grades.C.approvers: no configured user holds the role team_leader, so a "
        "grade C ticket could never be archived"
    ]


def test_token_is_stored_only_as_sha256(plant: dict[str, Any]) -> None:
    plant["users"][0]["token_sha256"] = "plain-token"
    assert any(e.startswith("users.0.token_sha256: ") for e in errors_of(plant))


def test_every_error_is_reported_at_once(plant: dict[str, Any]) -> None:
    sensor(plant, "D-101")["type"] = "nope"
    sensor(plant, "D-102")["zone"] = "nowhere"
    plant["plcs"][0]["port"] = 70000
    plant["site"]["timezone"] = "Mars/Olympus"
    errs = errors_of(plant)
    prefixes = ["sensors.D-101.type", "sensors.D-102.zone", "plcs.plc-1.port", "site.timezone"]
    assert all(any(e.startswith(p + ": ") for e in errs) for p in prefixes), errs


def test_an_item_that_fails_its_own_checks_is_not_also_called_unknown(
    plant: dict[str, Any],
) -> None:
    # plc-1 is written with a port out of range: the zones that name it get no "unknown
    # PLC", and a sensor whose zone failed its own id check gets no "unknown zone".
    plant["plcs"][0]["port"] = 70000
    polishing = zone(plant, "polishing-1")
    polishing["name"] = ["not", "a", "name"]
    errs = errors_of(plant)
    assert any(e.startswith("plcs.plc-1.port: ") for e in errs), errs
    assert any(e.startswith("zones.polishing-1.name: ") for e in errs), errs
    assert not [e for e in errs if "unknown PLC" in e or "unknown zone" in e], errs


def test_voters_are_counted_only_once_every_sensor_validates(plant: dict[str, Any]) -> None:
    # D-102 votes in polishing-1 (1oo2). With it broken, the vote count would be one short
    # of the truth: it is not reported until D-102 validates, and then it is.
    polishing = zone(plant, "polishing-1")
    polishing["interlock"]["voting"] = "1oo3"
    sensor(plant, "D-102")["on_delay_s"] = -1
    errs = errors_of(plant)
    assert [e for e in errs if e.startswith("sensors.D-102.on_delay_s: ")], errs
    assert not [e for e in errs if ".voting: " in e], errs
    sensor(plant, "D-102")["on_delay_s"] = 0
    (voting,) = errors_of(plant)
    assert voting.startswith("zones.polishing-1.interlock.voting: 1oo3 names 3 voters but "), voting


def test_no_plant_config_exists_that_fails_the_cross_checks() -> None:
    plant = load_config(EXAMPLE, env={}).model_dump(by_alias=True, exclude_unset=True)
    PlantConfig.model_validate(plant)  # the document as it was loaded is valid
    sensor(plant, "D-101")["zone"] = "nowhere"
    with pytest.raises(ValidationError, match=r"sensors\.D-101\.zone: unknown zone 'nowhere'"):
        PlantConfig.model_validate(plant)


def test_a_list_of_names_is_cut_at_ten_with_the_count(plant: dict[str, Any]) -> None:
    # Plant scale: 1 000 more dust monitors vote in polishing-1 (its 1oo2 now names 2 voters
    # of 1 001) and 1 000 more zones are known when D-101 names a zone that does not exist.
    d101 = sensor(plant, "D-101")
    for i in range(1000):
        extra = copy.deepcopy(d101)
        extra["id"] = f"V-{i:04d}"
        extra["modbus"]["register"] = 100 + 2 * i
        plant["sensors"].append(extra)
    plant["zones"] += [{"id": f"area-{i:04d}"} for i in range(1000)]
    d101["zone"] = "nowhere"
    errs = errors_of(plant)
    assert len(errs) == 2, errs  # each problem once, every problem at once
    unknown, voting = sorted(errs)
    assert unknown.startswith("sensors.D-101.zone: unknown zone 'nowhere'; known: ")
    assert len(re.findall(r"\barea-\d{4}\b", unknown)) == 10
    assert unknown.endswith(" and 994 more (1004 in all)")
    assert voting.startswith(
        "zones.polishing-1.interlock.voting: 1oo2 names 2 voters but zone polishing-1 has 1001 "
        "sensors of types dust_al (D-102, V-0000, "
    )
    assert len(re.findall(r"\b(?:V-\d{4}|D-10\d)\b", voting)) == 10
    assert voting.endswith(" and 991 more (1001 in all))")
    assert all(len(e) < 600 for e in errs), [len(e) for e in errs]


def test_listed_names_up_to_ten_then_how_many_more_of_how_many() -> None:
    names = [f"s{i:02d}" for i in range(11)]
    assert listed([]) == "(none)"
    assert listed(iter([]), empty="(none defined)") == "(none defined)"
    assert listed(["s00"]) == "s00"
    assert listed(names[:10]) == ", ".join(names[:10])
    assert listed(names) == ", ".join(names[:10]) + " and 1 more (11 in all)"
    assert listed(iter(names), limit=2) == "s00, s01 and 9 more (11 in all)"
    with pytest.raises(ValueError, match="at least 1"):
        listed(names, limit=0)


def test_config_is_immutable() -> None:
    config = load_config(EXAMPLE, env={})
    assert isinstance(config, PlantConfig)
    with pytest.raises(ValueError, match="frozen"):
        config.site.id = "other"  # type: ignore[misc]


def test_register_outputs_are_checked_for_value_range_change_and_collisions(
    plant: dict[str, Any],
) -> None:
    plc = plant["plcs"][0]
    plc["heartbeat"] = {"register": 100, "period_s": 1.0}
    zones = [z for z in plant["zones"] if z.get("interlock") and z["interlock"]["plc"] == plc["id"]]
    assert len(zones) >= 2
    first, second = zones[0]["interlock"], zones[1]["interlock"]
    first.pop("coil", None)
    first.update({"register": 7, "trip_value": 70000})
    second["seq_register"] = 100  # the heartbeat's register
    errors = "\n".join(errors_of(plant, {"INFLUX_TOKEN": "t"}))
    assert "does not fit a register" in errors
    assert "register 100 is already plcs.plc-1.heartbeat.register" in errors
    first["trip_value"] = 0
    errors = "\n".join(errors_of(plant, {"INFLUX_TOKEN": "t"}))
    assert "a trip would change nothing" in errors


def test_a_sensor_overrides_exactly_the_threshold_keys_a_type_defines() -> None:
    # `Sensor` is a slotted dataclass and cannot inherit `_ThresholdFields`: its own
    # copy of the keys must stay the same list.
    import dataclasses

    from ehswatch.config import Sensor, SensorType, _ThresholdFields

    keys = set(_ThresholdFields.model_fields)
    sensor_keys = {f.name for f in dataclasses.fields(Sensor)}
    assert keys <= sensor_keys
    assert keys <= set(SensorType.model_fields)
    own = {"id", "type", "zone", "name", "modbus", "mqtt"}
    assert sensor_keys - keys == own


def _keys(model: type[BaseModel], seen: set[type[BaseModel]]) -> set[str]:
    """Every key a config may hold: field names of the model and its nested models."""
    if model in seen:
        return set()
    seen.add(model)
    keys: set[str] = set()
    stack: list[Any] = []
    for name, f in model.model_fields.items():
        keys.add(f.alias or name)
        stack.append(f.annotation)
    while stack:
        t = stack.pop()
        if isinstance(t, type) and issubclass(t, BaseModel):
            keys |= _keys(t, seen)
        stack.extend(typing.get_args(t))
    return keys


def test_configuration_md_names_every_key_the_config_takes() -> None:
    """The reference is the project's own doc: a key it does not name cannot be looked up
    (config errors send the reader there)."""
    doc = (Path(__file__).resolve().parent.parent / "docs" / "configuration.md").read_text()
    named = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", " ".join(re.findall(r"`([^`]+)`", doc))))
    keys = _keys(PlantConfig, set())
    assert {"period_s", "escalate_to", "deadline_h", "starttls"} <= keys  # nested ones too
    assert sorted(keys - named) == []


def test_the_setpoint_tiers_are_the_evaluators_tiers_by_name() -> None:
    from ehswatch.config import TIER_NAMES
    from ehswatch.thresholds.tier import Tier

    assert tuple(t.name.lower() for t in Tier if t > Tier.NORMAL) == TIER_NAMES


def test_governance_references_are_checked_every_error_at_once(plant: dict[str, Any]) -> None:
    zone(plant, "polishing-1")["cleaning"] = {"items": ["surfaces"], "shifts": ["day"]}
    zone(plant, "collector-1")["risk"] = "high"
    plant["governance"] = {
        "checklists": {"medium": [{"id": "floor", "text": "floor clear"}]},
        "checkpoints": [
            {"id": "cp-1", "zone": "nowhere"},
            {"id": "cp-2", "zone": "collector-1"},  # high risk: no "high" checklist
            {"id": "cp-3", "zone": "polishing-1", "checklist": "weekly"},
            {"id": "cp-3", "zone": "polishing-1"},
        ],
    }
    errors = errors_of(plant)
    assert "zones.polishing-1.cleaning: the site has no shifts (site.shifts) to clean at" in errors
    assert any(
        e.startswith("zones.polishing-1.cleaning.shifts: unknown shift 'day'") for e in errors
    )
    assert "governance.checkpoints.cp-1.zone: unknown zone 'nowhere'" in errors
    assert any(e.startswith("governance.checkpoints.cp-2: no checklist 'high'") for e in errors)
    assert any(e.startswith("governance.checkpoints.cp-3: no checklist 'weekly'") for e in errors)
    assert "governance.checkpoints.cp-3: duplicate id" in errors


def test_shifts_are_clock_times_with_names_of_their_own(plant: dict[str, Any]) -> None:
    plant["site"]["shifts"] = [
        {"name": "day", "start": "8:00", "end": "20:00"},
        {"name": "day", "start": "20:00", "end": "24:00"},
    ]
    errors = errors_of(plant)
    assert any(e.startswith("site.shifts.0.start") for e in errors), errors
    assert any(e.startswith("site.shifts.1.end") for e in errors), errors


def test_a_cleaning_or_checkpoint_grade_must_be_one_the_hazards_have(plant: dict[str, Any]) -> None:
    plant["site"]["shifts"] = [{"name": "day", "start": "08:00", "end": "20:00"}]
    plant.setdefault("hazards", {})["tier_grade"] = {
        "interlock": "A", "alarm": "B", "warning": "B", "fault": "B",
    }  # fmt: skip
    plant["hazards"]["grades"] = {
        "A": {"deadline_h": 2, "stop_work": True, "approvers": ["gm", "safety_director"]},
        "B": {"deadline_h": 24, "approvers": ["dept_head"]},
    }
    zone(plant, "polishing-1")["cleaning"] = {"items": ["surfaces"]}  # grade C by default
    plant["governance"] = {
        "checklists": {"medium": [{"id": "floor", "text": "floor clear"}]},
        "checkpoints": [{"id": "cp-1", "zone": "polishing-1"}],
    }
    errors = errors_of(plant)
    assert "zones.polishing-1.cleaning.grade: no grade 'C' in hazards.grades" in errors
    assert "governance.checkpoints.cp-1.grade: no grade 'C' in hazards.grades" in errors


def test_a_control_lease_needs_a_shared_database_and_a_heartbeat_on_every_plc(
    plant: dict[str, Any],
) -> None:
    plant["instance"] = {"lease": "plant-1"}
    plant["database"] = {"url": "sqlite+aiosqlite:///var/ehswatch.db"}
    plant["plcs"] = [{"id": "plc-9", "host": "127.0.0.1"}]  # no heartbeat
    errors = errors_of(plant)
    assert any("instance.lease: the instances must share the database" in e for e in errors)
    assert any("instance.lease: PLC plc-9 has no heartbeat" in e for e in errors), errors

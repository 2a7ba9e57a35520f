"""Grafana cannot run here: every dashboard query is checked against what the writer
actually writes — its measurements, tags and fields, taken from real line protocol."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import yaml

from ehswatch.governance.influx import governance_lines
from ehswatch.ingest.lineprotocol import LineEncoder, alarm_state_line
from ehswatch.interlock.controller import influx_fields
from ehswatch.interlock.state import ZoneState
from ehswatch.readings import ReadingBatch
from ehswatch.thresholds import Evaluator, SensorThresholds, ThresholdTable

ROOT = Path(__file__).resolve().parent.parent
GRAFANA = ROOT / "grafana"
FLUX_COLUMNS = {"_time", "_value", "_field", "_measurement", "_start", "_stop"}


def written() -> dict[str, tuple[set[str], set[str]]]:
    """measurement → (tags, fields), from line protocol the writer produces."""
    table = ThresholdTable.build([SensorThresholds(sensor_id="D-1", high=(10.0, 20.0, 40.0))])
    ev = Evaluator(table, 0.0)
    enc = LineEncoder("plant-1", [("D-1", "z1", "dust_al")])
    batch = ReadingBatch.of([0, 0, 0], [25.0, math.nan, 3.0], [1.0, 2.0, 3.0], [0, 2, 0])
    evaluation = ev.process(batch)
    lines = enc.readings(
        batch.sensor, batch.value, evaluation.reading_tier, batch.quality, batch.ts
    )
    lines += enc.events(evaluation)
    lines += enc.interlock("z1", influx_fields(ZoneState(zone="z1", tripped=True), 5.0), 5.0)
    alarm = {
        "zone": "z1",
        "sensor": "D-1",
        "sensor_type": "dust_al",
        "state_code": 1,
        "tier": 2,
        "peak_tier": 2,
        "id": 1,
    }
    lines += alarm_state_line("plant-1", alarm, 7, 6.0)
    lines += governance_lines("plant-1", GOVERNANCE_BOARD)
    schema: dict[str, tuple[set[str], set[str]]] = {}
    for line in lines.decode().splitlines():
        head, fields, _ = re.split(r"(?<!\\) ", line)
        measurement, *tags = re.split(r"(?<!\\),", head)
        t, f = schema.setdefault(measurement, (set(), set()))
        t.update(tag.split("=", 1)[0] for tag in tags)
        f.update(kv.split("=", 1)[0] for kv in fields.split(","))
    return schema


def queries() -> list[tuple[str, str]]:
    out = []
    for path in sorted((GRAFANA / "dashboards").glob("*.json")):
        board = json.loads(path.read_text("utf-8"))
        out += [
            (f"{path.name} panel {p['title']}", t["query"])
            for p in board["panels"]
            for t in p.get("targets", [])
        ]
        out += [
            (f"{path.name} variable {v['name']}", v["query"]) for v in board["templating"]["list"]
        ]
        out += [
            (f"{path.name} annotation {a['name']}", a["target"]["query"])
            for a in board["annotations"]["list"]
        ]
    return out


# A governance board as `governance.board.board` answers it: one zone, one closed shift.
GOVERNANCE_BOARD = {
    "now": 10.0,
    "zones": [
        {
            "id": "z1",
            "cleaning": {"done_7d": 3, "failed_7d": 1, "missed_7d": 1},
            "patrols": {"done_7d": 9, "missed_7d": 2},
            "tickets": {"by_grade": {"B": 1}, "open": [{"overdue": True}]},
            "hazards": {"this": 4},
            "readings": {
                "past": [
                    {
                        "shift": "day",
                        "start": 1.0,
                        "rows": [
                            {
                                "sensor_type": "dust_al",
                                "max": 25.0,
                                "mean": 4.1,
                                "above_warning_s": 60.0,
                                "above_alarm_s": 5.0,
                                "above_interlock_s": 0.0,
                                "covered_s": 43200.0,
                            }
                        ],
                    }
                ]
            },
        }
    ],
}


def test_the_writer_writes_the_measurements_of_the_spec_and_of_governance() -> None:
    schema = written()
    assert set(schema) == {"reading", "alarm_event", "interlock", "governance", "shift_figure"}
    assert schema["shift_figure"][0] == {"site", "zone", "type", "shift"}
    assert schema["reading"] == ({"site", "zone", "sensor", "type"}, {"value", "tier", "quality"})
    assert {"site", "zone"} <= schema["interlock"][0]


def test_every_dashboard_query_names_only_what_the_writer_writes() -> None:
    schema = written()
    assert len(queries()) >= 7
    for where, flux in queries():
        measurements = set(re.findall(r'r\._measurement == "([^"]+)"', flux))
        assert measurements, f"{where}: names no measurement"
        assert measurements <= set(schema), (
            f"{where}: unknown measurement {measurements - set(schema)}"
        )
        tags = set().union(*(schema[m][0] for m in measurements))
        fields = set().union(*(schema[m][1] for m in measurements))
        for field in re.findall(r'r\._field == "([^"]+)"', flux):
            assert field in fields, f"{where}: {field} is not a field of {measurements}"
        made = set(re.findall(r"(\w+): (?:r\.|if |string)", flux))  # columns map() creates
        columns = set(re.findall(r"\br\.(\w+)", flux)) | {
            c
            for group in re.findall(r"columns: \[([^\]]*)\]", flux)
            for c in re.findall(r'"(\w+)"', group)
        }
        columns |= set(re.findall(r'tag: "(\w+)"', flux))
        unknown = columns - tags - fields - FLUX_COLUMNS - made
        assert not unknown, (
            f"{where}: {sorted(unknown)} are neither tags nor fields of {measurements}"
        )


def test_the_datasource_and_dashboard_provisioning_point_at_each_other() -> None:
    ds = yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "influxdb.yaml").read_text("utf-8")
    )
    (source,) = ds["datasources"]
    assert (
        source["jsonData"]["version"] == "Flux"
        and source["jsonData"]["defaultBucket"] == "telemetry"
    )
    for path in (GRAFANA / "dashboards").glob("*.json"):
        board = json.loads(path.read_text("utf-8"))
        uids = {p["datasource"]["uid"] for p in board["panels"]}
        assert uids == {source["uid"]}, path.name
    for _, flux in queries():
        assert 'bucket: "telemetry"' in flux
    provider = yaml.safe_load(
        (GRAFANA / "provisioning" / "dashboards" / "ehswatch.yaml").read_text("utf-8")
    )
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"

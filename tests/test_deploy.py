"""docker-compose cannot run here (no Docker engine): check that its parts fit together —
every mounted file exists, every host name is a service, the credentials agree, and the
config it runs with is valid."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from ehswatch.config import load_config
from ehswatch.simulators.scenario import Scenario

ROOT = Path(__file__).resolve().parent.parent
MOUNTED_FILES = 5  # the ./ sources docker-compose.yml mounts (count them when it changes)


def compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text("utf-8"))
    return doc


def test_compose_runs_the_five_services_of_the_spec() -> None:
    services = compose()["services"]
    assert {name for name, s in services.items() if "profiles" not in s} == {
        "mosquitto",
        "influxdb",
        "grafana",
        "ehswatch",
        "simulators",
    }
    # PostgreSQL only with its profile, and ehswatch waits for it only then.
    assert services["postgres"]["profiles"] == ["postgresql"]
    assert services["ehswatch"]["depends_on"]["postgres"] == {
        "condition": "service_healthy",
        "required": False,
    }


def test_the_database_is_sqlite_unless_database_url_names_postgresql() -> None:
    plain = load_config(ROOT / "config" / "docker.yaml", env={})
    assert plain.database.url.startswith("sqlite+aiosqlite:////app/var/")
    url = "postgresql+asyncpg://ehswatch:pw@postgres/ehswatch"
    shared = load_config(ROOT / "config" / "docker.yaml", env={"DATABASE_URL": url})
    assert shared.database.url == url
    assert "[postgresql]" in (ROOT / "Dockerfile").read_text("utf-8")  # the driver is in


def test_every_mounted_file_exists() -> None:
    checked = []
    for name, service in compose()["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts {source}, which is missing"
                checked.append(source)
    assert len(checked) == MOUNTED_FILES, checked  # a parse that finds none checks nothing


def test_the_service_config_is_valid_and_names_the_compose_services() -> None:
    config = load_config(ROOT / "config" / "docker.yaml", env={"INFLUX_TOKEN": "t"})
    services = set(compose()["services"])
    assert config.mqtt is not None and "mosquitto:" in config.mqtt.url
    assert config.influxdb is not None and "influxdb:" in config.influxdb.url
    hosts = {d.host for d in config.modbus_devices} | {p.host for p in config.plcs}
    assert hosts <= services
    assert config.api.host == "0.0.0.0"


def test_influxdb_grafana_and_ehswatch_agree_on_org_bucket_and_token() -> None:
    services = compose()["services"]
    init = services["influxdb"]["environment"]
    config = load_config(ROOT / "config" / "docker.yaml", env={})
    assert config.influxdb is not None
    assert (init["DOCKER_INFLUXDB_INIT_ORG"], init["DOCKER_INFLUXDB_INIT_BUCKET"]) == (
        config.influxdb.org,
        config.influxdb.bucket,
    )
    token = init["DOCKER_INFLUXDB_INIT_ADMIN_TOKEN"]
    assert services["ehswatch"]["environment"]["INFLUX_TOKEN"] == token
    assert services["grafana"]["environment"]["INFLUX_TOKEN"] == token
    assert config.influxdb.token == "ehswatch-dev-token"  # the default of both sides
    ds = yaml.safe_load(
        (ROOT / "grafana/provisioning/datasources/influxdb.yaml").read_text("utf-8")
    )
    assert ds["datasources"][0]["url"] == "http://influxdb:8086"
    assert ds["datasources"][0]["jsonData"]["organization"] == config.influxdb.org


def test_the_simulators_run_a_packaged_scenario_on_the_same_config() -> None:
    command = compose()["services"]["simulators"]["command"]
    scenario = command[command.index("--scenario") + 1]
    assert scenario.startswith("/app/")
    loaded = Scenario.load(ROOT / scenario.removeprefix("/app/"))
    config = load_config(ROOT / "config" / "docker.yaml", env={})
    assert set(loaded.sensors) <= {s.id for s in config.sensors}


def test_the_dockerfile_copies_what_exists() -> None:
    copied = []
    for line in (ROOT / "Dockerfile").read_text("utf-8").splitlines():
        m = re.match(r"COPY (.+) \S+$", line)
        if m:
            for source in m.group(1).split():
                assert (ROOT / source).exists(), f"Dockerfile copies {source}, which is missing"
                copied.append(source)
    assert copied == ["pyproject.toml", "README.md", "ehswatch", "config"]

"""The built-in big screen in headless Chromium, and `ehswatch demo` as a new user runs it."""

from __future__ import annotations

import asyncio
import copy
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import yaml

from ehswatch.config import parse_config
from ehswatch.readings import ReadingBatch
from ehswatch.simulators.runner import Simulation
from ehswatch.simulators.scenario import Scenario
from tests.aio import eventually, run
from tests.parts import api_server
from tests.servers import Mosquitto, find_binary, free_port

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"


def demo_plant(tmp_path: Path, broker_port: int) -> dict[str, Any]:
    """config/demo.yaml on free ports, its database in `tmp_path`."""
    doc: dict[str, Any] = copy.deepcopy(
        yaml.safe_load((ROOT / "config" / "demo.yaml").read_text("utf-8"))
    )
    doc["mqtt"]["url"] = f"mqtt://127.0.0.1:{broker_port}"
    doc["api"]["port"] = free_port()
    doc["api"]["public_url"] = f"http://127.0.0.1:{doc['api']['port']}"
    for section in ("modbus_devices", "plcs"):
        for item in doc[section]:
            item["port"] = free_port()
    doc["database"]["url"] = f"sqlite+aiosqlite:///{tmp_path}/ehswatch.db"
    doc["hazards"]["evidence_dir"] = str(tmp_path / "evidence")
    return doc


def chrome(profile: str = "chrome") -> Any:
    """Headless Chromium; each `profile` its own browser (cookies, storage): one phone."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service as ChromeService

    options = Options()
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1600,1000",
        f"--user-data-dir={ARTIFACTS / profile}",
    ):
        options.add_argument(arg)
    options.binary_location = find_binary("chromium", "chromium")
    return webdriver.Chrome(
        service=ChromeService(find_binary("chromedriver", "chromium-driver")), options=options
    )


def screen(driver: Any, width: int, height: int) -> None:
    """Make the page's viewport exactly `width`×`height` CSS pixels (a window's size would
    include the browser's own bars); narrower than 700 it is a phone's."""
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 700},
    )


# What a wall screen shows of the board, measured in the page: the panels' extent and the
# share of the screen they cover (zones and the alarms/tickets side), and any scrolling.
FILL_SCRIPT = """
const vw = window.innerWidth, vh = window.innerHeight;
const boxes = [...document.querySelectorAll('#zones .zone, aside section')]
  .map((e) => e.getBoundingClientRect());
const area = boxes.reduce((a, b) => a + b.width * b.height, 0);
return {vw, vh, covered: area / (vw * vh),
  right: Math.max(...boxes.map((b) => b.right)), bottom: Math.max(...boxes.map((b) => b.bottom)),
  zonesBottom: Math.max(...[...document.querySelectorAll('#zones .zone')]
    .map((e) => e.getBoundingClientRect().bottom)),
  scrolls: document.documentElement.scrollHeight > vh
    || document.documentElement.scrollWidth > vw};
"""


def browse_big_plant(
    tmp_path: Path,
    sensors: int,
    browse: Callable[[Any, str], dict[str, Any]],
    before: Callable[[Any], None] = lambda app: None,
) -> tuple[Any, dict[str, Any]]:
    """Serve a generated plant of `sensors` (tests/big_plant.py) on a free port, call
    `before(app)` once it answers, then `browse(driver, base_url)` in headless Chromium;
    the app and what `browse` saw."""
    from tests.big_plant import plant_doc

    ARTIFACTS.mkdir(exist_ok=True)
    doc = plant_doc(
        tmp_path, broker=free_port(), plc=free_port(), api=free_port(), sensors=sensors, trips=1
    )
    config = parse_config(yaml.safe_dump(doc), env={})
    app, server = api_server(config)
    base = f"http://127.0.0.1:{config.api.port}"

    def in_chromium() -> dict[str, Any]:
        driver = chrome()
        try:
            return browse(driver, base)
        finally:
            driver.quit()

    async def main() -> dict[str, Any]:
        task = asyncio.create_task(server.serve(), name="test:browse")
        await eventually(lambda: server.started, what="the API")
        try:
            before(app)
            return await asyncio.to_thread(in_chromium)
        finally:
            server.should_exit = True
            await task

    return app, run(main(), timeout=120)


def test_the_board_shows_a_tile_turn_red_and_the_interlock_trip(tmp_path: Path) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    with Mosquitto(tmp_path) as broker:
        doc = demo_plant(tmp_path, broker.port)
        for t in doc["sensor_types"].values():
            t["on_delay_s"] = 0  # no waiting in a test
        config = parse_config(yaml.safe_dump(doc, allow_unicode=True), env={})
        scenario = Scenario.model_validate(
            {
                "name": "fast",
                "sensors": {
                    "D-101": {"baseline": 3.0, "events": [{"at": 2, "ramp_to": 45, "over": 3}]},
                    "D-102": {"baseline": 4.0},
                    "DC-101": {"baseline": 2.0},
                    "DC-102": {"baseline": 2.0},
                    "G-301": {"baseline": 0.5},
                    "O2-301": {"baseline": 20.9},
                },
            }
        )
        _app, server = api_server(config)
        url = f"http://127.0.0.1:{config.api.port}/#token=demo-viewer"

        def browse() -> dict[str, Any]:
            from selenium.webdriver.common.by import By
            from selenium.webdriver.support.ui import WebDriverWait

            driver = chrome()
            try:
                driver.get(url)
                wait = WebDriverWait(
                    driver, 30, poll_frequency=0.2, ignored_exceptions=(Exception,)
                )

                # The board re-renders every second: read what is needed in one go.
                def read(d: Any) -> Any:  # the readings, or None to keep waiting
                    tiles = d.find_elements(By.CSS_SELECTOR, "[data-sensor='D-101'].tier-3")
                    zones = d.find_elements(By.CSS_SELECTOR, "[data-zone='polishing-1'].tripped")
                    tickets = d.find_elements(By.CSS_SELECTOR, "[data-ticket]")
                    if not (tiles and zones and tickets):
                        return None
                    return {
                        "tile": tiles[0].get_attribute("class") or "",
                        "zone": zones[0].text,
                        "alarms": d.find_element(By.ID, "alarms").text,
                    }

                seen: dict[str, Any] = wait.until(read)
                screen(driver, 1920, 1080)  # the wall screen
                time.sleep(1.5)  # let the sparklines fill in for the picture
                seen["fill"] = driver.execute_script(FILL_SCRIPT)
                driver.save_screenshot(str(ARTIFACTS / "board.png"))
                return seen
            finally:
                driver.quit()

        async def main() -> dict[str, Any]:
            async with Simulation(config, scenario):
                task = asyncio.create_task(server.serve(), name="test:board")
                await eventually(lambda: server.started, what="the API")
                try:
                    return await asyncio.to_thread(browse)
                finally:
                    server.should_exit = True
                    await task

        seen = run(main(), timeout=90)
    assert "tier-3" in seen["tile"]
    assert "TRIPPED" in seen["zone"]
    assert "D-101" in seen["alarms"]
    assert (ARTIFACTS / "board.png").stat().st_size > 10_000
    fill = seen["fill"]  # the three zones and the side fill the 1920×1080 wall screen
    assert (fill["vw"], fill["vh"]) == (1920, 1080)
    assert not fill["scrolls"], fill
    assert fill["right"] >= 0.98 * fill["vw"] and fill["bottom"] >= 0.95 * fill["vh"], fill
    assert fill["zonesBottom"] >= 0.95 * fill["vh"], fill  # no empty lower half
    assert fill["covered"] >= 0.65, fill  # panels, not black space (3 zones in a 2×2 grid)


def test_make_demo_serves_the_board_and_a_zone_starts_alarming(tmp_path: Path) -> None:
    """The demo as a new user starts it (`ehswatch demo`, embedded broker), for at most 60 s."""
    doc = demo_plant(tmp_path, free_port())  # nothing listens there: the demo brings its broker
    plant = tmp_path / "demo.yaml"
    plant.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    base = f"http://127.0.0.1:{doc['api']['port']}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "ehswatch", "demo", "--config", str(plant)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        cwd=ROOT,
    )
    alarms: list[dict[str, Any]] = []
    board = ""
    signed_in: dict[str, Any] = {}
    kinds: dict[str, Any] = {}
    patrol_photos = 0
    predicted: Any = None
    try:
        deadline = time.monotonic() + 60
        with httpx.Client(base_url=base, timeout=5) as client:
            while time.monotonic() < deadline and not alarms:
                time.sleep(1)
                try:
                    board = client.get("/").text
                    alarms = client.get(
                        "/api/alarms", headers={"Authorization": "Bearer demo-viewer"}
                    ).json()
                except httpx.TransportError:
                    continue
            predicted = client.get(
                "/api/predictions", headers={"Authorization": "Bearer demo-viewer"}
            )
            # The story's dust governance: a shift without its cleaning record and a
            # patrol's failed item, each a ticket (with the failed item's photos).
            viewer = {"Authorization": "Bearer demo-viewer"}
            while time.monotonic() < deadline and not {"cleaning", "patrol"} <= set(kinds):
                tickets = client.get("/api/hazards", headers=viewer).json()
                kinds = {t["kind"]: t for t in tickets}
                time.sleep(0.5)
            if "patrol" in kinds:
                photos = client.get(
                    f"/api/hazards/{kinds['patrol']['id']}/evidence", headers=viewer
                )
                patrol_photos = len(photos.json())
            # A demo person, with the password the demo printed.
            signed_in = client.post(
                "/auth/login", json={"username": "zhang.wei", "password": "demo-zhang-wei"}
            ).json()
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    assert "EHS 大屏" in board
    assert alarms and alarms[0]["sensor"] == "D-101", out
    assert proc.returncode == 0, out
    assert f"Board:    {base}/#token=demo-viewer" in out
    assert re.search(r"zhang\.wei\s+demo-zhang-wei\s+supervisor", out), out
    assert (signed_in.get("name"), signed_in.get("role")) == ("zhang.wei", "supervisor")
    assert "Traceback" not in out
    assert (
        kinds["cleaning"]["owner"] == "zhang.wei"
        and "cleaning not recorded" in kinds["cleaning"]["title"]
    )
    assert (
        kinds["patrol"]["owner"] == "zhang.wei"
        and "3.2 kPa is above 2.5" in kinds["patrol"]["title"]
    )
    assert patrol_photos == 2  # the failed items' photos: the dusty stations and the gauge
    assert "Governance board:" in out
    # The build-up was predicted before its alarm (a prediction trips nothing).
    first = [e for e in predicted.json()["events"] if e["sensor"] == "D-101"]
    assert first and first[0]["event"] == "predicted", predicted.text
    assert first[0]["at"] < alarms[0]["first_at"]


def test_a_large_plant_board_shows_zone_summaries_and_opens_only_what_it_shows(
    tmp_path: Path,
) -> None:
    """2 000 sensors: every zone as a summary; the sensors of a zone not at normal, and of
    a zone a person opens, on demand — at phone and wall-screen size."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from tests.big_plant import VIEWER

    def alarm_in_area_2(app: Any) -> None:
        service = app.state.service
        k = service.table.index["D-1000"]  # in area-2: at the alarm tier
        service.stage.evaluate(ReadingBatch.of([k], [25.0], [service.clock()]))
        service.state.publish()

    def browse(driver: Any, base: str) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        for width, height in ((390, 844), (1920, 1080)):
            screen(driver, width, height)
            driver.get(f"{base}/#token={VIEWER}")
            wait = WebDriverWait(driver, 20, poll_frequency=0.2)
            wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "[data-sensor='D-1000']"))
            tiles = driver.find_elements(By.CSS_SELECTOR, "[data-sensor]")
            seen[f"{width}:zones"] = len(driver.find_elements(By.CSS_SELECTOR, "[data-zone]"))
            seen[f"{width}:tiles"] = len(tiles)
            seen[f"{width}:closed_zone_tile"] = bool(
                driver.find_elements(By.CSS_SELECTOR, "[data-sensor='D-0']")
            )
            seen[f"{width}:layout"] = driver.execute_script(
                """return {font: parseFloat(getComputedStyle(document.documentElement).fontSize),
                  alarmsFirst: document.querySelector('aside').getBoundingClientRect().top
                    < document.getElementById('zones').getBoundingClientRect().top,
                  overflow: document.documentElement.scrollWidth > window.innerWidth,
                  clock: document.getElementById('clock').textContent};"""
            )
            driver.save_screenshot(str(ARTIFACTS / f"board-large-{width}.png"))
        driver.find_element(By.CSS_SELECTOR, "[data-toggle='area-0']").click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "[data-sensor='D-0']"))
        seen["opened_tiles"] = len(driver.find_elements(By.CSS_SELECTOR, "[data-sensor]"))
        return seen

    _, seen = browse_big_plant(tmp_path, 2000, browse, before=alarm_in_area_2)
    phone, wall = seen["390:layout"], seen["1920:layout"]
    assert phone["alarmsFirst"] and not wall["alarmsFirst"]  # a phone: alarms on top
    assert wall["font"] > 1.2 * phone["font"]  # read from across the room
    assert not phone["overflow"] and not wall["overflow"]
    assert wall["clock"].endswith("(UTC)"), wall["clock"]  # the site's clock, its zone named
    for width in (390, 1920):
        assert seen[f"{width}:zones"] == 5  # four areas of 500 and the trip zone
        assert seen[f"{width}:tiles"] == 500  # area-2 alone is open: not 2 001 tiles
        assert not seen[f"{width}:closed_zone_tile"]
    assert seen["opened_tiles"] == 1000  # area-0 opened by a click, on demand


def test_the_api_docs_render_with_nothing_fetched_from_another_host(tmp_path: Path) -> None:
    """/docs on a plant network: every asset from the service itself."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def browse(driver: Any, base: str) -> dict[str, Any]:
        seen: dict[str, Any] = {"base": base}
        for width, height in ((390, 844), (1920, 1080)):
            screen(driver, width, height)
            driver.get(f"{base}/docs")
            wait = WebDriverWait(driver, 20, poll_frequency=0.2)
            wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".swagger-ui .info .title"))
            wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".opblock"))
            title = driver.find_element(By.CSS_SELECTOR, ".swagger-ui .info .title")
            seen[f"{width}:title"] = title.text
            seen[f"{width}:operations"] = len(driver.find_elements(By.CSS_SELECTOR, ".opblock"))
            driver.save_screenshot(str(ARTIFACTS / f"docs-{width}.png"))
        seen["fetched"] = driver.execute_script(
            "return performance.getEntriesByType('resource').map(e => e.name)"
        )
        return seen

    app, seen = browse_big_plant(tmp_path, 10, browse)
    base = seen["base"]
    routes = sum(len(ops) for ops in app.openapi()["paths"].values())
    for width in (390, 1920):
        assert seen[f"{width}:title"].startswith("ehswatch")
        assert seen[f"{width}:operations"] == routes
    assert seen["fetched"] and all(u.startswith(base + "/") for u in seen["fetched"])

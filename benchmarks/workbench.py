"""The workbench's *My work* page on a phone's slow link. Prints one JSON object.

Both parts run in this process on the API tests' plant, with an alarm and an A ticket
waiting for the signed-in team leader. Headless Chromium at 390×844, its cache off, its
network held to Chrome's "Fast 3G" (562.5 ms round trip, 1.44 Mbit/s down, 675 kbit/s
up), loads `/app/` `--samples` times:

- `first_load_kb`: everything the page needed, as transferred (HTML, script, style);
- `interactive_ms`: the median time from navigation to DOMContentLoaded (the page's
  script runs deferred, before it: its buttons work from then on);
- `floor_ms`: the median of the same navigation to `/health/live` (a few bytes) under
  the same link, measured in the same run: what the link alone costs;
- `interactive_ratio`: `interactive_ms / floor_ms`.

Goals: `first_load_kb` ≤ 300, `interactive_ms` ≤ 2000.

Usage: python benchmarks/workbench.py [--samples N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ehswatch.readings import ReadingBatch  # noqa: E402
from ehswatch.roles import Actor  # noqa: E402
from ehswatch.simulators.plc import PlcSim  # noqa: E402
from tests.aio import eventually  # noqa: E402
from tests.parts import api_server, open_tickets  # noqa: E402
from tests.test_api import plant  # noqa: E402
from tests.test_board import chrome, screen  # noqa: E402

FAST_3G = {
    "offline": False,
    "latency": 562.5,
    "download_throughput": 1.44 * 1024 * 1024 / 8,
    "upload_throughput": 675 * 1024 / 8,
}
PASSWORD = "team-leader-1"


def measure(base: str, samples: int) -> dict[str, Any]:
    driver = chrome("bench-phone")
    try:
        screen(driver, 390, 844)
        driver.get(f"{base}/app/login")
        driver.find_element("css selector", "input[name=username]").send_keys("zhang.wei")
        driver.find_element("css selector", "input[name=password]").send_keys(PASSWORD)
        driver.find_element("css selector", "form[data-signin] button").click()
        from selenium.webdriver.support.ui import WebDriverWait

        WebDriverWait(driver, 20).until(lambda d: d.current_url.endswith("/app/"))
        driver.execute_cdp_cmd("Network.enable", {})
        driver.execute_cdp_cmd("Network.setCacheDisabled", {"cacheDisabled": True})
        driver.set_network_conditions(**FAST_3G)
        loads, sizes, floors = [], [], []
        for _ in range(samples):
            driver.get(f"{base}/app/")
            timing = driver.execute_script(
                """const n = performance.getEntriesByType('navigation')[0];
                const r = performance.getEntriesByType('resource');
                return [n.domContentLoadedEventEnd - n.startTime,
                        n.transferSize + r.reduce((s, e) => s + e.transferSize, 0),
                        document.querySelectorAll('section[data-section]').length];"""
            )
            assert timing[2] >= 2, "My work did not list the waiting alarm and ticket"
            loads.append(timing[0])
            sizes.append(timing[1])
            driver.get(f"{base}/health/live")
            floors.append(
                driver.execute_script(
                    "const n = performance.getEntriesByType('navigation')[0];"
                    "return n.responseEnd - n.startTime;"
                )
            )
        interactive, floor = statistics.median(loads), statistics.median(floors)
        return {
            "samples": samples,
            "first_load_kb": round(max(sizes) / 1024, 1),
            "interactive_ms": round(interactive, 1),
            "floor_ms": round(floor, 1),
            "interactive_ratio": round(interactive / floor, 2),
            "goals": {"first_load_kb": 300, "interactive_ms": 2000},
        }
    finally:
        driver.quit()


async def main(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        config = plant(Path(tmp))
        app, server = api_server(config)
        async with PlcSim(config.plcs[0]):
            task = asyncio.create_task(server.serve(), name="bench:workbench")
            try:
                await eventually(lambda: server.started, what="the API")
                people = app.state.desk.people
                await people.add(
                    "zhang.wei", "supervisor", PASSWORD, by=Actor(name="b", role="admin")
                )
                service = app.state.service
                service.stage.evaluate(ReadingBatch.of([0], [45.0], [service.clock()]))
                await open_tickets(app.state.desk)
                base = f"http://127.0.0.1:{config.api.port}"
                return await asyncio.to_thread(measure, base, args.samples)
            finally:
                server.should_exit = True
                await task


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=5)
    print(json.dumps(asyncio.run(main(ap.parse_args()))))

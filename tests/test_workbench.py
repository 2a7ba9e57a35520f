"""The workbench in headless Chromium at phone size (390×844), against the real service
and database: people sign in and act from their own phones (docs/workbench.md)."""

from __future__ import annotations

import asyncio
import base64
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from ehswatch.clock import ServiceClock
from ehswatch.readings import ReadingBatch
from ehswatch.roles import Actor
from ehswatch.service import Service
from ehswatch.simulators.plc import PlcSim
from tests.aio import eventually, run
from tests.fakes import RobotServer
from tests.parts import api_server
from tests.postgres import database_url, query
from tests.servers import free_port
from tests.test_api import plant
from tests.test_board import ARTIFACTS, chrome, screen

T = TypeVar("T")
ADMIN = Actor(name="admin", role="admin")
PEOPLE = {
    "zhang.wei": ("supervisor", "team-leader-1"),
    "li.na": ("operator", "rectifier-1"),
    "wang.fang": ("safety_director", "director-1"),
    "chen.gang": ("gm", "general-manager-1"),
    "admin.liu": ("admin", "administrator-1"),
}
PHONE = (390, 844)


class Bench:
    """The service, as a test on another thread (the browsers') reaches it."""

    def __init__(self, app: Any, loop: asyncio.AbstractEventLoop, base: str, db: str) -> None:
        self.app = app
        self.loop = loop
        self.base = base
        self.db = db

    def read(self, value: float) -> None:
        """D-1 reads `value` now (through the evaluator, on the service's loop)."""

        def feed() -> None:
            service = self.app.state.service
            ts = max(float(service.stage.evaluator.last_ts[0]) + 1, service.clock())
            service.stage.evaluate(ReadingBatch.of([0], [value], [ts]))

        self.loop.call_soon_threadsafe(feed)

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        return query(self.db, sql)

    def until(self, what: str, predicate: Callable[[], bool], timeout: float = 20.0) -> None:
        asyncio.run_coroutine_threadsafe(
            eventually(predicate, timeout=timeout, what=what), self.loop
        ).result(timeout + 5)


def workbench(
    tmp_path: Path,
    flow: Callable[[Bench, Any, Any], T],
    tweak: Callable[[int], dict[str, Any]] | None = None,
    clock: ServiceClock | None = None,
) -> T:
    """Serve the test plant with its people, and run `flow(bench, phone_a, phone_b)` with
    two phones (two browsers, each with its own cookies) in a thread of its own.
    `tweak(api_port)`: config sections to add or replace; `clock`: the service's."""
    ARTIFACTS.mkdir(exist_ok=True)
    port = free_port()
    config = plant(
        tmp_path, {"api": {"host": "127.0.0.1", "port": port}, **(tweak or (lambda _: {}))(port)}
    )
    app, server = api_server(config, Service(config, clock=clock) if clock else None)
    base = f"http://127.0.0.1:{config.api.port}"

    def in_chromium(bench: Bench) -> T:
        phones = [chrome("phone-a"), chrome("phone-b")]
        try:
            for phone in phones:
                screen(phone, *PHONE)
                phone.delete_all_cookies()
            return flow(bench, *phones)
        finally:
            for phone in phones:
                phone.quit()

    async def main() -> T:
        task = asyncio.create_task(server.serve(), name="test:workbench")
        await eventually(lambda: server.started, what="the API")
        try:
            for name, (role, password) in PEOPLE.items():
                await app.state.desk.people.add(name, role, password, by=ADMIN)
            async with PlcSim(config.plcs[0]):
                bench = Bench(
                    app, asyncio.get_running_loop(), base, database_url(tmp_path, "db.sqlite")
                )
                return await asyncio.to_thread(in_chromium, bench)
        finally:
            server.should_exit = True
            await task

    return run(main(), timeout=180)


# ------------------------------------------------------------------ what a phone does


def wait(phone: Any, css: str, timeout: float = 20) -> Any:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(phone, timeout, poll_frequency=0.1).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, css)
    )
    return phone.find_element(By.CSS_SELECTOR, css)


def sign_in(phone: Any, base: str, name: str, then: str = "/app/") -> None:
    phone.delete_all_cookies()
    phone.get(f"{base}/app/login?next={then}")
    wait(phone, "input[name=username]").send_keys(name)
    phone.find_element("css selector", "input[name=password]").send_keys(PEOPLE[name][1])
    phone.find_element("css selector", "form[data-signin] button").click()
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(phone, 20, poll_frequency=0.1).until(
        lambda d: d.current_url.endswith(then) and "/login" not in d.current_url
    )
    assert wait(phone, "header .who").text  # signed in: the header names the person


def act(phone: Any, action: str, **fields: str) -> str:
    """Fill the form of `action`, press its button; the refusal shown, or "" once the page
    has been loaded anew (the action done)."""
    from selenium.webdriver.support.ui import WebDriverWait

    button = wait(phone, f"button[data-action='{action}']")
    form = button.find_element("xpath", "./ancestor::form")
    for name, value in fields.items():
        field = form.find_element("css selector", f"[name='{name}']")
        if field.tag_name == "select":
            from selenium.webdriver.support.ui import Select

            Select(field).select_by_value(value)
        else:
            field.clear()
            field.send_keys(value)
    refusal = form.find_element("css selector", "[data-refusal]")
    phone.execute_script("window.__before = performance.timeOrigin")
    phone.execute_script("arguments[0].scrollIntoView({block: 'center'})", button)
    button.click()

    def settled(d: Any) -> bool:
        try:
            reloaded = d.execute_script("return window.__before === undefined")
            return bool(reloaded) or refusal.is_displayed()
        except Exception:  # the old page is gone: reloaded
            return True

    WebDriverWait(phone, 20, poll_frequency=0.1).until(settled)
    try:
        return str(refusal.text) if refusal.is_displayed() else ""
    except Exception:
        return ""


def shot(phone: Any, name: str) -> None:
    phone.save_screenshot(str(ARTIFACTS / f"workbench-{name}.png"))


def camera_photo(phone: Any, path: Path, width: int = 3000, height: int = 2000) -> Path:
    """A photo as a phone camera takes one (3000×2000 JPEG), drawn by the browser."""
    data_url = phone.execute_script(
        """const c = document.createElement('canvas'); c.width = arguments[0];
        c.height = arguments[1]; const g = c.getContext('2d');
        g.fillStyle = '#8a8f99'; g.fillRect(0, 0, c.width, c.height);
        g.fillStyle = '#d9c27a'; g.fillRect(200, 300, 1800, 900);
        return c.toDataURL('image/jpeg', 0.9);""",
        width,
        height,
    )
    path.write_bytes(base64.b64decode(data_url.split(",", 1)[1]))
    return path


def jpeg_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a JPEG's start-of-frame marker."""
    k = 2
    while k < len(data):
        marker, length = data[k + 1], struct.unpack(">H", data[k + 2 : k + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2):
            height, width = struct.unpack(">HH", data[k + 5 : k + 9])
            return width, height
        k += 2 + length
    raise AssertionError("no start-of-frame marker")


# ------------------------------------------------------------------ the rules


def test_four_people_walk_an_a_ticket_from_detection_to_the_archive(tmp_path: Path) -> None:
    def flow(bench: Bench, leader: Any, rectifier: Any) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        bench.read(45.0)  # interlock tier: a trip, its alarm and an A ticket
        bench.until("the A ticket", lambda: bool(bench.rows("SELECT id FROM hazard_ticket")))
        ((tid,),) = bench.rows("SELECT id FROM hazard_ticket")

        sign_in(leader, bench.base, "zhang.wei")
        seen["leader_work"] = [
            e.get_attribute("data-section")
            for e in leader.find_elements("css selector", "section[data-section]")
        ]
        shot(leader, "1-my-work-team-leader")
        wait(leader, f"a[data-item='/app/hazards/{tid}']").click()
        assert act(leader, "assign", owner="li.na") == ""
        seen["owner"] = wait(leader, "[data-owner]").text

        sign_in(rectifier, bench.base, "li.na")
        wait(rectifier, f"section[data-section='tickets_i_own'] a[data-item='/app/hazards/{tid}']")
        shot(rectifier, "2-my-work-rectifier")
        rectifier.get(f"{bench.base}/app/hazards/{tid}")
        assert act(rectifier, "start") == ""
        photo = camera_photo(rectifier, tmp_path / "camera.jpg")
        wait(rectifier, "input[data-photo]").send_keys(str(photo))
        bench.until("the photo stored", lambda: bool(bench.rows("SELECT id FROM hazard_evidence")))
        wait(rectifier, "[data-evidence-count]")
        rectifier.get(f"{bench.base}/app/hazards/{tid}")
        seen["thumbnails"] = len(rectifier.find_elements("css selector", ".evidence img"))
        assert act(rectifier, "submit", measure="dust removed, filter bag replaced") == ""
        shot(rectifier, "3-ticket-submitted")

        # The paper is done, the plant is not: the reading is still high, the zone latched.
        leader.get(f"{bench.base}/app/hazards/{tid}")
        seen["refused_verify"] = act(leader, "verify")
        shot(leader, "3b-verify-refused")
        bench.read(2.0)  # the air is clean again; the interlock is reset by the leader
        leader.get(f"{bench.base}/app/interlocks/z1")
        assert act(leader, "reset") == ""
        leader.get(f"{bench.base}/app/hazards/{tid}")
        assert act(leader, "verify") == ""
        for name in ("wang.fang", "chen.gang"):
            sign_in(rectifier, bench.base, name, then=f"/app/hazards/{tid}")
            assert act(rectifier, "approve") == ""
        seen["state"] = wait(rectifier, "[data-state]").text
        shot(rectifier, "4-ticket-archived")
        ((path,),) = bench.rows("SELECT path FROM hazard_evidence")
        seen["photo"] = jpeg_size(Path(path).read_bytes())
        (thumb,) = Path(path).parent.glob("*.thumb.jpg")
        seen["thumb"] = jpeg_size(thumb.read_bytes())
        rectifier.get(f"{bench.base}/app/hazards/{tid}")
        seen["thumb_shown"] = rectifier.execute_script(
            "const i = document.querySelector('.evidence img');"
            "return [i.getAttribute('src'), i.complete && i.naturalWidth];"
        )
        # The same pages on a desk's screen: My work in two columns, nothing cut off.
        screen(leader, 1920, 1080)
        leader.get(f"{bench.base}/app/")
        wait(leader, "section[data-section]")
        seen["wide_columns"] = leader.execute_script(
            "return getComputedStyle(document.querySelector('.work ul'))"
            ".gridTemplateColumns.split(' ').length"
        )
        seen["wide_overflow"] = leader.execute_script(
            "return document.documentElement.scrollWidth > window.innerWidth"
        )
        shot(leader, "10-my-work-1920")
        screen(leader, *PHONE)
        seen["trail"] = [a for (a,) in bench.rows(
            f"SELECT action FROM audit_log WHERE subject = 'ticket:{tid}' ORDER BY id"
        )]  # fmt: skip
        return seen

    seen = workbench(tmp_path, flow)
    assert "to_register" in seen["leader_work"] and "alarms_to_ack" in seen["leader_work"]
    assert seen["owner"] == "li.na"
    assert seen["refused_verify"] == (
        "not verified: D-1 still reads 45 mg/m3, at the interlock tier: it must be back below "
        "the ticket's tier first; zone z1 is still latched by its interlock: reset it first"
    )
    assert seen["thumbnails"] == 1
    assert seen["wide_columns"] == 2 and seen["wide_overflow"] is False
    assert max(seen["photo"]) == 1600  # downscaled on the phone before upload (3000×2000)
    assert max(seen["thumb"]) == 240  # and its thumbnail, made there too
    src, shown_width = seen["thumb_shown"]
    assert src.endswith("/thumbnail") and shown_width == 240
    assert seen["state"] in ("已归档", "archived")
    assert "verify refused" in seen["trail"]
    assert [a for a in seen["trail"] if not a.endswith(" refused")][-7:] == [
        "ticket registered",
        "ticket rectification started",
        "evidence added",
        "ticket rectification submitted",
        "ticket verified",
        "ticket approved",
        "ticket approved and archived",
    ]


def test_a_reset_is_refused_with_its_plain_reason_then_accepted(tmp_path: Path) -> None:
    def flow(bench: Bench, leader: Any, _: Any) -> tuple[str, str]:
        bench.read(45.0)
        bench.until("the trip", lambda: bool(bench.rows(
            "SELECT zone FROM interlock_zone WHERE tripped"
        )))  # fmt: skip
        sign_in(leader, bench.base, "zhang.wei", then="/app/interlocks/z1")
        refused = act(leader, "reset")
        shot(leader, "5-reset-refused")
        bench.read(2.0)
        accepted = act(leader, "reset")
        return refused, accepted + wait(leader, "h1 .tier").text

    refused, after = workbench(tmp_path, flow)
    assert "z1 cannot be reset yet" in refused and "D-1" in refused, refused
    assert after in ("正常", "Normal")


def test_a_bypass_is_asked_for_on_one_phone_and_approved_on_another(tmp_path: Path) -> None:
    def flow(bench: Bench, director: Any, gm: Any) -> tuple[str, str, str]:
        sign_in(director, bench.base, "wang.fang", then="/app/interlocks/z1")
        asked = act(
            director,
            "request-bypass",
            reason="sensor recalibration",
            measure="a guard with a portable detector",
            hours="2",
        )
        assert asked == ""
        sign_in(gm, bench.base, "chen.gang")
        waiting = "section[data-section='bypass_to_approve'] a[data-item='/app/interlocks/z1']"
        wait(gm, waiting).click()
        shot(gm, "6-bypass-to-approve")
        assert act(gm, "approve-bypass") == ""
        shown = wait(gm, "h1 .tier").text
        director.get(f"{bench.base}/app/interlocks/z1")
        on_director = wait(director, "h1 .tier").text
        # The big screen says who approved it and until when.
        screen(director, 1920, 1080)
        director.get(f"{bench.base}/#token=viewer-token")
        from selenium.webdriver.support.ui import WebDriverWait

        WebDriverWait(director, 20).until(
            lambda d: d.find_element("id", "bypass-banner").is_displayed()
        )
        shot(director, "11-board-bypass-1920")
        return shown, on_director, director.find_element("id", "bypass-banner").text

    on_gm, on_director, banner = workbench(tmp_path, flow)
    assert on_gm == on_director and on_gm in ("旁路中", "Bypassed")
    assert "打磨车间1 (批准 approved by wang.fang + chen.gang 至 until " in banner, banner


def test_an_acknowledgement_made_offline_is_applied_once_when_back_online(
    tmp_path: Path,
) -> None:
    def flow(bench: Bench, phone: Any, _: Any) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        bench.read(25.0)  # the alarm tier: an alarm, no trip
        bench.until("the alarm stored", lambda: bool(bench.rows("SELECT id FROM alarm")))
        ((aid,),) = bench.rows("SELECT id FROM alarm")
        sign_in(phone, bench.base, "li.na", then=f"/app/alarms/{aid}")
        phone.set_network_conditions(
            offline=True, latency=0, download_throughput=0, upload_throughput=0
        )
        wait(phone, "button[data-action='ack']").click()
        note = wait(phone, "#offline-note")
        from selenium.webdriver.support.ui import WebDriverWait

        WebDriverWait(phone, 10).until(lambda _: note.is_displayed())
        seen["note"] = note.text
        shot(phone, "7-ack-kept-offline")
        seen["kept"] = phone.execute_script("return JSON.parse(localStorage['ehswatch-outbox'])")
        seen["acks_offline"] = len(
            bench.rows("SELECT id FROM audit_log WHERE action = 'alarm ack'")
        )
        phone.delete_network_conditions()
        phone.execute_script("window.dispatchEvent(new Event('online'))")
        bench.until(
            "the acknowledgement applied",
            lambda: bool(bench.rows("SELECT id FROM audit_log WHERE action = 'alarm ack'")),
        )
        wait(phone, "[data-state]")
        WebDriverWait(phone, 10).until(
            lambda d: d.execute_script("return localStorage['ehswatch-outbox']") == "[]"
        )
        # Its answer lost on the way, the phone sends it again with its key: answered again.
        job = seen["kept"][0]
        seen["again"] = phone.execute_async_script(
            """const [job, done] = arguments;
            const csrf = decodeURIComponent(document.cookie.match(/ehs_csrf=([^;]*)/)[1]);
            fetch(job.url, {method: 'POST', credentials: 'same-origin',
              body: JSON.stringify(job.body),
              headers: {'Content-Type': 'application/json', 'X-CSRF-Token': csrf,
                        'Idempotency-Key': job.key}})
              .then(r => done([r.status, r.headers.get('Idempotent-Replayed')]));""",
            job,
        )
        seen["acks"] = len(bench.rows("SELECT id FROM audit_log WHERE action = 'alarm ack'"))
        return seen

    seen = workbench(tmp_path, flow)
    assert seen["note"] in (
        "已离线保存，联网后自动提交",
        "Saved offline; it is sent when the connection returns",
    )
    (job,) = seen["kept"]
    assert job["url"].endswith("/ack") and job["key"] and job["person"] == "li.na"
    assert seen["acks_offline"] == 0
    assert seen["again"] == [200, "true"]
    assert seen["acks"] == 1


def test_an_alarm_is_acknowledged_through_the_link_in_its_dingtalk_message(
    tmp_path: Path,
) -> None:
    with RobotServer() as robots:

        def tweak(port: int) -> dict[str, Any]:
            return {
                "api": {
                    "host": "127.0.0.1",
                    "port": port,
                    "public_url": f"http://127.0.0.1:{port}",
                },
                "notifications": {
                    "channels": [
                        {
                            "id": "ding",
                            "type": "dingtalk",
                            "url": f"{robots.url}/dingtalk",
                            "secret": robots.dingtalk_secret,
                        }
                    ],
                    "routes": [{"notify": ["ding"]}],
                    "flood": {"group_wait_s": 0},
                },
            }

        def flow(bench: Bench, phone: Any, _: Any) -> dict[str, Any]:
            bench.read(25.0)
            bench.until("the DingTalk message", lambda: bool(robots.delivered("/dingtalk")), 30)
            (message,) = robots.delivered("/dingtalk")
            link = message["actionCard"]["singleURL"]
            phone.delete_all_cookies()
            phone.get(link)  # tapped in DingTalk: not signed in yet
            wait(phone, "input[name=username]").send_keys("li.na")
            phone.find_element("css selector", "input[name=password]").send_keys(PEOPLE["li.na"][1])
            phone.find_element("css selector", "form[data-signin] button").click()
            wait(phone, "button[data-action='ack']")
            landed = phone.current_url
            assert act(phone, "ack") == ""
            shot(phone, "8-acked-from-dingtalk")
            acks = bench.rows("SELECT actor FROM audit_log WHERE action = 'alarm ack'")
            return {"message": message, "link": link, "landed": landed, "acks": acks}

        seen = workbench(tmp_path, flow, tweak)
    ((aid,),) = [(seen["link"].rsplit("/", 1)[1],)]
    assert seen["message"]["msgtype"] == "actionCard"
    assert seen["link"] == f"{seen['landed'].split('/app/')[0]}/app/alarms/{aid}"
    assert seen["landed"] == seen["link"]  # after signing in, on the alarm's own page
    assert seen["acks"] == [("li.na",)]


def test_an_admin_adds_a_person_on_the_people_page_who_then_signs_in(tmp_path: Path) -> None:
    def flow(bench: Bench, admin: Any, newcomer: Any) -> dict[str, Any]:
        sign_in(admin, bench.base, "admin.liu", then="/app/people")
        refused = act(
            admin, "add-person", name="qian.yu", display_name="钱宇", role="operator",
            password="short",
        )  # fmt: skip
        assert (
            act(admin, "add-person", name="qian.yu", role="operator", password="rectify-2026") == ""
        )
        shot(admin, "9-people")
        listed = [
            e.get_attribute("data-person")
            for e in admin.find_elements("css selector", "[data-person]")
        ]
        PEOPLE["qian.yu"] = ("operator", "rectify-2026")
        try:
            sign_in(newcomer, bench.base, "qian.yu")
        finally:
            del PEOPLE["qian.yu"]
        assert act(admin, "disable-qian.yu") == ""
        newcomer.get(f"{bench.base}/app/")
        return {"refused": refused, "listed": listed, "after_disable": newcomer.current_url}

    seen = workbench(tmp_path, flow)
    assert "at least 8 characters" in seen["refused"]
    assert "qian.yu" in seen["listed"]
    assert "/app/login" in seen["after_disable"]  # disabled: the session is gone


def test_a_change_sent_from_another_site_is_refused_for_want_of_its_csrf_token(
    tmp_path: Path,
) -> None:
    """A page on another port (another origin, the same site: the cookie goes with it)
    posts a form at the service: refused, audited, nothing acknowledged."""
    import http.server
    import threading

    def flow(bench: Bench, phone: Any, _: Any) -> dict[str, Any]:
        bench.read(25.0)
        bench.until("the alarm stored", lambda: bool(bench.rows("SELECT id FROM alarm")))
        ((aid,),) = bench.rows("SELECT id FROM alarm")
        sign_in(phone, bench.base, "li.na")
        page = (
            f'<form id="f" method="post" action="{bench.base}/api/alarms/{aid}/ack" '
            'enctype="text/plain"><input name=\'{"comment": "x", "y\' value=\'": 1}\'></form>'
            "<script>document.getElementById('f').submit()</script>"
        ).encode()

        class Evil(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("content-type", "text/html")
                self.end_headers()
                self.wfile.write(page)

            def log_message(self, *_: Any) -> None:
                pass

        evil = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Evil)
        threading.Thread(target=evil.serve_forever, daemon=True).start()
        try:
            phone.get(f"http://127.0.0.1:{evil.server_address[1]}/")
            from selenium.webdriver.support.ui import WebDriverWait

            WebDriverWait(phone, 10).until(lambda d: "/api/alarms/" in d.current_url)
            answer = phone.find_element("css selector", "body").text
        finally:
            evil.shutdown()
            evil.server_close()
        return {
            "answer": answer,
            "acks": bench.rows("SELECT id FROM audit_log WHERE action = 'alarm ack'"),
            "refused": bench.rows(
                "SELECT detail FROM audit_log WHERE action LIKE 'POST /api/alarms/%/ack refused'"
            ),
        }

    seen = workbench(tmp_path, flow)
    assert "X-CSRF-Token" in seen["answer"]
    assert seen["acks"] == [] and len(seen["refused"]) == 1


def test_an_ended_session_sends_the_phone_to_sign_in_and_back(tmp_path: Path) -> None:
    def flow(bench: Bench, phone: Any, _: Any) -> dict[str, str]:
        bench.read(25.0)
        bench.until("the alarm stored", lambda: bool(bench.rows("SELECT id FROM alarm")))
        ((aid,),) = bench.rows("SELECT id FROM alarm")
        sign_in(phone, bench.base, "li.na", then=f"/app/alarms/{aid}")
        bench.rows("UPDATE person_session SET expires_at = 0")  # its time is up
        bench.loop.call_soon_threadsafe(bench.app.state.desk.people._cache.clear)
        wait(phone, "button[data-action='ack']").click()
        from selenium.webdriver.support.ui import WebDriverWait

        WebDriverWait(phone, 10).until(lambda d: "/app/login" in d.current_url)
        at_login = phone.current_url
        sign_in(phone, bench.base, "li.na", then=f"/app/alarms/{aid}")
        return {"at_login": at_login, "back": phone.current_url}

    seen = workbench(tmp_path, flow)
    assert seen["at_login"].endswith("/app/login?next=%2Fapp%2Falarms%2F1")
    assert seen["back"].endswith("/app/alarms/1")

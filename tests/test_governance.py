"""Dust governance on the real service, in headless Chromium (docs/governance.md): the
QR sheet's codes decode (a real decoder) to the address that opens their checklist; a
team leader records a shift's cleaning from the phone; a patrol's failed item opens a
ticket carrying its photo; the service's clock moves through two shift ends; the
governance board shows the zone's shift figures, cleaning and patrols, and tickets."""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import httpx

from ehswatch.clock import ServiceClock
from tests.test_board import ARTIFACTS, screen
from tests.test_workbench import (
    PEOPLE,
    PHONE,
    Bench,
    act,
    camera_photo,
    shot,
    sign_in,
    wait,
    workbench,
)

ITEMS = ["设备表面积尘清除 equipment surfaces", "地面 floor"]


class Jump:
    """The service's monotonic source: real time, plus what the test jumps ahead."""

    def __init__(self) -> None:
        self.ahead = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.ahead


def governed(port: int) -> dict[str, Any]:
    return {
        "api": {"host": "127.0.0.1", "port": port, "public_url": f"http://127.0.0.1:{port}"},
        "site": {
            "id": "plant-1",
            "name": "华东机加工厂",
            "timezone": "Asia/Shanghai",
            "shifts": [
                {"name": "day", "start": "08:00", "end": "20:00"},
                {"name": "night", "start": "20:00", "end": "08:00"},
            ],
        },
        "zones": [
            {
                "id": "z1",
                "name": "打磨车间1",
                "interlock": {
                    "plc": "plc-1",
                    "coil": 0,
                    "voting": "1oo1",
                    "sensor_types": ["dust"],
                },
                "owners": {"team_leader": "zhang.wei", "dept_head": "wang.fang"},
                "risk": "high",
                # Taken at any time of the shift: the test runs at any hour of the day.
                "cleaning": {
                    "items": ITEMS,
                    "residue_limit_mm": 1.0,
                    "grace_min": 30,
                    "record_from_min": 24 * 60,
                },
            }
        ],
        "governance": {
            "owners": {"gm": "chen.gang"},
            "check_s": 0.2,
            "anonymous_reports": True,
            "checklists": {
                "high": [
                    {"id": "duct", "text": "除尘管道无积尘 duct clear of dust"},
                    {
                        "id": "dp",
                        "text": "滤袋压差 filter pressure drop",
                        "kind": "number",
                        "min": 0.5,
                        "max": 2.5,
                        "unit": "kPa",
                    },
                ]
            },
            "checkpoints": [
                {"id": "cp-mill", "name": "打磨机1号", "zone": "z1", "every_h": 4},
                {"id": "cp-duct", "name": "除尘管道", "zone": "z1", "every_h": 8},
            ],
        },
    }


def signed_in_client(base: str, name: str) -> httpx.Client:
    client = httpx.Client(base_url=base, timeout=10)
    r = client.post("/auth/login", json={"username": name, "password": PEOPLE[name][1]})
    assert r.status_code == 200, r.text
    client.headers["X-CSRF-Token"] = r.json()["csrf_token"]
    return client


def decoded_sheet(pdf: bytes) -> list[str]:
    """Every QR code on every page of the sheet, read by zxing-cpp from the rendering."""
    import pypdfium2
    import zxingcpp

    doc = pypdfium2.PdfDocument(pdf)
    try:
        return [
            code.text
            for page in doc
            for code in zxingcpp.read_barcodes(page.render(scale=2).to_pil())
        ]
    finally:
        doc.close()


def test_qr_codes_open_checklists_and_the_board_shows_what_was_recorded_and_missed(
    tmp_path: Path,
) -> None:
    jump = Jump()
    clock = ServiceClock(monotonic=jump)

    def flow(bench: Bench, leader: Any, patroller: Any) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        api = signed_in_client(bench.base, "zhang.wei")
        try:
            pdf = api.get("/api/checkpoints/sheet.pdf", params={"zone": "z1"})
            assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF-")
            seen["decoded"] = sorted(decoded_sheet(pdf.content))
            (ARTIFACTS / "governance-qr-sheet.pdf").write_bytes(pdf.content)

            bench.read(25.0)  # an alarm: a B ticket, registered to the team leader
            bench.until("a ticket", lambda: bool(bench.rows("SELECT id FROM hazard_ticket")))

            # The team leader records the shift's cleaning on the phone.
            sign_in(leader, bench.base, "zhang.wei", then="/app/cleaning/z1")
            form = wait(leader, "form[data-record=cleaning]")
            for box in form.find_elements("css selector", "input[name=items]"):
                box.click()
            photo = camera_photo(leader, tmp_path / "surfaces.jpg")
            form.find_element("css selector", "input[name=photo]").send_keys(str(photo))
            assert act(leader, "record-cleaning", residue_mm="0.4") == ""
            wait(leader, "li.record")
            shot(leader, "12-cleaning-recorded")
            seen["cleaning_rows"] = bench.rows(
                "SELECT shift, by, residue_mm, photo FROM cleaning_record"
            )

            # The patroller scans cp-mill's code: the decoded address opens its checklist.
            mill = next(u for u in seen["decoded"] if u.endswith("/cp-mill"))
            sign_in(patroller, bench.base, "li.na", then=mill.removeprefix(bench.base))
            form = wait(patroller, "form[data-record=round]")
            form.find_element("css selector", "input[name='answer:duct'][value=no]").click()
            dusty = camera_photo(patroller, tmp_path / "dusty-duct.jpg")
            form.find_element("css selector", "input[name='photo:duct']").send_keys(str(dusty))
            assert act(patroller, "record-round", **{"answer:dp": "1.2"}) == ""
            wait(patroller, "li.record a")
            shot(patroller, "13-patrol-failed-item")
            seen["round"] = bench.rows("SELECT passed, ticket_id FROM patrol_record")
            ticket = seen["round"][0][1]
            seen["evidence"] = bench.rows(
                f"SELECT content_type, size FROM hazard_evidence WHERE ticket_id = {ticket}"
            )

            # A worker who does not sign in scans the zone's public code (the sheet's last)
            # and reports what they saw, with a photo: a ticket *reported*.
            report_url = next(u for u in seen["decoded"] if "/app/report/" in u)
            patroller.delete_all_cookies()
            patroller.get(report_url)
            form = wait(patroller, "form[data-record=report]")
            form.find_element("css selector", "textarea[name=text]").send_keys(
                "吸尘口堵塞 hood blocked"
            )
            hood = camera_photo(patroller, tmp_path / "hood.jpg")
            form.find_element("css selector", "input[name=photo]").send_keys(str(hood))
            form.find_element("css selector", "button[data-action=send-report]").click()
            wait(patroller, "[data-report-sent]:not([hidden])")
            shot(patroller, "14-anonymous-report")
            seen["reported"] = bench.rows(
                "SELECT t.state, t.kind, n.anonymous, (SELECT count(*) FROM hazard_evidence e"
                " WHERE e.ticket_id = t.id) FROM near_miss n"
                " JOIN hazard_ticket t ON t.id = n.ticket_id"
            )

            # A day passes on the service's clock: both shifts end, the night's unrecorded.
            jump.ahead += 24 * 3600
            bench.until(
                "the missed cleaning's ticket",
                lambda: bool(bench.rows("SELECT id FROM hazard_ticket WHERE kind = 'cleaning'")),
            )
            bench.until(
                "a closed shift stored", lambda: bool(bench.rows("SELECT id FROM shift_figure"))
            )
            seen["tickets"] = bench.rows("SELECT id, kind, owner FROM hazard_ticket ORDER BY id")
            # A day later every session has ended (16 h at most): the team leader signs in.
            sign_in(leader, bench.base, "zhang.wei", then="/governance")
            api.close()
            api = signed_in_client(bench.base, "zhang.wei")

            for width, height in ((1920, 1080), PHONE):
                screen(leader, width, height)
                leader.get(f"{bench.base}/governance")
                leader.get(f"{bench.base}/governance")
                card = wait(leader, "article[data-zone=z1]")
                seen[f"{width}"] = {
                    "figures": card.find_element("css selector", "[data-figures]").text,
                    "cleaning": card.find_element("css selector", "[data-cleaning]").text,
                    "patrols": card.find_element("css selector", "[data-patrols]").text,
                    "tickets": [
                        e.get_attribute("data-ticket")
                        for e in card.find_elements("css selector", "[data-ticket]")
                    ],
                    "overflow": leader.execute_script(
                        "return document.documentElement.scrollWidth > window.innerWidth"
                    ),
                }
                leader.save_screenshot(str(ARTIFACTS / f"governance-{width}.png"))
            for width, height in ((1920, 1080), PHONE):
                screen(leader, width, height)
                leader.get(f"{bench.base}/app/heatmap")
                zone = wait(leader, "[data-heat-zone=z1]")
                seen[f"heat{width}"] = {
                    "hot": len(zone.find_elements("css selector", ".cell[data-score]")),
                    "top": leader.find_element("css selector", "[data-top-periods]").text,
                    "overflow": leader.execute_script(
                        "return document.documentElement.scrollWidth > window.innerWidth"
                    ),
                }
                leader.save_screenshot(str(ARTIFACTS / f"heatmap-{width}.png"))
            # The safety director's monthly review: a radar chart per person.
            sign_in(patroller, bench.base, "wang.fang", then="/app/review")
            card = wait(patroller, "[data-review='zhang.wei']")
            seen["review"] = {
                "radar": len(card.find_elements("css selector", ".radar svg polygon")),
                "text": card.text,
            }
            shot(patroller, "15-review")
            export = api.get("/api/exports/ledger.xlsx", params={"since": 0})
            assert export.status_code == 200
            from openpyxl import load_workbook

            sheet = load_workbook(io.BytesIO(export.content), read_only=True).worksheets[0]
            seen["ledger_ids"] = sorted(r[0] for r in list(sheet.iter_rows(values_only=True))[2:])
            # Tickets go on opening (rounds missed, a sensor gone stale): read again after.
            seen["tickets_after"] = bench.rows("SELECT id FROM hazard_ticket ORDER BY id")
        finally:
            api.close()
        return seen

    seen = workbench(tmp_path, flow, governed, clock=clock)
    base = seen["decoded"][0].rsplit("/app/", 1)[0]
    assert seen["decoded"] == [
        f"{base}/app/checkpoints/cp-duct",
        f"{base}/app/checkpoints/cp-mill",
        f"{base}/app/report/z1",
    ]
    assert seen["reported"] == [("reported", "report", 1, 1)]  # anonymous, with its photo
    ((_, by, residue, photo),) = seen["cleaning_rows"]
    assert by == "zhang.wei" and residue == 0.4 and photo
    assert seen["round"][0][0] == 0 and seen["round"][0][1]  # failed, with its ticket
    ((ctype, size),) = seen["evidence"]
    assert ctype == "image/jpeg" and size > 1000  # the patroller's photo, on the ticket
    kinds = {kind: owner for _, kind, owner in seen["tickets"]}
    assert kinds["tier"] == kinds["patrol"] == kinds["cleaning"] == "zhang.wei"
    assert "round" in kinds  # rounds missed while the day passed
    for width in ("1920", "390"):
        board = seen[width]
        assert "25.0" in board["figures"], board["figures"]  # the alarm's peak, per shift
        assert "1" in board["cleaning"] and (
            "missed" in board["cleaning"] or "漏" in board["cleaning"]
        )
        assert board["tickets"] and not board["overflow"]
    for width in ("heat1920", "heat390"):  # the alarm's hour and the tickets' hours
        assert seen[width]["hot"] >= 1 and "打磨车间1" in seen[width]["top"]
        assert not seen[width]["overflow"]
    assert seen["review"]["radar"] == 5  # four rings and the person's shape
    assert "/ " in seen["review"]["text"]  # done against planned
    before = {t[0] for t in seen["tickets"]}
    after = {t[0] for t in seen["tickets_after"]}
    assert before <= set(seen["ledger_ids"]) <= after  # the ledger holds what the db held

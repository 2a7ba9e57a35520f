"""The monthly safety performance review (ehswatch/analytics/review.py): figures against
hand-made rows, and the Excel and PDF that hold them."""

from __future__ import annotations

import io
from pathlib import Path

from openpyxl import load_workbook

from ehswatch.analytics.review import Rows, review
from ehswatch.analytics.review_files import review_pdf, review_xlsx
from ehswatch.governance.responsibility import Chain
from ehswatch.governance.shifts import month_span
from tests.test_cleaning import SHANGHAI, at
from tests.test_patrols import patrol_plant

JAN = month_span(2027, 1, SHANGHAI)
H = 3600.0


def hand_made() -> Rows:
    due1, due2, due3 = at("2027-01-10 12:00"), at("2027-01-12 12:00"), at("2027-01-20 12:00")
    return Rows(
        tickets=[
            # owner, rectifier, created, due, submitted, archived, zone
            ("zhang.wei", "li.wei", due1 - 24 * H, due1, due1 - 6 * H, due1 + H, "polishing-1"),
            ("zhang.wei", "li.wei", due2 - 24 * H, due2, due2 + 2 * H, None, "polishing-1"),
            ("zhang.wei", "", due3 - 72 * H, due3, None, None, "polishing-1"),
        ],
        acks=[("zhang.wei", 100.0, 160.0), ("zhang.wei", 200.0, 320.0), ("li.wei", 0.0, 30.0)],
        rounds=[("li.wei", "polishing-1")] * 40 + [("wu.gang", "polishing-2")] * 93,
        cleanings=[("zhang.wei", "polishing-1")] * 31,
        reports=["li.wei"] * 5,
    )


CHAINS = [
    Chain(zone="polishing-1", people={"team_leader": "zhang.wei", "dept_head": "sun.li"}),
    Chain(zone="polishing-2", people={"team_leader": "wu.gang", "dept_head": "sun.li"}),
]


def test_the_review_figures_are_what_the_rows_say(tmp_path: Path) -> None:
    config = patrol_plant(tmp_path)  # cleaning on polishing-1, two shifts; cp-mill, cp-2 every 8 h
    r = review(config, CHAINS, hand_made(), *JAN)
    zhang, li, wu = r["people"]["zhang.wei"], r["people"]["li.wei"], r["people"]["wu.gang"]
    assert (zhang["tickets_owned"], zhang["due_in_month"], zhang["closed_on_time"]) == (3, 3, 1)
    assert zhang["overdue"] == 2  # one submitted late, one not at all
    assert li["mean_rectify_h"] == (18 + 26) / 2
    assert zhang["mean_ack_s"] == 90.0 and zhang["alarms_acked"] == 2
    assert zhang["cleaning_done"] == 31 and zhang["cleaning_planned"] == 62  # 31 days × 2
    assert zhang["rounds_planned"] == 93 and wu["rounds_planned"] == 93  # 31 × 3 windows
    assert zhang["scores"]["on_time"] == round(1 / 3, 3)
    assert zhang["scores"]["cleaning"] == 0.5
    assert zhang["scores"]["ack"] == round(1 - 90 / 600, 3)
    assert wu["scores"]["rounds"] == 1.0 and li["scores"]["reports"] == 1.0
    dept = r["departments"]["sun.li"]  # the department head's zones' people, summed
    assert dept["rounds_planned"] == 186 and dept["cleaning_done"] == 31


def test_the_excel_and_the_pdf_hold_the_reviews_figures(tmp_path: Path) -> None:
    import pypdfium2

    config = patrol_plant(tmp_path)
    this = review(config, CHAINS, hand_made(), *JAN)
    last = review(
        config, CHAINS, Rows(tickets=[], acks=[], rounds=[], cleanings=[], reports=[]), *JAN
    )
    sheet = load_workbook(
        io.BytesIO(review_xlsx("华东机加工厂", "2027-01", this, last))
    ).worksheets[0]
    rows = list(sheet.iter_rows(values_only=True))
    header, body = rows[1], {r[0]: r for r in rows[2:]}
    col = {h: k for k, h in enumerate(header)}
    zhang = body["zhang.wei"]
    assert zhang[col["按期关闭 closed on time"]] == 1 and zhang[col["超期 overdue"]] == 2
    assert zhang[col["计划清洁 cleaning planned"]] == 62
    assert "部门 department sun.li" in body
    pdf = pypdfium2.PdfDocument(review_pdf("华东机加工厂", "2027-01", this, last))
    try:
        text = "\n".join(page.get_textpage().get_text_range() for page in pdf)
        assert len(pdf) == len(this["people"])
    finally:
        pdf.close()
    assert "zhang.wei" in text and "计划清洁 cleaning planned: 62" in text
    assert "月度安全履职评估" in text

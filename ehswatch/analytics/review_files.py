"""The monthly review as files an office keeps: an Excel workbook and a PDF, each with
every person's figures this month and last, and (in the PDF) a radar chart per manager."""

from __future__ import annotations

import math
from typing import Any

from ehswatch.analytics.review import AXES
from ehswatch.governance import sheets
from ehswatch.governance.exports import workbook

COLUMNS = (
    ("tickets_owned", "负责隐患 tickets owned"),
    ("closed_on_time", "按期关闭 closed on time"),
    ("overdue", "超期 overdue"),
    ("mean_rectify_h", "平均整改 h mean rectify h"),
    ("alarms_acked", "确认报警 alarms acked"),
    ("mean_ack_s", "平均确认 s mean ack s"),
    ("rounds_done", "巡检 rounds"),
    ("rounds_planned", "计划巡检 rounds planned"),
    ("cleaning_done", "清洁 cleaning"),
    ("cleaning_planned", "计划清洁 cleaning planned"),
    ("reports", "上报 reports"),
)


def review_xlsx(site: str, label: str, this: dict[str, Any], last: dict[str, Any]) -> bytes:
    header = ["人员 person", *(c for _, c in COLUMNS), *(f"{a} score" for a in AXES)]
    header += [f"上月 last month {a}" for a in AXES]
    rows = []
    for name, f in this["people"].items():
        before = last["people"].get(name, {}).get("scores", {})
        rows.append(
            [name, *(f[k] for k, _ in COLUMNS), *(f["scores"][a] for a in AXES)]
            + [before.get(a) for a in AXES]
        )
    for head, f in this["departments"].items():
        before = last["departments"].get(head, {}).get("scores", {})
        rows.append(
            [f"部门 department {head}", *(f[k] for k, _ in COLUMNS)]
            + [f["scores"][a] for a in AXES]
            + [before.get(a) for a in AXES]
        )
    note = f"{site} · 月度安全履职评估 monthly safety performance review · {label}"
    return workbook("review", header, rows, note)


def review_pdf(site: str, label: str, this: dict[str, Any], last: dict[str, Any]) -> bytes:
    from fpdf import FPDF

    pdf = FPDF(format="A4", unit="mm")
    pdf.add_font("noto", fname=str(sheets.font_file()), collection_font_number=sheets.FONT_FACE_SC)
    pdf.set_title(f"{site} review {label}")
    for name, f in this["people"].items():
        pdf.add_page()
        pdf.set_font("noto", size=14)
        pdf.cell(0, 8, f"{site} · 月度安全履职评估 review {label}", new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("noto", size=12)
        pdf.cell(0, 8, f"{name}", new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("noto", size=9)
        before = last["people"].get(name, {})
        for key, title in COLUMNS:
            was = before.get(key, "—")
            pdf.cell(0, 5, f"{title}: {f[key] if f[key] is not None else '—'}  (上月 last {was})",
                     new_x="LMARGIN", new_y="NEXT")  # fmt: skip
        _radar(pdf, f["scores"], before.get("scores") or {}, x=105, y=190, r=45)
    if not this["people"]:
        pdf.add_page()
        pdf.set_font("noto", size=12)
        pdf.cell(0, 8, f"{site} · {label}: 无记录 nothing recorded")
    return bytes(pdf.output())


def _radar(
    pdf: Any, scores: dict[str, Any], before: dict[str, Any], *, x: float, y: float, r: float
) -> None:
    n = len(AXES)

    def point(k: int, v: float) -> tuple[float, float]:
        a = -math.pi / 2 + 2 * math.pi * k / n
        return x + r * v * math.cos(a), y + r * v * math.sin(a)

    pdf.set_draw_color(200, 200, 200)
    for q in (0.25, 0.5, 0.75, 1.0):
        pdf.polygon([point(k, q) for k in range(n)], style="D")
    pdf.set_draw_color(150, 150, 150)
    pdf.polygon([point(k, float(before.get(a) or 0.0)) for k, a in enumerate(AXES)], style="D")
    pdf.set_draw_color(21, 87, 176)
    pdf.set_line_width(0.6)
    pdf.polygon([point(k, float(scores.get(a) or 0.0)) for k, a in enumerate(AXES)], style="D")
    pdf.set_line_width(0.2)
    pdf.set_font("noto", size=8)
    for k, a in enumerate(AXES):
        px, py = point(k, 1.18)
        pdf.set_xy(px - 12, py - 2)
        pdf.cell(24, 4, a, align="C")

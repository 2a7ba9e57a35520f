"""Exports an EHS office files: the hazard ledger (隐患台账), cleaning records and patrol
records, as Excel workbooks (`.xlsx`), for a period and optionally one zone.

Times are the site's local date and time (Excel has no time zones; the header says which
zone). Rows come from the database as they are; a workbook is built in write-only mode,
one row at a time, so a year of records stays small in memory.
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select

from ehswatch.db import Database
from ehswatch.governance.store import CleaningRecord, PatrolRecord
from ehswatch.hazards.store import TicketRecord

KINDS = ("ledger", "cleaning", "patrols")
TITLES = {
    "ledger": "隐患台账 hazard ledger",
    "cleaning": "清洁记录 cleaning records",
    "patrols": "巡检记录 patrol records",
}


def _local(ts: float | None, tz: ZoneInfo) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, tz).replace(tzinfo=None)


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> Any:
    """A value as a cell keeps it: text is text — never a formula (what a person typed
    in a comment must not run in the EHS office's Excel) — without the control
    characters a workbook cannot hold."""
    if not isinstance(value, str):
        return value
    from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE

    text = ILLEGAL_CHARACTERS_RE.sub("", value)
    return "'" + text if text.startswith(FORMULA_START) else text


def workbook(title: str, header: Sequence[str], rows: Iterable[Sequence[Any]], note: str) -> bytes:
    from openpyxl import Workbook  # imported here: only an export needs it
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.styles import Font

    wb = Workbook(write_only=True)
    ws = wb.create_sheet(title[:31])
    bold = Font(bold=True)
    ws.append([note])
    head = []
    for h in header:
        cell = WriteOnlyCell(ws, value=h)
        cell.font = bold
        head.append(cell)
    ws.append(head)
    for row in rows:
        ws.append([_cell(v) for v in row])
    out = io.BytesIO()
    wb.save(out)
    return out.getvalue()


async def export(
    kind: str,
    db: Database,
    *,
    site: str,
    timezone: str,
    since: float,
    until: float,
    zone: str | None = None,
) -> bytes:
    """The `kind` workbook (one of `KINDS`) of [since, until), of `zone` or all."""
    tz = ZoneInfo(timezone)
    note = (
        f"{site} · {TITLES[kind]} · {_local(since, tz):%Y-%m-%d %H:%M} – "
        f"{_local(until, tz):%Y-%m-%d %H:%M} ({timezone})" + (f" · {zone}" if zone else "")
    )
    async with db.new_session() as s:
        if kind == "ledger":
            q = select(TicketRecord).where(
                TicketRecord.created_at >= since, TicketRecord.created_at < until
            )
            if zone:
                q = q.where(TicketRecord.zone == zone)
            tickets = list((await s.execute(q.order_by(TicketRecord.id))).scalars())
            header = [
                "编号 no.", "区域 zone", "来源 source", "内容 what", "级别 grade", "状态 state",
                "发现 found", "期限 due", "负责人 owner", "整改人 rectifier", "整改措施 measure",
                "提交 submitted", "验收 verifier", "归档 archived", "超期 overdue",
            ]  # fmt: skip
            rows: list[list[Any]] = [
                [
                    t.id, t.zone, t.source or (f"alarm {t.alarm_id}" if t.alarm_id else t.kind),
                    t.title or f"{t.kind} {t.sensor}".strip(), t.grade, t.state,
                    _local(t.created_at, tz), _local(t.due_at, tz), t.owner, t.rectifier,
                    t.measure, _local(t.submitted_at, tz), t.verifier, _local(t.archived_at, tz),
                    "是 yes" if (t.submitted_at or until) > t.due_at else "",
                ]
                for t in tickets
            ]  # fmt: skip
        elif kind == "cleaning":
            q2 = select(CleaningRecord).where(
                CleaningRecord.shift_start >= since, CleaningRecord.shift_start < until
            )
            if zone:
                q2 = q2.where(CleaningRecord.zone == zone)
            records = list(
                (
                    await s.execute(q2.order_by(CleaningRecord.shift_start, CleaningRecord.id))
                ).scalars()
            )
            header = [
                "区域 zone", "班次 shift", "班次开始 shift start", "班次结束 shift end",
                "记录人 by", "记录时间 at", "残留 residue (mm)", "完成项 items done",
                "照片 photo", "合格 passed", "隐患单 ticket", "备注 comment",
            ]  # fmt: skip
            rows = [
                [
                    r.zone, r.shift, _local(r.shift_start, tz), _local(r.shift_end, tz), r.by,
                    _local(r.at, tz), r.residue_mm, "; ".join(json.loads(r.items)),
                    "有 yes" if r.photo else "", "是 yes" if r.passed else "否 no",
                    r.ticket_id, r.comment,
                ]
                for r in records
            ]  # fmt: skip
        elif kind == "patrols":
            q3 = select(PatrolRecord).where(PatrolRecord.at >= since, PatrolRecord.at < until)
            if zone:
                q3 = q3.where(PatrolRecord.zone == zone)
            rounds = list(
                (await s.execute(q3.order_by(PatrolRecord.at, PatrolRecord.id))).scalars()
            )
            header = [
                "巡检点 checkpoint", "区域 zone", "时段开始 window", "巡检人 by", "时间 at",
                "合格 passed", "不合格项 failed items", "照片数 photos", "隐患单 ticket",
                "备注 comment",
            ]  # fmt: skip
            rows = []
            for r in rounds:
                answers = json.loads(r.answers)
                rows.append(
                    [
                        r.checkpoint, r.zone, _local(r.window_start, tz), r.by, _local(r.at, tz),
                        "是 yes" if r.passed else "否 no",
                        "; ".join(a["problem"] for a in answers if not a["passed"]),
                        sum(1 for a in answers if a["photo"]), r.ticket_id, r.comment,
                    ]
                )  # fmt: skip
        else:
            raise ValueError(f"no export {kind!r}")
    return await asyncio.to_thread(workbook, TITLES[kind], header, rows, note)

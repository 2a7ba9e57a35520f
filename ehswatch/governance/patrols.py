"""Patrol rounds, the rules (pure): a checkpoint's round windows, the windows missed,
and the verdict on a checklist's answers.

A checkpoint wants one round per window of `every_h` hours. Windows are counted from
Monday 3 January 2000, 00:00 on the site's clock, so an 8-hour checkpoint's windows are
00–08, 08–16 and 16–24 every day (in a zone with daylight saving they keep their length
and move by the hour). A window whose end is `grace_min` past with no record is missed.

Answers: a yes/no item passes on yes; a number passes within its `min`..`max`; a photo
item needs its photo. Every item must be answered: a round is a record of having stood
there and looked, not a form to half fill.
"""

from __future__ import annotations

import math
from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from ehswatch.config import ChecklistItem, Checkpoint
from ehswatch.roles import Refused


def _anchor(zone: ZoneInfo) -> float:
    return datetime(2000, 1, 3, tzinfo=zone).timestamp()


def window_at(cp: Checkpoint, zone: ZoneInfo, now: float) -> tuple[float, float]:
    """The window (start, end) that `now` falls in."""
    length = cp.every_h * 3600
    k = math.floor((now - _anchor(zone)) / length)
    start = _anchor(zone) + k * length
    return start, start + length


def missed_windows(
    cp: Checkpoint, zone: ZoneInfo, since: float, now: float, done: Container[float]
) -> list[tuple[float, float]]:
    """The windows whose grace ended in (`since`, `now`] with no round (`done` holds the
    starts of the windows that had one)."""
    grace = cp.grace_min * 60
    length = cp.every_h * 3600
    start, _ = window_at(cp, zone, since - grace - length)
    out = []
    while start + length + grace <= now:
        if start + length + grace > since and start not in done:
            out.append((start, start + length))
        start += length
    return out


@dataclass(frozen=True, kw_only=True, slots=True)
class Answer:
    item: str
    value: bool | float | None  # yes/no, the number, or None for a photo item
    photo: str  # the stored photo's path, or ""
    passed: bool
    problem: str  # why it failed, or ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "item": self.item,
            "value": self.value,
            "photo": self.photo,
            "passed": self.passed,
            "problem": self.problem,
        }


def judge(
    items: Sequence[ChecklistItem],
    values: Mapping[str, Any],
    photos: Mapping[str, str],
) -> list[Answer]:
    """Each item's answer and verdict. `values` maps item ids to what was entered
    (``"yes"``/``"no"``/bools, or a number); `photos` maps item ids to stored photos.
    Refused (nothing recorded) when an item is unanswered or not of its kind, or a
    value names no item."""
    known = {i.id for i in items}
    if extra := sorted(set(values) - known):
        raise Refused(f"no such checklist item: {', '.join(extra)}")
    out = []
    for item in items:
        photo = photos.get(item.id, "")
        if item.kind == "photo":
            if not photo:
                raise Refused(f"{item.text}: a photo is required")
            out.append(Answer(item=item.id, value=None, photo=photo, passed=True, problem=""))
            continue
        if item.id not in values:
            raise Refused(f"{item.text}: not answered")
        raw = values[item.id]
        if item.kind == "yes_no":
            yes = _yes_no(raw, item)
            problem = "" if yes else f"{item.text}: no"
            out.append(Answer(item=item.id, value=yes, photo=photo, passed=yes, problem=problem))
            continue
        number = _number(raw, item)
        shown = f"{number:g} {item.unit}".strip()
        problem = ""
        if item.min is not None and number < item.min:
            problem = f"{item.text}: {shown} is below {item.min:g}"
        if item.max is not None and number > item.max:
            problem = f"{item.text}: {shown} is above {item.max:g}"
        out.append(
            Answer(item=item.id, value=number, photo=photo, passed=not problem, problem=problem)
        )
    return out


def _yes_no(raw: Any, item: ChecklistItem) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.lower() in ("yes", "no", "true", "false"):
        return raw.lower() in ("yes", "true")
    raise Refused(f"{item.text}: answer yes or no")


def _number(raw: Any, item: ChecklistItem) -> float:
    try:
        number = float(raw) if not isinstance(raw, bool) else math.nan
    except (TypeError, ValueError, OverflowError):  # OverflowError: an int of 400 digits
        number = math.nan
    if not math.isfinite(number):
        raise Refused(f"{item.text}: a number is required")
    return number

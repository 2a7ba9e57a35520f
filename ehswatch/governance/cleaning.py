"""Shift cleaning, the rules (pure): which shift a record is for, which shifts went
without one, and whether a record passes.

A zone's `cleaning` rule asks, at the end of each of its shifts, for the items done,
the residue measured on equipment surfaces, and (when `photo_required`) a photo. A
record made during a shift is that shift's; one made within `grace_min` after a shift
ended is the ended shift's (cleaning is done at the end); a record is taken from
`record_from_min` before a shift's end, not earlier. A shift whose
end is `grace_min` past with no record is *missed*. A record passes when every item was
done and the residue is at most `residue_limit_mm`.
"""

from __future__ import annotations

import math
from collections.abc import Container, Sequence
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from ehswatch.config import CleaningRule, Shift
from ehswatch.governance.shifts import ShiftSpan, last_ended, on_at, spans


def rule_shifts(rule: CleaningRule, shifts: Sequence[Shift]) -> list[Shift]:
    """The site's shifts this rule asks a record of (its `shifts`, or every one)."""
    return [s for s in shifts if not rule.shifts or s.name in rule.shifts]


def shift_for_record(
    rule: CleaningRule,
    shifts: Sequence[Shift],
    zone: ZoneInfo,
    now: float,
) -> ShiftSpan | None:
    """The shift a record made at `now` is for, or None: the shift of the rule that ended
    within the grace — else the shift on, from `record_from_min` before its end. A
    second record in the grace is for the ended shift still (and refused as recorded
    already), never booked to the shift that has just begun."""
    mine = rule_shifts(rule, shifts)
    ended = last_ended(mine, zone, now)
    if ended is not None and now - ended.end <= rule.grace_min * 60:
        return ended
    on = on_at(mine, zone, now)
    if on is not None and on.end - now <= rule.record_from_min * 60:
        return on
    return None


def missed(
    rule: CleaningRule,
    shifts: Sequence[Shift],
    zone: ZoneInfo,
    since: float,
    now: float,
    recorded: Container[float],
) -> list[ShiftSpan]:
    """The shifts whose grace ended in (`since`, `now`] without their record."""
    grace = rule.grace_min * 60
    return [
        s
        for s in spans(rule_shifts(rule, shifts), zone, since - grace, now - grace)
        if s.start not in recorded
    ]


@dataclass(frozen=True, kw_only=True, slots=True)
class Verdict:
    passed: bool
    problems: tuple[str, ...]  # why it did not pass, for the ticket and the person


def judge(rule: CleaningRule, *, items_done: Sequence[str], residue_mm: float) -> Verdict:
    """Whether a record passes the rule; `residue_mm` is finite and ≥ 0 (checked at the
    boundary)."""
    assert math.isfinite(residue_mm) and residue_mm >= 0
    problems = [f"not done: {item}" for item in rule.items if item not in items_done]
    if residue_mm > rule.residue_limit_mm:
        problems.append(
            f"residue {residue_mm:g} mm is over the limit of {rule.residue_limit_mm:g} mm"
        )
    return Verdict(passed=not problems, problems=tuple(problems))

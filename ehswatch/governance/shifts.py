"""The plant's shifts as spans of time: which shift is on, and which ended when.

A shift (`site.shifts`) runs from its start to its end on the clock of the site's time
zone; an end at or before the start is the next day's (a night shift). Each day's
instance is a `ShiftSpan` in epoch seconds, computed with the zone's own rules, so a
shift across a daylight-saving change is an hour shorter or longer, as people work it.
Pure: the callers pass the time.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from ehswatch.config import Shift


@dataclass(frozen=True, kw_only=True, slots=True)
class ShiftSpan:
    name: str
    start: float
    end: float

    def label(self, zone: ZoneInfo) -> str:
        """`day 2026-12-01 08:00–16:00`, for people and exports."""
        start = datetime.fromtimestamp(self.start, zone)
        end = datetime.fromtimestamp(self.end, zone)
        return f"{self.name} {start:%Y-%m-%d %H:%M}–{end:%H:%M}"


def _at(day: date, hhmm: str, zone: ZoneInfo) -> float:
    hours, minutes = map(int, hhmm.split(":"))
    return datetime.combine(day, time(hours, minutes), zone).timestamp()


def _on(day: date, shift: Shift, zone: ZoneInfo) -> ShiftSpan:
    overnight = shift.end <= shift.start
    end_day = day + timedelta(days=1) if overnight else day
    return ShiftSpan(
        name=shift.name, start=_at(day, shift.start, zone), end=_at(end_day, shift.end, zone)
    )


def spans(
    shifts: Sequence[Shift], zone: ZoneInfo, since: float, until: float
) -> Iterator[ShiftSpan]:
    """Every shift instance that ends in (`since`, `until`], in order of their ends."""
    if not shifts or until <= since:
        return
    first = datetime.fromtimestamp(since, zone).date() - timedelta(days=1)
    last = datetime.fromtimestamp(until, zone).date()
    found = [
        span
        for n in range((last - first).days + 1)
        for shift in shifts
        if since < (span := _on(first + timedelta(days=n), shift, zone)).end <= until
    ]
    yield from sorted(found, key=lambda s: (s.end, s.name))


def on_at(shifts: Sequence[Shift], zone: ZoneInfo, now: float) -> ShiftSpan | None:
    """The shift on at `now` (the latest-started when two overlap), or None."""
    day = datetime.fromtimestamp(now, zone).date()
    candidates = [
        span
        for d in (day - timedelta(days=1), day)
        for shift in shifts
        if (span := _on(d, shift, zone)).start <= now < span.end
    ]
    return max(candidates, key=lambda s: s.start, default=None)


def last_ended(shifts: Sequence[Shift], zone: ZoneInfo, now: float) -> ShiftSpan | None:
    """The shift that ended last at or before `now` (within two days), or None."""
    ended = list(spans(shifts, zone, now - 2 * 86400, now))
    return ended[-1] if ended else None


def month_span(year: int, month: int, zone: ZoneInfo) -> tuple[float, float]:
    """A calendar month on the site's clock, as [start, end) in epoch seconds."""
    start = datetime(year, month, 1, tzinfo=zone)
    ny, nm = (year + 1, 1) if month == 12 else (year, month + 1)
    return start.timestamp(), datetime(ny, nm, 1, tzinfo=zone).timestamp()

"""The shift calendar (ehswatch/governance/shifts.py): shifts as spans of time."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from hypothesis import given
from hypothesis import strategies as st

from ehswatch.config import Shift
from ehswatch.governance.shifts import last_ended, on_at, spans

DAY_NIGHT = [
    Shift(name="day", start="08:00", end="20:00"),
    Shift(name="night", start="20:00", end="08:00"),
]
zones = st.sampled_from(["Asia/Shanghai", "Europe/Berlin", "America/New_York", "UTC"])
times = st.floats(1.7e9, 2.0e9)


@given(zones, times)
def test_with_a_day_and_a_night_shift_exactly_one_is_on_at_any_time(zone: str, now: float) -> None:
    tz = ZoneInfo(zone)
    span = on_at(DAY_NIGHT, tz, now)
    assert span is not None and span.start <= now < span.end
    ended = last_ended(DAY_NIGHT, tz, now)
    assert ended is not None and ended.end <= now and ended.name != span.name
    assert ended.end == span.start  # they follow each other with no gap


@given(zones, times, st.floats(0, 5 * 86400), st.floats(0, 1))
def test_looking_in_two_steps_finds_each_ended_shift_once(
    zone: str, since: float, length: float, cut: float
) -> None:
    tz = ZoneInfo(zone)
    middle = since + cut * length
    whole = list(spans(DAY_NIGHT, tz, since, since + length))
    parts = list(spans(DAY_NIGHT, tz, since, middle)) + list(
        spans(DAY_NIGHT, tz, middle, since + length)
    )
    assert whole == parts
    assert all(since < s.end <= since + length for s in whole)
    assert len(whole) in range(int(length // 43200) - 1, int(length // 43200) + 3)


def test_a_night_shift_across_the_change_to_summer_time_is_an_hour_shorter() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    night = [Shift(name="night", start="22:00", end="06:00")]
    before = datetime(2027, 3, 27, 12, tzinfo=berlin).timestamp()
    after = datetime(2027, 3, 29, 12, tzinfo=berlin).timestamp()
    lengths = [(s.end - s.start) / 3600 for s in spans(night, berlin, before, after)]
    assert lengths == [7.0, 8.0]  # the night of 27/28 March loses its hour

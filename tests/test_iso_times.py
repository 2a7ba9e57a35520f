"""`?times=iso` (ehswatch/api/iso_times.py): which numbers are times, and their text."""

from __future__ import annotations

import math
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import given
from hypothesis import strategies as st

from ehswatch.api.iso_times import TIME_KEY, times_as_iso
from tests.test_api import plant

SHANGHAI = ZoneInfo("Asia/Shanghai")
# Every time field the API answers (epoch seconds), by name: the rule must find exactly these.
TIMES = {
    "first_at",
    "last_at",
    "acked_at",
    "shelved_until",
    "closed_at",
    "last_escalated_at",
    "at",
    "ts",
    "created_at",
    "due_at",
    "submitted_at",
    "archived_at",
    "tripped_at",
    "bypass_until",
    "password_set_at",
    "expires_at",
    "stop_work_confirmed_at",
    "shift_start",
    "shift_end",
    "window_start",
    "eta_at",
    "since",
    "until",
}

keys = st.sampled_from([*TIMES, "value", "threshold", "id", "hours", "seq", "state", "x_at_y"])
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=5),
    max_leaves=30,
)


def test_the_rule_names_exactly_the_answers_time_fields(tmp_path: Path) -> None:
    """Over the OpenAPI schema of every answer: a number is called a time iff it is one."""
    from ehswatch.api.app import create_app

    schemas = create_app(plant(tmp_path)).openapi()["components"]["schemas"]
    numbers: set[str] = set()
    for schema in schemas.values():
        for name, prop in schema.get("properties", {}).items():
            kinds = {prop.get("type")} | {p.get("type") for p in prop.get("anyOf", [])}
            if kinds & {"number", "integer"}:
                numbers.add(name)
    answered = {n for n in numbers if TIME_KEY.search(n)}
    assert answered == TIMES, answered ^ TIMES
    assert {"value", "threshold", "hours", "seq", "id"} <= numbers - answered


@given(json_values)
def test_only_times_change_and_each_is_the_same_instant(value: Any) -> None:
    def check(before: Any, after: Any) -> None:
        if isinstance(before, dict):
            assert list(before) == list(after)
            for k, v in before.items():
                number = isinstance(v, int | float) and not isinstance(v, bool)
                if k in TIMES and number and math.isfinite(v) and isinstance(after[k], str):
                    when = datetime.fromisoformat(after[k])
                    assert when.utcoffset().total_seconds() == 8 * 3600  # type: ignore[union-attr]
                    assert abs(when.timestamp() - v) < 0.001
                elif k in TIMES and number and math.isfinite(v):
                    # Left as it was only when no calendar holds it.
                    assert after[k] == v and not -(10**11) < v < 10**11
                else:
                    check(v, after[k])
        elif isinstance(before, list):
            assert len(before) == len(after)
            for a, b in zip(before, after, strict=True):
                check(a, b)
        elif isinstance(before, float) and math.isnan(before):
            assert isinstance(after, float) and math.isnan(after)
        else:
            assert after == before and type(after) is type(before)

    check(value, times_as_iso(value, SHANGHAI))


def test_a_time_is_text_with_its_offset_to_the_millisecond() -> None:
    answer = times_as_iso({"first_at": 1796160561.1842, "acked_at": None}, SHANGHAI)
    assert answer == {"first_at": "2026-12-02T05:29:21.184+08:00", "acked_at": None}
    utc = times_as_iso([{"ts": 0}], ZoneInfo("UTC"))
    assert utc == [{"ts": "1970-01-01T00:00:00.000+00:00"}]

"""Shift figures (ehswatch/governance/shift_figures.py): per zone and sensor type, the
peak, the time-weighted mean and the time at each tier of a shift."""

from __future__ import annotations

import math
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from ehswatch.config import Shift
from ehswatch.governance.shift_figures import Groups, ShiftFigures

SHANGHAI = ZoneInfo("Asia/Shanghai")
SHIFTS = [
    Shift(name="day", start="08:00", end="20:00"),
    Shift(name="night", start="20:00", end="08:00"),
]
T0 = datetime(2027, 1, 15, 10, tzinfo=SHANGHAI).timestamp()


def groups_of(zones: list[str]) -> Groups:
    """Sensors in the given zones, all of one type."""
    keys = sorted(set(zones))
    of_sensor = np.array([keys.index(z) for z in zones], dtype=np.intp)
    order = np.argsort(of_sensor, kind="stable").astype(np.intp)
    starts = np.searchsorted(of_sensor[order], np.arange(len(keys))).astype(np.intp)
    return Groups(
        keys=tuple((z, "dust") for z in keys), order=order, starts=starts, of_sensor=of_sensor
    )


def test_a_transient_inside_one_batch_raises_the_shifts_peak() -> None:
    f = ShiftFigures(groups=groups_of(["a", "a"]), shifts=SHIFTS, timezone="Asia/Shanghai")
    f.on_tick(T0, np.array([2.0, 3.0]), np.zeros(2, np.int8))
    # 45 then 3 again, in one batch, newest first: the tier comes back, the peak stays.
    f.on_batch(np.array([0, 0], np.int32), np.array([3.0, 45.0]))
    f.on_tick(T0 + 1, np.array([3.0, 3.0]), np.zeros(2, np.int8))
    (row,) = f.figures()["rows"]
    assert row["max"] == 45.0


def test_a_shift_change_closes_the_shift_with_its_figures() -> None:
    f = ShiftFigures(groups=groups_of(["a"]), shifts=SHIFTS, timezone="Asia/Shanghai")
    end = datetime(2027, 1, 15, 20, tzinfo=SHANGHAI).timestamp()
    t = end - 10
    f.on_tick(t, np.array([5.0]), np.array([1], np.int8))
    for k in range(1, 11):
        f.on_tick(
            t + k, np.array([5.0 if k <= 5 else 25.0]), np.array([1 if k <= 5 else 2], np.int8)
        )
    (closed,) = f.public()["closed"]
    assert closed["shift"] == "day" and closed["end"] == end
    (row,) = closed["rows"]
    assert row["mean"] == round((5 * 5 + 4 * 25) / 9, 3)  # 9 s counted: the 10th closes it
    assert row["above_warning_s"] == 9.0 and row["above_alarm_s"] == 4.0
    assert f.public()["current"]["shift"] == "night"


def test_a_long_gap_between_ticks_counts_at_most_five_seconds() -> None:
    f = ShiftFigures(groups=groups_of(["a"]), shifts=SHIFTS, timezone="Asia/Shanghai")
    f.on_tick(T0, np.array([1.0]), np.array([3], np.int8))
    f.on_tick(T0 + 600, np.array([1.0]), np.array([3], np.int8))  # a stall, or a restart
    assert f.figures()["covered_s"] == 5.0
    f.on_tick(T0 + 590, np.array([1.0]), np.array([3], np.int8))  # the clock went back
    assert f.figures()["covered_s"] == 5.0


@settings(max_examples=60)
@given(
    st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=12),
    st.lists(
        st.tuples(
            st.floats(0.1, 4.0),
            st.lists(st.floats(-5, 60) | st.just(math.nan), min_size=12, max_size=12),
        ),
        min_size=1,
        max_size=20,
    ),
)
def test_the_vectorized_figures_equal_a_plain_python_reference(
    zones: list[str], ticks: list[tuple[float, list[float]]]
) -> None:
    n = len(zones)
    f = ShiftFigures(groups=groups_of(zones), shifts=SHIFTS, timezone="Asia/Shanghai")

    def tier(v: float) -> int:
        return (
            0 if not math.isfinite(v) else 3 if v >= 40 else 2 if v >= 20 else 1 if v >= 10 else 0
        )

    now = T0
    f.on_tick(now, np.full(n, np.nan), np.zeros(n, np.int8))
    ref: dict[str, dict[str, float]] = {
        z: {"wsum": 0.0, "wtime": 0.0, "peak": -math.inf, "a1": 0.0, "a2": 0.0, "a3": 0.0}
        for z in zones
    }
    prev = [math.nan] * n
    for dt, raw in ticks:
        values = raw[:n]
        f.on_batch(np.arange(n, dtype=np.int32), np.array(values))
        for i, v in enumerate(values):
            if math.isfinite(v):
                ref[zones[i]]["peak"] = max(ref[zones[i]]["peak"], v)
        now += dt
        f.on_tick(now, np.array(prev), np.array([tier(v) for v in prev], np.int8))
        for z in set(zones):
            members = [prev[i] for i in range(n) if zones[i] == z]
            finite = [v for v in members if math.isfinite(v)]
            ref[z]["wsum"] += dt * sum(finite)
            ref[z]["wtime"] += dt * len(finite)
            worst = max(tier(v) for v in members)
            for k in (1, 2, 3):
                ref[z][f"a{k}"] += dt * (worst >= k)
        prev = values
    for row in f.figures()["rows"]:
        r = ref[row["zone"]]
        mean = r["wsum"] / r["wtime"] if r["wtime"] else None
        assert (row["mean"] is None) == (mean is None)
        if mean is not None:
            assert math.isclose(row["mean"], mean, rel_tol=1e-6, abs_tol=1e-3)
        peak = r["peak"] if r["peak"] > -math.inf else None
        assert row["max"] == (round(peak, 3) if peak is not None else None)
        for k, name in ((1, "warning"), (2, "alarm"), (3, "interlock")):
            assert math.isclose(row[f"above_{name}_s"], r[f"a{k}"], abs_tol=0.11)


def test_a_failure_inside_the_figures_never_reaches_the_evaluator() -> None:
    from ehswatch.governance.shift_figures import LiveShiftFigures
    from ehswatch.readings import ReadingBatch
    from ehswatch.thresholds import Evaluator, ThresholdTable
    from tests.test_responsibility import mapped_plant

    config = mapped_plant(Path("/nonexistent"))
    evaluator = Evaluator(ThresholdTable.from_config(config), 0.0)

    def broken_clock() -> float:
        raise OSError("the clock is gone")

    figures = LiveShiftFigures(config, evaluator=evaluator, clock=broken_clock)
    tick = ReadingBatch.of([], [], [])
    figures.on_evaluation(tick, None)  # type: ignore[arg-type]
    figures.on_evaluation(tick, None)  # type: ignore[arg-type]
    assert figures.failures == 2
    figures.on_evaluation(ReadingBatch.of([0], [5.0], [T0]), None)  # type: ignore[arg-type]
    assert figures.failures == 2  # batches still counted


def test_a_shifts_exposure_twa_equals_the_hand_computed_value_across_the_shift_change() -> None:
    from ehswatch.governance.shift_figures import Exposed

    exposed = Exposed(
        sensors=np.array([0], np.intp), ids=("D-1",), zones=("a",), types=("dust",), limits=(4.0,)
    )
    f = ShiftFigures(
        groups=groups_of(["a"]), shifts=SHIFTS, timezone="Asia/Shanghai", exposed=exposed
    )
    end = datetime(2027, 1, 15, 20, tzinfo=SHANGHAI).timestamp()
    f.on_tick(end - 4, np.array([1.0]), np.zeros(1, np.int8))  # the day's first look
    # 2 s at 3.0, 1 s at 9.0, 1 s unread (a fault): the day's TWA is (2·3 + 9) / 3 = 5.
    for t, v in ((end - 3, 3.0), (end - 2, 3.0), (end - 1, 9.0), (end - 0.5, np.nan)):
        f.on_tick(t, np.array([v]), np.zeros(1, np.int8))
    f.on_batch(np.array([0], np.int32), np.array([12.0]))  # a peak between ticks
    f.on_tick(end, np.array([2.0]), np.zeros(1, np.int8))  # the night begins
    for t in (end + 1, end + 2):
        f.on_tick(t, np.array([2.0]), np.zeros(1, np.int8))
    (day,) = f.public()["closed"]
    (e,) = day["exposure"]
    assert (e["sensor"], e["twa"], e["peak"], e["limit"]) == ("D-1", 5.0, 12.0, 4.0)
    assert e["measured_s"] == 3.0
    (night,) = f.figures()["exposure"]
    assert night["twa"] == 2.0 and night["measured_s"] == 2.0

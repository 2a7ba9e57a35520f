"""Predictive warnings (ehswatch/analytics/predict.py): a crossing is predicted on a
clear build-up, not on noise or a step, and the vectorized fit equals a plain-Python
reference."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from ehswatch.analytics.predict import Predictor, PredictSettings

T0 = 1_800_000_000.0
SETPOINTS = [10.0, 20.0, 40.0, math.nan, math.nan, math.nan]  # high: warning, alarm, interlock
O2 = [math.nan, math.nan, math.nan, 19.5, 18.0, 16.0]  # low side


def predictor(n: int, setpoints: list[float] | None = None, **kw: float) -> Predictor:
    table = np.array([setpoints or SETPOINTS] * n)
    return Predictor(
        sensors=np.arange(n, dtype=np.intp),
        setpoint=table,
        settings=PredictSettings(**kw),  # type: ignore[arg-type]
        step_s=1.0,
    )


def feed(p: Predictor, series: list[float], tier: int = 0) -> object:
    result = None
    for k, v in enumerate(series):
        p.sample(T0 + k, np.array([v]))
        result = p.predict(T0 + k, np.array([tier], dtype=np.int8))
    return result


def test_a_linear_build_up_is_predicted_with_its_time_of_crossing() -> None:
    # 2 mg/m³ rising 0.05 per second: the alarm setpoint (20) is 360 s after 2.
    p = predictor(1, window_s=60, horizon_s=600)
    r = feed(p, [2 + 0.05 * k for k in range(60)])
    assert r.tier[0] == 2  # type: ignore[attr-defined]
    assert abs(r.eta[0] - (T0 + 360)) < 1.0  # type: ignore[attr-defined]


def test_an_exponential_build_up_is_predicted_before_it_crosses() -> None:
    p = predictor(1, window_s=60, horizon_s=600)
    series = [2 * math.exp(k / 60) for k in range(60)]  # 2 → 5.4 in a minute, 20 at 138 s
    r = feed(p, series)
    assert r.tier[0] == 2 and r.eta[0] > T0 + 59  # type: ignore[attr-defined]


def test_a_noisy_flat_signal_predicts_nothing() -> None:
    rng = np.random.default_rng(7)
    p = predictor(1, window_s=120, horizon_s=600)
    hits = 0
    for k in range(3000):
        p.sample(T0 + k, np.array([5 + rng.normal(0, 1.5)]))
        hits += int(p.predict(T0 + k, np.zeros(1, np.int8)).tier[0] > 0)
    assert hits == 0


def test_a_step_predicts_nothing_once_the_window_is_flat_again() -> None:
    p = predictor(1, window_s=60, horizon_s=600)
    r = feed(p, [3.0] * 60 + [12.0] * 70)  # a step, then flat for longer than the window
    assert r.tier[0] == 0 and math.isnan(r.eta[0])  # type: ignore[attr-defined]


def test_a_falling_oxygen_reading_predicts_the_low_alarm() -> None:
    p = predictor(1, O2, window_s=60, horizon_s=600)
    r = feed(p, [20.9 - 0.01 * k for k in range(60)])  # 18.0 at 290 s
    assert r.tier[0] == 2 and abs(r.eta[0] - (T0 + 290)) < 1.0  # type: ignore[attr-defined]


def test_a_tier_already_reached_is_not_predicted_but_the_next_is() -> None:
    p = predictor(1, window_s=60, horizon_s=600)
    r = feed(p, [22 + 0.05 * k for k in range(60)], tier=2)  # at alarm, rising to 40
    assert r.tier[0] == 3  # type: ignore[attr-defined]


def test_too_few_samples_or_a_sensor_in_fault_predict_nothing() -> None:
    p = predictor(1, window_s=60, horizon_s=600, min_points=20)
    r = feed(p, [2 + 0.1 * k for k in range(10)])
    assert r.tier[0] == 0  # type: ignore[attr-defined]
    r = feed(predictor(1, window_s=60), [math.nan] * 60)
    assert r.tier[0] == 0  # type: ignore[attr-defined]


def reference(
    xs: list[float], ys: list[float], sp: list[float], now_tier: int, s: PredictSettings
) -> tuple[int, float]:
    pts = [(x, y) for x, y in zip(xs, ys, strict=True) if math.isfinite(y)]
    n = len(pts)
    if n < s.min_points:
        return 0, math.nan
    mx = sum(x for x, _ in pts) / n
    my = sum(y for _, y in pts) / n
    vx = sum((x - mx) ** 2 for x, _ in pts)
    if vx <= 0:
        return 0, math.nan
    b = sum((x - mx) * (y - my) for x, y in pts) / vx
    a = my - b * mx  # value at x = 0 (now)
    resid = sum((y - (a + b * x)) ** 2 for x, y in pts)
    se = math.sqrt(resid / (n - 2) / vx) if n > 2 else math.inf
    if not ((se > 0 and abs(b) / se >= s.min_t) or (se == 0 and b != 0)):
        return 0, math.nan
    best = (0, math.nan)
    for col, to_tier, rising in ((1, 2, True), (2, 3, True), (4, 2, False), (5, 3, False)):
        v = sp[col]
        if not math.isfinite(v) or now_tier >= to_tier:
            continue
        if (rising and (b <= 0 or a >= v)) or (not rising and (b >= 0 or a <= v)):
            continue
        dt = (v - a) / b
        if 0 <= dt <= s.horizon_s and (math.isnan(best[1]) or dt < best[1]):
            best = (to_tier, dt)
    return best


@settings(max_examples=80, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(-0.2, 0.2), st.floats(0, 2), st.floats(0, 38)), min_size=1, max_size=6
    ),
    st.integers(20, 80),
    st.integers(0, 2),
)
def test_the_vectorized_fit_equals_a_plain_python_reference(
    sensors: list[tuple[float, float, float]], length: int, now_tier: int
) -> None:
    s = PredictSettings(window_s=40, horizon_s=900, min_points=10, min_t=3.0)
    n = len(sensors)
    p = predictor(n, window_s=40, horizon_s=900, min_points=10, min_t=3.0)
    rng = np.random.default_rng(length)
    series = [
        [start + slope * k + rng.normal(0, noise) for k in range(length)]
        for slope, noise, start in sensors
    ]
    for k in range(length):
        p.sample(T0 + k, np.array([col[k] for col in series]))
    now = T0 + length - 1
    r = p.predict(now, np.full(n, now_tier, np.int8))
    window = min(40, length)
    xs = [float(k - (length - 1)) for k in range(length - window, length)]
    for i in range(n):
        tier, dt = reference(xs, series[i][length - window :], SETPOINTS, now_tier, s)
        assert r.tier[i] == tier, (i, sensors[i])
        if tier:
            assert math.isclose(r.eta[i] - now, dt, rel_tol=1e-6, abs_tol=1e-3)


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 12),
    st.integers(1, 4),
    st.integers(30, 160),
    st.floats(0, 0.2),
    st.integers(0, 2**16),
)
def test_each_block_of_a_strided_predictor_is_fitted_on_its_own_turns(
    sensors: int, stride: int, length: int, missing: float, seed: int
) -> None:
    """Sampled every `stride` ticks, the sensors split into blocks that take turns: each
    sensor's standing prediction is the reference fit of the samples its block took in
    the window, readings missing now and then included."""
    s = PredictSettings(window_s=20.0 * stride, horizon_s=900, min_points=8, min_t=3.0,
                        sample_s=float(stride))  # fmt: skip
    p = Predictor(
        sensors=np.arange(sensors, dtype=np.intp) * 3,  # not a run: read by index
        setpoint=np.array([SETPOINTS] * (3 * sensors)),
        settings=s,
        step_s=1.0,
    )
    rng = np.random.default_rng(seed)
    slopes, starts = rng.uniform(-0.3, 0.3, sensors), rng.uniform(0, 30, sensors)
    taken: dict[int, list[tuple[float, float]]] = {i: [] for i in range(sensors)}
    turn_at: dict[int, float] = {}
    for k in range(length):
        values = np.full(3 * sensors, np.nan)
        row = starts + slopes * k + rng.normal(0, 0.5, sensors)
        row[rng.random(sensors) < missing] = np.nan
        values[::3] = row
        block = p.block
        lo, hi = p.bounds[block], p.bounds[block + 1]
        p.sample(T0 + k, values)
        r = p.predict(T0 + k, np.zeros(3 * sensors, np.int8))
        for i in range(lo, hi):
            taken[i].append((T0 + k, float(row[i])))
            turn_at[i] = T0 + k
    for i in range(sensors):
        if i not in turn_at:
            continue
        now = turn_at[i]
        window = taken[i][-20:]
        xs = [t - now for t, _ in window]
        tier, dt = reference(xs, [v for _, v in window], SETPOINTS, 0, s)
        assert r.tier[i] == tier, (i, stride)
        if tier:
            assert math.isclose(r.eta[i] - now, dt, rel_tol=1e-6, abs_tol=1e-3)


def test_the_live_predictor_tells_a_predicted_crossing_before_the_alarm_then_its_end() -> None:
    """On the real evaluator, ticked by hand: the demo's kind of build-up is predicted
    while the reading is still below the alarm setpoint; when the reading comes back
    down the prediction is cleared."""
    from pathlib import Path

    import yaml

    from ehswatch.analytics.predict import LivePredictor
    from ehswatch.config import parse_config
    from ehswatch.readings import ReadingBatch
    from ehswatch.thresholds import Evaluator, ThresholdTable
    from tests.test_responsibility import mapped_plant

    doc = mapped_plant(Path("/nonexistent")).model_dump(mode="json")
    doc["sensor_types"]["dust"]["prediction"] = {
        "enabled": True, "window_s": 20, "horizon_s": 300, "min_points": 8, "min_t": 4,
        "sample_s": 1,
    }  # fmt: skip
    config = parse_config(yaml.safe_dump(doc), env={})
    now = [T0]
    evaluator = Evaluator(ThresholdTable.from_config(config), T0)
    live = LivePredictor(config, evaluator=evaluator, clock=lambda: now[0], step_s=1.0)
    tick = ReadingBatch.of([], [], [])
    first_alarm = first_predicted = None
    rng = np.random.default_rng(8)
    for k in range(120):
        now[0] = T0 + k
        value = 3.5 + max(0, k - 10) * 0.74 if k < 70 else 3.5
        batch = ReadingBatch.of([1], [value + rng.normal(0, 0.3)], [now[0]])
        evaluator.process(batch)
        live.on_evaluation(batch, None)  # type: ignore[arg-type]
        evaluator.tick(now[0])
        live.on_evaluation(tick, None)  # type: ignore[arg-type]
        if first_alarm is None and evaluator.tier[1] >= 2:
            first_alarm = k
        if first_predicted is None and live.active:
            first_predicted = k
    assert first_predicted is not None and first_alarm is not None
    assert first_predicted < first_alarm  # warned ahead of the alarm
    kinds = [(e["sensor"], e["event"], e["tier"]) for e in live.events]
    assert kinds[0] == ("D-1", "predicted", 2)
    assert kinds[-1][1] == "cleared" and not live.active
    assert live.failures == 0


def test_the_backtest_prints_lead_times_unfollowed_and_unpredicted_per_sensor_type(
    tmp_path: Path,
) -> None:
    """A recorded CSV the test makes: a build-up that crosses (predicted ahead), a
    noisy flat sensor (nothing), a step (crossed, never predicted) and a rise that
    turns back before its setpoint (predicted, never followed)."""
    import json
    import subprocess
    import sys

    import yaml

    from tests.test_responsibility import mapped_plant

    doc = mapped_plant(tmp_path).model_dump(mode="json")
    doc["sensor_types"]["dust"]["prediction"] = {
        "enabled": True, "window_s": 20, "horizon_s": 300, "min_points": 8, "min_t": 4,
        "sample_s": 1,
    }  # fmt: skip
    plant = tmp_path / "plant.yaml"
    plant.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    rng = np.random.default_rng(3)
    lines = ["ts,sensor,value"]
    for k in range(300):
        ts = T0 + k
        rise = 3 + max(0, k - 20) * 0.5  # crosses 20 at k = 54
        turn = 3 + (0.5 * (k - 100) if 100 <= k < 120 else 10 if k >= 120 else 0)  # up to 13
        lines += [
            f"{ts},D-1,{min(rise, 30) + rng.normal(0, 0.2):.3f}",
            f"{ts},D-2,{5 + rng.normal(0, 1.5):.3f}",
            f"{datetime_iso(ts)},D-3,{3.0 if k < 150 else 25.0}",
            f"{ts},D-4,{turn + rng.normal(0, 0.2):.3f}",
        ]
    readings = tmp_path / "readings.csv"
    readings.write_text("\n".join(reversed(lines[1:])).join([lines[0] + "\n", "\n"]))
    command = ["backtest", "--config", str(plant), "--csv", str(readings)]
    out = subprocess.run(
        [sys.executable, "-m", "ehswatch", *command],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)["dust"]
    (lead,) = report["leads_s"]
    assert 5 <= lead <= 40  # D-1: predicted ahead of its crossing
    assert report["unpredicted"] == 1  # D-3's step
    # D-4 turned back below the alarm setpoint; D-1, past its alarm, was heading for the
    # interlock setpoint until it levelled off at 30.
    assert report["unfollowed"] == 2, report


def datetime_iso(ts: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, UTC).isoformat()


def test_sums_kept_over_a_long_run_give_what_a_fresh_window_gives(monkeypatch: object) -> None:
    """The window's sums, added to and taken from for thousands of ticks (and moved to a
    new time origin on the way), predict what a predictor fed only the window predicts."""
    import ehswatch.analytics.predict as predict

    monkeypatch.setattr(predict, "REANCHOR_S", 500.0)  # type: ignore[attr-defined]
    rng = np.random.default_rng(11)
    n, length, window = 50, 3000, 40
    slopes = rng.uniform(-0.3, 0.3, n)
    series = (
        np.cumsum(rng.normal(0, 0.5, (length, n)), axis=0) * 0.1
        + 5
        + np.outer(np.arange(length) % 200, slopes)
    )
    series[rng.random((length, n)) < 0.05] = np.nan  # readings missing now and then
    long_run = predictor(n, window_s=window, horizon_s=900, min_points=10, min_t=3.0)
    for k in range(length):
        long_run.sample(T0 + k, series[k])
    fresh = predictor(n, window_s=window, horizon_s=900, min_points=10, min_t=3.0)
    for k in range(length - window, length):
        fresh.sample(T0 + k, series[k])
    now, tiers = T0 + length - 1, np.zeros(n, np.int8)
    a, b = long_run.predict(now, tiers), fresh.predict(now, tiers)
    assert (a.tier == b.tier).all()
    both = np.isfinite(a.eta) & np.isfinite(b.eta)
    assert np.allclose(a.eta[both], b.eta[both], atol=1e-3)
    assert np.allclose(a.slope, b.slope, atol=1e-6)


def test_predicted_crossings_go_to_the_routes_that_ask_for_them_once(tmp_path: Path) -> None:
    """A route with `predicted: true` gets the predicted events it matches, delivered in
    the real formats to the local fake robots; reading the same events again sends
    nothing twice, and a route that does not ask gets none."""
    from ehswatch.analytics.relay import PredictionRelay
    from tests.aio import run
    from tests.fakes import RobotServer
    from tests.test_alarms import plant as alarm_plant
    from tests.test_alarms import rig as alarm_rig

    with RobotServer() as robots:
        routes = [
            {"match": {"tiers": ["alarm", "interlock"]}, "notify": ["hook"], "predicted": True},
            {"match": {"tiers": ["alarm"]}, "notify": ["ding"]},  # alarms only
        ]
        config = alarm_plant(tmp_path / "db.sqlite", robots, routes=routes)
        sensor = config.sensors[0]
        events = {
            "predictions": {
                "active": [],
                "events": [
                    {"seq": 1, "sensor": sensor.id, "zone": sensor.zone, "event": "predicted",
                     "tier": 2, "eta_at": T0 + 300, "at": T0},
                    {"seq": 2, "sensor": sensor.id, "zone": sensor.zone, "event": "cleared",
                     "tier": 0, "eta_at": None, "at": T0 + 60},
                ],
            }
        }  # fmt: skip

        async def main() -> None:
            async with alarm_rig(tmp_path, config) as r:
                relay = PredictionRelay(config=config, db=r.db, published=lambda: events)
                assert await relay.relay_once() == 1  # the hook only; "cleared" is not sent
                assert await relay.relay_once() == 0
                again = PredictionRelay(config=config, db=r.db, published=lambda: events)
                await again.relay_once()  # a restarted desk: queued once all the same
                r.clock.now = T0 + 1
                await r.deliver("hook", "ding")

        run(main())
    (sent,) = robots.delivered("/hook")
    assert sent["kind"] == "predicted" and "PREDICTED" in sent["title"]
    assert robots.delivered("/dingtalk") == []

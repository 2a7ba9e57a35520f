"""Predictive warning (time to threshold), the rule (pure numpy).

For each sensor whose type has prediction on, the last `window_s` of tick samples (one
value per evaluator tick, its reading then) are fitted with a least-squares line. The
trend counts only when it is clear of the noise: at least `min_points` samples and a
slope at least `min_t` standard errors from zero (a noisy flat signal, or a single step
followed by flat readings once the window has moved past it, has none). Projected from
the fitted value now, the line crosses a setpoint — the alarm or the interlock one, on
the side the slope is heading (high setpoints upwards, low ones downwards) — at a time;
when that time is within `horizon_s` and the reading is not already at that tier, the
sensor has a *predicted crossing*: the tier and the expected time. It is its own class,
never a tier: it trips nothing and raises no alarm state.

All sensors at once: each sensor's window sums (count, Σx, Σy, Σx², Σxy, Σy²) are kept
as the ring turns — the new sample in, the one leaving the window out — so a tick costs a
few passes over the sensors, whatever the window's length.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ehswatch.config import PlantConfig
from ehswatch.readings import ReadingBatch
from ehswatch.thresholds.evaluator import Evaluator
from ehswatch.thresholds.outcome import Evaluation

log = logging.getLogger(__name__)

REANCHOR_S = 86400.0  # the sums' time origin moves on daily (their times stay small)
#: the setpoint columns of `ThresholdTable.setpoint` a prediction looks at, and their tier
HIGH_COLUMNS = ((1, 2), (2, 3))  # high.alarm → tier 2, high.interlock → tier 3
LOW_COLUMNS = ((4, 2), (5, 3))  # low.alarm, low.interlock


@dataclass(frozen=True, kw_only=True, slots=True)
class PredictSettings:
    window_s: float = 120.0
    horizon_s: float = 600.0
    min_points: int = 20
    min_t: float = 5.0


@dataclass(frozen=True, kw_only=True, slots=True)
class Predictions:
    """Per predicted sensor: the tier it is heading for (0: none) and when it gets there
    (NaN: none), and the fitted slope (units per second)."""

    tier: NDArray[np.int8]
    eta: NDArray[np.float64]
    slope: NDArray[np.float64]


class Predictor:
    """The sample ring and the fit, for the sensors `sensors` (indices into the plant's
    arrays), each with its settings' window (in samples) and horizon."""

    def __init__(
        self,
        *,
        sensors: NDArray[np.intp],
        setpoint: NDArray[np.float64],
        settings: Sequence[PredictSettings],
        step_s: float,
    ) -> None:
        assert len(settings) == sensors.shape[0]
        self.sensors = sensors
        self.setpoint = setpoint[sensors]  # (m, 6)
        self.step_s = step_s
        windows = np.array([max(2, round(s.window_s / step_s)) for s in settings])
        self.size = int(windows.max(initial=2))
        self.window = windows
        self.horizon = np.array([s.horizon_s for s in settings], dtype=np.float64)
        self.min_points = np.array([s.min_points for s in settings])
        self.min_t = np.array([s.min_t for s in settings], dtype=np.float64)
        m = sensors.shape[0]
        self.values = np.full((self.size, m), np.nan)
        self.stamps = np.full(self.size, np.nan)
        self.next = 0  # the ring's next row
        self.samples = 0
        self.anchor: float | None = None  # the origin of the times in the sums
        self.n, self.sx, self.sy = np.zeros(m), np.zeros(m), np.zeros(m)
        self.sxx, self.sxy, self.syy = np.zeros(m), np.zeros(m), np.zeros(m)

    def sample(self, now: float, value: NDArray[np.float64]) -> None:
        """Take each predicted sensor's reading now (`value` over all the plant's
        sensors; NaN: none or in FAULT). The window's sums are kept up to date: the
        sample that leaves each sensor's window is taken out, the new one put in — a
        few passes over the sensors, however long the window."""
        if self.anchor is None:
            self.anchor = now
        elif now - self.anchor > REANCHOR_S:
            self._reanchor(now)
        row = self.next
        cols = np.arange(self.sensors.shape[0])
        leaving = (row - self.window) % self.size  # per sensor: its oldest sample
        old_v = self.values[leaving, cols]
        old_x = self.stamps[leaving] - self.anchor
        self._add(old_x, old_v, -1.0)
        new_v = value[self.sensors]
        self.values[row] = new_v
        self.stamps[row] = now
        self._add(np.full(cols.shape[0], now - self.anchor), new_v, 1.0)
        self.next = (row + 1) % self.size
        self.samples += 1

    def _add(self, x: NDArray[np.float64], y: NDArray[np.float64], sign: float) -> None:
        ok = np.isfinite(y) & np.isfinite(x)
        xs, ys = np.where(ok, x, 0.0), np.where(ok, y, 0.0)
        self.n += sign * ok
        self.sx += sign * xs
        self.sy += sign * ys
        self.sxx += sign * xs * xs
        self.sxy += sign * xs * ys
        self.syy += sign * ys * ys

    def _reanchor(self, now: float) -> None:
        """Move the sums' origin to `now` (exact: the sums of x − d in terms of those of
        x), so that the times in them stay small."""
        d = now - (self.anchor or now)
        self.sxx += -2 * d * self.sx + self.n * d * d
        self.sxy += -d * self.sy
        self.sx += -self.n * d
        self.anchor = now

    def predict(self, now: float, tier: NDArray[np.int8]) -> Predictions:
        """Each predicted sensor's crossing within its horizon, from the window's sums;
        `tier` over all the plant's sensors (a crossing of a tier already reached is none)."""
        m = self.sensors.shape[0]
        n, sx, sy, sxx, sxy, syy = self.n, self.sx, self.sy, self.sxx, self.sxy, self.syy
        x_now = now - (self.anchor if self.anchor is not None else now)
        with np.errstate(divide="ignore", invalid="ignore"):
            vx = sxx - sx * sx / n
            cov = sxy - sx * sy / n
            slope = cov / vx
            level = sy / n + slope * (x_now - sx / n)  # the fitted value now
            resid = np.maximum(syy - sy * sy / n - slope * cov, 0.0)
            se = np.sqrt(resid / (n - 2) / vx)
            t = np.abs(slope) / se
            # Sums kept by adding and taking out lose a little to rounding: a variance
            # below that is none (a window of one time, or of one value).
            vx = np.where(vx > 1e-9 * np.maximum(sxx, 1.0), vx, 0.0)
            se = np.where(resid > 1e-12 * np.maximum(syy, 1.0), se, 0.0)
        clear = (
            (n >= self.min_points)
            & (vx > 0)
            & np.isfinite(slope)
            & ((t >= self.min_t) | ((se == 0) & (slope != 0)))
        )
        now_tier = tier[self.sensors]
        best_eta = np.full(m, np.nan)
        best_tier = np.zeros(m, dtype=np.int8)
        with np.errstate(divide="ignore", invalid="ignore"):
            for columns, rising in ((HIGH_COLUMNS, True), (LOW_COLUMNS, False)):
                heading = clear & ((slope > 0) if rising else (slope < 0))
                for col, to_tier in columns:
                    sp = self.setpoint[:, col]
                    before = (level < sp) if rising else (level > sp)
                    dt = (sp - level) / slope
                    hit = (
                        heading & np.isfinite(sp) & before & (dt >= 0) & (dt <= self.horizon)
                        & (now_tier < to_tier)
                    )  # fmt: skip
                    eta = now + dt
                    # the first crossing ahead (the lower tier comes first on its side)
                    take = hit & ~(np.isfinite(best_eta) & (best_eta <= eta))
                    best_eta = np.where(take, eta, best_eta)
                    best_tier = np.where(take, to_tier, best_tier).astype(np.int8)
        return Predictions(tier=best_tier, eta=best_eta, slope=np.where(clear, slope, 0.0))


class LivePredictor:
    """The predictor as an evaluator-stage listener, on ticks: each tick samples the
    sensors' readings (NaN in FAULT) and refreshes `active`, the crossings predicted now
    (sensor index → (tier, eta)), and `events`, what started or ended since (the newest
    last, at most `EVENTS_KEPT`). Never raises into the evaluator: a failure is logged
    once and counted."""

    EVENTS_KEPT = 200

    def __init__(
        self,
        config: PlantConfig,
        *,
        evaluator: Evaluator,
        clock: Callable[[], float],
        step_s: float,
    ) -> None:
        chosen = [
            (k, config.sensor_types[s.type].prediction)
            for k, s in enumerate(config.sensors)
            if config.sensor_types[s.type].prediction.enabled
        ]
        self.config = config
        self.evaluator = evaluator
        self._clock = clock
        self.ids = [config.sensors[k].id for k, _ in chosen]
        self.zones = [config.sensors[k].zone for k, _ in chosen]
        self.predictor = (
            Predictor(
                sensors=np.array([k for k, _ in chosen], dtype=np.intp),
                setpoint=evaluator.table.setpoint,
                settings=[
                    PredictSettings(
                        window_s=p.window_s,
                        horizon_s=p.horizon_s,
                        min_points=p.min_points,
                        min_t=p.min_t,
                    )
                    for _, p in chosen
                ],
                step_s=step_s,
            )
            if chosen
            else None
        )
        self.active: dict[int, tuple[int, float]] = {}
        self.events: list[dict[str, Any]] = []
        self.failures = 0
        self.seq = 0

    def on_evaluation(self, batch: ReadingBatch, _: Evaluation) -> None:
        if len(batch) or self.predictor is None:
            return
        try:
            self._tick(self._clock())
        except Exception:
            self.failures += 1
            if self.failures == 1:
                log.exception("predictive warning: a tick could not be counted")

    def _tick(self, now: float) -> None:
        assert self.predictor is not None
        ev = self.evaluator
        self.predictor.sample(now, np.where(ev.faulted, np.nan, ev.last_value))
        found = self.predictor.predict(now, ev.tier)
        hits = np.flatnonzero(found.tier)
        active = {int(i): (int(found.tier[i]), float(found.eta[i])) for i in hits}
        for i in sorted(set(active) | set(self.active)):
            before, after = self.active.get(i), active.get(i)
            same_tier = before is not None and after is not None and before[0] == after[0]
            if same_tier or (before is None and after is None):
                continue
            self.seq += 1
            self.events.append(
                {
                    "seq": self.seq,
                    "sensor": self.ids[i],
                    "zone": self.zones[i],
                    "event": "predicted" if after is not None else "cleared",
                    "tier": after[0] if after is not None else 0,
                    "eta_at": after[1] if after is not None else None,
                    "at": now,
                }
            )
        self.events = self.events[-self.EVENTS_KEPT :]
        self.active = active

    def public(self) -> dict[str, Any]:
        """What the status document carries: the crossings predicted now, and the events."""
        return {
            "active": [
                {"sensor": self.ids[i], "zone": self.zones[i], "tier": tier, "eta_at": eta}
                for i, (tier, eta) in sorted(self.active.items(), key=lambda kv: kv[1][1])
            ],
            "events": self.events[-50:],
        }

"""Predictive warning (time to threshold), the rule (pure numpy).

For each sensor whose type has prediction on, its readings are sampled every `sample_s`
and the samples of the last `window_s` are fitted with a least-squares line. The trend
counts only when it is clear of the noise: at least `min_points` samples and a slope at
least `min_t` standard errors from zero (a noisy flat signal, or a single step followed by
flat readings once the window has moved past it, has none). Projected from the fitted
value now, the line crosses a setpoint — the alarm or the interlock one, on the side the
slope is heading (high setpoints upwards, low ones downwards) — at a time; when that time
is within `horizon_s` and the reading is not already at that tier, the sensor has a
*predicted crossing*: the tier and the expected time. It is its own class, never a tier:
it trips nothing and raises no alarm state.

All sensors at once, and little per tick:
- each sensor's window sums (count, Σx, Σy, Σx², Σxy, Σy²) are kept as the ring turns —
  the new sample in, the one leaving the window out — so a sample costs a few passes over
  the sensors, whatever the window's length;
- when the sample period is `stride` ticks, the sensors are split into `stride` blocks
  and each tick samples and refits one block: every sensor is sampled once per period,
  and a tick does 1/`stride` of the work. A block's prediction stands until its next
  turn (its expected time is absolute, so it stays right).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ehswatch.config import PlantConfig, Prediction
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
    sample_s: float = 1.0

    @classmethod
    def of(cls, prediction: Prediction) -> PredictSettings:
        """A sensor type's `prediction` section, as the rule takes it."""
        return cls(
            window_s=prediction.window_s,
            horizon_s=prediction.horizon_s,
            min_points=prediction.min_points,
            min_t=prediction.min_t,
            sample_s=prediction.sample_s,
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class Predictions:
    """Per predicted sensor: the tier it is heading for (0: none) and when it gets there
    (NaN: none), and the fitted slope (units per second; 0 where the trend is not clear)."""

    tier: NDArray[np.int8]
    eta: NDArray[np.float64]
    slope: NDArray[np.float64]


class Predictor:
    """The sample ring and the fit for the sensors `sensors` (indices into the plant's
    arrays) that share one `settings`, sampled every `stride` ticks of `step_s` (the
    most ticks `settings.sample_s` allows).

    `sample(now, value)` then `predict(now, tier)` once per tick: the first samples the
    block whose turn it is, the second refits that block and returns every sensor's
    standing prediction.

    The window sums per sensor: Σy, Σxy, Σy² over the ring (a missing sample is kept as
    0 and adds nothing); the count, Σx and Σx² are the same for every sensor of a block
    (its samples share their times), less what its missing samples would add — kept per
    sensor, and touched only when a missing sample comes or goes."""

    def __init__(
        self,
        *,
        sensors: NDArray[np.intp],
        setpoint: NDArray[np.float64],
        settings: PredictSettings,
        step_s: float,
    ) -> None:
        m = sensors.shape[0]
        self.sensors = sensors
        self.settings = settings
        self.setpoint = setpoint[sensors]  # (m, 6)
        high = self.setpoint[:, [c for c, _ in HIGH_COLUMNS]]
        low = self.setpoint[:, [c for c, _ in LOW_COLUMNS]]
        with np.errstate(invalid="ignore"):  # a side without setpoints: never in reach
            self.high_gate = np.where(np.isnan(high), np.inf, high).min(axis=1)
            self.low_gate = np.where(np.isnan(low), -np.inf, low).max(axis=1)
        self.step_s = step_s
        self.stride = max(1, round(settings.sample_s / step_s))
        self.size = max(2, round(settings.window_s / (self.stride * step_s)))
        self.min_t2 = settings.min_t * settings.min_t
        # The blocks: contiguous runs of the sensors, one sampled per tick.
        self.bounds = [round(m * b / self.stride) for b in range(self.stride + 1)]
        self.direct = [  # a block whose plant indices are a run: read by a slice
            hi == lo or bool((np.diff(sensors[lo:hi]) == 1).all())
            for lo, hi in zip(self.bounds, self.bounds[1:], strict=False)
        ]
        self.values = np.zeros((self.size, m))  # a missing sample: 0, and `gone`
        self.gone = np.zeros((self.size, m), dtype=bool)
        self.stamps = np.full((self.size, self.stride), np.nan)  # per ring row and block
        self.rows = [0] * self.stride  # each block's next ring row
        self.block = 0  # the block whose turn it is
        self.last = 0  # the block sampled last
        self.samples = 0
        self.anchor: float | None = None  # the origin of the times in the sums
        # per block: the count, Σx, Σx² of its samples' times in the window
        self.count = np.zeros(self.stride)
        self.sx = np.zeros(self.stride)
        self.sxx = np.zeros(self.stride)
        # per sensor: what its missing samples take from those, and how many blocks' worth
        self.miss_n, self.miss_x, self.miss_xx = np.zeros(m), np.zeros(m), np.zeros(m)
        self.missing = [0] * self.stride  # per block: missing samples in the window
        self.sy, self.sxy, self.syy = np.zeros(m), np.zeros(m), np.zeros(m)
        self.tier = np.zeros(m, dtype=np.int8)
        self.eta = np.full(m, np.nan)
        self.slope = np.full(m, np.nan)
        self.hits: list[NDArray[np.intp]] = [np.zeros(0, np.intp)] * self.stride  # per block
        self._tmp = np.zeros(m)

    def sample(
        self,
        now: float,
        value: NDArray[np.float64],
        faulted: NDArray[np.bool_] | None = None,
    ) -> None:
        """Take the readings now of the block whose turn it is (`value` over all the
        plant's sensors, NaN: none; a sensor `faulted` adds no sample). Its window sums
        are kept up to date: the sample that leaves each sensor's window is taken out,
        the new one put in. Only the block's sensors are read."""
        if self.anchor is None:
            self.anchor = now
        elif now - self.anchor > REANCHOR_S:
            self._reanchor(now)
        b = self.block
        lo, hi = self.bounds[b], self.bounds[b + 1]
        self.block, self.last = (b + 1) % self.stride, b
        self.samples += 1
        if hi == lo:
            return
        row = self.rows[b]
        self.rows[b] = (row + 1) % self.size
        block: slice | NDArray[np.intp]  # the block's plant indices
        if self.direct[b]:
            first = int(self.sensors[lo])
            block = slice(first, first + hi - lo)
        else:
            block = self.sensors[lo:hi]
        new = value[block]
        if faulted is not None:
            new = np.where(faulted[block], np.nan, new)
        ok = np.isfinite(new)
        whole = bool(ok.all())
        y_in = new if whole else np.where(ok, new, 0.0)
        x = now - self.anchor
        sy, sxy, syy = self.sy[lo:hi], self.sxy[lo:hi], self.syy[lo:hi]
        tmp = self._tmp[lo:hi]
        x_out = float(self.stamps[row, b]) - self.anchor
        if np.isfinite(x_out):  # the ring has turned: the row's sample leaves the window
            old = self.values[row, lo:hi]
            np.subtract(y_in, old, out=tmp)  # Σy² += (in − out)(in + out)
            sy += tmp
            tmp *= y_in + old
            syy += tmp
            np.multiply(y_in, x, out=tmp)
            tmp -= x_out * old
            sxy += tmp
            self.count[b] -= 1
            self.sx[b] -= x_out
            self.sxx[b] -= x_out * x_out
            gone = self.gone[row, lo:hi]
            if gone.any():
                at = lo + np.flatnonzero(gone)
                self.miss_n[at] -= 1
                self.miss_x[at] -= x_out
                self.miss_xx[at] -= x_out * x_out
                self.missing[b] -= at.shape[0]
        else:
            sy += y_in
            np.multiply(y_in, y_in, out=tmp)
            syy += tmp
            np.multiply(y_in, x, out=tmp)
            sxy += tmp
        self.count[b] += 1
        self.sx[b] += x
        self.sxx[b] += x * x
        self.values[row, lo:hi] = y_in
        self.stamps[row, b] = now
        if whole:
            self.gone[row, lo:hi] = False
        else:
            self.gone[row, lo:hi] = ~ok
            at = lo + np.flatnonzero(~ok)
            self.miss_n[at] += 1
            self.miss_x[at] += x
            self.miss_xx[at] += x * x
            self.missing[b] += at.shape[0]

    def _reanchor(self, now: float) -> None:
        """Move the sums' origin to `now` (exact: the sums of x − d in terms of those of
        x), so that the times in them stay small."""
        d = now - (self.anchor or now)
        sums = ((self.count, self.sx, self.sxx), (self.miss_n, self.miss_x, self.miss_xx))
        for n, sx, sxx in sums:
            sxx += -2 * d * sx + n * d * d
            sx += -n * d
        self.sxy += -d * self.sy
        self.anchor = now

    def predict(self, now: float, tier: NDArray[np.int8]) -> Predictions:
        """Refit the block sampled last, from its window sums, and return every
        sensor's standing prediction (the arrays are the predictor's own: read, do not
        keep). `tier` over all the plant's sensors: a crossing of a tier already reached
        is none."""
        b = self.last
        lo, hi = self.bounds[b], self.bounds[b + 1]
        if hi == lo:
            return Predictions(tier=self.tier, eta=self.eta, slope=self.slope)
        s = self.settings
        x_now = now - (self.anchor if self.anchor is not None else now)
        n: Any = float(self.count[b])
        sx: Any = float(self.sx[b])
        sxx: Any = float(self.sxx[b])
        if self.missing[b]:  # some sensors miss samples: their own count and time sums
            n = n - self.miss_n[lo:hi]
            sx = sx - self.miss_x[lo:hi]
            sxx = sxx - self.miss_xx[lo:hi]
        sy, sxy = self.sy[lo:hi], self.sxy[lo:hi]
        # The block's earlier predictions end here; its sensors are refitted below.
        self.tier[self.hits[b]] = 0
        self.eta[self.hits[b]] = np.nan
        self.hits[b] = self.hits[b][:0]
        slope = self.slope[lo:hi]
        with np.errstate(divide="ignore", invalid="ignore"):
            mx = sx / n
            vx = sxx - sx * mx
            # Sums kept by adding and taking out lose a little to rounding: a variance
            # below that is none (a window of one time).
            enough = (n >= s.min_points) & (vx > 1e-9 * np.maximum(sxx, 1.0))
            if not np.any(enough):
                slope[:] = np.nan
                return Predictions(tier=self.tier, eta=self.eta, slope=self.slope)
            my = sy / n
            np.multiply(sx, my, out=slope)  # slope = (Σxy − Σx·ȳ) / vx, in place
            np.subtract(sxy, slope, out=slope)
            slope /= vx
            end = slope * (x_now - mx + s.horizon_s)
            end += my  # where the fitted line is at the horizon
            reach = end >= self.high_gate[lo:hi]
            reach |= end <= self.low_gate[lo:hi]
            if np.ndim(enough):
                reach &= enough
        # Few sensors have a setpoint within reach: only they get the noise test and
        # the projection.
        at = np.flatnonzero(reach)
        if at.size:

            def pick(a: Any) -> Any:
                return a if np.ndim(a) == 0 else a[at]

            level = pick(my) + slope[at] * (x_now - pick(mx))  # the fitted value now
            self._project(
                now,
                lo + at,
                n=pick(n),
                vx=pick(vx),
                sy=sy[at],
                my=my[at],
                slope=slope[at],
                level=level,
                tier=tier,
            )
        return Predictions(tier=self.tier, eta=self.eta, slope=self.slope)

    def _project(
        self,
        now: float,
        at: NDArray[np.intp],
        *,
        n: Any,
        vx: Any,
        sy: NDArray[np.float64],
        my: NDArray[np.float64],
        slope: NDArray[np.float64],
        level: NDArray[np.float64],
        tier: NDArray[np.int8],
    ) -> None:
        """For the sensors `at` (positions in this predictor) with a setpoint in reach:
        the noise test, then the first crossing ahead within the horizon."""
        syy = self.syy[at]
        cov = slope * vx
        with np.errstate(divide="ignore", invalid="ignore"):
            resid = syy - sy * my - slope * cov
            resid = np.where(resid > 1e-12 * np.maximum(syy, 1.0), resid, 0.0)
            # |slope| / se ≥ min_t, squared (se² = resid / (n − 2) / vx): no square root
            clear = (
                np.isfinite(slope)
                & (slope != 0)
                & (slope * slope * (n - 2) * vx >= self.min_t2 * resid)
            )
        now_tier = tier[self.sensors[at]]
        best_eta = np.full(at.shape[0], np.nan)
        best_tier = np.zeros(at.shape[0], dtype=np.int8)
        with np.errstate(divide="ignore", invalid="ignore"):
            for columns, rising in ((HIGH_COLUMNS, True), (LOW_COLUMNS, False)):
                heading = clear & ((slope > 0) if rising else (slope < 0))
                for col, to_tier in columns:
                    sp = self.setpoint[at, col]
                    before = (level < sp) if rising else (level > sp)
                    dt = (sp - level) / slope
                    hit = (
                        heading & np.isfinite(sp) & before & (dt >= 0)
                        & (dt <= self.settings.horizon_s) & (now_tier < to_tier)
                    )  # fmt: skip
                    eta = now + dt
                    # the first crossing ahead (the lower tier comes first on its side)
                    take = hit & ~(np.isfinite(best_eta) & (best_eta <= eta))
                    best_eta = np.where(take, eta, best_eta)
                    best_tier = np.where(take, to_tier, best_tier).astype(np.int8)
        self.tier[at] = best_tier
        self.eta[at] = best_eta
        b = self.last
        self.hits[b] = np.concatenate([self.hits[b], at[best_tier > 0]])


class LivePredictor:
    """The predictor as an evaluator-stage listener, on ticks: each tick samples the
    sensors' readings (NaN in FAULT) and refreshes `active`, the crossings predicted now
    (position in `ids` → (tier, eta)), and `events`, what started or ended since (the
    newest last, at most `EVENTS_KEPT`). One `Predictor` per distinct settings the
    sensor types ask for. Never raises into the evaluator: a failure is logged once and counted."""

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
        groups: dict[PredictSettings, list[tuple[int, Any]]] = {}
        for k, p in chosen:
            groups.setdefault(PredictSettings.of(p), []).append((k, p))
        self.config = config
        self.evaluator = evaluator
        self._clock = clock
        self.ids: list[str] = []
        self.zones: list[str] = []
        #: each predictor (one per distinct settings) with the position in `ids` of
        #: its first sensor
        self.predictors: list[tuple[int, Predictor]] = []
        for key, part in groups.items():
            self.predictors.append(
                (
                    len(self.ids),
                    Predictor(
                        sensors=np.array([k for k, _ in part], dtype=np.intp),
                        setpoint=evaluator.table.setpoint,
                        settings=key,
                        step_s=step_s,
                    ),
                )
            )
            self.ids += [config.sensors[k].id for k, _ in part]
            self.zones += [config.sensors[k].zone for k, _ in part]
        self.active: dict[int, tuple[int, float]] = {}
        self.events: list[dict[str, Any]] = []
        self.failures = 0
        self.seq = 0

    def on_evaluation(self, batch: ReadingBatch, _: Evaluation) -> None:
        if len(batch) or not self.predictors:
            return
        try:
            self._tick(self._clock())
        except Exception:
            self.failures += 1
            if self.failures == 1:
                log.exception("predictive warning: a tick could not be counted")

    def _tick(self, now: float) -> None:
        ev = self.evaluator
        active: dict[int, tuple[int, float]] = {}
        for start, predictor in self.predictors:
            predictor.sample(now, ev.last_value, ev.faulted)
            found = predictor.predict(now, ev.tier)
            hits = np.flatnonzero(found.tier)
            # A block refitted ticks ago may stand for a tier its sensor has reached
            # since: that crossing is no longer ahead.
            hits = hits[found.tier[hits] > ev.tier[predictor.sensors[hits]]]
            for i in hits.tolist():
                active[start + i] = (int(found.tier[i]), float(found.eta[i]))
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

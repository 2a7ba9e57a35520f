"""`ShiftFigures`: each zone's readings summed up per shift — the peak, the time-weighted
mean, and the time spent at or above each tier — for the governance board.

Figures are kept per zone and sensor type (a zone with dust monitors and gas detectors
has one row for each: their units differ). They are columns over every sensor, updated
with numpy in the evaluator's pass: each batch raises the sensors' peaks (a transient
that comes and goes inside one batch still counts), and each tick adds the time since
the last tick to the mean and to the time at each tier, taking each sensor's value and
tier as they stood over that time (sensors in FAULT or without a value add nothing to
the mean). A group is "at a tier" while any of its sensors is. At a shift's end its
figures are closed and kept (the last `KEEP` shifts) for the desk part to store; time
the control part was not running is not counted (`covered_s` says how much was).

Exposure: for each sensor whose type has an `exposure_limit`, the shift's time-weighted
average (TWA: Σ value·dt over the time it had a value) and its peak, against the limit.

Decisions use the service clock (monotonic); a tick long after the last (a stall, or
the first after a restart) adds at most `MAX_STEP_S`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
from numpy.typing import NDArray

from ehswatch.config import PlantConfig, Shift
from ehswatch.governance.shifts import ShiftSpan, on_at
from ehswatch.readings import ReadingBatch
from ehswatch.thresholds.evaluator import Evaluator
from ehswatch.thresholds.outcome import Evaluation

KEEP = 6  # closed shifts kept in memory for the desk part to store
PUBLIC_S = 5.0
log = logging.getLogger(__name__)
MAX_STEP_S = 5.0
TIERS = 3


@dataclass(frozen=True, kw_only=True, slots=True)
class Groups:
    """Sensors grouped by (zone, sensor type), sorted for `reduceat`."""

    keys: tuple[tuple[str, str], ...]
    order: NDArray[np.intp]  # sensor indices, group by group
    starts: NDArray[np.intp]  # where each group begins in `order`
    of_sensor: NDArray[np.intp]  # each sensor's group

    @classmethod
    def of(cls, config: PlantConfig) -> Groups:
        keys = sorted({(s.zone, s.type) for s in config.sensors})
        index = {k: g for g, k in enumerate(keys)}
        of_sensor = np.array([index[(s.zone, s.type)] for s in config.sensors], dtype=np.intp)
        order = np.argsort(of_sensor, kind="stable").astype(np.intp)
        starts = np.searchsorted(of_sensor[order], np.arange(len(keys))).astype(np.intp)
        return cls(keys=tuple(keys), order=order, starts=starts, of_sensor=of_sensor)


@dataclass(frozen=True, kw_only=True, slots=True)
class Exposed:
    """The sensors whose type has an exposure limit: their indices and what names them."""

    sensors: NDArray[np.intp]
    ids: tuple[str, ...]
    zones: tuple[str, ...]
    types: tuple[str, ...]
    limits: tuple[float, ...]

    @classmethod
    def of(cls, config: PlantConfig) -> Exposed:
        chosen = [
            (k, s, config.sensor_types[s.type].exposure_limit)
            for k, s in enumerate(config.sensors)
            if config.sensor_types[s.type].exposure_limit is not None
        ]
        return cls(
            sensors=np.array([k for k, _, _ in chosen], dtype=np.intp),
            ids=tuple(s.id for _, s, _ in chosen),
            zones=tuple(s.zone for _, s, _ in chosen),
            types=tuple(s.type for _, s, _ in chosen),
            limits=tuple(float(limit or 0) for _, _, limit in chosen),
        )

    @classmethod
    def none(cls) -> Exposed:
        return cls(sensors=np.zeros(0, np.intp), ids=(), zones=(), types=(), limits=())


class ShiftFigures:
    def __init__(
        self,
        *,
        groups: Groups,
        shifts: Sequence[Shift],
        timezone: str,
        exposed: Exposed | None = None,
    ) -> None:
        self.groups = groups
        self.exposed = exposed if exposed is not None else Exposed.none()
        self.shifts = list(shifts)
        self.tz = ZoneInfo(timezone)
        n = groups.of_sensor.shape[0]
        self._peak = np.full(n, np.nan)  # per sensor, this shift
        self._g = len(groups.keys)
        self._reset()
        self.shift: ShiftSpan | None = None
        self.closed: list[dict[str, Any]] = []
        self._last: float | None = None
        self._public: tuple[dict[str, Any], list[dict[str, Any]]] | None = None
        self._public_at = 0.0

    def _reset(self) -> None:
        self._peak[:] = np.nan
        self._wsum = np.zeros(self._g)
        self._wtime = np.zeros(self._g)
        self._above = np.zeros((TIERS, self._g))
        self._covered = 0.0
        m = self.exposed.sensors.shape[0]
        self._e_sum, self._e_time = np.zeros(m), np.zeros(m)

    def on_batch(self, sensor: NDArray[np.int32], value: NDArray[np.float64]) -> None:
        """Raise the peaks of the batch's sensors (NaN, a fault, raises nothing)."""
        if sensor.shape[0]:
            np.fmax.at(self._peak, sensor, value)

    def on_tick(self, now: float, value: NDArray[np.float64], tier: NDArray[np.int8]) -> None:
        """Add the time since the last tick, with each sensor's `value` and `tier`; at a
        shift change, close the shift that ended."""
        span = on_at(self.shifts, self.tz, now) if self.shifts else None
        if span != self.shift:
            if self.shift is not None:
                self.closed = [*self.closed, self.figures()][-KEEP:]
            self.shift = span
            self._reset()
            self._last = now
            return
        if self._last is None or span is None:
            self._last = now
            return
        dt = min(max(now - self._last, 0.0), MAX_STEP_S)
        self._last = now
        if dt == 0.0:
            return
        g = self.groups
        v = value[g.order]
        finite = np.isfinite(v)
        self._wsum += dt * np.add.reduceat(np.where(finite, v, 0.0), g.starts)
        self._wtime += dt * np.add.reduceat(finite.astype(np.float64), g.starts)
        worst = np.maximum.reduceat(tier[g.order], g.starts)
        for k in range(TIERS):
            self._above[k] += dt * (worst >= k + 1)
        self._covered += dt
        if self.exposed.sensors.shape[0]:
            e = value[self.exposed.sensors]
            ok = np.isfinite(e)
            self._e_sum += dt * np.where(ok, e, 0.0)
            self._e_time += dt * ok

    def figures(self) -> dict[str, Any]:
        """The shift so far: one row per (zone, sensor type)."""
        assert self.shift is not None
        g = self.groups
        peak = np.fmax.reduceat(self._peak[g.order], g.starts)
        mean = np.divide(
            self._wsum, self._wtime, out=np.full(self._g, np.nan), where=self._wtime > 0
        )
        rows = [
            {
                "zone": zone,
                "sensor_type": kind,
                "max": _number(peak[i]),
                "mean": _number(mean[i]),
                "above_warning_s": round(float(self._above[0, i]), 1),
                "above_alarm_s": round(float(self._above[1, i]), 1),
                "above_interlock_s": round(float(self._above[2, i]), 1),
            }
            for i, (zone, kind) in enumerate(g.keys)
        ]
        ex = self.exposed
        twa = np.divide(
            self._e_sum,
            self._e_time,
            out=np.full(self._e_sum.shape, np.nan),
            where=self._e_time > 0,
        )
        exposure = [
            {
                "sensor": ex.ids[i],
                "zone": ex.zones[i],
                "sensor_type": ex.types[i],
                "twa": _number(twa[i]),
                "peak": _number(self._peak[ex.sensors[i]]),
                "limit": ex.limits[i],
                "measured_s": round(float(self._e_time[i]), 1),
            }
            for i in range(len(ex.ids))
        ]
        s = self.shift
        return {
            "shift": s.name,
            "start": s.start,
            "end": s.end,
            "covered_s": round(self._covered, 1),
            "rows": rows,
            "exposure": exposure,
        }

    def public(self) -> dict[str, Any]:
        """The current shift so far and the shifts closed lately (the status document):
        the current figures computed at most every `PUBLIC_S` (the status goes out every
        tick; a large plant's figures need not be rebuilt that often)."""
        now = self._last or 0.0
        if (
            self._public is None
            or now - self._public_at >= PUBLIC_S
            or self._public[1] is not self.closed
        ):
            current = self.figures() if self.shift is not None else None
            self._public = ({"current": current, "closed": self.closed}, self.closed)
            self._public_at = now
        return self._public[0]


def _number(x: float) -> float | None:
    return round(float(x), 3) if np.isfinite(x) else None


class LiveShiftFigures(ShiftFigures):
    """`ShiftFigures` as an evaluator-stage listener: batches raise peaks (readings of
    good quality only), ticks add time with the evaluator's values and tiers."""

    def __init__(
        self, config: PlantConfig, *, evaluator: Evaluator, clock: Callable[[], float]
    ) -> None:
        super().__init__(
            groups=Groups.of(config),
            shifts=config.site.shifts,
            timezone=config.site.timezone,
            exposed=Exposed.of(config),
        )
        self.evaluator = evaluator
        self._clock = clock
        self.failures = 0

    def on_evaluation(self, batch: ReadingBatch, _: Evaluation) -> None:
        """Never raises into the evaluator: a failure is logged (once) and counted, and
        the figures go on from the next batch."""
        try:
            if len(batch):
                good = (batch.quality == 0) & np.isfinite(batch.value)
                self.on_batch(batch.sensor, np.where(good, batch.value, np.nan))
                return
            ev = self.evaluator
            self.on_tick(self._clock(), np.where(ev.faulted, np.nan, ev.last_value), ev.tier)
        except Exception:
            self.failures += 1
            if self.failures == 1:
                log.exception("shift figures: an evaluation could not be counted")

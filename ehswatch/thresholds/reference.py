"""The threshold rules of SPEC §5, as plain Python, one reading at a time.

This is the specification the vectorized `Evaluator` is tested against: written to be
read, not to be fast. The rules, precisely:

Latches. Every sensor has up to six latches, one per (side, tier) with a setpoint. A high
latch *wants to rise* while value >= setpoint and *wants to fall* while
value < setpoint - deadband; a low latch mirrors it (value <= setpoint to rise,
value > setpoint + deadband to fall). The sensor's tier is the highest level among its
active latches, either side; 0 when none is.

Delays. A latch changes once its wish has held continuously for the delay (on_delay_s to
rise, off_delay_s to fall), counted from the first reading that expressed it. Between
readings the last value holds (as in any scanned control system), but only until the
sensor goes stale. So a change matures at `since + delay`, whether that moment is
noticed by the next reading or by a timer tick; either way the change is stamped with the
moment it matured. A reading at exactly that moment decides with its own value.

Instants. All latch changes of one sensor at the same instant make one transition (a jump
from 0 to 3 is one transition 0 → 3, not three).

Faults. A reading that is NaN, infinite or of non-zero quality faults the sensor (reason
BAD). No reading for more than stale_after_s faults it at last reading + stale_after_s
(reason STALE); before any reading, the stale clock starts at the evaluator's start. A
good reading clears the fault. While faulted, latches keep their state (an alarm is not
cleared by missing data) and no delay runs: continuity cannot be shown through a gap.

Order. A reading older than the sensor's latest reading is dropped and counted.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ehswatch.thresholds.outcome import Evaluation, EvaluationBuilder
from ehswatch.thresholds.table import SensorThresholds
from ehswatch.thresholds.tier import LATCH_IS_LOW, LATCH_LEVEL, FaultReason

Reading = tuple[int, float, float, int]  # sensor index, value, ts, quality


@dataclass
class _Latch:
    level: int
    low: bool
    setpoint: float
    deadband: float
    active: bool = False
    since: float | None = None  # start of the current unbroken wish to change

    def wants_change(self, value: float) -> bool:
        if self.low:
            return value > self.setpoint + self.deadband if self.active else value <= self.setpoint
        return value < self.setpoint - self.deadband if self.active else value >= self.setpoint


@dataclass
class _Sensor:
    latches: list[_Latch]
    on_delay: float
    off_delay: float
    stale_after: float
    last_ts: float
    last_value: float = math.nan
    faulted: bool = False
    reason: FaultReason = FaultReason.NONE
    changes: list[tuple[float, float, float]] = field(default_factory=list)

    def delay(self, latch: _Latch) -> float:
        return self.off_delay if latch.active else self.on_delay

    def tier(self) -> int:
        return max((la.level for la in self.latches if la.active), default=0)

    def top_setpoint(self) -> float:
        """Setpoint of the most severe active latch (high side first on a tie)."""
        best: _Latch | None = None
        for la in self.latches:
            if la.active and (best is None or la.level > best.level):
                best = la
        return math.nan if best is None else best.setpoint


class ReferenceEvaluator:
    """Same contract as `Evaluator`, reading by reading."""

    def __init__(self, sensors: Sequence[SensorThresholds], start_ts: float) -> None:
        self._sensors = [
            _Sensor(
                latches=[
                    _Latch(
                        level=int(LATCH_LEVEL[k]),
                        low=bool(LATCH_IS_LOW[k]),
                        setpoint=sp,
                        deadband=s.deadband,
                    )
                    for k, sp in enumerate(s.setpoints())
                    if sp is not None
                ],
                on_delay=s.on_delay_s,
                off_delay=s.off_delay_s,
                stale_after=s.stale_after_s,
                last_ts=start_ts,
            )
            for s in sensors
        ]

    def tiers(self) -> list[int]:
        return [s.tier() for s in self._sensors]

    def faulted(self) -> list[bool]:
        return [s.faulted for s in self._sensors]

    def process(self, readings: Iterable[Reading]) -> Evaluation:
        out = EvaluationBuilder()
        tiers = []
        for index, value, ts, quality in readings:
            self._reading(index, value, ts, quality, out)
            tiers.append(self._sensors[index].tier())
        return out.build(reading_tier=np.array(tiers, dtype=np.int8))

    def tick(self, now: float) -> Evaluation:
        out = EvaluationBuilder()
        for i, s in enumerate(self._sensors):
            self._advance(i, s, now, out)
        return out.build()

    # ---------------------------------------------------------------- the rules

    def _advance(self, i: int, s: _Sensor, t: float, out: EvaluationBuilder) -> None:
        """Let time pass up to (not including) `t` with the last value held."""
        if s.faulted:
            return
        stale_at = s.last_ts + s.stale_after
        horizon = min(t, stale_at)
        due = sorted(
            (
                (la.since + s.delay(la), k)
                for k, la in enumerate(s.latches)
                if la.since is not None and la.since + s.delay(la) < horizon
            ),
        )
        while due:
            instant = due[0][0]
            now_due = [k for m, k in due if m == instant]
            due = [(m, k) for m, k in due if m != instant]
            before_tier, before_sp = s.tier(), s.top_setpoint()
            for k in now_due:
                s.latches[k].active = not s.latches[k].active
                s.latches[k].since = None
            self._report(i, s, before_tier, before_sp, s.last_value, instant, out)
        if stale_at < t:
            s.faulted, s.reason = True, FaultReason.STALE
            for la in s.latches:
                la.since = None
            _fault(out, i, True, FaultReason.STALE, s.last_value, stale_at)

    def _reading(
        self, i: int, value: float, ts: float, quality: int, out: EvaluationBuilder
    ) -> None:
        s = self._sensors[i]
        if ts < s.last_ts:
            out.out_of_order += 1
            return
        self._advance(i, s, ts, out)
        bad = quality != 0 or not math.isfinite(value)
        before_tier, before_sp = s.tier(), s.top_setpoint()
        for la in s.latches:
            if bad or not la.wants_change(value):
                la.since = None
                continue
            if la.since is None:
                la.since = ts
            if la.since + s.delay(la) <= ts:
                la.active = not la.active
                la.since = None
        self._report(i, s, before_tier, before_sp, value, ts, out)
        if bad and not s.faulted:
            s.faulted, s.reason = True, FaultReason.BAD
            _fault(out, i, True, FaultReason.BAD, value, ts)
        elif not bad and s.faulted:
            _fault(out, i, False, s.reason, value, ts)
            s.faulted, s.reason = False, FaultReason.NONE
        s.last_ts, s.last_value = ts, value

    @staticmethod
    def _report(
        i: int,
        s: _Sensor,
        before_tier: int,
        before_sp: float,
        value: float,
        ts: float,
        out: EvaluationBuilder,
    ) -> None:
        after = s.tier()
        if after == before_tier:
            return
        threshold = s.top_setpoint() if after > before_tier else before_sp
        out.transitions(
            np.array([i]),
            np.array([before_tier]),
            np.array([after]),
            np.array([value]),
            np.array([threshold]),
            np.array([ts]),
        )


def _fault(
    out: EvaluationBuilder, i: int, on: bool, reason: FaultReason, value: float, ts: float
) -> None:
    out.faults(
        np.array([i]), np.array([on]), np.array([int(reason)]), np.array([value]), np.array([ts])
    )

"""The threshold rules of docs/thresholds.md, as plain Python, one reading at a time.

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

Order. Within a batch each sensor's readings are taken in timestamp order (a stable sort:
equal timestamps keep their arrival order), whatever order the source sent them in.

Decided time. A sensor's *decided time* is the latest instant its state is decided for:
its latest in-order reading, or a later change that the passing of time made (a delay
that matured or staleness noticed by a tick or a reading, stamped at the instant it
happened). Before any of that it is -inf. A sensor's changes are therefore stamped in
time order, whatever the order its readings arrive in.

Late readings. A reading older than its sensor's decided time is *late*. It is
counted, and taken at the sensor's decided time under a raise-only rule: it may start or
complete a rise (an inactive latch whose rise it wishes: on-delay counted from the
sensor's latest time, so it completes only with on_delay_s 0), and it may cancel a
pending fall (an active latch it does not wish to fall); it never starts or completes a
fall, never cancels a pending rise, never clears or raises a fault and never becomes the
sensor's latest reading. A late reading of a faulted sensor, or a bad late reading,
changes nothing but the count.

Future readings. A reading stamped more than max_ahead_s after the service clock's `now`
(given to `process`) is rejected: counted, never taken, never the sensor's latest.

Too old. A reading stamped more than max_behind_s before `now` is rejected the same way
(counted apart): the horizon of a backlog worth evaluating. For the skew run it counts as
a future reading does.

Clock skew. A late or future reading starts the sensor's skew run at the service clock's
`now`, unless one is running; an accepted in-order reading ends it. A late or future
reading that arrives clock_skew_after_s or more after its run began puts the sensor in
FAULT (reason CLOCK_SKEW) at its latest time, unless it is already faulted, and is not
taken. So a burst of old readings (a gateway replaying its buffer) is taken raise-only
and faults nothing, while a device whose clock stays wrong is a fault within
clock_skew_after_s. Like any fault it ends every pending delay, and the next good
in-order reading clears it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

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
    max_ahead: float
    max_behind: float
    skew_after: float
    last_ts: float
    last_value: float = math.nan
    faulted: bool = False
    reason: FaultReason = FaultReason.NONE
    decided: float = -math.inf  # the latest instant the sensor's state is decided for
    skew_since: float | None = None  # service time the current skew run began

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
                max_ahead=s.max_ahead_s,
                max_behind=s.max_behind_s,
                skew_after=s.clock_skew_after_s,
                last_ts=start_ts,
            )
            for s in sensors
        ]

    def tiers(self) -> list[int]:
        return [s.tier() for s in self._sensors]

    def faulted(self) -> list[bool]:
        return [s.faulted for s in self._sensors]

    def process(self, readings: Iterable[Reading], now: float = math.inf) -> Evaluation:
        """One batch; `now` is the service clock (for the future-reading rule)."""
        out = EvaluationBuilder()
        batch = list(readings)
        tiers = [0] * len(batch)
        accepted = [True] * len(batch)
        # Python's sort is stable: equal timestamps keep their arrival order.
        for k in sorted(range(len(batch)), key=lambda k: batch[k][2]):
            index, value, ts, quality = batch[k]
            accepted[k] = self._reading(index, value, ts, quality, now, out)
            tiers[k] = self._sensors[index].tier()
        return out.build(
            reading_tier=np.array(tiers, dtype=np.int8), accepted=np.array(accepted, dtype=bool)
        )

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
            s.decided = max(s.decided, instant)
        if stale_at < t:
            s.decided = max(s.decided, stale_at)
            s.faulted, s.reason = True, FaultReason.STALE
            for la in s.latches:
                la.since = None
            _fault(out, i, True, FaultReason.STALE, s.last_value, stale_at)

    def _reading(
        self, i: int, value: float, ts: float, quality: int, now: float, out: EvaluationBuilder
    ) -> bool:
        """Take one reading; False if it was rejected (stamped too far ahead)."""
        s = self._sensors[i]
        bad = quality != 0 or not math.isfinite(value)
        if not math.isfinite(ts) or not ts <= now + s.max_ahead:
            out.future += 1
            self._skewed(i, s, now, out)
            return False
        if math.isfinite(now) and ts < now - s.max_behind:
            out.too_old += 1
            self._skewed(i, s, now, out)
            return False
        if ts < s.decided:
            out.late += 1
            if not self._skewed(i, s, now, out) and not s.faulted and not bad:
                self._late(i, s, value, out)
            return True
        s.skew_since = None
        self._advance(i, s, ts, out)
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
        s.decided = ts
        return True

    def _skewed(self, i: int, s: _Sensor, now: float, out: EvaluationBuilder) -> bool:
        """A late or future reading at `now`; True if it put the sensor in FAULT
        clock_skew."""
        if s.skew_since is None:
            s.skew_since = now
        # With no clock given (`now` infinite) nothing can be measured.
        if s.faulted or not math.isfinite(now) or not now - s.skew_since >= s.skew_after:
            return False
        s.faulted, s.reason = True, FaultReason.CLOCK_SKEW
        for la in s.latches:
            la.since = None
        _fault(out, i, True, FaultReason.CLOCK_SKEW, s.last_value, max(s.decided, s.last_ts))
        return True

    def _late(self, i: int, s: _Sensor, value: float, out: EvaluationBuilder) -> None:
        """The raise-only rule for a good late reading, taken at the sensor's decided time."""
        at = s.decided
        before_tier, before_sp = s.tier(), s.top_setpoint()
        for la in s.latches:
            if la.active:
                if not la.wants_change(value):
                    la.since = None  # the value was not low: no unbroken fall
            elif la.wants_change(value):
                if la.since is None:
                    la.since = at
                if la.since + s.on_delay <= at:
                    la.active, la.since = True, None
        self._report(i, s, before_tier, before_sp, value, at, out)

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

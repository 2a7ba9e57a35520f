"""`ServiceClock`: the one clock every decision of the service runs on.

Decisions (on/off delays, staleness, ticks, bypass expiry, escalation and deadline timers,
the time the service stamps on readings that carry none) need a clock that never goes
backward and never jumps: a wall clock stepped by NTP or an RTC fix would otherwise
blind sensors, move a bypass's expiry or stall escalation. Records need epoch seconds
that people and InfluxDB understand.

`ServiceClock` gives both: epoch seconds taken from the wall clock once, at start, and
advanced from then on by the monotonic clock only. A later step of the wall clock changes
nothing the service decides; `wall_offset()` tells how far the wall clock has moved away
(reported on `/health` and in the log, so an operator sees a stepped or drifting clock),
and a restart takes the wall clock's time again.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class ServiceClock:
    """Epoch seconds that follow the monotonic clock from the moment of creation.

    `wall` and `monotonic` are the sources (tests pass controllable ones). Calling the
    clock returns the current service time; successive calls never decrease.
    """

    def __init__(
        self,
        *,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._wall = wall
        self._monotonic = monotonic
        self._mono0 = monotonic()
        self._epoch0 = wall()
        self._last = self._epoch0

    def __call__(self) -> float:
        now = self._epoch0 + (self._monotonic() - self._mono0)
        # Monotonic sources never go back; the max is a guard against a faulty one.
        if now < self._last:
            return self._last
        self._last = now
        return now

    def monotonic(self) -> float:
        """The monotonic source itself (for intervals that need no epoch)."""
        return self._monotonic()

    def wall_offset(self) -> float:
        """Wall clock minus service clock, in seconds: how far the wall clock was stepped
        or drifted since start (positive: the wall clock is ahead)."""
        return self._wall() - self()


class SteppableClock:
    """A controllable pair of clocks for tests: `monotonic` advances only through
    `advance()`; the wall clock advances with it and can also be stepped on its own
    (`step_wall`), as NTP or an RTC fix would step it."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self._mono = 1000.0
        self._wall = start

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("time advances forward only; use step_wall for a wall step")
        self._mono += seconds
        self._wall += seconds

    def step_wall(self, seconds: float) -> None:
        self._wall += seconds

    def wall(self) -> float:
        return self._wall

    def monotonic(self) -> float:
        return self._mono

    def service_clock(self) -> ServiceClock:
        return ServiceClock(wall=self.wall, monotonic=self.monotonic)


#: how far (seconds) the wall clock may move away from the service clock before the
#: service says so (a warning in the log, `degraded` on /health)
WALL_OFFSET_TOLERANCE_S = 1.0


def wall_offset_problem(offset: float) -> str | None:
    """The operator's reason when the wall clock is too far from the service clock."""
    if abs(offset) <= WALL_OFFSET_TOLERANCE_S:
        return None
    return f"wall clock stepped or drifted by {offset:+.1f} s since start"

"""Sign-in throttling: repeated failures slow further attempts down (a pure rule).

Failures are counted per key — the name tried, and the client's address, each on its
own — within `window_s`. Up to `free` failures cost nothing; after that each attempt
waits `first_s`, doubling per further failure up to `longest_s`. A success clears the
name's count (not the address's: one good password must not unlock guessing at others).
Time is the caller's monotonic clock.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass(kw_only=True)
class LoginThrottle:
    free: int = 5
    window_s: float = 900.0
    first_s: float = 1.0
    longest_s: float = 900.0
    max_keys: int = 10_000  # a flood of made-up names cannot grow this without bound
    _failures: dict[str, deque[float]] = field(default_factory=dict)

    def wait_s(self, keys: tuple[str, ...], now: float) -> float:
        """How long before another attempt for `keys` is allowed (0: now)."""
        return max((self._wait(key, now) for key in keys), default=0.0)

    def _wait(self, key: str, now: float) -> float:
        times = self._recent(key, now)
        over = len(times) - self.free
        if over < 0 or not times:
            return 0.0
        delay = min(self.first_s * 2.0**over, self.longest_s)
        return max(0.0, times[-1] + delay - now)

    def failed(self, keys: tuple[str, ...], now: float) -> None:
        for key in keys:
            if key not in self._failures and len(self._failures) >= self.max_keys:
                self._forget_oldest()
            self._failures.setdefault(key, deque()).append(now)
            self._recent(key, now)

    def succeeded(self, key: str) -> None:
        self._failures.pop(key, None)

    def failures(self, key: str, now: float) -> int:
        return len(self._recent(key, now))

    def _recent(self, key: str, now: float) -> deque[float]:
        times = self._failures.get(key, deque())
        while times and times[0] <= now - self.window_s:
            times.popleft()
        if not times:
            self._failures.pop(key, None)
        return times

    def _forget_oldest(self) -> None:
        oldest = min(self._failures, key=lambda k: self._failures[k][-1])
        del self._failures[oldest]

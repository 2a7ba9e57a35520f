"""`SensorHistory`: the board's sparklines, downsampled so memory stays flat per sensor.

Fed at every evaluator tick with the evaluator's last values and tiers, it closes one
step every `step_s` (config `api.history_step_s`, default 10 s): the step's row is the
last value of each sensor and the worst tier it was at during the step (a spike shorter
than a step still colours the sparkline). The rows go to the shared state's ring of
`api.history_points` rows (default 60: ten minutes), 5 bytes per sensor and row; with
InfluxDB, Grafana shows the long history at full rate.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

Row = tuple[NDArray[np.float32], NDArray[np.int8], float]


class SensorHistory:
    def __init__(self, sensors: int, step_s: float) -> None:
        self.step_s = step_s
        self._worst = np.zeros(sensors, dtype=np.int8)
        self._due: float | None = None

    def tick(self, now: float, value: NDArray[np.float64], tier: NDArray[np.int8]) -> Row | None:
        """The row of the step that ends at this tick, or None while it goes on. The
        first tick closes a step at once, so that a board has a point from the start."""
        np.maximum(self._worst, tier, out=self._worst)
        if self._due is not None and now < self._due:
            return None
        row = (value.astype(np.float32), self._worst.copy(), now)
        self._worst[:] = 0
        # From the planned time, not from now: a late tick does not shift every later step.
        self._due = now + self.step_s if self._due is None else max(self._due + self.step_s, now)
        return row

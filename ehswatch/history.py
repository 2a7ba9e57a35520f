"""`SensorHistory`: the last minutes of every sensor, in memory, for the board's sparklines.

An evaluator-stage listener: at every tick (once a second) it copies the evaluator's last
value and tier of every sensor into a ring of `seconds` slots. Storage needs no server
for this (the demo has no InfluxDB); with InfluxDB, Grafana shows the long history.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from ehswatch.readings import ReadingBatch
from ehswatch.thresholds.evaluator import Evaluator
from ehswatch.thresholds.outcome import Evaluation


class SensorHistory:
    def __init__(self, evaluator: Evaluator, seconds: int = 600) -> None:
        self.evaluator = evaluator
        n = evaluator.table.size
        self.seconds = seconds
        self.values = np.full((n, seconds), np.nan)
        self.tiers = np.zeros((n, seconds), dtype=np.int8)
        self.stamps = np.full(seconds, np.nan)
        self._next = 0

    def on_evaluation(self, batch: ReadingBatch, _: Evaluation) -> None:
        if len(batch):
            return  # ticks only: one sample a second
        k = self._next % self.seconds
        self.values[:, k] = self.evaluator.last_value
        self.tiers[:, k] = self.evaluator.tier
        self.stamps[k] = float(np.nanmax(self.evaluator.last_ts)) if self.values.size else math.nan
        self._next += 1

    def of(self, sensor: int, last: int | None = None) -> tuple[list[float | None], list[int]]:
        """Values (None where unknown) and tiers of one sensor, oldest first."""
        count = (
            min(self._next, self.seconds) if last is None else min(last, self._next, self.seconds)
        )
        idx = (np.arange(self._next - count, self._next) % self.seconds).astype(np.intp)
        vals: NDArray[np.float64] = self.values[sensor, idx]
        return (
            [None if not math.isfinite(v) else round(float(v), 4) for v in vals],
            self.tiers[sensor, idx].tolist(),
        )

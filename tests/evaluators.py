"""Both evaluators behind one small interface, so every rule test runs against each."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol

from ehswatch.readings import ReadingBatch
from ehswatch.thresholds import Evaluation, Evaluator, SensorThresholds, ThresholdTable
from ehswatch.thresholds.reference import ReferenceEvaluator

# (sensor id, value, ts[, quality])
Feed = Sequence[tuple[str, float, float] | tuple[str, float, float, int]]


class Harness(Protocol):
    def feed(self, readings: Feed, now: float = math.inf) -> Evaluation: ...
    def tick(self, now: float) -> Evaluation: ...
    def tier(self, sensor_id: str) -> int: ...
    def faulted(self, sensor_id: str) -> bool: ...
    def index(self, sensor_id: str) -> int: ...


class _Base:
    def __init__(self, sensors: Sequence[SensorThresholds]) -> None:
        self._index = {s.sensor_id: i for i, s in enumerate(sensors)}

    def index(self, sensor_id: str) -> int:
        return self._index[sensor_id]

    def _rows(self, readings: Feed) -> list[tuple[int, float, float, int]]:
        return [
            (self._index[r[0]], float(r[1]), float(r[2]), int(r[3]) if len(r) > 3 else 0)
            for r in readings
        ]


class VectorizedHarness(_Base):
    def __init__(self, sensors: Sequence[SensorThresholds], start_ts: float = 0.0) -> None:
        super().__init__(sensors)
        self.evaluator = Evaluator(ThresholdTable.build(sensors), start_ts)

    def feed(self, readings: Feed, now: float = math.inf) -> Evaluation:
        rows = self._rows(readings)
        return self.evaluator.process(
            ReadingBatch.of(
                [r[0] for r in rows],
                [r[1] for r in rows],
                [r[2] for r in rows],
                [r[3] for r in rows],
            ),
            now,
        )

    def tick(self, now: float) -> Evaluation:
        return self.evaluator.tick(now)

    def tier(self, sensor_id: str) -> int:
        return int(self.evaluator.tier[self._index[sensor_id]])

    def faulted(self, sensor_id: str) -> bool:
        return bool(self.evaluator.faulted[self._index[sensor_id]])


class ReferenceHarness(_Base):
    def __init__(self, sensors: Sequence[SensorThresholds], start_ts: float = 0.0) -> None:
        super().__init__(sensors)
        self.evaluator = ReferenceEvaluator(sensors, start_ts)

    def feed(self, readings: Feed, now: float = math.inf) -> Evaluation:
        return self.evaluator.process(self._rows(readings), now)

    def tick(self, now: float) -> Evaluation:
        return self.evaluator.tick(now)

    def tier(self, sensor_id: str) -> int:
        return self.evaluator.tiers()[self._index[sensor_id]]

    def faulted(self, sensor_id: str) -> bool:
        return self.evaluator.faulted()[self._index[sensor_id]]


HARNESSES: dict[str, type[VectorizedHarness] | type[ReferenceHarness]] = {
    "vectorized": VectorizedHarness,
    "reference": ReferenceHarness,
}

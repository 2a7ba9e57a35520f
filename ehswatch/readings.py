"""`ReadingBatch`: readings as columns, the only form they take on the hot path.

A batch is four equally long numpy arrays: the dense sensor index (position in the
`ThresholdTable`), the value in the sensor's unit, the timestamp in seconds since the Unix
epoch, and a quality code (0 good; anything else means the source flagged the reading bad).
There is never one Python object per reading.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum

import numpy as np
from numpy.typing import ArrayLike, NDArray

SENSOR_DTYPE = np.int32
QUALITY_DTYPE = np.uint8


class Quality(IntEnum):
    """Quality codes a source may attach; any non-zero code makes the reading bad."""

    GOOD = 0
    BAD = 1
    COMM_LOST = 2  # the collector could not read the device: "sensor lost", never a 0


@dataclass(frozen=True, kw_only=True, slots=True)
class ReadingBatch:
    """Column batch of readings. Use `ReadingBatch.of` to build one from array-likes."""

    sensor: NDArray[np.int32]
    value: NDArray[np.float64]
    ts: NDArray[np.float64]
    quality: NDArray[np.uint8]

    def __post_init__(self) -> None:
        n = self.sensor.shape[0]
        for name in ("sensor", "value", "ts", "quality"):
            col = getattr(self, name)
            if col.ndim != 1 or col.shape[0] != n:
                raise ValueError(
                    f"ReadingBatch.{name}: expected 1-d length {n}, got shape {col.shape}"
                )
        if self.sensor.dtype != SENSOR_DTYPE or self.value.dtype != np.float64:
            raise TypeError(
                "ReadingBatch: sensor must be int32 and value float64 (use ReadingBatch.of)"
            )
        if self.ts.dtype != np.float64 or self.quality.dtype != QUALITY_DTYPE:
            raise TypeError(
                "ReadingBatch: ts must be float64 and quality uint8 (use ReadingBatch.of)"
            )

    def __len__(self) -> int:
        return int(self.sensor.shape[0])

    @classmethod
    def of(
        cls,
        sensor: ArrayLike,
        value: ArrayLike,
        ts: ArrayLike,
        quality: ArrayLike | None = None,
    ) -> ReadingBatch:
        """Coerce array-likes to the batch dtypes; `quality` defaults to all good."""
        s = np.ascontiguousarray(sensor, dtype=SENSOR_DTYPE)
        q = (
            np.zeros(s.shape[0], dtype=QUALITY_DTYPE)
            if quality is None
            else np.ascontiguousarray(quality, dtype=QUALITY_DTYPE)
        )
        return cls(
            sensor=s,
            value=np.ascontiguousarray(value, dtype=np.float64),
            ts=np.ascontiguousarray(ts, dtype=np.float64),
            quality=q,
        )

    @classmethod
    def empty(cls) -> ReadingBatch:
        return cls.of([], [], [], [])

    @classmethod
    def concat(cls, batches: Sequence[ReadingBatch]) -> ReadingBatch:
        """One batch holding the given batches in order (arrival order is kept)."""
        if not batches:
            return cls.empty()
        if len(batches) == 1:
            return batches[0]
        return cls(
            sensor=np.concatenate([b.sensor for b in batches]),
            value=np.concatenate([b.value for b in batches]),
            ts=np.concatenate([b.ts for b in batches]),
            quality=np.concatenate([b.quality for b in batches]),
        )

    def part(self, start: int, stop: int) -> ReadingBatch:
        """Readings `start` to `stop` (views, no copy)."""
        return ReadingBatch(
            sensor=self.sensor[start:stop],
            value=self.value[start:stop],
            ts=self.ts[start:stop],
            quality=self.quality[start:stop],
        )

    def take(self, positions: NDArray[np.intp] | NDArray[np.bool_]) -> ReadingBatch:
        return ReadingBatch(
            sensor=self.sensor[positions],
            value=self.value[positions],
            ts=self.ts[positions],
            quality=self.quality[positions],
        )

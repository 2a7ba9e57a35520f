"""`ThresholdTable`: every sensor's setpoints and timing, compiled once into arrays.

The table is the only place where sensor ids meet dense indices: index i of every array
is the sensor `sensor_ids[i]`. Per-sensor overrides are merged onto the sensor type here,
once, so the evaluator never looks at the config again.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np
from numpy.typing import NDArray

from ehswatch.config import PlantConfig
from ehswatch.thresholds.tier import N_LATCHES

TierTriple = tuple[float | None, float | None, float | None]
NO_TIERS: TierTriple = (None, None, None)


@dataclass(frozen=True, kw_only=True, slots=True)
class SensorThresholds:
    """One sensor's effective rules: setpoints per side as (warning, alarm, interlock)."""

    sensor_id: str
    high: TierTriple = NO_TIERS
    low: TierTriple = NO_TIERS
    deadband: float = 0.0
    on_delay_s: float = 0.0
    off_delay_s: float = 0.0
    stale_after_s: float = 30.0
    max_ahead_s: float = 5.0  # readings stamped further ahead of the service clock: rejected
    max_behind_s: float = 3600.0  # readings stamped further back: rejected (the horizon)
    clock_skew_after_s: float = 10.0  # only late or future readings this long: FAULT clock_skew

    def __post_init__(self) -> None:
        if not (self.max_behind_s > 0):
            raise ValueError(f"{self.sensor_id}.max_behind_s: must be > 0")
        for name in ("deadband", "on_delay_s", "off_delay_s", "max_ahead_s", "clock_skew_after_s"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"{self.sensor_id}.{name}: must be a finite number >= 0, got {v}")
        if not (math.isfinite(self.stale_after_s) and self.stale_after_s > 0):
            raise ValueError(f"{self.sensor_id}.stale_after_s: must be > 0")

    def setpoints(self) -> tuple[float | None, ...]:
        """The six latch setpoints in `LATCH_NAMES` order (None where a tier is unset)."""
        return (*self.high, *self.low)


@dataclass(frozen=True, kw_only=True)
class ThresholdTable:
    """Column arrays of `SensorThresholds`, indexed by dense sensor index."""

    sensor_ids: tuple[str, ...]
    setpoint: NDArray[np.float64]  # (n, 6), NaN where a tier is unset
    deadband: NDArray[np.float64]
    on_delay: NDArray[np.float64]
    off_delay: NDArray[np.float64]
    stale_after: NDArray[np.float64]
    max_ahead: NDArray[np.float64]
    max_behind: NDArray[np.float64]
    skew_after: NDArray[np.float64]
    index: Mapping[str, int] = field(init=False)

    def __post_init__(self) -> None:
        if len(set(self.sensor_ids)) != len(self.sensor_ids):
            raise ValueError("ThresholdTable: duplicate sensor id")
        object.__setattr__(
            self, "index", MappingProxyType({s: i for i, s in enumerate(self.sensor_ids)})
        )
        for arr in (
            self.setpoint,
            self.deadband,
            self.on_delay,
            self.off_delay,
            self.stale_after,
            self.max_ahead,
            self.max_behind,
            self.skew_after,
        ):
            arr.setflags(write=False)

    @property
    def size(self) -> int:
        return len(self.sensor_ids)

    @classmethod
    def build(cls, sensors: Sequence[SensorThresholds]) -> ThresholdTable:
        n = len(sensors)
        setpoint = np.full((n, N_LATCHES), np.nan)
        for i, s in enumerate(sensors):
            setpoint[i] = [np.nan if v is None else v for v in s.setpoints()]
        return cls(
            sensor_ids=tuple(s.sensor_id for s in sensors),
            setpoint=setpoint,
            deadband=np.array([s.deadband for s in sensors], dtype=np.float64),
            on_delay=np.array([s.on_delay_s for s in sensors], dtype=np.float64),
            off_delay=np.array([s.off_delay_s for s in sensors], dtype=np.float64),
            stale_after=np.array([s.stale_after_s for s in sensors], dtype=np.float64),
            max_ahead=np.array([s.max_ahead_s for s in sensors], dtype=np.float64),
            max_behind=np.array([s.max_behind_s for s in sensors], dtype=np.float64),
            skew_after=np.array([s.clock_skew_after_s for s in sensors], dtype=np.float64),
        )

    @classmethod
    def from_config(cls, config: PlantConfig) -> ThresholdTable:
        return cls.build(sensor_thresholds(config))


def sensor_thresholds(config: PlantConfig) -> list[SensorThresholds]:
    """Each sensor's type merged with its own overrides, in config order."""
    out = []
    for s in config.sensors:
        t = config.sensor_types[s.type]
        high, low = t.sides(s)
        out.append(
            SensorThresholds(
                sensor_id=s.id,
                high=_triple(high),
                low=_triple(low),
                deadband=t.deadband if s.deadband is None else s.deadband,
                on_delay_s=t.on_delay_s if s.on_delay_s is None else s.on_delay_s,
                off_delay_s=t.off_delay_s if s.off_delay_s is None else s.off_delay_s,
                stale_after_s=t.stale_after_s if s.stale_after_s is None else s.stale_after_s,
                max_ahead_s=t.max_ahead_s if s.max_ahead_s is None else s.max_ahead_s,
                max_behind_s=t.max_behind_s if s.max_behind_s is None else s.max_behind_s,
                clock_skew_after_s=(
                    t.clock_skew_after_s if s.clock_skew_after_s is None else s.clock_skew_after_s
                ),
            )
        )
    return out


def _triple(tiers: object) -> TierTriple:
    if tiers is None:
        return NO_TIERS
    return (getattr(tiers, "warning"), getattr(tiers, "alarm"), getattr(tiers, "interlock"))  # noqa: B009

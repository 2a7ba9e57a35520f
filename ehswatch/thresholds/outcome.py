"""What an evaluation step produces: tier transitions and fault changes, as columns.

Both evaluators return an `Evaluation` whose rows are ordered by (timestamp, sensor index),
ties kept in the order the events happened, so that two evaluations can be compared as
they are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

TransitionRow = tuple[int, int, int, float | None, float | None, float]
FaultRow = tuple[int, bool, int, float | None, float]


def _opt(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


@dataclass(frozen=True, kw_only=True, slots=True)
class TierTransitions:
    """Tier changes: sensor went `from_tier` → `to_tier` at `ts`.

    `value` is the reading that decided it (for a delayed change, the value held since the
    last reading); `threshold` is the setpoint of the tier entered (rise) or left (fall).
    """

    sensor: NDArray[np.int32]
    from_tier: NDArray[np.int8]
    to_tier: NDArray[np.int8]
    value: NDArray[np.float64]
    threshold: NDArray[np.float64]
    ts: NDArray[np.float64]

    def __len__(self) -> int:
        return int(self.sensor.shape[0])

    def rows(self) -> list[TransitionRow]:
        """Plain tuples (NaN as None), for logs and tests; not for the hot path."""
        return [
            (int(s), int(a), int(b), _opt(v), _opt(t), float(ts))
            for s, a, b, v, t, ts in zip(
                self.sensor,
                self.from_tier,
                self.to_tier,
                self.value,
                self.threshold,
                self.ts,
                strict=True,
            )
        ]


@dataclass(frozen=True, kw_only=True, slots=True)
class FaultChanges:
    """Instrument fault raised (`faulted` true) or cleared, with the `FaultReason` code."""

    sensor: NDArray[np.int32]
    faulted: NDArray[np.bool_]
    reason: NDArray[np.int8]
    value: NDArray[np.float64]
    ts: NDArray[np.float64]

    def __len__(self) -> int:
        return int(self.sensor.shape[0])

    def rows(self) -> list[FaultRow]:
        return [
            (int(s), bool(f), int(r), _opt(v), float(ts))
            for s, f, r, v, ts in zip(
                self.sensor, self.faulted, self.reason, self.value, self.ts, strict=True
            )
        ]


@dataclass(frozen=True, kw_only=True, slots=True)
class Evaluation:
    transitions: TierTransitions
    faults: FaultChanges
    # Readings older than their sensor's latest (taken by the late-reading rule: they may
    # raise a tier, never lower one), and readings stamped too far ahead (rejected).
    late: int = 0
    future: int = 0
    too_old: int = 0  # readings stamped more than max_behind_s before `now`: rejected
    # For `process`: the tier of each reading's sensor just after that reading was taken,
    # aligned with the input batch (what storage writes as the reading's `tier`).
    reading_tier: NDArray[np.int8] = field(default_factory=lambda: np.empty(0, dtype=np.int8))
    # For `process`, aligned with the input batch: False for a reading rejected as stamped
    # too far ahead of the service clock or too far behind it (storage does not keep it).
    accepted: NDArray[np.bool_] = field(default_factory=lambda: np.empty(0, dtype=bool))

    def __bool__(self) -> bool:
        return len(self.transitions) > 0 or len(self.faults) > 0


class EvaluationBuilder:
    """Collects event columns in the order they happen, then sorts them once."""

    def __init__(self) -> None:
        self._t: list[tuple[NDArray[np.generic], ...]] = []
        self._f: list[tuple[NDArray[np.generic], ...]] = []
        self.late = 0
        self.future = 0
        self.too_old = 0

    def transitions(
        self,
        sensor: NDArray[np.integer],
        from_tier: NDArray[np.integer],
        to_tier: NDArray[np.integer],
        value: NDArray[np.float64],
        threshold: NDArray[np.float64],
        ts: NDArray[np.float64],
    ) -> None:
        if sensor.shape[0]:
            self._t.append((sensor, from_tier, to_tier, value, threshold, ts))

    def faults(
        self,
        sensor: NDArray[np.integer],
        faulted: NDArray[np.bool_],
        reason: NDArray[np.integer],
        value: NDArray[np.float64],
        ts: NDArray[np.float64],
    ) -> None:
        if sensor.shape[0]:
            self._f.append((sensor, faulted, reason, value, ts))

    def build(
        self,
        reading_tier: NDArray[np.int8] | None = None,
        accepted: NDArray[np.bool_] | None = None,
    ) -> Evaluation:
        t = _columns(self._t, (np.int32, np.int8, np.int8, np.float64, np.float64, np.float64))
        f = _columns(self._f, (np.int32, np.bool_, np.int8, np.float64, np.float64))
        return Evaluation(
            transitions=TierTransitions(
                sensor=t[0], from_tier=t[1], to_tier=t[2], value=t[3], threshold=t[4], ts=t[5]
            ),
            faults=FaultChanges(sensor=f[0], faulted=f[1], reason=f[2], value=f[3], ts=f[4]),
            late=self.late,
            future=self.future,
            too_old=self.too_old,
            reading_tier=np.empty(0, dtype=np.int8) if reading_tier is None else reading_tier,
            accepted=np.empty(0, dtype=bool) if accepted is None else accepted,
        )


def _columns(
    parts: list[tuple[NDArray[np.generic], ...]], dtypes: tuple[type[np.generic], ...]
) -> list[NDArray[Any]]:
    if not parts:
        return [np.empty(0, dtype=d) for d in dtypes]
    cols = [
        np.concatenate([np.asarray(p[i], dtype=d) for p in parts]) for i, d in enumerate(dtypes)
    ]
    if len(parts) > 1 or cols[0].shape[0] > 1:
        # lexsort is stable: equal (ts, sensor) keep the order in which they happened.
        order = np.lexsort((cols[0], cols[-1]))
        cols = [c[order] for c in cols]
    return cols

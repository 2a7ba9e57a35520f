"""The vectorized three-tier evaluator: SPEC §5 over numpy arrays.

Contract: for any stream of readings cut into batches of any size, and the same timer
ticks, `Evaluator` produces exactly the transitions and fault changes of
`ReferenceEvaluator` (whose docstring states the rules). A property test holds it to that.

How it is fast. State is a handful of arrays indexed by dense sensor index: a 6-bit mask
of active latches, a (n, 6) array of pending-delay start times, the last reading's time
and value, and a fault flag. Most readings change nothing, so each sensor also keeps a
*quiet band* (lo, hi): while no delay is pending and the sensor is healthy, a good
reading strictly inside the band can neither start a delay nor change a latch. A batch
is first screened against the bands with a few whole-array comparisons; only the
readings outside their band go through the full latch logic. A sensor that appears
several times in one batch is taken in arrival order: its calm readings in bulk, each
loud one through the full rules (see `_process_sequences`).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from ehswatch.readings import ReadingBatch
from ehswatch.thresholds.outcome import Evaluation, EvaluationBuilder
from ehswatch.thresholds.table import ThresholdTable
from ehswatch.thresholds.tier import LATCH_IS_LOW, LATCH_LEVEL, N_LATCHES, FaultReason

Rows = NDArray[np.intp]
F64 = NDArray[np.float64]

_BIT = (1 << np.arange(N_LATCHES)).astype(np.uint8)
_SIGN = np.where(LATCH_IS_LOW, -1.0, 1.0)


def _mask_tables() -> tuple[NDArray[np.int8], NDArray[np.intp]]:
    """For each of the 64 latch masks: the tier, and the column of its top latch (-1: none)."""
    masks = np.arange(1 << N_LATCHES)
    active = (masks[:, None] & (1 << np.arange(N_LATCHES))) != 0
    levels = np.where(active, LATCH_LEVEL, 0)
    # argmax takes the first maximum: the high side wins a tie, as in the reference.
    return levels.max(axis=1).astype(np.int8), np.where(masks == 0, -1, levels.argmax(axis=1))


_TIER_OF_MASK, _TOP_OF_MASK = _mask_tables()


class Evaluator:
    """Evaluates `ReadingBatch`es against a `ThresholdTable`; see the module docstring."""

    def __init__(self, table: ThresholdTable, start_ts: float) -> None:
        n = table.size
        self.table = table
        # Low latches are evaluated as high latches on the negated value: one comparison
        # serves both sides. Negation is exact in IEEE arithmetic, so the results equal
        # the reference's `v <= sp` and `v > sp + deadband` bit for bit.
        self._rise_at = table.setpoint * _SIGN
        self._fall_below = self._rise_at - table.deadband[:, None]
        self._on = table.on_delay
        self._off = table.off_delay
        self._stale = table.stale_after
        self._mask = np.zeros(n, dtype=np.uint8)
        self._since = np.full((n, N_LATCHES), np.nan)
        self._pending = np.zeros(n, dtype=bool)
        self._faulted = np.zeros(n, dtype=bool)
        self._reason = np.zeros(n, dtype=np.int8)
        self._last_ts = np.full(n, float(start_ts))
        self._last_value = np.full(n, np.nan)
        self._lo = np.empty(n)
        self._hi = np.empty(n)
        self._stamp = np.empty(n, dtype=np.intp)
        self._refresh_band(np.arange(n))

    # ---------------------------------------------------------------- queries

    @property
    def tier(self) -> NDArray[np.int8]:
        """Current tier of every sensor (a fresh array)."""
        return _TIER_OF_MASK[self._mask]

    @property
    def faulted(self) -> NDArray[np.bool_]:
        return self._faulted.copy()

    @property
    def fault_reason(self) -> NDArray[np.int8]:
        return self._reason.copy()

    @property
    def last_value(self) -> F64:
        return self._last_value.copy()

    @property
    def last_ts(self) -> F64:
        return self._last_ts.copy()

    # ---------------------------------------------------------------- evaluation

    def process(self, batch: ReadingBatch) -> Evaluation:
        """Evaluate a micro-batch; readings of one sensor are taken in arrival order."""
        out = EvaluationBuilder()
        n = len(batch)
        if n == 0:
            return out.build()
        idx = batch.sensor
        if idx.min() < 0 or idx.max() >= self.table.size:
            raise IndexError("ReadingBatch names a sensor index outside the threshold table")
        # The tier of each reading's sensor just after the reading was taken, for storage.
        tiers = np.empty(n, dtype=np.int8)
        ascending = n == 1 or bool((idx[1:] > idx[:-1]).all())
        if not ascending and self._has_repeats(idx):
            order = np.argsort(idx, kind="stable")
            self._process_sequences(batch.take(order), order, tiers, out)
        else:
            self._process_unique(batch, ascending, tiers, out)
        return out.build(reading_tier=tiers)

    def tick(self, now: float) -> Evaluation:
        """Let time pass to `now`: mature due delays, fault sensors gone stale."""
        out = EvaluationBuilder()
        due = self._pending | (~self._faulted & (self._last_ts + self._stale < now))
        rows = np.flatnonzero(due)
        if rows.size:
            self._advance(rows, np.full(rows.size, float(now)), out)
        return out.build()

    def _has_repeats(self, idx: NDArray[np.int32]) -> bool:
        """Whether a sensor occurs twice: the last write of a position wins, so a repeat
        shows as a position whose stamp was overwritten. Cheaper than sorting."""
        positions = np.arange(idx.size)
        self._stamp[idx] = positions
        return bool((self._stamp[idx] != positions).any())

    def _process_sequences(
        self, b: ReadingBatch, pos: Rows, tiers: NDArray[np.int8], out: EvaluationBuilder
    ) -> None:
        """Batches where a sensor has several readings, sorted by sensor (arrival order
        kept within one sensor).

        Each pass settles, for every sensor, the run of quiet readings at the head of its
        sequence in one sweep (they change nothing but the last reading), then takes the
        first loud reading of each sensor through the full rules. The number of passes
        is the most loud readings any one sensor has, not the most readings: a busy but
        calm sensor costs one pass.
        """
        while len(b):
            idx = b.sensor
            first = np.r_[True, idx[1:] != idx[:-1]]
            prev_ts = np.where(first, self._last_ts[idx], np.r_[np.nan, b.ts[:-1]])
            quiet = (b.value > self._lo[idx]) & (b.value < self._hi[idx])
            quiet &= b.quality == 0
            quiet &= b.ts >= prev_ts
            quiet &= b.ts <= prev_ts + self._stale[idx]
            loud: NDArray[np.bool_] = ~quiet
            loud_before: NDArray[np.intp] = (
                np.cumsum(loud) - loud
            )  # loud readings before this one, overall
            group_start = np.flatnonzero(first)[np.cumsum(first) - 1]
            loud_before = loud_before - loud_before[group_start]  # ... within its sensor
            head: NDArray[np.bool_] = loud_before == 0
            settled = head & quiet
            same_next = np.r_[idx[1:] == idx[:-1], False]
            last_settled = settled & ~(same_next & np.r_[settled[1:], False])
            s = idx[last_settled]
            self._last_ts[s] = b.ts[last_settled]
            self._last_value[s] = b.value[last_settled]
            tiers[pos[settled]] = _TIER_OF_MASK[self._mask[idx[settled]]]
            first_loud = head & loud
            if first_loud.any():
                self._step(b.take(first_loud), out)
                tiers[pos[first_loud]] = _TIER_OF_MASK[self._mask[idx[first_loud]]]
            rest = loud_before > 0
            b, pos = b.take(rest), pos[rest]

    def _process_unique(
        self, b: ReadingBatch, ascending: bool, tiers: NDArray[np.int8], out: EvaluationBuilder
    ) -> None:
        """Readings of distinct sensors, in any order (`ascending`: by sensor index); the
        batch is the whole input, so `tiers` is filled position for position."""
        idx = b.sensor
        # A collector's batch is usually a run of consecutive indices: then the state is
        # read and written through slices (views), not gathered.
        first = int(idx[0])
        at: slice | NDArray[np.int32] = (
            slice(first, first + idx.size)
            if ascending and int(idx[-1]) - first + 1 == idx.size
            else idx
        )
        lo = self._lo[at]
        hi = self._hi[at]
        last = self._last_ts[at]
        stale_at = last + self._stale[at]
        quiet = (b.value > lo) & (b.value < hi)
        quiet &= b.quality == 0
        quiet &= b.ts >= last
        quiet &= b.ts <= stale_at
        if bool(quiet.all()):
            self._last_ts[at] = b.ts
            self._last_value[at] = b.value
            tiers[:] = _TIER_OF_MASK[self._mask[at]]
            return
        # Record every reading as the latest in one sweep, then put back the previous
        # reading of the few that need the full rules (they start from it). Cheaper than
        # splitting the whole batch in two.
        loud = np.flatnonzero(~quiet)
        loud_sensors = idx[loud]
        prev_ts, prev_value = self._last_ts[loud_sensors], self._last_value[loud_sensors]
        self._last_ts[at] = b.ts
        self._last_value[at] = b.value
        self._last_ts[loud_sensors] = prev_ts
        self._last_value[loud_sensors] = prev_value
        self._step(b.take(loud), out)
        tiers[:] = _TIER_OF_MASK[self._mask[at]]

    def _step(self, b: ReadingBatch, out: EvaluationBuilder) -> None:
        """The full rules for one reading each of distinct sensors."""
        in_order = b.ts >= self._last_ts[b.sensor]
        if not bool(in_order.all()):
            out.out_of_order += int(in_order.size - np.count_nonzero(in_order))
            b = b.take(in_order)
        rows = b.sensor.astype(np.intp)
        if rows.size == 0:
            return
        self._advance(rows, b.ts, out)
        self._apply(rows, b, out)

    def _advance(self, rows: Rows, t: F64, out: EvaluationBuilder) -> None:
        """Let time pass up to (not including) `t` per row, the last value held."""
        stale_at = self._last_ts[rows] + self._stale[rows]
        pending = self._pending[rows]  # never set on a faulted sensor
        if pending.any():
            r = rows[pending]
            mask = self._mask[r]
            active = (mask[:, None] & _BIT) != 0
            matures = self._since[r] + np.where(active, self._off[r, None], self._on[r, None])
            horizon = np.minimum(t[pending], stale_at[pending])
            due = matures < horizon[:, None]
            if due.any():
                self._mature(r, mask, due, matures, out)
        stale = (stale_at < t) & ~self._faulted[rows]
        if stale.any():
            s = rows[stale]
            self._faulted[s] = True
            self._reason[s] = FaultReason.STALE
            self._since[s] = np.nan
            self._pending[s] = False
            self._refresh_band(s)
            out.faults(
                s,
                np.ones(s.size, dtype=bool),
                np.full(s.size, FaultReason.STALE, dtype=np.int8),
                self._last_value[s],
                stale_at[stale],
            )

    def _mature(
        self,
        r: Rows,
        mask0: NDArray[np.uint8],
        due: NDArray[np.bool_],
        matures: F64,
        out: EvaluationBuilder,
    ) -> None:
        """Flip the due latches of rows `r` in time order, one transition per instant."""
        local, col = np.nonzero(due)
        when = matures[local, col]
        order = np.lexsort((col, when, local))
        local, col, when = local[order], col[order], when[order]
        # Masks after each flip: a running XOR, restarted for every row.
        acc = np.bitwise_xor.accumulate(_BIT[col])
        row_start = np.r_[True, local[1:] != local[:-1]]
        starts = np.flatnonzero(row_start)
        before_row = np.where(starts > 0, acc[starts - 1], 0).astype(np.uint8)
        after = mask0[local] ^ acc ^ before_row[np.cumsum(row_start) - 1]
        # One transition per (row, instant): keep the last flip of each instant.
        last = np.r_[(local[1:] != local[:-1]) | (when[1:] != when[:-1]), True]
        li, wi, ai = local[last], when[last], after[last]
        first_instant = np.r_[True, li[1:] != li[:-1]]
        bi = np.where(first_instant, mask0[li], np.concatenate(([0], ai[:-1])).astype(np.uint8))
        sensors = r[li]
        self._emit(sensors, bi, ai, self._last_value[sensors], wi, out)
        row_end = np.r_[local[1:] != local[:-1], True]
        self._mask[r[local[row_end]]] = after[row_end]
        self._since[r[local], col] = np.nan
        self._pending[r] = ~np.isnan(self._since[r]).all(axis=1)
        self._refresh_band(r)

    def _apply(self, rows: Rows, b: ReadingBatch, out: EvaluationBuilder) -> None:
        """Take one reading per row at its own time (delays up to it already matured)."""
        bad = (b.quality != 0) | ~np.isfinite(b.value)
        mask = self._mask[rows]
        active = (mask[:, None] & _BIT) != 0
        x = b.value[:, None] * _SIGN
        wants = np.where(active, x < self._fall_below[rows], x >= self._rise_at[rows])
        wants &= ~bad[:, None]
        since = self._since[rows]
        ts = b.ts[:, None]
        since = np.where(wants, np.where(np.isnan(since), ts, since), np.nan)
        flip = since + np.where(active, self._off[rows, None], self._on[rows, None]) <= ts
        since[flip] = np.nan
        new_mask = mask ^ (flip * _BIT).sum(axis=1).astype(np.uint8)
        self._since[rows] = since
        self._mask[rows] = new_mask
        self._pending[rows] = ~np.isnan(since).all(axis=1)
        self._emit(rows, mask, new_mask, b.value, b.ts, out)

        was = self._faulted[rows]
        raised, cleared = bad & ~was, ~bad & was
        if raised.any():
            s = rows[raised]
            self._reason[s] = FaultReason.BAD
            out.faults(
                s, np.ones(s.size, dtype=bool), self._reason[s], b.value[raised], b.ts[raised]
            )
        if cleared.any():
            s = rows[cleared]
            out.faults(
                s, np.zeros(s.size, dtype=bool), self._reason[s], b.value[cleared], b.ts[cleared]
            )
            self._reason[s] = FaultReason.NONE
        self._faulted[rows] = bad
        self._last_ts[rows] = b.ts
        self._last_value[rows] = b.value
        self._refresh_band(rows)

    def _emit(
        self,
        sensors: Rows,
        before: NDArray[np.uint8],
        after: NDArray[np.uint8],
        value: F64,
        ts: F64,
        out: EvaluationBuilder,
    ) -> None:
        t0, t1 = _TIER_OF_MASK[before], _TIER_OF_MASK[after]
        changed = t0 != t1
        if not changed.any():
            return
        s = sensors[changed]
        rising = t1[changed] > t0[changed]
        top = np.where(rising, _TOP_OF_MASK[after[changed]], _TOP_OF_MASK[before[changed]])
        out.transitions(
            s, t0[changed], t1[changed], value[changed], self.table.setpoint[s, top], ts[changed]
        )

    def _refresh_band(self, rows: Rows) -> None:
        """Recompute the quiet band (see module docstring) of `rows`.

        In the signed domain x (x = v high side, x = -v low side) an inactive latch is
        quiet while x < rise_at and an active one while x >= fall_below. Mapped back to v
        these are strict or non-strict bounds; non-strict ones are made strict with
        nextafter so the screen is two strict comparisons, exact for every float.
        """
        active = (self._mask[rows][:, None] & _BIT) != 0
        rise, fall = self._rise_at[rows], self._fall_below[rows]
        high, low = ~LATCH_IS_LOW, LATCH_IS_LOW
        upper = np.where(
            high & ~active,
            rise,
            np.where(low & active, np.nextafter(-fall, np.inf), np.inf),
        )
        lower = np.where(
            high & active,
            np.nextafter(fall, -np.inf),
            np.where(low & ~active, -rise, -np.inf),
        )
        # An unset latch (NaN setpoint) never changes: it bounds nothing.
        hi = np.where(np.isnan(upper), np.inf, upper).min(axis=1)
        lo = np.where(np.isnan(lower), -np.inf, lower).max(axis=1)
        blocked = self._faulted[rows] | self._pending[rows]
        self._hi[rows] = np.where(blocked, -np.inf, hi)
        self._lo[rows] = np.where(blocked, np.inf, lo)

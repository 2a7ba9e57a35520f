"""The vectorized three-tier evaluator: the rules of docs/thresholds.md over numpy arrays.

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

import math

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


def _masks(state: NDArray[np.int8], bits: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """Latch masks from a (latch, reading) array of 0/1 states; `bits` per latch row."""
    masks: NDArray[np.uint8] = (state * bits[:, None]).sum(axis=0).astype(np.uint8)
    return masks


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
        self._rise_t = np.ascontiguousarray(self._rise_at.T)  # (latch, sensor), for runs
        self._fall_t = np.ascontiguousarray(self._fall_below.T)
        self._on = table.on_delay
        self._off = table.off_delay
        self._stale = table.stale_after
        self._ahead = table.max_ahead
        self._behind = table.max_behind
        self._skew_after = table.skew_after
        self._mask = np.zeros(n, dtype=np.uint8)
        self._since = np.full((n, N_LATCHES), np.nan)
        self._pending = np.zeros(n, dtype=bool)
        self._faulted = np.zeros(n, dtype=bool)
        self._reason = np.zeros(n, dtype=np.int8)
        self._last_ts = np.full(n, float(start_ts))
        self._last_value = np.full(n, np.nan)
        # The latest instant each sensor's state is decided for (see the reference).
        self._decided = np.full(n, -np.inf)
        self._skew = np.full(n, np.nan)  # service time the current skew run began
        self.late_count = np.zeros(n, dtype=np.int64)  # per sensor, since start
        self.future_count = np.zeros(n, dtype=np.int64)
        self.too_old_count = np.zeros(n, dtype=np.int64)
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

    def process(self, batch: ReadingBatch, now: float = math.inf) -> Evaluation:
        """Evaluate a micro-batch; `now` is the service clock, for the future-reading rule
        (readings stamped more than `max_ahead_s` after it are rejected)."""
        out = EvaluationBuilder()
        n = len(batch)
        if n == 0:
            return out.build()
        idx = batch.sensor
        if idx.min() < 0 or idx.max() >= self.table.size:
            raise IndexError("ReadingBatch names a sensor index outside the threshold table")
        # The tier of each reading's sensor just after the reading was taken, for storage.
        tiers = np.empty(n, dtype=np.int8)
        accepted = np.ones(n, dtype=bool)
        ascending = n == 1 or bool((idx[1:] > idx[:-1]).all())
        if not ascending and self._has_repeats(idx):
            # Each sensor's readings in timestamp order (stable: ties keep arrival order);
            # a timestamp that is not finite sorts last and is rejected.
            key = np.where(np.isfinite(batch.ts), batch.ts, np.inf)
            order = np.lexsort((key, idx))
            self._process_sequences(batch.take(order), order, now, tiers, accepted, out)
        else:
            self._process_unique(batch, now, ascending, tiers, accepted, out)
        return out.build(reading_tier=tiers, accepted=accepted)

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

    def _classify(
        self, b: ReadingBatch, now: float
    ) -> tuple[NDArray[np.bool_], NDArray[np.bool_], NDArray[np.bool_], NDArray[np.bool_]]:
        """(future, too old, late, in order) masks of readings, against the state before
        them. Per sensor in timestamp order they come as too old, late, in order, future."""
        idx = b.sensor
        future = ~np.isfinite(b.ts) | ~(b.ts <= now + self._ahead[idx])  # NaN: rejected
        old = ~future & (b.ts < now - self._behind[idx]) if math.isfinite(now) else ~future & False
        late = ~future & ~old & (b.ts < self._decided[idx])
        return future, old, late, ~future & ~old & ~late

    def _process_sequences(
        self,
        b: ReadingBatch,
        pos: Rows,
        now: float,
        tiers: NDArray[np.int8],
        accepted: NDArray[np.bool_],
        out: EvaluationBuilder,
    ) -> None:
        """Batches where a sensor has several readings, sorted by (sensor, timestamp).

        Per sensor the readings then fall in three parts: late ones (older than its
        latest before the batch), in-order ones, and ones stamped too far ahead. Each
        part is taken for all sensors at once, in that order.
        """
        future, old, late, in_order = self._classify(b, now)
        if old.any():
            self._too_old(b.take(old), now, out)
            accepted[pos[old]] = False
            tiers[pos[old]] = _TIER_OF_MASK[self._mask[b.sensor[old]]]
        if late.any():
            tiers[pos[late]] = self._late(b.take(late), now, out)
        if in_order.any():
            tiers[pos[in_order]] = self._runs(b.take(in_order), out)
        if future.any():
            self._future(b.take(future), now, out)
            accepted[pos[future]] = False
            tiers[pos[future]] = _TIER_OF_MASK[self._mask[b.sensor[future]]]

    def _process_unique(
        self,
        b: ReadingBatch,
        now: float,
        ascending: bool,
        tiers: NDArray[np.int8],
        accepted: NDArray[np.bool_],
        out: EvaluationBuilder,
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
        quiet &= b.ts >= self._decided[at]
        quiet &= b.ts <= stale_at
        if now != math.inf:
            quiet &= b.ts <= now + self._ahead[at]
            if math.isfinite(now):
                quiet &= b.ts >= now - self._behind[at]
        if bool(quiet.all()):
            self._last_ts[at] = b.ts
            self._last_value[at] = b.value
            self._decided[at] = b.ts
            self._skew[at] = np.nan
            tiers[:] = _TIER_OF_MASK[self._mask[at]]
            return
        # Record every reading as the latest in one sweep, then put back the previous
        # state of the few that need the full rules (they start from it). Cheaper than
        # splitting the whole batch in two.
        loud = np.flatnonzero(~quiet)
        s = idx[loud]
        saved = (self._last_ts[s], self._last_value[s], self._decided[s], self._skew[s])
        self._last_ts[at] = b.ts
        self._last_value[at] = b.value
        self._decided[at] = b.ts
        self._skew[at] = np.nan
        self._last_ts[s], self._last_value[s], self._decided[s], self._skew[s] = saved
        lb = b.take(loud)
        future, old, late, in_order = self._classify(lb, now)
        if old.any():
            self._too_old(lb.take(old), now, out)
            accepted[loud[old]] = False
        if late.any():
            self._late(lb.take(late), now, out)
        if in_order.any():
            one = lb.take(in_order)
            rows = one.sensor.astype(np.intp)
            self._advance(rows, one.ts, out)
            self._apply(rows, one, out)
        if future.any():
            self._future(lb.take(future), now, out)
            accepted[loud[future]] = False
        tiers[:] = _TIER_OF_MASK[self._mask[at]]

    # ---------------------------------------------------------------- late and future

    def _skewed(
        self, b: ReadingBatch, now: float, out: EvaluationBuilder
    ) -> tuple[Rows, NDArray[np.intp], NDArray[np.intp]]:
        """Late or future readings (grouped by sensor) at `now`: start each sensor's skew
        run, and put the sensors whose run began `clock_skew_after_s` ago or more in
        FAULT clock_skew (see the reference).

        Returns (sensor of each group, group of each reading, rank of the reading that
        faulted its sensor — the group size where none did)."""
        idx = b.sensor
        first = np.r_[True, idx[1:] != idx[:-1]]
        group = np.cumsum(first) - 1
        starts = np.flatnonzero(first)
        sizes = np.diff(np.r_[starts, idx.size])
        su = idx[starts].astype(np.intp)
        began = np.where(np.isnan(self._skew[su]), now, self._skew[su])
        self._skew[su] = began
        # All readings of a batch arrive at one `now`: the first skewed one decides.
        # (With no clock given, `now` is infinite and nothing can be measured.)
        faults = ~self._faulted[su] & (
            (now - began >= self._skew_after[su]) if math.isfinite(now) else False
        )
        faults_at = np.zeros(su.size, dtype=np.intp)
        if faults.any():
            f = su[faults]
            at = np.maximum(self._decided[f], self._last_ts[f])
            self._raise_fault(f, FaultReason.CLOCK_SKEW, at, out)
        return su, group, np.where(faults, faults_at, sizes)

    def _raise_fault(
        self, rows: Rows, reason: FaultReason, at: F64, out: EvaluationBuilder
    ) -> None:
        """Put `rows` (not faulted) in FAULT at `at`: latches keep their state, every
        pending delay ends, the value held is reported with it."""
        self._faulted[rows] = True
        self._reason[rows] = reason
        self._since[rows] = np.nan
        self._pending[rows] = False
        self._refresh_band(rows)
        out.faults(
            rows,
            np.ones(rows.size, dtype=bool),
            np.full(rows.size, reason, dtype=np.int8),
            self._last_value[rows],
            at,
        )

    def _too_old(self, b: ReadingBatch, now: float, out: EvaluationBuilder) -> None:
        """Readings stamped too far back, grouped by sensor: rejected and counted."""
        out.too_old += len(b)
        np.add.at(self.too_old_count, b.sensor, 1)
        self._skewed(b, now, out)

    def _future(self, b: ReadingBatch, now: float, out: EvaluationBuilder) -> None:
        """Readings stamped too far ahead, grouped by sensor: rejected and counted."""
        out.future += len(b)
        np.add.at(self.future_count, b.sensor, 1)
        self._skewed(b, now, out)

    def _late(self, b: ReadingBatch, now: float, out: EvaluationBuilder) -> NDArray[np.int8]:
        """Late readings, grouped by sensor in timestamp order, under the raise-only rule
        (see the reference): each is taken at its sensor's latest time; the tier just
        after each is returned."""
        out.late += len(b)
        np.add.at(self.late_count, b.sensor, 1)
        faulted0 = self._faulted[b.sensor]  # before this batch's skew faults
        su, group, stop = self._skewed(b, now, out)
        idx = b.sensor.astype(np.intp)
        rank = np.arange(idx.size) - np.flatnonzero(np.r_[True, idx[1:] != idx[:-1]])[group]
        mask0 = self._mask[su]  # masks before the late readings (faults keep latches)
        taken = ~faulted0 & (rank < stop[group]) & (b.quality == 0) & np.isfinite(b.value)
        if not taken.any():
            return _TIER_OF_MASK[self._mask[idx]]
        active0 = (mask0[group][:, None] & _BIT) != 0
        x = b.value[:, None] * _SIGN
        rises = taken[:, None] & ~active0 & (x >= self._rise_at[idx])
        holds = taken[:, None] & active0 & ~(x < self._fall_below[idx])
        big = np.iinfo(np.intp).max
        n_groups = su.size
        # First rising reading per (sensor, latch), and whether any reading holds a latch.
        first_rise = np.full((n_groups, N_LATCHES), big, dtype=np.intp)
        np.minimum.at(first_rise, group, np.where(rises, rank[:, None], big))
        held = np.zeros((n_groups, N_LATCHES), dtype=bool)
        np.logical_or.at(held, group, holds)
        at = self._decided[su]  # finite: a late reading is older than it
        since = self._since[su]
        wants = first_rise < big
        since = np.where(wants & np.isnan(since), at[:, None], since)
        flips = wants & (since + self._on[su, None] <= at[:, None])
        since = np.where(flips | held, np.nan, since)
        self._since[su] = since
        self._pending[su] = ~np.isnan(since).all(axis=1)
        flip_rank = np.where(flips, first_rise, big)
        if flips.any():
            # One transition per (sensor, reading) that raised a latch, in rank order.
            g, c = np.nonzero(flips)
            r = flip_rank[g, c]
            order = np.lexsort((r, g))
            g, r = g[order], r[order]
            last = np.r_[(g[1:] != g[:-1]) | (r[1:] != r[:-1]), True]
            g, r = g[last], r[last]
            before = mask0[g] | ((flip_rank[g] < r[:, None]) * _BIT).sum(axis=1).astype(np.uint8)
            after = mask0[g] | ((flip_rank[g] <= r[:, None]) * _BIT).sum(axis=1).astype(np.uint8)
            reading = np.flatnonzero(np.r_[True, idx[1:] != idx[:-1]])[g] + r
            self._emit(su[g], before, after, b.value[reading], at[g], out)
            self._mask[su] = mask0 | (flips * _BIT).sum(axis=1).astype(np.uint8)
        self._refresh_band(su)
        masks = mask0[group] | ((flip_rank[group] <= rank[:, None]) * _BIT).sum(axis=1).astype(
            np.uint8
        )
        tiers: NDArray[np.int8] = _TIER_OF_MASK[masks]
        return tiers

    # ---------------------------------------------------------------- in-order readings

    def _runs(self, b: ReadingBatch, out: EvaluationBuilder) -> NDArray[np.int8]:
        """In-order readings, grouped by sensor in timestamp order, through the full rules
        for all sensors at once; returns the tier just after each reading.

        A latch changes only at the end of a *run*: consecutive readings that all wish
        the same change (rise: value at or past the setpoint; fall: back past it by the
        deadband), unbroken by a bad reading or a stale gap. Whether a run matures — its
        delay elapses at a reading of the run, or before the next reading and before
        staleness — depends on the run alone, never on the latch's state; the state only
        decides whether a matured run changes anything (a matured rise run of an active
        latch does not). So every run is judged at once, and the latch's state after
        each reading is the target of the last matured run before it. The cost is a few
        passes over the batch however many times a loud sensor crosses its setpoints.
        """
        m = len(b)
        idx = b.sensor.astype(np.intp)
        t, v = b.ts, b.value
        first = np.r_[True, idx[1:] != idx[:-1]]
        last = np.r_[idx[1:] != idx[:-1], True]
        group = np.cumsum(first) - 1
        starts = np.flatnonzero(first)
        ends = np.flatnonzero(last)
        su = idx[starts]
        mask0 = self._mask[su]
        # Only the latches some sensor of the batch has (a high-only sensor has three).
        lat = np.flatnonzero(~np.isnan(self._rise_t[:, su]).all(axis=1))
        bits = _BIT[lat]
        active0 = (mask0[:, None] & bits) != 0
        since0 = self._since[su][:, lat]
        last_ts0, last_v0 = self._last_ts[su], self._last_value[su]
        bad = (b.quality != 0) | ~np.isfinite(v)
        prev_t = np.where(first, last_ts0[group], np.r_[np.nan, t[:-1]])
        prev_v = np.where(first, last_v0[group], np.r_[np.nan, v[:-1]])
        stale = self._stale[idx]
        faulted_before = np.where(first, self._faulted[su][group], np.r_[False, bad[:-1]])
        gap = ~faulted_before & (prev_t + stale < t)  # goes stale before reading k

        self._run_faults(
            b, idx, group, starts, ends, su, bad, prev_t, prev_v, faulted_before, gap, out
        )

        # Kinds of wish per (latch, reading): 1 rise, 2 fall, 0 none. Latch-major layout,
        # so each latch's readings of one sensor are contiguous.
        good = ~bad
        x = v[None, :] * _SIGN[lat, None]
        rise = good & (x >= self._rise_t[lat[:, None], idx[None, :]])
        fall = good & (x < self._fall_t[lat[:, None], idx[None, :]])
        kind = rise.view(np.uint8) + 2 * fall.view(np.uint8)
        breaks = first | gap
        prev_kind = np.zeros_like(kind)
        prev_kind[:, 1:] = kind[:, :-1]
        next_kind = np.zeros_like(kind)
        next_kind[:, :-1] = kind[:, 1:]
        breaks_next = np.r_[breaks[1:], True]
        run_start = (kind != 0) & (breaks[None, :] | (kind != prev_kind))
        run_end = (kind != 0) & (breaks_next[None, :] | (kind != next_kind))
        rs, re = np.flatnonzero(run_start), np.flatnonzero(run_end)
        rc, ks = np.divmod(rs, m)
        ke = re - rc * m
        rkind = kind.ravel()[rs]
        rg = group[ks]
        rsens = su[rg]
        # A run that continues a wish pending from before the batch starts where it did.
        wished0 = np.where(active0, 2, 1)
        sig = since0[rg, rc]
        merged = first[ks] & ~gap[ks] & ~np.isnan(sig) & (rkind == wished0[rg, rc])
        start = np.where(merged, sig, t[ks])
        matures = start + np.where(rkind == 1, self._on[rsens], self._off[rsens])
        # The first reading of the run at or after its maturity (ke + 1: none).
        lo, hi = ks.copy(), ke + 1
        searching = lo < hi
        while searching.any():
            mid = (lo + hi) // 2
            ge = t[np.minimum(mid, m - 1)] >= matures
            hi = np.where(searching & ge, mid, hi)
            lo = np.where(searching & ~ge, mid + 1, lo)
            searching = lo < hi
        in_run = lo <= ke
        k = np.minimum(lo, m - 1)
        at_reading = in_run & (t[k] == matures)  # decided by that reading's own value
        nxt = np.minimum(ke + 1, m - 1)
        has_next = ~last[ke]
        horizon = np.minimum(t[nxt], t[ke] + stale[ke])
        between = (in_run & ~at_reading) | (~in_run & has_next & (matures < horizon))
        fpos = np.where(in_run, lo, ke + 1)

        # A wish pending from before that the first reading does not continue.
        merged_gc = np.zeros_like(active0)
        merged_gc[rg[merged], rc[merged]] = True
        gi, ci = np.nonzero(~np.isnan(since0) & ~merged_gc)
        m0 = since0[gi, ci] + np.where(active0[gi, ci], self._off[su[gi]], self._on[su[gi]])
        vq = m0 < np.minimum(t[starts[gi]], last_ts0[gi] + self._stale[su[gi]])
        gi, ci, m0 = gi[vq], ci[vq], m0[vq]

        # Each latch's state just after each reading, and just after each reading's
        # "time passes" phase (before the reading itself is taken): the target of the
        # last matured run at or before it, else the state before the batch.
        target = (rkind == 1).astype(np.int8)
        adv = np.full(kind.shape, -1, dtype=np.int8)
        adv[rc[between], fpos[between]] = target[between]
        adv[ci, starts[gi]] = (~active0[gi, ci]).astype(np.int8)
        events = adv.copy()
        events[rc[at_reading], k[at_reading]] = target[at_reading]
        base = active0.T[:, group].astype(np.int8)  # (latch, reading): state before the batch
        pos = np.where(events >= 0, np.arange(m), -1)
        np.maximum.accumulate(pos, axis=1, out=pos)
        state_after = np.where(
            pos >= starts[group], np.take_along_axis(events, np.maximum(pos, 0), axis=1), base
        )
        state_before = np.where(first, base, np.c_[base[:, :1], state_after[:, :-1]])
        state_mid = np.where(adv >= 0, adv, state_before)
        mask_after = _masks(state_after, bits)
        mask_mid = _masks(state_mid, bits)
        mask_before = _masks(state_before, bits)
        # Transitions at readings: one per reading whose own value changed a latch.
        rows = np.flatnonzero(mask_mid != mask_after)
        if rows.size:
            self._emit(su[group[rows]], mask_mid[rows], mask_after[rows], v[rows], t[rows], out)
        # Changes while time passed before a reading: one per instant, in time order.
        if between.any() or gi.size:
            apos = np.r_[fpos[between], starts[gi]]
            acol = np.r_[rc[between], ci]
            changes = adv[acol, apos] != state_before[acol, apos]
            if changes.any():
                self._emit_matured(
                    apos[changes],
                    lat[acol[changes]],
                    np.r_[matures[between], m0][changes],
                    mask_before,
                    su[group],
                    prev_v,
                    out,
                )

        # Wishes still pending at the end: a last run that has not matured and would
        # change its latch.
        final_active = state_after[:, ends].T.astype(bool)
        pend = ~in_run & ~has_next
        pend &= (rkind == 1) != final_active[rg, rc]
        since = np.full((su.size, N_LATCHES), np.nan)
        since[rg[pend], lat[rc[pend]]] = start[pend]

        self._mask[su] = mask_after[ends]
        self._since[su] = since
        self._pending[su] = ~np.isnan(since).all(axis=1)
        self._last_ts[su] = t[ends]
        self._last_value[su] = v[ends]
        self._decided[su] = t[ends]
        self._skew[su] = np.nan
        self._refresh_band(su)
        tiers: NDArray[np.int8] = _TIER_OF_MASK[mask_after]
        return tiers

    def _emit_matured(
        self,
        pos: Rows,
        col: Rows,
        when: F64,
        mask_before: NDArray[np.uint8],
        sensor: Rows,
        held: F64,
        out: EvaluationBuilder,
    ) -> None:
        """Latch changes that matured while time passed before the readings at `pos`:
        one transition per (reading, instant), from the mask before it, in time order,
        each with the value held since the reading before."""
        order = np.lexsort((col, when, pos))
        pos, col, when = pos[order], col[order], when[order]
        row_start = np.r_[True, pos[1:] != pos[:-1]]
        acc = np.bitwise_xor.accumulate(_BIT[col])
        first_of_row = np.flatnonzero(row_start)
        before_row = np.where(first_of_row > 0, acc[first_of_row - 1], 0).astype(np.uint8)
        after = mask_before[pos] ^ acc ^ before_row[np.cumsum(row_start) - 1]
        before = np.where(row_start, mask_before[pos], np.r_[np.uint8(0), after[:-1]])
        last = np.r_[(pos[1:] != pos[:-1]) | (when[1:] != when[:-1]), True]
        key_start = np.r_[True, last[:-1]]
        self._emit(
            sensor[pos[last]],
            before[key_start].astype(np.uint8),
            after[last],
            held[pos[last]],
            when[last],
            out,
        )

    def _run_faults(
        self,
        b: ReadingBatch,
        idx: Rows,
        group: Rows,
        starts: Rows,
        ends: Rows,
        su: Rows,
        bad: NDArray[np.bool_],
        prev_t: F64,
        prev_v: F64,
        faulted_before: NDArray[np.bool_],
        gap: NDArray[np.bool_],
        out: EvaluationBuilder,
    ) -> None:
        """Fault changes of in-order readings (see `_runs`), and the faults after them."""
        m = idx.size
        t, v = b.ts, b.value
        bad_raise = bad & ~faulted_before & ~gap
        raised = np.where(
            gap, FaultReason.STALE, np.where(bad_raise, FaultReason.BAD, FaultReason.NONE)
        ).astype(np.int8)
        pos = np.arange(m)
        last_raise = np.maximum.accumulate(np.where(raised != 0, pos, -1))
        reason0 = self._reason[su]
        before = np.r_[-1, last_raise[:-1]]
        inherited = np.where(before >= starts[group], raised[np.maximum(before, 0)], reason0[group])
        cleared = ~bad & (faulted_before | gap)
        # Events in the order they happened: a stale fault before its reading's changes.
        kpos = np.r_[pos[gap], pos[bad_raise], pos[cleared]]
        phase = np.r_[
            np.zeros(int(gap.sum()), np.int8),
            np.ones(int(bad_raise.sum() + cleared.sum()), np.int8),
        ]
        if kpos.size:
            o = np.lexsort((phase, kpos))
            sensor = np.r_[idx[gap], idx[bad_raise], idx[cleared]][o]
            on = np.r_[
                np.ones(int(gap.sum() + bad_raise.sum()), bool), np.zeros(int(cleared.sum()), bool)
            ][o]
            why = np.r_[
                np.full(int(gap.sum()), FaultReason.STALE, np.int8),
                np.full(int(bad_raise.sum()), FaultReason.BAD, np.int8),
                np.where(gap, FaultReason.STALE, inherited)[cleared].astype(np.int8),
            ][o]
            value = np.r_[prev_v[gap], v[bad_raise], v[cleared]][o]
            ts = np.r_[(prev_t + self._stale[idx])[gap], t[bad_raise], t[cleared]][o]
            out.faults(sensor, on, why, value, ts)
        le = last_raise[ends]
        end_reason = np.where(le >= starts, raised[np.maximum(le, 0)], reason0)
        self._faulted[su] = bad[ends]
        self._reason[su] = np.where(bad[ends], end_reason, FaultReason.NONE)

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
            np.maximum.at(self._decided, s, stale_at[stale])
            self._raise_fault(s, FaultReason.STALE, stale_at[stale], out)

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
        np.maximum.at(self._decided, r[local], when)
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
        self._decided[rows] = b.ts
        self._skew[rows] = np.nan
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

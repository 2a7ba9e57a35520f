"""`EventVoter`: interlock votes decided on what happened, not on a snapshot.

The evaluator reports every tier change and every fault change with the time it happened.
A zone must trip if its vote held at any instant of that stream, even for a moment that
began and ended inside one batch, or that a later batch of a slower device reveals. The
rules, precisely (`ehswatch.interlock.reference.ReferenceVoter` is the same, one event at
a time):

Voters. A voter is one sensor of a zone's `interlock.sensor_types`. It casts a trip vote
while its tier is 3 (interlock) and it is not faulted, or while it is faulted and its zone
has `fault_counts_as_trip`. A faulted sensor's held tier never counts.

Intervals. A voter's votes form intervals in event time, each CLOSED: [ts of the event
that started the vote, ts of the event that ended it]. So a pulse that starts and ends at
the same timestamp counts, and when one voter stops and another starts at the same
timestamp, both contain it (fail-safe on ties). A vote that has not ended is the interval
[start, +inf): the last known state holds until an event says otherwise, as a value holds
between readings.

Zone vote. A zone's vote holds at instant t when at least M of its voters' intervals
contain t. The zone trips if its vote held at ANY instant.

Knowledge. Evaluations are taken one at a time, in the order they were made (`feed`).
Events of one sensor arrive in time order; events of different sensors may arrive out of
time order across evaluations (device clocks differ; one device's batch comes later).
Inside one evaluation a sensor's events are taken by timestamp, and at equal timestamps
tier changes before fault changes (the order of one reading: its tier is decided, then
its fault), each list in the order its rows happened. After each evaluation, `feed`
returns, for every zone, the earliest instant at which the vote holds that was not known
before — an instant at least one of whose containing intervals was learned from this
evaluation — and the sensors voting then. An instant already known (say, the overlap of
two votes that both still hold) is not reported again: the current vote (`holds_now`,
`votes_now`) says whether it still holds.

Retention. A voter's ended intervals are kept for an overlap with an interval that comes
later from another device, until they ended more than `retention_s` (event time; default
600 s) before the newest event of their zone; a vote that has not ended is never
forgotten. A device whose events come more than `retention_s` behind its zone's others
may miss an overlap with a forgotten interval. At most `cap` ended intervals are kept per
voter: beyond that, the two closest are merged into one interval spanning both (the gap
between them then counts as voting: fail-safe, never a missed overlap).

Cost. Everything is numpy over the events of one evaluation and the kept intervals of the
zones it touches: tens of thousands of transitions of one loud sensor cost milliseconds.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from ehswatch.interlock.voting import VotingTable
from ehswatch.thresholds.outcome import Evaluation
from ehswatch.thresholds.tier import Tier

RETENTION_S = 600.0
CAP = 4096

F64 = NDArray[np.float64]
Idx = NDArray[np.intp]
_NONE = (
    np.empty(0, dtype=np.intp),
    np.empty(0),
    np.empty(0, dtype=np.intp),
    np.empty(0),
    np.empty(0),
)


@dataclass(frozen=True, slots=True)
class Held:
    """A zone's vote held at `at` (event time), newly learned; `sensors` voted then."""

    zone: int
    at: float
    sensors: tuple[int, ...]  # sensor indices (ThresholdTable order)


class Inbox:
    """Evaluations waiting for the control loop: `put` never drops and never blocks."""

    def __init__(self) -> None:
        self._q: deque[Evaluation] = deque()
        self.received = 0

    def put(self, ev: Evaluation) -> None:
        self._q.append(ev)
        self.received += 1

    def __len__(self) -> int:
        return len(self._q)

    def peek(self) -> Evaluation:
        return self._q[0]

    def pop(self) -> Evaluation:
        return self._q.popleft()


class EventVoter:
    """Votes of every zone of `voting`, kept as intervals; see the module docstring.

    `tier` and `faulted` (indexed by sensor) are the state at `start_ts`: a voter voting
    then holds its vote from `start_ts`.
    """

    def __init__(
        self,
        voting: VotingTable,
        *,
        n_sensors: int,
        tier: NDArray[np.integer] | None = None,
        faulted: NDArray[np.bool_] | None = None,
        start_ts: float = -np.inf,
        retention_s: float = RETENTION_S,
        cap: int = CAP,
    ) -> None:
        if cap < 1:
            raise ValueError("cap must be at least 1")
        self.voting = voting
        self.retention_s = float(retention_s)
        self.cap = cap
        nz = len(voting.zone_ids)
        n = int(voting.voter.shape[0])
        self._sensor: Idx = np.asarray(voting.voter, dtype=np.intp)  # slot → sensor
        self._zone: Idx = np.asarray(voting.zone_of, dtype=np.intp)  # slot → zone
        self._need = np.asarray(voting.need, dtype=np.int64)
        self._fault_trips = np.asarray(voting.fault_trips, dtype=bool)[self._zone]
        self._slot_of = np.full(n_sensors, -1, dtype=np.intp)
        if len(np.unique(self._sensor)) != n:
            raise ValueError("a sensor votes in more than one zone")
        self._slot_of[self._sensor] = np.arange(n)
        t0 = np.zeros(n_sensors, dtype=np.int8) if tier is None else np.asarray(tier)
        f0 = np.zeros(n_sensors, dtype=bool) if faulted is None else np.asarray(faulted)
        self._tier = t0[self._sensor].astype(np.int8)
        self._faulted = f0[self._sensor].astype(bool)
        self._open: F64 = np.where(self._votes(self._tier, self._faulted), start_ts, np.nan)
        self._last_end: F64 = np.full(n, -np.inf)
        # Ended intervals kept: (slot, start, end), in no particular order.
        self._iv_slot: Idx = np.empty(0, dtype=np.intp)
        self._iv_start: F64 = np.empty(0)
        self._iv_end: F64 = np.empty(0)
        self._newest: F64 = np.full(nz, -np.inf)
        self.held_count = np.zeros(nz, dtype=np.int64)  # newly learned holdings, per zone
        self.fed = 0
        self._fresh = True  # no evaluation yet: votes held from the start are news
        self.merged = 0  # intervals merged by the cap

    # ---------------------------------------------------------------- the current vote

    def _votes(
        self, tier: NDArray[np.int8], faulted: NDArray[np.bool_], slot: Idx | None = None
    ) -> NDArray[np.bool_]:
        trips = self._fault_trips if slot is None else self._fault_trips[slot]
        return np.where(faulted, trips, tier == Tier.INTERLOCK)

    def voting_now(self) -> NDArray[np.bool_]:
        """Per vote slot (`VotingTable.voter` order): voting now."""
        return ~np.isnan(self._open)

    def votes_now(self) -> NDArray[np.int64]:
        counts = np.bincount(self._zone, weights=self.voting_now(), minlength=len(self._need))
        return counts.astype(np.int64)

    def holds_now(self) -> NDArray[np.bool_]:
        return self.votes_now() >= self._need

    def voters_now(self, zone: int) -> list[int]:
        """Sensor indices of `zone` voting now."""
        mask = (self._zone == zone) & self.voting_now()
        return [int(s) for s in self._sensor[mask]]

    def kept(self) -> int:
        """How many ended intervals are kept (all zones)."""
        return int(self._iv_slot.shape[0])

    # ---------------------------------------------------------------- events

    def feed_all(self, evs: Iterable[Evaluation]) -> list[Held]:
        """`feed` each evaluation in turn; every zone's first report is kept, in order."""
        out: list[Held] = []
        for ev in evs:
            out += self.feed(ev)
        return out

    def feed(self, ev: Evaluation) -> list[Held]:
        """Take one evaluation; the holdings it reveals (at most one per zone, earliest)."""
        self.fed += 1
        fresh, self._fresh = self._fresh, False
        t, f = ev.transitions, ev.faults
        nt, nf = len(t), len(f)
        sensor = np.concatenate([t.sensor, f.sensor]).astype(np.intp)
        slot_all = self._slot_of[sensor]
        keep = slot_all >= 0
        if not keep.any():
            # Nothing of a voter; but the first evaluation tells of votes held from the start.
            return self._overlaps(*_NONE, fresh=True) if fresh and self._any_open() else []
        slot = slot_all[keep]
        ts = np.concatenate([t.ts, f.ts]).astype(np.float64)[keep]
        kind = np.concatenate([np.zeros(nt, np.int8), np.ones(nf, np.int8)])[keep]
        tier_v = np.concatenate([t.to_tier.astype(np.int8), np.full(nf, -1, np.int8)])[keep]
        fault_v = np.concatenate([np.full(nt, -1, np.int8), f.faulted.astype(np.int8)])[keep]
        pos = np.flatnonzero(keep)

        # One header row per slot touched: its state before this evaluation.
        hs = np.unique(slot)
        nh = hs.shape[0]
        a_slot = np.concatenate([hs, slot])
        a_ts = np.concatenate([np.full(nh, -np.inf), ts])
        a_kind = np.concatenate([np.full(nh, -1, np.int8), kind])
        a_pos = np.concatenate([np.full(nh, -1, np.intp), pos])
        a_tier = np.concatenate([self._tier[hs], tier_v])
        a_fault = np.concatenate([self._faulted[hs].astype(np.int8), fault_v])
        order = np.lexsort((a_pos, a_kind, a_ts, a_slot))
        s = a_slot[order]
        ets = a_ts[order]
        header = a_kind[order] == -1
        tv, fv = a_tier[order], a_fault[order]
        # The state after each row: the latest tier and fault given so far in the slot
        # (each slot's header gives both, so the fill never crosses into another slot).
        idx = np.arange(s.shape[0])
        tier = tv[np.maximum.accumulate(np.where(tv >= 0, idx, 0))]
        faulted = fv[np.maximum.accumulate(np.where(fv >= 0, idx, 0))].astype(bool)
        voting = self._votes(tier, faulted, s)
        prev = np.empty_like(voting)
        prev[0] = voting[0]
        prev[1:] = voting[:-1]
        change = ~header & (voting != prev)

        ci = np.flatnonzero(change)
        c_slot, c_ts, c_start = s[ci], ets[ci], voting[ci]
        if ci.shape[0] > 1:
            # A vote that ends and starts again at the same instant never stopped.
            pair = (
                ~c_start[:-1] & c_start[1:] & (c_slot[:-1] == c_slot[1:]) & (c_ts[:-1] == c_ts[1:])
            )
            if pair.any():
                drop = np.zeros(ci.shape[0], dtype=bool)
                drop[:-1] |= pair
                drop[1:] |= pair
                c_slot, c_ts, c_start = c_slot[~drop], c_ts[~drop], c_start[~drop]
        m = c_slot.shape[0]
        first = np.ones(m, dtype=bool)
        first[1:] = c_slot[1:] != c_slot[:-1]
        next_same = np.zeros(m, dtype=bool)
        next_same[:-1] = ~first[1:]

        # The vote that was open before this evaluation and ends in it: an old interval.
        oc = np.flatnonzero(first & ~c_start)
        oc_slot, oc_end = c_slot[oc], c_ts[oc]
        oc_start = self._open[oc_slot]
        # Votes started in this evaluation: new intervals (open while no end follows).
        st = np.flatnonzero(c_start)
        n_slot = c_slot[st]
        n_start = c_ts[st].copy()
        n_end = np.where(next_same[st], c_ts[np.minimum(st + 1, max(m - 1, 0))], np.inf)
        # A vote starting where this slot's last kept interval ended adds only what
        # follows that instant (the instant itself is known already).
        again = first[st] & (n_start == self._last_end[n_slot])
        if again.any():
            n_start[again] = np.nextafter(n_start[again], np.inf)
            live = n_start <= n_end
            n_slot, n_start, n_end = n_slot[live], n_start[live], n_end[live]

        held = (
            self._overlaps(oc_slot, oc_end, n_slot, n_start, n_end, fresh=fresh)
            if n_slot.size or (fresh and self._any_open())
            else []
        )

        # New state of every slot touched.
        last = np.ones(s.shape[0], dtype=bool)
        last[:-1] = s[1:] != s[:-1]
        ls = s[last]
        self._tier[ls] = tier[last]
        self._faulted[ls] = faulted[last]
        now_voting = voting[last]
        opened = np.full(self._open.shape[0], np.nan)
        is_open = np.isinf(n_end)
        opened[n_slot[is_open]] = n_start[is_open]
        self._open[ls] = np.where(
            now_voting, np.where(np.isnan(opened[ls]), self._open[ls], opened[ls]), np.nan
        )
        closed = ~is_open
        add_slot = np.concatenate([oc_slot, n_slot[closed]])
        add_start = np.concatenate([oc_start, n_start[closed]])
        add_end = np.concatenate([oc_end, n_end[closed]])
        np.maximum.at(self._last_end, add_slot, add_end)
        np.maximum.at(self._newest, self._zone[slot], ts)
        self._keep(add_slot, add_start, add_end)
        return held

    # ---------------------------------------------------------------- overlaps

    def _any_open(self) -> bool:
        return bool(self.voting_now().any())

    def _overlaps(
        self,
        oc_slot: Idx,
        oc_end: F64,
        n_slot: Idx,
        n_start: F64,
        n_end: F64,
        *,
        fresh: bool = False,
    ) -> list[Held]:
        """Earliest newly learned holding per zone among the zones of the new intervals.
        `fresh`: the first evaluation, when the votes held from the start are new too."""
        nz = self._newest.shape[0]
        touched = np.zeros(nz, dtype=bool)
        touched[self._zone[n_slot]] = True
        if fresh:
            touched[self._zone[self.voting_now()]] = True
        # Known before: kept ended intervals, and the open votes (ending now or not).
        kept = touched[self._zone[self._iv_slot]]
        open_slots = np.flatnonzero(touched[self._zone] & ~np.isnan(self._open))
        open_end = np.full(self._open.shape[0], np.inf)
        open_end[oc_slot] = oc_end
        iv_slot = np.concatenate([self._iv_slot[kept], open_slots, n_slot])
        iv_start = np.concatenate([self._iv_start[kept], self._open[open_slots], n_start])
        iv_end = np.concatenate([self._iv_end[kept], open_end[open_slots], n_end])
        new = np.concatenate(
            [
                np.zeros(int(kept.sum()), np.int64),
                np.full(open_slots.shape[0], int(fresh), np.int64),
                np.ones(n_slot.shape[0], np.int64),
            ]
        )
        zone = self._zone[iv_slot]
        p = iv_slot.shape[0]
        # Sweep: +1 at each start, -1 at each end; at one instant starts before ends
        # (closed intervals). The earliest instant of a holding is always a start.
        coord = np.concatenate([iv_start, iv_end])
        typ = np.concatenate([np.zeros(p, np.int8), np.ones(p, np.int8)])
        zz = np.concatenate([zone, zone])
        d_all = np.concatenate([np.ones(p, np.int64), -np.ones(p, np.int64)])
        d_new = np.concatenate([new, -new])
        order = np.lexsort((typ, coord, zz))
        count = np.cumsum(d_all[order])  # each zone's rows sum to 0: no carry-over
        count_new = np.cumsum(d_new[order])
        zo = zz[order]
        hit = np.flatnonzero((typ[order] == 0) & (count >= self._need[zo]) & (count_new >= 1))
        if hit.shape[0] == 0:
            return []
        zones, first = np.unique(zo[hit], return_index=True)
        out = []
        co = coord[order]
        for z, k in zip(zones.tolist(), hit[first].tolist(), strict=True):
            at = float(co[k])
            inside = (zone == z) & (iv_start <= at) & (iv_end >= at)
            sensors = tuple(sorted({int(x) for x in self._sensor[iv_slot[inside]]}))
            out.append(Held(zone=int(z), at=at, sensors=sensors))
            self.held_count[z] += 1
        return out

    # ---------------------------------------------------------------- retention

    def _keep(self, add_slot: Idx, add_start: F64, add_end: F64) -> None:
        slot = np.concatenate([self._iv_slot, add_slot])
        start = np.concatenate([self._iv_start, add_start])
        end = np.concatenate([self._iv_end, add_end])
        young = end >= self._newest[self._zone[slot]] - self.retention_s
        if not young.all():
            slot, start, end = slot[young], start[young], end[young]
        counts = np.bincount(slot, minlength=self._open.shape[0])
        over = np.flatnonzero(counts > self.cap)
        if over.shape[0]:
            slot, start, end = self._cap(slot, start, end, over)
        self._iv_slot, self._iv_start, self._iv_end = slot, start, end

    def _cap(self, slot: Idx, start: F64, end: F64, over: Idx) -> tuple[Idx, F64, F64]:
        """Merge the closest intervals of each slot in `over` until `cap` remain."""
        rest = ~np.isin(slot, over)
        parts_slot, parts_start, parts_end = [slot[rest]], [start[rest]], [end[rest]]
        for sl in over.tolist():
            mine = np.flatnonzero(slot == sl)
            o = np.argsort(start[mine], kind="stable")
            s_, e_ = start[mine][o], end[mine][o]
            k = s_.shape[0] - self.cap  # gaps to close
            gaps = s_[1:] - e_[:-1]
            close = np.zeros(gaps.shape[0], dtype=bool)
            close[np.argpartition(gaps, k - 1)[:k]] = True
            begins = np.concatenate([[True], ~close])  # an interval that starts a group
            group = np.cumsum(begins) - 1
            g_start = s_[begins]
            g_end = np.full(g_start.shape[0], -np.inf)
            np.maximum.at(g_end, group, e_)
            self.merged += k
            parts_slot.append(np.full(g_start.shape[0], sl, dtype=np.intp))
            parts_start.append(g_start)
            parts_end.append(g_end)
        return (
            np.concatenate(parts_slot),
            np.concatenate(parts_start),
            np.concatenate(parts_end),
        )

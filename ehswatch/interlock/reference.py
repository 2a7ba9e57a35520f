"""`ReferenceVoter`: the rules of `ehswatch.interlock.timeline`, one event at a time.

Written to be read, not to be fast: the vectorized `EventVoter` is tested against it.
Every voter keeps all its intervals (nothing is forgotten); after each evaluation every
instant at which an interval starts is tried, and the zone's vote holds there when at
least M voters have an interval containing it (an interval not yet ended contains every
later instant). The zone trips at the first evaluation after which such an instant
exists; its trip instant is the earliest such instant ever found.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from ehswatch.thresholds.outcome import Evaluation


@dataclass
class _Voter:
    sensor: int
    fault_trips: bool
    tier: int = 0
    faulted: bool = False
    open_since: float | None = None  # start of the vote that has not ended
    ended: list[tuple[float, float]] = field(default_factory=list)

    def voting(self) -> bool:
        return self.fault_trips if self.faulted else self.tier == 3

    def contains(self, t: float) -> bool:
        if self.open_since is not None and self.open_since <= t:
            return True
        return any(a <= t <= b for a, b in self.ended)

    def starts(self) -> list[float]:
        out = [a for a, _ in self.ended]
        return out + ([self.open_since] if self.open_since is not None else [])


@dataclass
class ZoneVerdict:
    first_evaluation: int | None = None  # index of the evaluation after which it held
    first_at: float | None = None  # the earliest instant it held at, then
    earliest_at: float | None = None  # the earliest instant it held at, ever


class ReferenceVoter:
    def __init__(
        self,
        zones: dict[str, tuple[int, list[int], bool]],  # zone: (M, sensors, fault_trips)
        *,
        tier: dict[int, int] | None = None,
        faulted: dict[int, bool] | None = None,
        start_ts: float = -math.inf,
    ) -> None:
        self.need = {z: m for z, (m, _, _) in zones.items()}
        self.voters: dict[str, list[_Voter]] = {}
        self.by_sensor: dict[int, _Voter] = {}
        for z, (_, sensors, fault_trips) in zones.items():
            vs = []
            for s in sensors:
                v = _Voter(s, fault_trips)
                v.tier = (tier or {}).get(s, 0)
                v.faulted = (faulted or {}).get(s, False)
                if v.voting():
                    v.open_since = start_ts
                vs.append(v)
                self.by_sensor[s] = v
            self.voters[z] = vs
        self.verdict = {z: ZoneVerdict() for z in zones}
        self.evaluations = 0

    def feed(self, ev: Evaluation) -> None:
        events: list[tuple[int, float, int, int, int]] = []  # sensor, ts, kind, pos, value
        for k, (s, _a, b, _v, _t, ts) in enumerate(ev.transitions.rows()):
            events.append((s, ts, 0, k, b))
        for k, (s, on, _r, _v, ts) in enumerate(ev.faults.rows()):
            events.append((s, ts, 1, k, int(on)))
        # Per sensor by time; at one instant tier changes before fault changes.
        events.sort(key=lambda e: (e[0], e[1], e[2], e[3]))
        for s, ts, kind, _pos, value in events:
            v = self.by_sensor.get(s)
            if v is None:
                continue
            before = v.voting()
            if kind == 0:
                v.tier = value
            else:
                v.faulted = bool(value)
            after = v.voting()
            if after and not before:
                v.open_since = ts
            elif before and not after:
                assert v.open_since is not None
                v.ended.append((v.open_since, ts))
                v.open_since = None
        for z, vs in self.voters.items():
            candidates = sorted({t for v in vs for t in v.starts()})
            at = next(
                (t for t in candidates if sum(v.contains(t) for v in vs) >= self.need[z]), None
            )
            if at is None:
                continue
            d = self.verdict[z]
            if d.first_evaluation is None:
                d.first_evaluation, d.first_at = self.evaluations, at
            d.earliest_at = at if d.earliest_at is None else min(d.earliest_at, at)
        self.evaluations += 1

    def feed_all(self, evs: Iterable[Evaluation]) -> None:
        for ev in evs:
            self.feed(ev)

"""`VotingTable` (which sensors vote in which zone, M of each), the snapshot `vote()`, and
`clear_to_reset()`.

A zone votes over its sensors of the listed types (config cross-checks make N equal the
number of those sensors). A sensor votes to trip when its tier is 3 (interlock); a
faulted sensor (bad or stale) votes to trip when the zone says `fault_counts_as_trip`
(the default: fail-safe) and does not vote at all otherwise — its held tier never
counts, since a fault means its value is unknown. The zone trips with M votes or more.

The controller does not trip on `vote()` of the current arrays: it votes on the events
of every evaluation (`ehswatch.interlock.timeline.EventVoter`), so that a vote that held
for a moment inside one batch is never missed. `vote()` is the same rule on a snapshot.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from ehswatch.config import PlantConfig
from ehswatch.thresholds.table import ThresholdTable
from ehswatch.thresholds.tier import LATCH_IS_LOW, LATCH_LEVEL, Tier


@dataclass(frozen=True, kw_only=True)
class VotingTable:
    zone_ids: tuple[str, ...]
    voter: NDArray[np.intp]  # sensor index of each vote, zones concatenated
    zone_of: NDArray[np.intp]  # zone index of each vote
    need: NDArray[np.int64]  # M of each zone
    fault_trips: NDArray[np.bool_]  # fault_counts_as_trip of each zone

    @classmethod
    def from_config(cls, config: PlantConfig, table: ThresholdTable) -> VotingTable:
        zones = [z for z in config.zones if z.interlock is not None]
        voter, zone_of = [], []
        for k, z in enumerate(zones):
            assert z.interlock is not None
            for s in config.sensors:
                if s.zone == z.id and s.type in z.interlock.sensor_types:
                    voter.append(table.index[s.id])
                    zone_of.append(k)
        return cls(
            zone_ids=tuple(z.id for z in zones),
            voter=np.array(voter, dtype=np.intp),
            zone_of=np.array(zone_of, dtype=np.intp),
            need=np.array([z.interlock.votes_needed for z in zones if z.interlock], dtype=np.int64),
            fault_trips=np.array(
                [z.interlock.fault_counts_as_trip for z in zones if z.interlock], dtype=bool
            ),
        )

    def voters_of(self, zone: int) -> NDArray[np.intp]:
        voters: NDArray[np.intp] = self.voter[self.zone_of == zone]
        return voters


def vote(
    t: VotingTable, tier: NDArray[np.int8], faulted: NDArray[np.bool_]
) -> tuple[NDArray[np.bool_], NDArray[np.int64]]:
    """(trip wanted, number of trip votes) for every zone of `t`."""
    f = faulted[t.voter]
    votes_each = np.where(f, t.fault_trips[t.zone_of], tier[t.voter] == Tier.INTERLOCK)
    votes = np.bincount(t.zone_of, weights=votes_each, minlength=len(t.zone_ids)).astype(np.int64)
    return votes >= t.need, votes


def clear_to_reset(
    t: VotingTable,
    zone: int,
    table: ThresholdTable,
    value: NDArray[np.float64],
    faulted: NDArray[np.bool_],
    tier: NDArray[np.int8],
) -> list[str]:
    """Why `zone` may not be reset yet: one line per voting input that is not valid,
    still at the interlock tier (a late reading may have raised it), or not back past
    its interlock setpoint by the deadband (empty: it may be reset)."""
    problems = []
    for s in t.voters_of(zone).tolist():
        sid = table.sensor_ids[s]
        v = float(value[s])
        if bool(faulted[s]) or not np.isfinite(v):
            problems.append(f"{sid} has no valid reading")
            continue
        db = float(table.deadband[s])
        before = len(problems)
        for col in np.flatnonzero(LATCH_LEVEL == Tier.INTERLOCK).tolist():
            sp = float(table.setpoint[s, col])
            if np.isnan(sp):
                continue
            if LATCH_IS_LOW[col] and not v > sp + db:
                problems.append(f"{sid} reads {v:g}, not yet above {sp:g} + deadband {db:g}")
            elif not LATCH_IS_LOW[col] and not v < sp - db:
                problems.append(f"{sid} reads {v:g}, not yet below {sp:g} - deadband {db:g}")
        if len(problems) == before and int(tier[s]) == Tier.INTERLOCK:
            # Its latest value is clear, but its tier is not (a late reading raised it).
            problems.append(f"{sid} is at the interlock tier")
    return problems

"""`decide`: what one zone's interlock does on a turn of the rules — pure, no I/O.

Given the zone's state, the vote learned on this turn (`held`: the vote held at some
event time, perhaps between two turns, perhaps inside one batch) and the vote as it
stands now:

- no vote held, none holding now: nothing (and a suppressed trip is forgotten);
- latched already: nothing — only an authorised reset brings the output back;
- bypassed: the trip is suppressed (the controller audits it once per episode);
- otherwise: trip, with the sensors that voted (those of the held vote when there is
  one, else those voting now) and when.

A vote that came and went inside one batch is `held` with no vote now: it trips all the
same. That is the rule that must never miss: a transient over the setpoint for 100 ms is
a trip, whatever the batching.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from ehswatch.interlock.state import ZoneState
from ehswatch.interlock.timeline import Held


class Act(Enum):
    NOTHING = "nothing"
    TRIP = "trip"
    SUPPRESS = "suppress"  # a trip the bypass holds back


@dataclass(frozen=True, kw_only=True, slots=True)
class Decision:
    act: Act
    cause: tuple[int, ...] = ()  # sensor indices that voted
    at: float | None = None  # when the vote held (event time), if learned this turn
    vote_gone: bool = False  # no vote held or holding: a suppressed trip is forgotten


def decide(
    state: ZoneState,
    *,
    held: Held | None,
    holds_now: bool,
    voters_now: tuple[int, ...],
    now: float,
) -> Decision:
    if held is None and not holds_now:
        return Decision(act=Act.NOTHING, vote_gone=True)
    if state.tripped:
        return Decision(act=Act.NOTHING)
    cause, at = (held.sensors, held.at) if held is not None else (voters_now, None)
    if state.bypassed(now):
        return Decision(act=Act.SUPPRESS, cause=cause, at=at)
    return Decision(act=Act.TRIP, cause=cause, at=at)

"""Who may bypass a zone, and when: the rule of the two approvals, as a table of checks.

A bypass takes two people: one safety director and one general manager, the second
within `APPROVAL_WINDOW_S` of the first, the first giving a reason and a compensating
measure, for more than 0 and at most the zone's `max_bypass_h` (never over 24 h). It is
refused while the zone's vote holds, while the zone is tripped (reset it first), and
while it is already bypassed. `bypass_refusal` is pure: the controller hands it what it
knows now and audits what it answers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ehswatch.interlock.state import PendingBypass, ZoneState
from ehswatch.roles import Actor

APPROVAL_WINDOW_S = 15 * 60  # the second bypass approval must come within this
BYPASS_ROLES = ("safety_director", "gm")


@dataclass(frozen=True, kw_only=True, slots=True)
class BypassAsk:
    """One approval asked for, and the zone as it is at that moment."""

    zone: str
    actor: Actor
    reason: str
    measure: str
    hours: float
    state: ZoneState
    now: float
    limit_h: float  # the zone's max_bypass_h, capped at 24
    voting: str  # "2oo3"
    vote_holds: bool
    votes: int

    @property
    def pending(self) -> PendingBypass | None:
        """The first approval, if one is waiting and still within the window."""
        p = self.state.pending
        return p if p is not None and self.now - p.at <= APPROVAL_WINDOW_S else None


@dataclass(frozen=True, kw_only=True, slots=True)
class Check:
    refuses: Callable[[BypassAsk], bool]
    why: Callable[[BypassAsk], str]
    forbidden: bool = False  # the role, not the state (403)


CHECKS: tuple[Check, ...] = (
    Check(
        refuses=lambda a: a.actor.role not in BYPASS_ROLES,
        why=lambda a: "only a safety director and a general manager may approve a bypass",
        forbidden=True,
    ),
    Check(
        # The second approver approves the first one's reason and measure.
        refuses=lambda a: a.pending is None and not (a.reason.strip() and a.measure.strip()),
        why=lambda a: "a bypass needs a reason and a compensating measure",
    ),
    Check(
        refuses=lambda a: not 0 < a.hours <= a.limit_h,
        why=lambda a: f"a bypass of {a.zone} lasts more than 0 and at most {a.limit_h:g} h",
    ),
    Check(
        refuses=lambda a: a.vote_holds,
        why=lambda a: (
            f"the {a.voting} vote of {a.zone} holds now ({a.votes} vote(s)): a bypass is "
            "refused while the vote holds"
        ),
    ),
    Check(
        refuses=lambda a: a.state.tripped,
        why=lambda a: f"{a.zone} is tripped now: reset it first",
    ),
    Check(
        refuses=lambda a: a.state.bypassed(a.now),
        why=lambda a: f"{a.zone} is already bypassed",
    ),
    Check(
        refuses=lambda a: a.pending is not None and a.pending.by == a.actor.name,
        why=lambda a: "the second approval must come from a different person",
    ),
    Check(
        refuses=lambda a: a.pending is not None and a.pending.role == a.actor.role,
        why=lambda a: f"the second approval must come from the {_other(a.actor.role)}",
    ),
)


def bypass_refusal(ask: BypassAsk) -> Check | None:
    """The first check that refuses this approval, in the order of `CHECKS`; None: it is
    taken (the first approval asks, the second turns the bypass on)."""
    return next((c for c in CHECKS if c.refuses(ask)), None)


def _other(role: str) -> str:
    return "gm" if role == "safety_director" else "safety director"

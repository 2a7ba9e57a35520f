"""`ZoneState`: what one interlocked zone is doing, as stored, published and shown."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass(frozen=True, kw_only=True, slots=True)
class PendingBypass:
    """A bypass asked for by one approver, waiting for the second."""

    by: str
    role: str
    at: float
    reason: str
    measure: str
    hours: float


@dataclass(frozen=True, kw_only=True, slots=True)
class ZoneState:
    zone: str
    tripped: bool = False  # latched: stays until an authorised reset
    seq: int = 0  # output command sequence number: +1 for every trip and every reset
    tripped_at: float | None = None
    trip_votes: int = 0
    trip_cause: tuple[str, ...] = ()  # sensors voting when it tripped
    bypass_until: float | None = None
    bypass_reason: str = ""
    bypass_measure: str = ""
    bypass_by: tuple[str, ...] = ()
    pending: PendingBypass | None = None
    output_fault: bool = False  # the PLC did not confirm a command in time (and no later)
    # live, not stored: the current vote, and whether the latch is in the database yet
    votes: int = 0
    vote_holds: bool = False
    latch_durable: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def bypassed(self, now: float) -> bool:
        return self.bypass_until is not None and now < self.bypass_until

    def output_tripped(self, now: float) -> bool:
        """What the PLC output must be: tripped while latched, unless bypassed."""
        return self.tripped and not self.bypassed(now)

    def public(self, now: float) -> dict[str, Any]:
        """Every field but `extra`, as JSON takes it. Built field by field, not with
        `asdict` (which copies recursively): the control part publishes this for every
        interlocked zone once per tick."""
        d = {name: getattr(self, name) for name in _PUBLIC_FIELDS}
        if self.pending is not None:
            d["pending"] = asdict(self.pending)
        d["bypassed"] = self.bypassed(now)
        d["trip_cause"] = list(self.trip_cause)
        d["bypass_by"] = list(self.bypass_by)
        return d


_PUBLIC_FIELDS = tuple(f.name for f in fields(ZoneState) if f.name != "extra")

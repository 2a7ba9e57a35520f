"""The alarm of one sensor episode, and its ISA-18.2 state machine (pure: no I/O).

States: normal, unack-active, ack-active, unack-returned, shelved, out-of-service.

    condition rises        normal ──────────────► unack-active
    operator acks          unack-active ────────► ack-active
    condition returns      unack-active ────────► unack-returned
                           ack-active ──────────► normal   (episode closed)
    operator acks          unack-returned ──────► normal   (episode closed)
    condition rises again  unack-returned ──────► unack-active
    tier rises above peak  ack-active ──────────► unack-active (re-alarm: it got worse)
    supervisor shelves     any open state ──────► shelved (never at tier 3)
    shelf expires/unshelve shelved ─────────────► unack-active if still active, else closed
    tier 3 while shelved   shelved ─────────────► unack-active (tier 3 cannot be shelved)
    sensor out of service  any open state ──────► out-of-service (closed when back in service)
    grouped alarm returns  unack-active ────────► normal   (episode closed: never annunciated)

A sensor has at most one open alarm of each kind: `tier` (the three-tier thresholds) and
`fault` (an instrument fault, kept apart from the tier). A zone has at most one open
alarm of each zone condition kind (`output-fault`: the PLC did not confirm an interlock
command; `not-durable`: a trip's latch is not yet stored), its `sensor` being
``zone:<id>``; these are never shelved. A Modbus device that stops answering has one
`comm` alarm, its `sensor` being ``device:<id>``; the `fault` alarms its sensors raise
meanwhile are **grouped** under it (`grouped_under` is the device alarm's source,
`suppressed_by` its id): visible, but neither notified nor ticketed one by one, and
closed as soon as they return (nobody was asked to acknowledge them). A grouped alarm
still active after its device answers again is **released** (`released`): from then on
it is an alarm of its own. Each function returns the new alarm and the names of the
events to record, or raises `Refused`/`Forbidden`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import StrEnum

from ehswatch.roles import Actor, Forbidden, Refused


class AlarmState(StrEnum):
    NORMAL = "normal"
    UNACK_ACTIVE = "unack-active"
    ACK_ACTIVE = "ack-active"
    UNACK_RETURNED = "unack-returned"
    SHELVED = "shelved"
    OUT_OF_SERVICE = "out-of-service"


STATE_CODE = {s: k for k, s in enumerate(AlarmState)}  # for InfluxDB: numbers only


class AlarmKind(StrEnum):
    TIER = "tier"
    FAULT = "fault"
    # Zone conditions of the interlock (source "zone:<id>"), raised at the interlock tier.
    OUTPUT_FAULT = "output-fault"
    NOT_DURABLE = "not-durable"
    # A Modbus device or gateway that stopped answering (source "device:<id>").
    COMM = "comm"


ZONE_KINDS = frozenset({AlarmKind.OUTPUT_FAULT, AlarmKind.NOT_DURABLE})
# Kinds that routes, grades and messages treat as an instrument fault.
FAULT_KINDS = frozenset({AlarmKind.FAULT, AlarmKind.COMM})


TIER_NAMES = {1: "warning", 2: "alarm", 3: "interlock"}


def route_tier_of(kind: str, peak_tier: int) -> str:
    """The tier name routes and ticket grades go by: warning, alarm, interlock, or fault
    (an instrument fault, or a device that stopped answering)."""
    return "fault" if kind in FAULT_KINDS else TIER_NAMES.get(peak_tier, "warning")


@dataclass(frozen=True, kw_only=True, slots=True)
class Alarm:
    id: int | None = None
    sensor: str
    zone: str
    sensor_type: str
    kind: AlarmKind
    state: AlarmState = AlarmState.UNACK_ACTIVE
    active: bool = True  # the condition (tier > 0, or fault) holds now
    tier: int = 0  # current tier (tier alarms)
    peak_tier: int = 0
    value: float | None = None
    threshold: float | None = None
    first_at: float
    last_at: float
    acked_at: float | None = None
    acked_by: str = ""
    shelved_until: float | None = None
    shelved_by: str = ""
    shelve_reason: str = ""
    closed_at: float | None = None
    transitions: int = 1
    chattering: bool = False
    escalations: int = 0
    last_escalated_at: float | None = None
    grouped_under: str = ""  # "device:<id>": grouped under that device's comm alarm
    suppressed_by: int | None = None  # the id of that comm alarm

    @property
    def open(self) -> bool:
        return self.closed_at is None

    @property
    def unacked(self) -> bool:
        return self.state in (AlarmState.UNACK_ACTIVE, AlarmState.UNACK_RETURNED)

    @property
    def route_tier(self) -> str:
        """The tier name routes match: warning, alarm, interlock, or fault."""
        return route_tier_of(self.kind, self.peak_tier)

    @property
    def grouped(self) -> bool:
        return bool(self.grouped_under)


Outcome = tuple[Alarm, list[str]]


def raised(
    *,
    sensor: str,
    zone: str,
    sensor_type: str,
    kind: AlarmKind,
    tier: int,
    value: float | None,
    threshold: float | None,
    at: float,
) -> Outcome:
    return Alarm(
        sensor=sensor,
        zone=zone,
        sensor_type=sensor_type,
        kind=kind,
        tier=tier,
        peak_tier=tier,
        value=value,
        threshold=threshold,
        first_at=at,
        last_at=at,
    ), ["raised"]


def condition(
    a: Alarm, *, active: bool, tier: int, value: float | None, threshold: float | None, at: float
) -> Outcome:
    """The sensor's condition changed (a tier transition or a fault change)."""
    s = AlarmState
    base = dataclasses.replace(
        a,
        active=active,
        tier=tier,
        value=value,
        last_at=at,
        threshold=threshold if threshold is not None else a.threshold,
        transitions=a.transitions + 1,
    )
    if a.state == s.OUT_OF_SERVICE:
        return dataclasses.replace(base, state=a.state), []
    if active:
        worse = tier > a.peak_tier
        peak = max(a.peak_tier, tier)
        change = "tier_raised" if worse else "tier_changed"  # raised: a new peak
        if a.state == s.SHELVED and tier >= 3:
            return dataclasses.replace(
                base,
                state=s.UNACK_ACTIVE,
                peak_tier=peak,
                shelved_until=None,
                shelved_by="",
                shelve_reason="",
            ), ["unshelved", change]
        if a.state == s.SHELVED:
            return dataclasses.replace(base, peak_tier=peak), [change]
        if a.state == s.UNACK_RETURNED:
            return dataclasses.replace(base, state=s.UNACK_ACTIVE, peak_tier=peak), ["reactivated"]
        if a.state == s.ACK_ACTIVE and worse:
            return dataclasses.replace(
                base, state=s.UNACK_ACTIVE, peak_tier=peak, acked_at=None, acked_by=""
            ), [change]
        return dataclasses.replace(base, peak_tier=peak), [change]
    # returned to normal
    if a.grouped and a.state == s.UNACK_ACTIVE:  # never annunciated: nothing to acknowledge
        return dataclasses.replace(base, state=s.NORMAL, closed_at=at), ["returned", "closed"]
    if a.state == s.UNACK_ACTIVE:
        return dataclasses.replace(base, state=s.UNACK_RETURNED), ["returned"]
    if a.state == s.ACK_ACTIVE:
        return dataclasses.replace(base, state=s.NORMAL, closed_at=at), ["returned", "closed"]
    return base, ["returned"]  # shelved: closes when the shelf ends


def ack(a: Alarm, actor: Actor, at: float) -> Outcome:
    if not actor.at_least("operator"):
        raise Forbidden(f"{actor.name} ({actor.role}) may not acknowledge alarms")
    if a.state == AlarmState.UNACK_ACTIVE:
        return dataclasses.replace(
            a, state=AlarmState.ACK_ACTIVE, acked_at=at, acked_by=actor.name
        ), ["acked"]
    if a.state == AlarmState.UNACK_RETURNED:
        return dataclasses.replace(
            a, state=AlarmState.NORMAL, acked_at=at, acked_by=actor.name, closed_at=at
        ), ["acked", "closed"]
    raise Refused(f"alarm {a.id} is {a.state}, not unacknowledged")


def shelve(
    a: Alarm, actor: Actor, at: float, *, minutes: float, reason: str, max_minutes: float
) -> Outcome:
    if not actor.at_least("supervisor"):
        raise Forbidden(f"{actor.name} ({actor.role}) may not shelve alarms")
    if not reason.strip():
        raise Refused("shelving needs a reason")
    if not 0 < minutes <= max_minutes:
        raise Refused(f"an alarm is shelved for more than 0 and at most {max_minutes:g} minutes")
    if a.kind == AlarmKind.TIER and a.tier >= 3:
        raise Refused("an alarm at the interlock tier cannot be shelved")
    if a.kind in ZONE_KINDS:
        raise Refused("an interlock zone condition cannot be shelved")
    if not a.open or a.state in (AlarmState.SHELVED, AlarmState.OUT_OF_SERVICE):
        raise Refused(f"alarm {a.id} is {a.state if a.open else 'closed'}: it cannot be shelved")
    return dataclasses.replace(
        a,
        state=AlarmState.SHELVED,
        shelved_until=at + minutes * 60,
        shelved_by=actor.name,
        shelve_reason=reason,
    ), ["shelved"]


def unshelve(a: Alarm, at: float) -> Outcome:
    """The shelf ends (expiry, or a supervisor takes it off)."""
    cleared = dataclasses.replace(a, shelved_until=None, shelved_by="", shelve_reason="")
    if a.active:
        return dataclasses.replace(
            cleared, state=AlarmState.UNACK_ACTIVE, acked_at=None, acked_by=""
        ), ["unshelved"]
    return dataclasses.replace(cleared, state=AlarmState.NORMAL, closed_at=at), [
        "unshelved",
        "closed",
    ]


def out_of_service(a: Alarm, at: float) -> Outcome:
    return dataclasses.replace(a, state=AlarmState.OUT_OF_SERVICE, last_at=at), ["out_of_service"]


def back_in_service(a: Alarm, at: float) -> Outcome:
    return dataclasses.replace(a, state=AlarmState.NORMAL, closed_at=at), ["closed"]


def group(a: Alarm, under: Alarm) -> Alarm:
    """`a` belongs to the device alarm `under` (no event of its own: the change that
    raised or reactivated it carries the group)."""
    return dataclasses.replace(a, grouped_under=under.sensor, suppressed_by=under.id)


def regroup(a: Alarm, under: Alarm, at: float) -> Outcome:
    """The device stopped answering again: its alarms still grouped under the previous
    episode join the new one."""
    return dataclasses.replace(group(a, under), last_at=at), ["grouped"]


def release(a: Alarm, at: float) -> Outcome:
    """The device answers again and the condition still holds: an alarm of its own."""
    return dataclasses.replace(a, grouped_under="", suppressed_by=None, last_at=at), ["released"]


def flag_chattering(a: Alarm, recent_transitions: int, at_least: int = 3) -> Outcome:
    """`at_least` transitions within the chatter window (3 in 60 s): flagged once per
    episode."""
    if a.chattering or recent_transitions < at_least:
        return a, []
    return dataclasses.replace(a, chattering=True), ["chattering"]

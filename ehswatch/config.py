"""The plant configuration: YAML in, one validated, immutable `PlantConfig` out.

Contract (docs/configuration.md):
- `load_config(path)` returns a `PlantConfig` or raises `ConfigError` carrying *every*
  problem found, each as ``path.to.key: what is wrong``. List items are named by their
  ``id`` where they have one (``sensors.D-101.zone``), by position otherwise.
- String values may name secrets as ``${ENV_VAR}`` or ``${ENV_VAR:-default}`` (the
  default also when the variable is empty, as in a shell); an unset variable without a
  default is an error at the key that used it.
- Structure and types are checked by pydantic; references between sections (a sensor's
  type, zone and Modbus device, a zone's PLC, the voting arithmetic, tier order after
  per-sensor overrides) by the typed checks of `CROSS_CHECKS`, one per section. When
  some items fail their types, the checks still run on every item that passes, so that
  a wrong type in one place never hides an unknown zone in another.
"""

from __future__ import annotations

import itertools
import os
import re
import sys
import typing
import zoneinfo
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Generic, Literal, Self, TypeVar

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PrivateAttr,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.dataclasses import dataclass as pydantic_dataclass

from ehswatch.names import listed

Role = Literal["viewer", "operator", "supervisor", "dept_head", "safety_director", "gm", "admin"]
ROLES: tuple[Role, ...] = (
    "viewer",
    "operator",
    "supervisor",
    "dept_head",
    "safety_director",
    "gm",
    "admin",
)
TierName = Literal["warning", "alarm", "interlock"]
# The tiers a setpoint may be given for, least severe first: `Tier`'s above NORMAL, by
# name (a test holds the two together; `thresholds` imports this module, not the reverse).
TIER_NAMES: tuple[TierName, ...] = typing.get_args(TierName)
Grade = Literal["A", "B", "C"]
# Who may approve a hazard ticket: the roles, plus the shop-floor team leader
# (it acts at supervisor level, see docs/configuration.md).
Approver = Literal[
    "team_leader",
    "supervisor",
    "dept_head",
    "safety_director",
    "gm",
    "admin",
]

# Ids end up in MQTT topics, InfluxDB tags and URLs: keep them to a safe alphabet.
Id = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")]
# A device's and a zone's alarms are stored as "device:<id>" and "zone:<id>" in the
# 64-character sensor columns (which PostgreSQL enforces): their ids are shorter.
DeviceId = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,56}$")]
ZoneId = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,58}$")]
Seconds = Annotated[float, Field(ge=0, allow_inf_nan=False)]
PositiveSeconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]
PositiveHours = Annotated[float, Field(gt=0, allow_inf_nan=False)]
PositiveDays = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Port = Annotated[int, Field(ge=1, le=65535)]
Register = Annotated[int, Field(ge=0, le=65535)]
Setpoint = Annotated[float, Field(allow_inf_nan=False)]

VOTING_RE = re.compile(r"^([1-9][0-9]?)oo([1-9][0-9]?)$")


@dataclass(frozen=True, kw_only=True, slots=True)
class Voting:
    """M out of N ("2oo3"): the zone trips when `m` of its `n` voters vote. Parsed once,
    here; shown as it is written."""

    m: int
    n: int

    @classmethod
    def parse(cls, value: object) -> Voting:
        if isinstance(value, Voting):
            return value
        match = VOTING_RE.match(value) if isinstance(value, str) else None
        if match is None:
            raise ValueError(f"voting {value!r} is not of the form MooN, e.g. 1oo2 or 2oo3")
        m, n = int(match.group(1)), int(match.group(2))
        if m > n:
            raise ValueError(f"voting {value!r}: M must not exceed N")
        return cls(m=m, n=n)

    def __str__(self) -> str:
        return f"{self.m}oo{self.n}"


VotingField = Annotated[
    Voting,
    BeforeValidator(Voting.parse),
    PlainSerializer(str, return_type=str),
    WithJsonSchema({"type": "string", "pattern": VOTING_RE.pattern}),
]
ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
MAX_BYPASS_HOURS = 24.0


class ConfigError(Exception):
    """A configuration that must not be run. `errors` holds one ``path: message`` each."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


ClockTime = Annotated[str, Field(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")]


class Shift(_Model):
    """A shift: from `start` to `end` (HH:MM) in the site's time zone; an `end` at or
    before `start` ends the next day (a night shift)."""

    name: Id
    start: ClockTime
    end: ClockTime


class Site(_Model):
    id: Id
    name: str
    timezone: str = "UTC"
    # The plant's shifts (docs/governance.md): cleaning records are kept per shift.
    shifts: list[Shift] = []

    @field_validator("shifts")
    @classmethod
    def _shifts_apart(cls, value: list[Shift]) -> list[Shift]:
        names = [s.name for s in value]
        if len(set(names)) < len(names):
            raise ValueError("two shifts share a name")
        return value

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {value!r} (use an IANA name such as Asia/Shanghai)"
            ) from None
        return value


class MqttSettings(_Model):
    url: Annotated[str, Field(pattern=r"^mqtts?://[^/:]+(:[0-9]{1,5})?/?$")] = (
        "mqtt://127.0.0.1:1883"
    )
    username: str | None = None
    password: str | None = None
    topic_prefix: Annotated[str, Field(pattern=r"^[^#+/][^#+]*$")] = "ehs"
    client_id: str | None = None
    ca_file: str | None = None


class InfluxSettings(_Model):
    url: Annotated[str, Field(pattern=r"^https?://")]
    token: str
    org: str
    bucket: str
    batch_size: Annotated[int, Field(ge=1, le=1_000_000)] = 5000
    flush_interval_ms: Annotated[int, Field(ge=10)] = 1000
    spool_dir: str = "var/spool"
    spool_max_mb: Annotated[int, Field(ge=1)] = 1024
    # Points kept in memory while neither the server nor the spool takes them (pending
    # readings included); over it the oldest readings are dropped and counted.
    memory_max_points: Annotated[int, Field(ge=1000)] = 200_000

    @field_validator("token")
    @classmethod
    def _header_safe(cls, value: str) -> str:
        # Sent in an HTTP header: a line break or another control character (a secret
        # pasted with its newline) would make every write fail, so it is refused here.
        if any(ord(c) < 32 or ord(c) == 127 for c in value):
            raise ValueError("the token holds a line break or another control character")
        return value


class DatabaseSettings(_Model):
    url: str = "sqlite+aiosqlite:///var/ehswatch.db"


class InstanceSettings(_Model):
    """Active + standby (docs/scale.md): instances with the same `lease` take turns
    owning the plant through a lease row in the shared database; the one holding it runs
    the control part, the others wait, writing nothing. `lease_s`: how long a lease
    lasts without renewal (it is renewed four times as often)."""

    lease: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    lease_s: Annotated[float, Field(ge=0.5, le=60, allow_inf_nan=False)] = 1.0


class ApiSettings(_Model):
    host: str = "127.0.0.1"
    port: Port = 8000
    # Sparklines: one row per step (last value, worst tier of the step), this many rows;
    # 5 bytes per sensor and row, shared between the control and the desk part.
    history_step_s: Annotated[float, Field(ge=1, le=3600)] = 10.0
    history_points: Annotated[int, Field(ge=1, le=1440)] = 60
    # The desk part (API, board, tickets, notifications) is a process of its own; a
    # dead one is started again after this long, doubling up to 30 s.
    desk_restart_s: Annotated[float, Field(gt=0, le=30)] = 0.5
    # Sign-in sessions (docs/workbench.md): ended after this long without a request, and
    # after this long in any case; the cookie is sent over HTTPS only when `cookie_secure`.
    # Where people reach the service (e.g. https://ehs.plant.local): every notification
    # carries the link to its item on the workbench built from it. None: no links.
    public_url: Annotated[str, Field(pattern=r"^https?://[^/\s]+(/[^\s]*)?$")] | None = None
    session_idle_min: Annotated[float, Field(ge=1, le=7 * 24 * 60)] = 480.0
    session_max_h: Annotated[float, Field(gt=0, le=30 * 24)] = 16.0
    cookie_secure: bool = False


class User(_Model):
    name: Annotated[str, Field(min_length=1)]
    role: Role
    token_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class TierSet(_Model):
    """Setpoints of one side (high or low). Severity grows warning → alarm → interlock."""

    warning: Setpoint | None = None
    alarm: Setpoint | None = None
    interlock: Setpoint | None = None

    def items(self) -> list[tuple[TierName, float]]:
        """The tiers that are set, least severe first."""
        return [(name, v) for name in TIER_NAMES if (v := getattr(self, name)) is not None]

    def merged(self, override: TierSet | None) -> TierSet:
        if override is None:
            return self
        return self.model_copy(update=override.model_dump(exclude_none=True))


class _SideTiers(TierSet):
    """A side's setpoints, checked in order of severity (`tier_order_error`)."""

    side: ClassVar[Literal["high", "low"]]

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if (err := tier_order_error(self.side, self.items())) is not None:
            raise ValueError(err)
        return self


class HighTiers(_SideTiers):
    side = "high"


class LowTiers(_SideTiers):
    side = "low"


def tier_order_error(
    side: Literal["high", "low"], setpoints: Sequence[tuple[str, float]]
) -> str | None:
    """Why a side's setpoints are not in order of severity, or None when they are.

    High side: each more severe tier has a strictly greater setpoint; low side: smaller.
    """
    for (n1, v1), (n2, v2) in itertools.pairwise(setpoints):
        if side == "high" and not v1 < v2:
            return f"tiers out of order: high {n1} {v1:g} must be below {n2} {v2:g}"
        if side == "low" and not v1 > v2:
            return f"tiers out of order: low {n1} {v1:g} must be above {n2} {v2:g}"
    return None


def sides_overlap_error(high: TierSet | None, low: TierSet | None) -> str | None:
    if high is None or low is None or not high.items() or not low.items():
        return None
    top_low = max(v for _, v in low.items())
    bottom_high = min(v for _, v in high.items())
    if not top_low < bottom_high:
        return f"low setpoints ({top_low:g}) must all be below high setpoints ({bottom_high:g})"
    return None


class _ThresholdFields(_Model):
    """Keys a sensor type defines and a sensor may override."""

    high: HighTiers | None = None
    low: LowTiers | None = None
    deadband: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = None
    on_delay_s: Seconds | None = None
    off_delay_s: Seconds | None = None
    stale_after_s: PositiveSeconds | None = None
    max_ahead_s: Seconds | None = None
    max_behind_s: PositiveSeconds | None = None
    clock_skew_after_s: Seconds | None = None


class Prediction(_Model):
    """Predictive warning for a sensor type (docs/analytics.md): off unless `enabled`.
    A least-squares trend over the last `window_s`, counted when at least `min_points`
    samples show a slope `min_t` standard errors from zero; a crossing of the alarm or
    interlock setpoint projected within `horizon_s` is a predicted event. Readings are
    sampled every `sample_s` (at least once per evaluator tick), so the window holds
    `window_s / sample_s` samples: at least `min_points`."""

    enabled: bool = False
    window_s: Annotated[float, Field(ge=5, le=3600, allow_inf_nan=False)] = 120.0
    horizon_s: Annotated[float, Field(gt=0, le=24 * 3600, allow_inf_nan=False)] = 600.0
    min_points: Annotated[int, Field(ge=3, le=3600)] = 20
    min_t: Annotated[float, Field(gt=0, le=100, allow_inf_nan=False)] = 5.0
    sample_s: Annotated[float, Field(gt=0, le=600, allow_inf_nan=False)] = 5.0

    @model_validator(mode="after")
    def _window_holds_enough_samples(self) -> Prediction:
        if self.window_s / self.sample_s < self.min_points:
            raise ValueError(
                f"window_s / sample_s = {self.window_s / self.sample_s:g} samples, fewer "
                f"than min_points ({self.min_points}): a trend could never count"
            )
        return self


class SensorType(_ThresholdFields):
    unit: str
    prediction: Prediction = Prediction()
    # The occupational exposure limit, as a shift's time-weighted average in `unit` (the
    # site takes it from GBZ 2.1 or its own rules): a shift above it opens a ticket.
    exposure_limit: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None
    deadband: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 0.0
    on_delay_s: Seconds = 0.0
    off_delay_s: Seconds = 0.0
    stale_after_s: PositiveSeconds = 30.0
    # A reading stamped further ahead of the service clock than this is rejected.
    max_ahead_s: Seconds = 5.0
    # A reading stamped further back than this (a backlog after a long outage, a device
    # clock far behind) is rejected and counted: the horizon of what is evaluated.
    max_behind_s: PositiveSeconds = 3600.0
    # Only late or future readings for this long (service time): FAULT clock_skew.
    clock_skew_after_s: Seconds = 10.0

    @model_validator(mode="after")
    def _sides_apart(self) -> SensorType:
        if (err := sides_overlap_error(self.high, self.low)) is not None:
            raise ValueError(err)
        return self

    @property
    def has_interlock_setpoint(self) -> bool:
        return any(t is not None and t.interlock is not None for t in (self.high, self.low))

    def sides(self, sensor: Sensor) -> tuple[TierSet | None, TierSet | None]:
        """This type's (high, low) setpoints with `sensor`'s overrides applied: an
        override replaces only the tiers it names."""
        high = self.high.merged(sensor.high) if self.high is not None else sensor.high
        low = self.low.merged(sensor.low) if self.low is not None else sensor.low
        return high, low


class ModbusDevice(_Model):
    id: DeviceId
    host: str
    port: Port = 502
    unit: Annotated[int, Field(ge=0, le=247)] = 1
    framer: Literal["tcp", "rtu"] = "tcp"
    poll_interval_s: PositiveSeconds = 1.0
    timeout_s: PositiveSeconds = 0.5
    retries: Annotated[int, Field(ge=0, le=10)] = 2


class Heartbeat(_Model):
    # `register` is the config key; pydantic models inherit ABC.register, hence the alias.
    address: Register = Field(alias="register")
    period_s: PositiveSeconds = 1.0


class Plc(_Model):
    id: Id
    host: str
    port: Port = 502
    unit: Annotated[int, Field(ge=0, le=247)] = 1
    heartbeat: Heartbeat | None = None
    confirm_timeout_s: PositiveSeconds = 2.0


class InterlockSettings(_Model):
    plc: Id
    coil: Register | None = None
    address: Register | None = Field(default=None, alias="register")
    trip_value: bool | int = True
    # For a register output: the value a reset writes (a coil resets to `not trip_value`).
    normal_value: Annotated[int, Field(ge=0, le=65535)] = 0
    # Optional register where each command's sequence number is written after the output.
    seq_register: Register | None = None
    voting: VotingField = Voting(m=1, n=1)
    sensor_types: Annotated[list[str], Field(min_length=1)]
    fault_counts_as_trip: bool = True
    max_bypass_h: Annotated[float, Field(gt=0, le=MAX_BYPASS_HOURS)] = 8.0

    @model_validator(mode="after")
    def _one_output(self) -> InterlockSettings:
        if (self.coil is None) == (self.address is None):
            raise ValueError("give exactly one of coil or register for the trip output")
        if self.coil is not None and not isinstance(self.trip_value, bool):
            raise ValueError("a coil output takes trip_value true or false")
        if self.address is not None:
            if not 0 <= int(self.trip_value) <= 65535:
                raise ValueError(f"trip_value {self.trip_value} does not fit a register (0…65535)")
            if int(self.trip_value) == self.normal_value:
                raise ValueError(
                    f"trip_value and normal_value are both {self.normal_value}: "
                    "a trip would change nothing at the PLC"
                )
        return self

    @property
    def votes_needed(self) -> int:
        return self.voting.m

    @property
    def voters(self) -> int:
        return self.voting.n


PersonName = Annotated[str, Field(max_length=64)]
OWNER_ROLES = ("team_leader", "dept_head", "safety_director", "gm", "on_call")
OwnerRole = Literal["team_leader", "dept_head", "safety_director", "gm", "on_call"]


class ZoneOwners(_Model):
    """Who answers for a zone, by role: the names of people (or machine users). An empty
    name falls back to the plant's default (`governance.owners`)."""

    team_leader: PersonName = ""
    dept_head: PersonName = ""
    safety_director: PersonName = ""
    gm: PersonName = ""
    on_call: PersonName = ""  # the department's on-call engineer


class CleaningRule(_Model):
    """A dust zone's cleaning SOP: at the end of each shift (of `shifts`, or every one),
    the `items` done and recorded with the residue measured (≤ `residue_limit_mm`) and,
    when `photo_required`, a photo. A shift ended `grace_min` ago without its record
    opens a ticket of `grade`; a record over the limit opens one too."""

    items: Annotated[list[Annotated[str, Field(min_length=1, max_length=200)]], Field(min_length=1)]
    photo_required: bool = True
    residue_limit_mm: Annotated[float, Field(gt=0, le=100, allow_inf_nan=False)] = 1.0
    grace_min: Annotated[float, Field(ge=0, le=24 * 60, allow_inf_nan=False)] = 30.0
    # A shift's record is taken from this long before its end (cleaning is at the end).
    record_from_min: Annotated[float, Field(gt=0, le=24 * 60, allow_inf_nan=False)] = 120.0
    grade: Grade = "C"
    shifts: list[Id] = []


class Zone(_Model):
    id: ZoneId
    name: str = ""
    interlock: InterlockSettings | None = None
    owners: ZoneOwners = ZoneOwners()
    risk: Literal["high", "medium", "low"] = "medium"  # picks its checkpoints' checklist
    cleaning: CleaningRule | None = None


class ModbusPoint(_Model):
    device: Id
    address: Register = Field(alias="register")
    kind: Literal["holding", "input", "coil", "discrete"] = "holding"
    dtype: Literal["int16", "uint16", "int32", "uint32", "float32", "float64", "bool"] = "float32"
    word_order: Literal["big", "little"] = "big"
    byte_order: Literal["big", "little"] = "big"
    scale: Annotated[float, Field(allow_inf_nan=False)] = 1.0
    offset: Annotated[float, Field(allow_inf_nan=False)] = 0.0

    @model_validator(mode="after")
    def _bits_are_bool(self) -> ModbusPoint:
        is_bit = self.kind in ("coil", "discrete")
        if is_bit != (self.dtype == "bool"):
            raise ValueError(
                "coil and discrete points take dtype bool; registers take a numeric dtype"
            )
        return self


class MqttPoint(_Model):
    topic: Annotated[str, Field(pattern=r"^[^#+]+$", min_length=1)]


@pydantic_dataclass(config=ConfigDict(extra="forbid"), frozen=True, slots=True, kw_only=True)
class Sensor:
    """One sensor. A slotted dataclass, not a model: a plant has up to 100 000 of them in
    each process, and a model costs twice the memory. The threshold keys are those of
    `_ThresholdFields` (a sensor overrides its type's, key by key)."""

    id: Id
    type: str
    zone: Id
    name: str = ""
    modbus: ModbusPoint | None = None
    mqtt: MqttPoint | None = None
    high: HighTiers | None = None
    low: LowTiers | None = None
    deadband: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = None
    on_delay_s: Seconds | None = None
    off_delay_s: Seconds | None = None
    stale_after_s: PositiveSeconds | None = None
    max_ahead_s: Seconds | None = None
    max_behind_s: PositiveSeconds | None = None
    clock_skew_after_s: Seconds | None = None

    @field_validator("type", "zone")
    @classmethod
    def _shared(cls, v: str) -> str:
        return sys.intern(v)  # thousands of sensors name the same zone and type

    @model_validator(mode="after")
    def _one_source(self) -> Sensor:
        if self.modbus is not None and self.mqtt is not None:
            raise ValueError("a sensor reads from modbus or mqtt, not both")
        return self


class WebhookChannel(_Model):
    id: Id
    type: Literal["webhook"]
    url: Annotated[str, Field(pattern=r"^https?://")]


class DingTalkChannel(_Model):
    id: Id
    type: Literal["dingtalk"]
    url: Annotated[str, Field(pattern=r"^https?://")]
    secret: str | None = None


class WeComChannel(_Model):
    id: Id
    type: Literal["wecom"]
    url: Annotated[str, Field(pattern=r"^https?://")]


class Smtp(_Model):
    host: str
    port: Port = 25
    username: str | None = None
    password: str | None = None
    starttls: bool = False


class EmailChannel(_Model):
    id: Id
    type: Literal["email"]
    smtp: Smtp
    to: Annotated[list[Annotated[str, Field(pattern=r"^[^@\s]+@[^@\s]+$")]], Field(min_length=1)]
    sender: str = "ehswatch@localhost"


Channel = Annotated[
    WebhookChannel | DingTalkChannel | WeComChannel | EmailChannel, Field(discriminator="type")
]


class RouteMatch(_Model):
    zones: list[str] | None = None
    tiers: list[Literal["warning", "alarm", "interlock", "fault"]] | None = None
    sensor_types: list[str] | None = None


class Route(_Model):
    match: RouteMatch = RouteMatch()
    notify: Annotated[list[str], Field(min_length=1)]
    escalate_after_s: PositiveSeconds | None = None
    escalate_to: list[str] = []
    # Also predicted crossings (docs/analytics.md) that match: a route asks for them.
    predicted: bool = False


class Flood(_Model):
    count: Annotated[int, Field(ge=1)] = 10
    window_s: PositiveSeconds = 60.0
    # Notifications wait this long so that a flood arriving at once goes out as one message.
    group_wait_s: Seconds = 1.0


class Notifications(_Model):
    channels: list[Channel] = []
    routes: list[Route] = []
    flood: Flood = Flood()


class AlarmSettings(_Model):
    """Alarm handling (docs/alarms.md has the defaults and why)."""

    max_shelve_min: Annotated[float, Field(gt=0, le=24 * 60)] = 240.0
    chatter_count: Annotated[int, Field(ge=2)] = 3
    chatter_window_s: PositiveSeconds = 60.0


class GradeRule(_Model):
    deadline_h: PositiveHours
    stop_work: bool = False
    approvers: Annotated[list[Approver], Field(min_length=1)]
    # A higher role may sign in place of an approver role (a GM for a department head);
    # each approval still comes from a different person.
    stand_in: bool = False


def _default_grades() -> dict[Grade, GradeRule]:
    return {
        "A": GradeRule(deadline_h=2, stop_work=True, approvers=["gm", "safety_director"]),
        "B": GradeRule(deadline_h=24, approvers=["dept_head"], stand_in=True),
        "C": GradeRule(deadline_h=72, approvers=["team_leader"], stand_in=True),
    }


class HazardWebhook(_Model):
    url: Annotated[str, Field(pattern=r"^https?://")]


class Hazards(_Model):
    tier_grade: dict[Literal["warning", "alarm", "interlock", "fault"], Grade] = {
        "interlock": "A",
        "alarm": "B",
        "warning": "C",
        "fault": "C",
    }
    grades: dict[Grade, GradeRule] = Field(default_factory=_default_grades)
    # See docs/hazards.md: where reminders and escalations go, the
    # outbound webhook to a management platform, evidence storage, recurrence.
    notify: list[str] = []
    webhook: HazardWebhook | None = None
    evidence_dir: str = "var/evidence"
    evidence_max_mb: Annotated[float, Field(gt=0, le=100)] = 10.0
    recurrence_days: PositiveDays = 30.0
    chronic_count: Annotated[int, Field(ge=2)] = 3

    @model_validator(mode="after")
    def _every_grade_defined(self) -> Hazards:
        missing = sorted(set(self.tier_grade.values()) - set(self.grades))
        if missing:
            raise ValueError(f"tier_grade uses grades with no rule in grades: {listed(missing)}")
        return self


class ChecklistItem(_Model):
    """One line of a patrol checklist: a yes/no question (yes passes), a number within
    `min`..`max` (either may be absent), or a photo that must be taken."""

    id: Id
    text: Annotated[str, Field(min_length=1, max_length=200)]
    kind: Literal["yes_no", "number", "photo"] = "yes_no"
    min: Annotated[float, Field(allow_inf_nan=False)] | None = None
    max: Annotated[float, Field(allow_inf_nan=False)] | None = None
    unit: str = ""

    @model_validator(mode="after")
    def _limits_for_numbers(self) -> ChecklistItem:
        if self.kind != "number" and (self.min is not None or self.max is not None):
            raise ValueError("only a number item takes min and max")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError("min is above max")
        return self


Checklist = Annotated[list[ChecklistItem], Field(min_length=1)]


class Checkpoint(_Model):
    """A place a patrol must stand at (a zone, or a device in it), with its QR code: a
    round every `every_h` hours, missed `grace_min` after it fell due. The checklist is
    `checklist`, or the one for its zone's risk."""

    id: Id
    name: str = ""
    zone: Id
    device: str = ""
    checklist: Id | None = None
    every_h: Annotated[float, Field(gt=0, le=24 * 31, allow_inf_nan=False)] = 8.0
    grace_min: Annotated[float, Field(ge=0, le=24 * 60, allow_inf_nan=False)] = 30.0
    grade: Grade = "C"  # of the ticket a failed item or a missed round opens


class Governance(_Model):
    """Dust governance (docs/governance.md): the plant's default owners, patrol
    checklists (by name; a zone's risk names its default) and checkpoints."""

    owners: ZoneOwners = ZoneOwners()
    checklists: dict[Id, Checklist] = {}
    checkpoints: list[Checkpoint] = []
    # How often the desk looks for shifts without a cleaning record and missed rounds.
    check_s: Annotated[float, Field(gt=0, le=3600, allow_inf_nan=False)] = 30.0
    # The grade of the ticket a shift's exposure over its limit opens.
    exposure_grade: Grade = "B"
    # Hazard and near-miss reports: whether someone not signed in may send one (from
    # the zone's public code), and how many a client address may send an hour.
    anonymous_reports: bool = False
    reports_per_hour: Annotated[int, Field(ge=1, le=1000)] = 10


class PlantConfig(_Model):
    site: Site
    mqtt: MqttSettings | None = None
    influxdb: InfluxSettings | None = None
    database: DatabaseSettings = DatabaseSettings()
    instance: InstanceSettings = InstanceSettings()
    api: ApiSettings = ApiSettings()
    users: list[User] = []
    sensor_types: dict[Id, SensorType]
    modbus_devices: list[ModbusDevice] = []
    plcs: list[Plc] = []
    zones: Annotated[list[Zone], Field(min_length=1)]
    sensors: Annotated[list[Sensor], Field(min_length=1)]
    notifications: Notifications = Notifications()
    alarms: AlarmSettings = AlarmSettings()
    hazards: Hazards = Hazards()
    governance: Governance = Governance()

    # (the sensors list it was built from, the index): see `sensor_index`
    _sensor_index: tuple[list[Sensor], dict[str, int]] | None = PrivateAttr(None)

    @property
    def sensor_index(self) -> dict[str, int]:
        """Each sensor's position in `sensors`, by id: one index per process, for every
        part that looks sensors up by id. Built on first use, and again for a copy whose
        sensors are another list (`model_copy(update=...)` copies what was built)."""
        built = self._sensor_index
        if built is None or built[0] is not self.sensors:
            built = (self.sensors, {s.id: k for k, s in enumerate(self.sensors)})
            self._sensor_index = built
        return built[1]

    @model_validator(mode="after")
    def _cross_checked(self) -> Self:
        if errors := cross_errors(Sections.of(self)) + self._lease_errors():
            raise CrossCheckError(errors)
        return self

    def _lease_errors(self) -> list[str]:
        """Active + standby needs a database the instances share, and a PLC watchdog
        behind every takeover (the outputs' safe state while no instance beats)."""
        if self.instance.lease is None:
            return []
        errors = []
        if self.database.url.split(":", 1)[0].split("+", 1)[0] == "sqlite":
            errors.append(
                "instance.lease: the instances must share the database that holds the "
                "lease (PostgreSQL); a SQLite file is each machine's own"
            )
        errors += [
            f"instance.lease: PLC {p.id} has no heartbeat: while no instance holds the "
            "lease, only the PLC's watchdog on the heartbeat keeps its outputs safe"
            for p in self.plcs
            if p.heartbeat is None
        ]
        return errors

    def summary(self) -> str:
        interlocks = sum(1 for z in self.zones if z.interlock is not None)
        return (
            f"{self.site.id}: {len(self.zones)} zones, {len(self.sensors)} sensors, "
            f"{interlocks} interlocks, {len(self.modbus_devices)} Modbus devices, "
            f"{len(self.plcs)} PLCs"
        )


class SensorsById(Mapping[str, Sensor]):
    """`config.sensors` by id, through `config.sensor_index`: a view, no dict of its own
    (each dict of 100 000 sensors would cost 5 MB)."""

    __slots__ = ("_config",)

    def __init__(self, config: PlantConfig) -> None:
        self._config = config

    def __getitem__(self, sensor_id: str) -> Sensor:
        return self._config.sensors[self._config.sensor_index[sensor_id]]

    def __iter__(self) -> Iterator[str]:
        return (s.id for s in self._config.sensors)

    def __len__(self) -> int:
        return len(self._config.sensors)


class SensorNames(Mapping[str, str]):
    """Each sensor's name by id, as a view (see `SensorsById`)."""

    __slots__ = ("_by_id",)

    def __init__(self, config: PlantConfig) -> None:
        self._by_id = SensorsById(config)

    def __getitem__(self, sensor_id: str) -> str:
        return self._by_id[sensor_id].name

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_id)

    def __len__(self) -> int:
        return len(self._by_id)


# --------------------------------------------------------------------------- loading


def load_config(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> PlantConfig:
    """Read, substitute, validate and cross-check a plant config; see the module docstring."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{p}: cannot read: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"{p}: not UTF-8 text"]) from None
    return parse_config(text, env=os.environ if env is None else env, source=str(p))


# libyaml's parser where PyYAML was built with it: a 100 000-sensor plant parses in
# seconds, not half a minute, and without the pure-Python parser's peak of memory.
_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def parse_config(text: str, env: Mapping[str, str], source: str = "<config>") -> PlantConfig:
    try:
        raw = yaml.load(text, Loader=_Loader)  # a safe loader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark is not None else source
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([f"{where}: YAML syntax error: {problem}"]) from None
    if not isinstance(raw, dict):
        raise ConfigError([f"{source}: the file must hold a mapping of sections (site, zones, …)"])

    errors: list[str] = []
    raw = _substitute_env(raw, env, (), errors)
    try:
        config: PlantConfig | None = PlantConfig.model_validate(raw)
    except ValidationError as exc:
        config = None
        errors.extend(format_validation_error(exc, raw))
        if not _cross_checked(exc):
            # Type errors stopped validation before the references were checked: check
            # them on every item that does validate.
            errors.extend(cross_errors(_sections_in_part(raw)))
    if errors:
        raise ConfigError(list(dict.fromkeys(errors)))
    assert config is not None
    return config


def _substitute_env(
    node: Any, env: Mapping[str, str], loc: tuple[Any, ...], errors: list[str]
) -> Any:
    if isinstance(node, dict):
        return {k: _substitute_env(v, env, (*loc, k), errors) for k, v in node.items()}
    if isinstance(node, list):
        return [_substitute_env(v, env, (*loc, i), errors) for i, v in enumerate(node)]
    if isinstance(node, str) and "${" in node:

        def replace(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            value = env.get(name)
            if value is not None and (value != "" or default is None):
                return value
            if default is not None:  # unset or empty, as a shell's ${NAME:-default}
                return default
            errors.append(f"{'.'.join(map(str, loc))}: environment variable {name} is not set")
            return ""

        return ENV_RE.sub(replace, node)
    return node


def _name_loc(loc: tuple[Any, ...], raw: Any) -> str:
    """Turn a location into ``a.b.c``, naming list items by their id where they have one."""
    parts: list[str] = []
    node = raw
    for key in loc:
        if isinstance(key, int) and isinstance(node, list) and 0 <= key < len(node):
            item = node[key]
            ident = item.get("id") if isinstance(item, dict) else None
            parts.append(str(ident) if isinstance(ident, str | int) and ident != "" else str(key))
            node = item
        else:
            parts.append(str(key))
            node = node.get(key) if isinstance(node, dict) else None
    return ".".join(parts)


_CHANNEL_TAGS = {"webhook", "dingtalk", "wecom", "email"}


def _cross_check_error(err: Any) -> CrossCheckError | None:
    error = err.get("ctx", {}).get("error")
    return error if isinstance(error, CrossCheckError) else None


def _cross_checked(exc: ValidationError) -> bool:
    return any(_cross_check_error(err) is not None for err in exc.errors(include_url=False))


def format_validation_error(exc: ValidationError, raw: Any) -> list[str]:
    out = []
    for err in exc.errors(include_url=False):
        if (cross := _cross_check_error(err)) is not None:
            out.extend(cross.errors)  # already ``path: message`` each
            continue
        loc = tuple(err["loc"])
        # A discriminated union puts the tag into the location; the user never wrote it.
        loc = tuple(
            k
            for i, k in enumerate(loc)
            if not (k in _CHANNEL_TAGS and i >= 3 and loc[0] == "notifications")
        )
        msg = err["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        if err["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
            msg = "unknown key (check the spelling against docs/configuration.md)"
        elif err["type"].endswith(("_type", "_parsing")) and "input" in err:
            msg = f"{msg} (got {err['input']!r})"
        out.append(f"{_name_loc(loc, raw) or '(top level)'}: {msg}")
    return out


# --------------------------------------------------------------------------- cross-checks
#
# References between sections, checked on the typed sections: one function per section
# (`CROSS_CHECKS`), each reading `Sections`. A valid document is checked through
# `PlantConfig`'s own after-validator, so no `PlantConfig` exists that fails them. A
# document with type errors is validated again item by item (`_sections_in_part`), and
# the same checks run on the items that did validate: a wrong type in one place never
# hides an unknown zone in another.


class CrossCheckError(ValueError):
    """The references of a validated document that do not hold, one message each."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


# The list sections whose items carry ids that other sections name, and their models.
_ID_SECTIONS: dict[str, type[Any]] = {
    "sensors": Sensor,
    "zones": Zone,
    "modbus_devices": ModbusDevice,
    "plcs": Plc,
}


@dataclass(frozen=True, kw_only=True)
class Sections:
    """What the cross-checks read: the typed sections, whole or in part.

    `complete` names the sections of which every item validated (a check that counts a
    section's items runs only then). `failed_ids` holds, per section, the ids that items
    which failed their own checks still name: a reference to one of them is not called
    unknown (the item's own error is reported)."""

    sensor_types: Mapping[str, SensorType]
    sensors: Sequence[Sensor]
    zones: Sequence[Zone]
    modbus_devices: Sequence[ModbusDevice]
    plcs: Sequence[Plc]
    users: Sequence[User]
    mqtt_given: bool
    notifications: Notifications | None
    hazards: Hazards | None
    site: Site | None
    governance: Governance | None
    complete: frozenset[str]
    failed_ids: Mapping[str, frozenset[str]]

    @classmethod
    def of(cls, config: PlantConfig) -> Sections:
        return cls(
            sensor_types=config.sensor_types,
            sensors=config.sensors,
            zones=config.zones,
            modbus_devices=config.modbus_devices,
            plcs=config.plcs,
            users=config.users,
            mqtt_given=config.mqtt is not None,
            notifications=config.notifications,
            hazards=config.hazards,
            site=config.site,
            governance=config.governance,
            complete=frozenset(("sensor_types", *_ID_SECTIONS, "users")),
            failed_ids={},
        )

    def known(self, section: str) -> set[str]:
        """The ids a reference into `section` may name."""
        items: Iterable[Any] = (
            self.sensor_types if section == "sensor_types" else getattr(self, section)
        )
        ids = set(items) if section == "sensor_types" else {item.id for item in items}
        return ids | self.failed_ids.get(section, frozenset())

    def channel_ids(self) -> set[str] | None:
        """The notification channels' ids, or None when the section did not validate."""
        if self.notifications is None:
            return None
        return {c.id for c in self.notifications.channels}


def _unique_ids(sections: Sections) -> Iterator[str]:
    for section in _ID_SECTIONS:
        ids = Counter(item.id for item in getattr(sections, section))
        yield from (f"{section}.{i}: duplicate id" for i, n in ids.items() if n > 1)
    channels = sections.notifications.channels if sections.notifications is not None else []
    if len({c.id for c in channels}) < len(channels):
        yield "notifications.channels: duplicate channel id"


def _sensors_refer_to_known(sections: Sections) -> Iterator[str]:
    """Each sensor's type, zone and Modbus device exist; its topic is its own; with no
    `mqtt` section, every sensor reads over Modbus."""
    types = sections.sensor_types
    known_types = sections.known("sensor_types")
    zones, devices = sections.known("zones"), sections.known("modbus_devices")
    topics: set[str] = set()
    for s in sections.sensors:
        path = f"sensors.{s.id}"
        if s.type not in known_types:
            yield f"{path}.type: unknown sensor type {s.type!r}; known: {_known(known_types)}"
        if s.zone not in zones:
            yield f"{path}.zone: unknown zone {s.zone!r}; known: {_known(zones)}"
        if s.modbus is not None and s.modbus.device not in devices:
            yield (
                f"{path}.modbus.device: unknown Modbus device {s.modbus.device!r}; "
                f"known: {_known(devices)}"
            )
        if s.mqtt is not None:
            if s.mqtt.topic in topics:
                yield f"{path}.mqtt.topic: topic {s.mqtt.topic!r} is used by another sensor"
            topics.add(s.mqtt.topic)
        if s.modbus is None and not sections.mqtt_given:
            source = "its topic" if s.mqtt is not None else "no modbus source"
            yield f"{path}: reads over MQTT ({source}) but the config has no mqtt section"
        if (stype := types.get(s.type)) is not None:
            yield from _overrides_in_order(path, stype, s)


def _overrides_in_order(path: str, stype: SensorType, sensor: Sensor) -> Iterator[str]:
    """A sensor's overrides keep its type's tiers in order of severity, sides apart."""
    high, low = stype.sides(sensor)
    sides: tuple[tuple[Literal["high", "low"], TierSet | None, TierSet | None], ...] = (
        ("high", high, sensor.high),
        ("low", low, sensor.low),
    )
    for side, tiers, over in sides:
        if (
            over is not None
            and tiers is not None
            and (err := tier_order_error(side, tiers.items()))
        ):
            yield f"{path}.{side}: {err} (after the override of type {sensor.type})"
    if (sensor.high is not None or sensor.low is not None) and (
        err := sides_overlap_error(high, low)
    ):
        yield f"{path}: {err}"


def _plc_outputs_apart(sections: Sections) -> Iterator[str]:
    """Each PLC coil or register ehswatch writes has one use: a heartbeat or a sequence
    number written over a trip output would clear the trip."""
    registers: dict[tuple[str, int], str] = {}
    for plc in sections.plcs:
        if plc.heartbeat is not None:
            registers[(plc.id, plc.heartbeat.address)] = f"plcs.{plc.id}.heartbeat.register"
    outputs: dict[tuple[str, str, int], str] = {}
    for zone in sections.zones:
        il = zone.interlock
        if il is None:
            continue
        path = f"zones.{zone.id}"
        for key, addr in (("register", il.address), ("seq_register", il.seq_register)):
            if addr is not None:
                here = f"{path}.interlock.{key}"
                other = registers.setdefault((il.plc, addr), here)
                if other != here:
                    yield f"{here}: {il.plc} register {addr} is already {other}"
        for kind, addr in (("coil", il.coil), ("register", il.address)):
            if addr is not None:
                other = outputs.setdefault((il.plc, kind, addr), path)
                if other != path:
                    yield (
                        f"{path}.interlock.{kind}: {il.plc} {kind} {addr} "
                        f"is already the output of {other}"
                    )


def _interlocks_can_vote(sections: Sections) -> Iterator[str]:
    """A zone's interlock names a known PLC and sensor types that have an interlock
    setpoint, and its MooN names exactly the zone's sensors of those types."""
    plcs, types = sections.known("plcs"), sections.known("sensor_types")
    voters_of: dict[str, list[Sensor]] = {}
    for s in sections.sensors:  # once: a plant of 100 000 sensors has hundreds of zones
        voters_of.setdefault(s.zone, []).append(s)
    for zone in sections.zones:
        il = zone.interlock
        if il is None:
            continue
        path = f"zones.{zone.id}.interlock"
        if il.plc not in plcs:
            yield f"{path}.plc: unknown PLC {il.plc!r}; known: {_known(plcs)}"
        for t in il.sensor_types:
            stype = sections.sensor_types.get(t)
            if t not in types:
                yield f"{path}.sensor_types: unknown sensor type {t!r}"
            elif stype is not None and not stype.has_interlock_setpoint:
                yield (
                    f"{path}.sensor_types: sensor type {t!r} has no interlock setpoint, "
                    "so its sensors could never vote"
                )
        if "sensors" not in sections.complete:
            continue  # the voters are counted once every sensor validated
        voters = [s.id for s in voters_of.get(zone.id, ()) if s.type in il.sensor_types]
        kinds = listed(il.sensor_types)
        if il.voting.m > len(voters):
            yield (
                f"{path}.voting: {il.voting} needs {il.voting.m} votes but zone {zone.id} "
                f"has only {len(voters)} sensors of types {kinds}"
            )
        elif il.voting.n != len(voters):
            yield (
                f"{path}.voting: {il.voting} names {il.voting.n} voters but zone {zone.id} "
                f"has {len(voters)} sensors of types {kinds} ({listed(voters)})"
            )


def _notifications_refer_to_known(sections: Sections) -> Iterator[str]:
    """Routes and hazard reminders name channels, zones and sensor types that exist."""
    channels = sections.channel_ids()
    if channels is None:
        return  # checked once the channels validate
    if sections.hazards is not None:
        yield from (
            f"hazards.notify: unknown channel {c!r}; known: {_known(channels)}"
            for c in sections.hazards.notify
            if c not in channels
        )
    assert sections.notifications is not None
    zones, types = sections.known("zones"), sections.known("sensor_types")
    for i, route in enumerate(sections.notifications.routes):
        path = f"notifications.routes.{i}"
        for key, targets in (("notify", route.notify), ("escalate_to", route.escalate_to)):
            yield from (
                f"{path}.{key}: unknown channel {c!r}; known: {_known(channels)}"
                for c in targets
                if c not in channels
            )
        yield from (
            f"{path}.match.zones: unknown zone {z!r}"
            for z in route.match.zones or ()
            if z not in zones
        )
        yield from (
            f"{path}.match.sensor_types: unknown sensor type {t!r}; known: {_known(types)}"
            for t in route.match.sensor_types or ()
            if t not in types
        )


def _grades_approvable(sections: Sections) -> Iterator[str]:
    """With users configured, each grade's approver roles are held by one of them: a
    grade nobody may approve can never be archived. (A team leader approves as a
    supervisor.) Without users, nobody acts through the API at all: nothing to check."""
    if not sections.users or sections.hazards is None or "users" not in sections.complete:
        return
    held = {u.role for u in sections.users}
    hazards = sections.hazards
    given = "grades" in hazards.model_fields_set
    top = max(ROLES.index(r) for r in held)
    for grade, rule in sorted(hazards.grades.items()):
        roles = ["supervisor" if a == "team_leader" else a for a in rule.approvers]
        missing = [
            a
            for a, r in zip(rule.approvers, roles, strict=True)
            if r not in held and not (rule.stand_in and top > ROLES.index(r))
        ]
        if missing:
            default = "" if given else f" (the default: {listed(rule.approvers)})"
            yield (
                f"hazards.grades.{grade}.approvers{default}: no configured user holds the role "
                f"{listed(missing)}, so a grade {grade} ticket could never be archived"
            )


def _governance_refers_to_known(sections: Sections) -> Iterator[str]:
    """Cleaning rules name shifts the site has (and the site has shifts); checkpoints
    name known zones, are unique, and each has a checklist (its own, or its zone's risk's)."""
    site, gov = sections.site, sections.governance
    shifts = {s.name for s in site.shifts} if site is not None else None
    for z in sections.zones:
        if z.cleaning is None or shifts is None:
            continue
        if not shifts:
            yield f"zones.{z.id}.cleaning: the site has no shifts (site.shifts) to clean at"
        yield from (
            f"zones.{z.id}.cleaning.shifts: unknown shift {n!r}; known: {_known(shifts)}"
            for n in z.cleaning.shifts
            if n not in shifts
        )
    grades = set(sections.hazards.grades) if sections.hazards is not None else None
    for z in sections.zones:
        if z.cleaning is not None and grades is not None and z.cleaning.grade not in grades:
            yield f"zones.{z.id}.cleaning.grade: no grade {z.cleaning.grade!r} in hazards.grades"
    if gov is None:
        return
    for c in gov.checkpoints:
        if grades is not None and c.grade not in grades:
            yield f"governance.checkpoints.{c.id}.grade: no grade {c.grade!r} in hazards.grades"
    zones = {z.id: z for z in sections.zones}
    known_zones = sections.known("zones")
    seen: set[str] = set()
    for c in gov.checkpoints:
        path = f"governance.checkpoints.{c.id}"
        if c.id in seen:
            yield f"{path}: duplicate id"
        seen.add(c.id)
        if c.zone not in known_zones:
            yield f"{path}.zone: unknown zone {c.zone!r}"
            continue
        if c.zone not in zones:
            continue  # the zone failed its own checks
        name = c.checklist or zones[c.zone].risk
        if name not in gov.checklists:
            which = "checklist" if c.checklist else f"zone's risk {name!r} as its checklist"
            yield (
                f"{path}: no checklist {name!r} in governance.checklists (it uses its "
                f"{which}); known: {_known(gov.checklists)}"
            )


CROSS_CHECKS: tuple[Callable[[Sections], Iterable[str]], ...] = (
    _unique_ids,
    _sensors_refer_to_known,
    _plc_outputs_apart,
    _interlocks_can_vote,
    _notifications_refer_to_known,
    _grades_approvable,
    _governance_refers_to_known,
)


def cross_errors(sections: Sections) -> list[str]:
    """Every reference between `sections` that does not hold, in check order."""
    return [e for check in CROSS_CHECKS for e in check(sections)]


T = TypeVar("T")


@dataclass(frozen=True, kw_only=True)
class _Part(Generic[T]):
    """A list section's items that pass their own checks, the ids that the others name,
    and whether the section is whole (every item passed)."""

    good: list[T]
    failed_ids: frozenset[str]
    whole: bool


def _valid_items(raw: Mapping[str, Any], section: str, model: type[T]) -> _Part[T]:
    adapter = TypeAdapter(model)
    good, bad, failures = [], set(), 0
    items = raw.get(section)
    for item in items if isinstance(items, list) else ():
        try:
            good.append(adapter.validate_python(item))
        except ValidationError:
            failures += 1
            ident = item.get("id") if isinstance(item, dict) else None
            if isinstance(ident, str | int):
                bad.add(str(ident))
    whole = failures == 0 and (items is None or isinstance(items, list))
    return _Part(good=good, failed_ids=frozenset(bad), whole=whole)


def _sections_in_part(raw: Mapping[str, Any]) -> Sections:
    """The sections of a document that failed validation, with every item that passes
    its own checks: list items and sensor types one by one, the rest whole."""
    sensors = _valid_items(raw, "sensors", Sensor)
    zones = _valid_items(raw, "zones", Zone)
    devices = _valid_items(raw, "modbus_devices", ModbusDevice)
    plcs = _valid_items(raw, "plcs", Plc)
    users = _valid_items(raw, "users", User)
    parts: dict[str, _Part[Any]] = {
        "sensors": sensors,
        "zones": zones,
        "modbus_devices": devices,
        "plcs": plcs,
        "users": users,
    }
    failed = {section: part.failed_ids for section, part in parts.items()}
    complete = {section for section, part in parts.items() if part.whole}
    types_adapter = TypeAdapter(dict[Id, SensorType])
    types: dict[str, SensorType] = {}
    raw_types = raw.get("sensor_types")
    bad_types: set[str] = set()
    for name, value in raw_types.items() if isinstance(raw_types, dict) else ():
        try:
            types |= types_adapter.validate_python({name: value})
        except ValidationError:
            bad_types.add(str(name))
    failed["sensor_types"] = frozenset(bad_types)
    if not bad_types and isinstance(raw_types, dict):
        complete.add("sensor_types")
    return Sections(
        sensor_types=types,
        sensors=sensors.good,
        zones=zones.good,
        modbus_devices=devices.good,
        plcs=plcs.good,
        users=users.good,
        mqtt_given=raw.get("mqtt") is not None,
        notifications=_valid_or_none(raw, "notifications", Notifications),
        hazards=_valid_or_none(raw, "hazards", Hazards),
        site=_valid_or_none(raw, "site", Site),
        governance=_valid_or_none(raw, "governance", Governance),
        complete=frozenset(complete),
        failed_ids=failed,
    )


def _valid_or_none(raw: Mapping[str, Any], section: str, model: type[T]) -> T | None:
    """A section validated whole (absent: its defaults), or None when it fails."""
    try:
        return TypeAdapter(model).validate_python(raw.get(section, {}))
    except ValidationError:
        return None


def _known(ids: Any) -> str:
    return listed(sorted(map(str, ids)), empty="(none defined)")

"""The plant configuration: YAML in, one validated, immutable `PlantConfig` out.

Contract (docs/configuration.md):
- `load_config(path)` returns a `PlantConfig` or raises `ConfigError` carrying *every*
  problem found, each as ``path.to.key: what is wrong``. List items are named by their
  ``id`` where they have one (``sensors.D-101.zone``), by position otherwise.
- String values may name secrets as ``${ENV_VAR}`` or ``${ENV_VAR:-default}``; an unset
  variable without a default is an error at the key that used it.
- Structure and types are checked by pydantic; references between sections (a sensor's
  type, zone and Modbus device, a zone's PLC, the voting arithmetic, tier order after
  per-sensor overrides) are checked on the raw document as well, so that a wrong type in
  one place never hides an unknown zone in another.
"""

from __future__ import annotations

import itertools
import math
import os
import re
import sys
import typing
import zoneinfo
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Self

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PrivateAttr,
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


class Site(_Model):
    id: Id
    name: str
    timezone: str = "UTC"

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


class SensorType(_ThresholdFields):
    unit: str
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


class ModbusDevice(_Model):
    id: Id
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


class Zone(_Model):
    id: Id
    name: str = ""
    interlock: InterlockSettings | None = None


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


def _default_grades() -> dict[Grade, GradeRule]:
    return {
        "A": GradeRule(deadline_h=2, stop_work=True, approvers=["gm", "safety_director"]),
        "B": GradeRule(deadline_h=24, approvers=["dept_head"]),
        "C": GradeRule(deadline_h=72, approvers=["team_leader"]),
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


class PlantConfig(_Model):
    site: Site
    mqtt: MqttSettings | None = None
    influxdb: InfluxSettings | None = None
    database: DatabaseSettings = DatabaseSettings()
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
    errors.extend(_cross_check(raw))
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
            if name in env:
                return env[name]
            if default is not None:
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


def format_validation_error(exc: ValidationError, raw: Any) -> list[str]:
    out = []
    for err in exc.errors(include_url=False):
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


def _items(raw: Mapping[str, Any], section: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(path, item) for the dict items of a list section, tolerant of a malformed document."""
    seq = raw.get(section)
    if not isinstance(seq, list):
        return
    for i, item in enumerate(seq):
        if isinstance(item, dict):
            yield f"{section}.{_name_loc((i,), seq)}", item


def _ids(raw: Mapping[str, Any], section: str) -> set[str]:
    return {str(item["id"]) for _, item in _items(raw, section) if isinstance(item.get("id"), str)}


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _cross_check(raw: dict[str, Any]) -> list[str]:
    errors: list[str] = []
    for section in ("sensors", "zones", "modbus_devices", "plcs"):
        counts = Counter(str(item.get("id")) for _, item in _items(raw, section) if "id" in item)
        errors += [f"{section}.{i}: duplicate id" for i, n in counts.items() if n > 1]
    channels = (
        raw.get("notifications", {}).get("channels")
        if isinstance(raw.get("notifications"), dict)
        else None
    )
    channel_ids = {str(c.get("id")) for c in channels or [] if isinstance(c, dict)}
    if channels and len(channel_ids) < len(channels):
        errors.append("notifications.channels: duplicate channel id")

    types = raw.get("sensor_types") if isinstance(raw.get("sensor_types"), dict) else {}
    assert isinstance(types, dict)
    zones, devices, plcs = _ids(raw, "zones"), _ids(raw, "modbus_devices"), _ids(raw, "plcs")

    topics: Counter[str] = Counter()
    for path, s in _items(raw, "sensors"):
        stype = s.get("type")
        if isinstance(stype, str) and stype not in types:
            errors.append(f"{path}.type: unknown sensor type {stype!r}; known: {_known(types)}")
        zone = s.get("zone")
        if isinstance(zone, str) and zone not in zones:
            errors.append(f"{path}.zone: unknown zone {zone!r}; known: {_known(zones)}")
        mb = s.get("modbus")
        if (
            isinstance(mb, dict)
            and isinstance(mb.get("device"), str)
            and mb["device"] not in devices
        ):
            errors.append(
                f"{path}.modbus.device: unknown Modbus device {mb['device']!r}; "
                f"known: {_known(devices)}"
            )
        mq = s.get("mqtt")
        if isinstance(mq, dict) and isinstance(mq.get("topic"), str):
            topics[mq["topic"]] += 1
            if mq["topic"] in {t for t, n in topics.items() if n > 1}:
                errors.append(f"{path}.mqtt.topic: topic {mq['topic']!r} is used by another sensor")
        if isinstance(stype, str) and isinstance(types.get(stype), dict):
            errors += _override_order(path, types[stype], s)

    has_mqtt = isinstance(raw.get("mqtt"), dict)
    if not has_mqtt:
        errors += [
            f"{path}: reads over MQTT ({'its topic' if s.get('mqtt') else 'no modbus source'}) "
            "but the config has no mqtt section"
            for path, s in _items(raw, "sensors")
            if not isinstance(s.get("modbus"), dict)
        ]

    coils: dict[tuple[str, str, int], str] = {}
    # Holding registers a PLC is written at by ehswatch: one use each, or a heartbeat or a
    # sequence number would overwrite a trip output.
    registers: dict[tuple[str, int], str] = {}
    for path, p in _items(raw, "plcs"):
        hb = p.get("heartbeat")
        if isinstance(hb, dict) and isinstance(hb.get("register"), int):
            registers[(str(p.get("id")), hb["register"])] = f"{path}.heartbeat.register"
    for path, z in _items(raw, "zones"):
        il = z.get("interlock")
        if not isinstance(il, dict) or not isinstance(il.get("plc"), str):
            continue
        for key in ("register", "seq_register"):
            addr = il.get(key)
            if isinstance(addr, int):
                here = f"{path}.interlock.{key}"
                other = registers.setdefault((il["plc"], addr), here)
                if other != here:
                    errors.append(f"{here}: {il['plc']} register {addr} is already {other}")
    # Each zone's sensors, found once: a plant of 100 000 sensors has hundreds of zones.
    sensors_by_zone: dict[str, list[dict[str, Any]]] = {}
    for _, s in _items(raw, "sensors"):
        sensors_by_zone.setdefault(str(s.get("zone")), []).append(s)
    for path, z in _items(raw, "zones"):
        il = z.get("interlock")
        if not isinstance(il, dict):
            continue
        plc = il.get("plc")
        if isinstance(plc, str) and plc not in plcs:
            errors.append(f"{path}.interlock.plc: unknown PLC {plc!r}; known: {_known(plcs)}")
        for kind in ("coil", "register"):
            addr = il.get(kind)
            if isinstance(plc, str) and isinstance(addr, int):
                other = coils.setdefault((plc, kind, addr), path)
                if other != path:
                    errors.append(
                        f"{path}.interlock.{kind}: {plc} {kind} {addr} "
                        f"is already the output of {other}"
                    )
        vtypes = il.get("sensor_types")
        if isinstance(vtypes, list):
            errors += [
                f"{path}.interlock.sensor_types: unknown sensor type {t!r}"
                for t in vtypes
                if isinstance(t, str) and t not in types
            ]
            errors += [
                f"{path}.interlock.sensor_types: sensor type {t!r} has no interlock setpoint, "
                "so its sensors could never vote"
                for t in vtypes
                if isinstance(t, str)
                and isinstance(types.get(t), dict)
                and not _has_interlock_setpoint(types[t])
            ]
            voters = [
                s.get("id")
                for s in sensors_by_zone.get(str(z.get("id")), ())
                if s.get("type") in vtypes
            ]
            try:
                voting: Voting | None = Voting.parse(il.get("voting", "1oo1"))
            except ValueError:
                voting = None  # reported by the type check
            if voting is not None:
                need, n = voting.m, voting.n
                if need > len(voters):
                    errors.append(
                        f"{path}.interlock.voting: {il.get('voting')} needs {need} votes but zone "
                        f"{z.get('id')} has only {len(voters)} sensors of types {_types(vtypes)}"
                    )
                elif n != len(voters):
                    errors.append(
                        f"{path}.interlock.voting: {il.get('voting')} names {n} voters but zone "
                        f"{z.get('id')} has {len(voters)} sensors of types {_types(vtypes)} "
                        f"({listed(map(str, voters))})"
                    )

    hazards = raw.get("hazards")
    if isinstance(hazards, dict) and isinstance(hazards.get("notify"), list):
        errors += [
            f"hazards.notify: unknown channel {c!r}; known: {_known(channel_ids)}"
            for c in hazards["notify"]
            if isinstance(c, str) and c not in channel_ids
        ]
    notifications = raw.get("notifications")
    if isinstance(notifications, dict) and isinstance(notifications.get("routes"), list):
        for i, route in enumerate(notifications["routes"]):
            if not isinstance(route, dict):
                continue
            for key in ("notify", "escalate_to"):
                targets = route.get(key)
                if isinstance(targets, list):
                    errors += [
                        f"notifications.routes.{i}.{key}: unknown channel {c!r}; "
                        f"known: {_known(channel_ids)}"
                        for c in targets
                        if isinstance(c, str) and c not in channel_ids
                    ]
            match = route.get("match")
            if isinstance(match, dict) and isinstance(match.get("zones"), list):
                errors += [
                    f"notifications.routes.{i}.match.zones: unknown zone {zz!r}"
                    for zz in match["zones"]
                    if isinstance(zz, str) and zz not in zones
                ]
            if isinstance(match, dict) and isinstance(match.get("sensor_types"), list):
                errors += [
                    f"notifications.routes.{i}.match.sensor_types: unknown sensor type {t!r}; "
                    f"known: {_known(types)}"
                    for t in match["sensor_types"]
                    if isinstance(t, str) and t not in types
                ]
    errors += _approvers_present(raw)
    return errors


def _approvers_present(raw: Mapping[str, Any]) -> list[str]:
    """With users configured, each grade's approver roles are held by one of them: a
    grade nobody may approve can never be archived. (A team leader approves as a
    supervisor.) Without users, nobody acts through the API at all: nothing to check."""
    users = [u for _, u in _items(raw, "users")]
    if not users:
        return []
    held = {u.get("role") for u in users}
    hazards = raw.get("hazards") if isinstance(raw.get("hazards"), dict) else {}
    assert isinstance(hazards, dict)
    grades = hazards.get("grades")
    rules: dict[str, list[Any]]
    if not isinstance(grades, dict):
        rules = {g: list(r.approvers) for g, r in _default_grades().items()}
    else:
        rules = {
            str(g): r["approvers"]
            for g, r in grades.items()
            if isinstance(r, dict) and isinstance(r.get("approvers"), list)
        }
    errors = []
    for grade, approvers in sorted(rules.items()):
        missing = [
            a
            for a in approvers
            if isinstance(a, str) and ("supervisor" if a == "team_leader" else a) not in held
        ]
        if missing:
            default = "" if isinstance(grades, dict) else f" (the default: {listed(approvers)})"
            errors.append(
                f"hazards.grades.{grade}.approvers{default}: no configured user holds the role "
                f"{listed(missing)}, so a grade {grade} ticket could never be archived"
            )
    return errors


def _override_order(path: str, stype: dict[str, Any], sensor: dict[str, Any]) -> list[str]:
    """Tier order of the type's setpoints with this sensor's overrides applied."""
    errors = []
    merged_sides: dict[str, list[tuple[str, float]]] = {}
    for side in ("high", "low"):
        base = stype.get(side) if isinstance(stype.get(side), dict) else {}
        over = sensor.get(side) if isinstance(sensor.get(side), dict) else {}
        assert isinstance(base, dict) and isinstance(over, dict)
        merged = {**base, **{k: v for k, v in over.items() if v is not None}}
        values = [(n, _num(merged.get(n))) for n in TIER_NAMES if merged.get(n) is not None]
        if any(v is None for _, v in values):
            continue  # a malformed number is reported by the type check
        merged_sides[side] = [(n, v) for n, v in values if v is not None]
        if over and (err := tier_order_error(side, merged_sides[side])):
            errors.append(f"{path}.{side}: {err} (after the override of type {sensor.get('type')})")
    if (
        (sensor.get("high") or sensor.get("low"))
        and "high" in merged_sides
        and "low" in merged_sides
    ):
        err = sides_overlap_error(
            TierSet(**dict(merged_sides["high"])), TierSet(**dict(merged_sides["low"]))
        )
        if err:
            errors.append(f"{path}: {err}")
    return errors


def _has_interlock_setpoint(stype: dict[str, Any]) -> bool:
    return any(
        isinstance(stype.get(side), dict) and stype[side].get("interlock") is not None
        for side in ("high", "low")
    )


def _known(ids: Any) -> str:
    return listed(sorted(map(str, ids)), empty="(none defined)")


def _types(vtypes: list[Any]) -> str:
    return listed(map(str, vtypes))

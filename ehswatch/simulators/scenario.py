"""Scenario files: what each simulated sensor reads, second by second.

```yaml
name: dust build-up to interlock
seed: 7                 # same seed, same noise: a run is repeatable
rate_hz: 1.0            # MQTT publishing rate (Modbus devices answer whenever polled)
duration_s: 180         # `ehswatch simulate` stops after this (omit: run until Ctrl-C)
publish: single         # MQTT payloads: single (one reading per message) or batch
sensors:
  D-101:
    baseline: 4.0       # value at t = 0
    noise: 0.3          # standard deviation of Gaussian noise added to every sample
    events:             # t in seconds from the start of the run
      - {at: 10, ramp_to: 48, over: 60}   # linear ramp to 48, then holds there
      - {at: 40, spike: 60, for: 1}       # reads 60 for 1 s, then back
      - {at: 90, flatline: 20}            # stuck at its value for 20 s (no noise)
      - {at: 120, dropout: 15}            # stops answering / publishing for 15 s
      - {at: 140, garbage: 5}             # garbage: malformed MQTT payloads, or Modbus
                                          # exception responses
```
A Modbus sensor's dropout silences its whole device: that is what a dead RS-485 node or
a dead serial gateway looks like to the collector.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ehswatch.config import ConfigError, format_validation_error

NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class Event(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    at: NonNegative
    ramp_to: Annotated[float, Field(allow_inf_nan=False)] | None = None
    over: NonNegative = 0.0
    spike: Annotated[float, Field(allow_inf_nan=False)] | None = None
    duration: NonNegative = Field(default=1.0, alias="for")
    flatline: NonNegative | None = None
    dropout: NonNegative | None = None
    garbage: NonNegative | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Event:
        kinds = [
            k
            for k in ("ramp_to", "spike", "flatline", "dropout", "garbage")
            if getattr(self, k) is not None
        ]
        if len(kinds) != 1:
            raise ValueError(
                "an event is exactly one of ramp_to, spike, flatline, dropout, garbage"
            )
        return self

    def active(self, t: float, length: float | None) -> bool:
        return length is not None and self.at <= t < self.at + length


class SensorScript(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    baseline: Annotated[float, Field(allow_inf_nan=False)]
    noise: NonNegative = 0.0
    events: list[Event] = []


class Scenario(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    plant: str = "config/example.yaml"  # the plant config it scripts (relative to cwd)
    seed: int = 0
    rate_hz: Annotated[float, Field(gt=0, le=1000)] = 1.0
    duration_s: Annotated[float, Field(gt=0)] | None = None
    publish: Literal["single", "batch"] = "single"
    sensors: dict[str, SensorScript]

    @classmethod
    def load(cls, path: str | Path) -> Scenario:
        p = Path(path)
        try:
            raw = yaml.safe_load(p.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError([f"{p}: cannot read: {exc.strerror or exc}"]) from None
        except yaml.YAMLError as exc:
            raise ConfigError([f"{p}: YAML syntax error: {exc}"]) from None
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            raise ConfigError(format_validation_error(exc, raw)) from None


@dataclass(frozen=True, slots=True)
class Sample:
    value: float | None  # None: the sensor does not answer (dropout)
    garbage: bool = False


class Script:
    """A compiled `SensorScript`: `sample(t)` is deterministic for a seed and a time."""

    def __init__(self, sensor_id: str, script: SensorScript, seed: int) -> None:
        self.sensor_id = sensor_id
        self._s = script
        self._ramps = sorted(
            (e for e in script.events if e.ramp_to is not None), key=lambda e: e.at
        )
        digest = hashlib.sha256(f"{seed}:{sensor_id}".encode()).digest()
        self._noise_key = int.from_bytes(digest[:8], "little")

    def level(self, t: float, upto: int | None = None) -> float:
        """The noiseless value: baseline reshaped by the ramps that began by t."""
        ramps = self._ramps if upto is None else self._ramps[:upto]
        if not ramps:
            return self._s.baseline
        last = ramps[-1]
        if t < last.at:
            return self.level(t, len(ramps) - 1)
        assert last.ramp_to is not None
        start = self.level(last.at, len(ramps) - 1)
        if last.over <= 0 or t >= last.at + last.over:
            return last.ramp_to
        return start + (last.ramp_to - start) * (t - last.at) / last.over

    def sample(self, t: float) -> Sample:
        events = self._s.events
        if any(e.active(t, e.dropout) for e in events):
            return Sample(None)
        garbage = any(e.active(t, e.garbage) for e in events)
        for e in events:
            if e.active(t, e.flatline):
                return Sample(self.level(e.at), garbage)
        for e in events:
            if e.spike is not None and e.active(t, e.duration):
                return Sample(e.spike, garbage)
        value = self.level(t)
        if self._s.noise:
            # Noise depends on (seed, sensor, whole tenth of a second): repeatable, and
            # the same whichever simulator asks.
            rng = np.random.default_rng([self._noise_key, int(t * 10)])
            value += float(rng.normal(0.0, self._s.noise))
        return Sample(value, garbage)


def compile_scripts(scenario: Scenario) -> dict[str, Script]:
    return {sid: Script(sid, s, scenario.seed) for sid, s in scenario.sensors.items()}

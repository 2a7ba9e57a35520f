"""MQTT telemetry payloads (SPEC §9) to `ReadingBatch` columns, in bulk.

Accepted, on a sensor's configured topic or on ``{prefix}/telemetry/{sensor_id}``:

- an object ``{"v": 12.3, "ts": 1764000000123, "q": 0}`` — ``ts`` in milliseconds since
  the epoch (optional: the time of arrival), ``q`` the source's quality (optional, 0
  good; anything else makes the reading bad and the sensor FAULT);
- a bare number ``12.3``;

and on ``{prefix}/telemetry`` an array of objects that also name the sensor:
``[{"id": "G-201", "v": 1.2, "ts": …}, …]``.

Anything else is counted by reason in `Rejects` and dropped; nothing raises. A well-formed
reading whose value is NaN or infinite is *not* dropped: it reaches the evaluator as a bad
reading, so the sensor goes to FAULT rather than silently holding its last value.

Speed: all payloads of a flush are parsed by one `json.loads` of their concatenation
(each payload is one JSON value, so the array has exactly one element per payload when
all are valid; otherwise each is parsed alone to find the bad ones).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from ehswatch.readings import Quality, ReadingBatch

MAX_SINGLE_BYTES = 4 * 1024
MAX_BATCH_BYTES = 4 * 1024 * 1024
MAX_FUTURE_S = 60.0  # a clock further ahead than this would hide the sensor going stale

REASONS = (
    "not_json",
    "bad_type",
    "unknown_sensor",
    "too_large",
    "bad_timestamp",
    "unknown_topic",
)


@dataclass
class Rejects:
    """Dropped payloads (or batch items) by reason, since start."""

    by_reason: Counter[str] = field(default_factory=Counter)
    last: str = ""  # the latest rejection, for the operator

    def add(self, reason: str, topic: bytes, detail: str = "") -> None:
        self.by_reason[reason] += 1
        self.last = (
            f"{reason} on {topic.decode('utf-8', 'replace')}{': ' + detail if detail else ''}"
        )

    @property
    def total(self) -> int:
        return sum(self.by_reason.values())


class TelemetryDecoder:
    """Maps topics to sensors and payloads to columns; see the module docstring."""

    def __init__(
        self, topics: Mapping[str, int], sensor_index: Mapping[str, int], prefix: str
    ) -> None:
        self._single: dict[bytes, int] = {t.encode(): i for t, i in topics.items()}
        for sid, i in sensor_index.items():
            self._single.setdefault(f"{prefix}/telemetry/{sid}".encode(), i)
        self._per_sensor_prefix = f"{prefix}/telemetry/".encode()
        self._batch_topic = f"{prefix}/telemetry".encode()
        self._ids = dict(sensor_index)
        self._batch_seq: list[int] = []
        self.rejects = Rejects()

    def subscriptions(self) -> list[str]:
        """Topic filters that cover every accepted topic."""
        own = sorted(t.decode() for t in self._single if not t.startswith(self._per_sensor_prefix))
        return [*own, self._per_sensor_prefix.decode() + "+", self._batch_topic.decode()]

    def decode(
        self, topics: Sequence[bytes], payloads: Sequence[bytes], now: float
    ) -> ReadingBatch:
        """One batch of every valid reading in these messages, in message order."""
        sensors: list[int] = []
        values: list[float] = []
        stamps: list[float] = []
        quality: list[int] = []
        singles: list[int] = []  # positions of single-reading messages
        single_sensor: list[int] = []
        rejects = self.rejects
        lookup = self._single
        for k, topic in enumerate(topics):
            i = lookup.get(topic, -1)
            if i >= 0:
                if len(payloads[k]) > MAX_SINGLE_BYTES:
                    rejects.add("too_large", topic, f"{len(payloads[k])} bytes")
                    continue
                singles.append(k)
                single_sensor.append(i)
            elif topic == self._batch_topic:
                before = len(sensors)
                self._decode_batch(topic, payloads[k], now, sensors, values, stamps, quality)
                self._batch_seq.extend([k] * (len(sensors) - before))
            elif topic.startswith(self._per_sensor_prefix):
                rejects.add("unknown_sensor", topic)
            else:
                rejects.add("unknown_topic", topic)
        batch_part = len(sensors)  # readings from batch messages come first, for now
        batch_seq = self._batch_seq
        self._batch_seq = []
        if singles:
            parsed = _parse_all([payloads[k] for k in singles])
            seq: list[int] = []
            for k, i, obj in zip(singles, single_sensor, parsed, strict=True):
                if self._take(topics[k], i, obj, now, sensors, values, stamps, quality):
                    seq.append(k)
            if batch_part:
                # Put readings back in message order: the evaluator takes a sensor's
                # readings in the order they arrive.
                order = np.argsort(np.array(batch_seq + seq), kind="stable")
                return ReadingBatch.of(sensors, values, stamps, quality).take(order)
        return ReadingBatch.of(sensors, values, stamps, quality)

    def _decode_batch(
        self,
        topic: bytes,
        payload: bytes,
        now: float,
        sensors: list[int],
        values: list[float],
        stamps: list[float],
        quality: list[int],
    ) -> None:
        if len(payload) > MAX_BATCH_BYTES:
            self.rejects.add("too_large", topic, f"{len(payload)} bytes")
            return
        try:
            items = json.loads(payload)
        except (ValueError, UnicodeDecodeError) as exc:
            self.rejects.add("not_json", topic, str(exc)[:80])
            return
        if not isinstance(items, list):
            self.rejects.add("bad_type", topic, "a batch must be a JSON array")
            return
        ids = self._ids
        for item in items:
            sid = item.get("id") if type(item) is dict else None
            if type(sid) is not str:
                self.rejects.add("bad_type", topic, "batch item without a string id")
                continue
            i = ids.get(sid, -1)
            if i < 0:
                self.rejects.add("unknown_sensor", topic, sid[:64])
                continue
            self._take(topic, i, item, now, sensors, values, stamps, quality)

    def _take(
        self,
        topic: bytes,
        i: int,
        obj: object,
        now: float,
        sensors: list[int],
        values: list[float],
        stamps: list[float],
        quality: list[int],
    ) -> bool:
        """Append one reading; False (and counted) if it is not one."""
        t = type(obj)
        if t is float or t is int:
            v, ts, q = obj, None, 0
        elif t is dict:
            v = obj.get("v")  # type: ignore[attr-defined]
            ts = obj.get("ts")  # type: ignore[attr-defined]
            q = obj.get("q", 0)  # type: ignore[attr-defined]
            tv = type(v)
            if (tv is not float and tv is not int) or type(q) is not int or q < 0:
                self.rejects.add(
                    "bad_type", topic, "v must be a number and q a non-negative integer"
                )
                return False
        elif obj is _INVALID:
            self.rejects.add("not_json", topic)
            return False
        else:
            self.rejects.add("bad_type", topic, f"payload is a JSON {t.__name__}")
            return False
        if ts is None:
            stamp = now
        elif type(ts) is int or type(ts) is float:
            stamp = ts / 1000.0
            if not (0 < stamp <= now + MAX_FUTURE_S) or math.isnan(stamp):
                self.rejects.add("bad_timestamp", topic, f"ts {ts} is not milliseconds up to now")
                return False
        else:
            self.rejects.add("bad_timestamp", topic, "ts must be milliseconds since the epoch")
            return False
        sensors.append(i)
        values.append(float(v))  # type: ignore[arg-type]
        stamps.append(stamp)
        quality.append(Quality.GOOD if q == 0 else min(q, 255))
        return True


class _Invalid:
    """Marks a payload that is not JSON."""


_INVALID = _Invalid()


def _parse_all(payloads: list[bytes]) -> list[object]:
    """Each payload parsed as one JSON value, `_INVALID` where it is not."""
    try:
        parsed = json.loads(b"[" + b",".join(payloads) + b"]")
        if type(parsed) is list and len(parsed) == len(payloads):
            return parsed
    except (ValueError, UnicodeDecodeError, RecursionError):
        pass
    out: list[object] = []
    for p in payloads:
        try:
            out.append(json.loads(p))
        except (ValueError, UnicodeDecodeError, RecursionError):
            out.append(_INVALID)
    return out

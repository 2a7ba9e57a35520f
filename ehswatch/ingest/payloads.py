"""MQTT telemetry payloads (docs/api.md) to `ReadingBatch` columns, in bulk.

Accepted, on a sensor's configured topic or on ``{prefix}/telemetry/{sensor_id}``:

- an object ``{"v": 12.3, "ts": 1764000000123, "q": 0}`` — ``ts`` in milliseconds since
  the epoch (optional: the time of arrival), ``q`` the source's quality (optional, 0
  good; anything else makes the reading bad and the sensor FAULT);
- a bare number ``12.3``;

and on ``{prefix}/telemetry`` an array of objects that also name the sensor:
``[{"id": "G-201", "v": 1.2, "ts": …}, …]``.

Anything else is counted by reason in `Rejects` and dropped, payload by payload (and
item by item in a batch), so the other payloads of the same call are still decoded.
`decode` never raises: a payload nobody foresaw is still one counted reject, because a
message that made the session fail before its PUBACK would be redelivered forever and
blind every MQTT sensor.

A well-formed reading whose value is NaN or infinite (``NaN``, ``Infinity``, ``1e400``)
is *not* dropped: it reaches the evaluator as a bad reading, so the sensor goes to FAULT
rather than silently holding its last value. An integer too large for a float is
``bad_value``.

``ts`` must be a positive number of milliseconds before the year 10000; anything else
(a boolean, a string, NaN, infinity, zero or less, larger) is ``bad_timestamp``. How far
*ahead* of the service clock a reading may be is not checked here: the evaluator rejects
and counts readings from the future per sensor, with its configured tolerance, and
raises a clock_skew FAULT for a device whose clock keeps running ahead.

Speed: all payloads of a flush on sensor topics are parsed by one `json.loads` of their
concatenation, with a marker string between payloads. The result is used only if every
marker comes back as an element of its own at the odd positions and the text holds no
backslash and no other copy of the marker: then each payload was exactly one JSON value
(a payload such as ``1,2`` next to ``[3`` cannot shift readings onto another payload's
sensor). Otherwise each payload is parsed alone to find the bad ones.

A batch is first decoded straight into typed items (msgspec: no dict per item, about
half the cost of `json.loads`), and taken whole if every item has just the fields
``id``, ``v``, ``ts`` and ``q`` and is a known sensor with a finite number, a timestamp
in range and a good-or-coded quality; anything else, and the batch is parsed again by
`json.loads` and judged item by item, with every reject counted.
Both ways give the same readings and rejects (a property test holds them to it).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np

from ehswatch.readings import QUALITY_DTYPE, SENSOR_DTYPE, Quality, ReadingBatch

MAX_SINGLE_BYTES = 4 * 1024
MAX_BATCH_BYTES = 4 * 1024 * 1024
# 10000-01-01T00:00:00Z in milliseconds: a later `ts` is no clock at all, it is garbage.
# (Compared as milliseconds, so a huge integer never has to become a float.)
TS_LIMIT_MS = 253_402_300_800_000
# Batch shapes remembered (`TelemetryDecoder._sensors_of`): at most this many names in
# all, beyond the plant's own count (12 bytes each), then forgotten and learned again.
SEEN_NAMES_SPARE = 100_000


class _BatchItem(msgspec.Struct, gc=False, forbid_unknown_fields=True):
    """A batch item as the common case has it; any other shape fails to decode. Other
    fields too: msgspec would skip them without the checks `json.loads` makes (UTF-8,
    nesting depth), so an item with more than these goes the judged way. Not tracked by
    the garbage collector (it holds no containers): decoding a batch then costs no
    collections."""

    id: str
    v: float
    ts: float
    q: int = 0


_BATCH = msgspec.json.Decoder(list[_BatchItem])

REASONS = (
    "not_json",
    "bad_type",
    "bad_value",
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
        self,
        topics: Mapping[str, int],
        sensor_index: Mapping[str, int],
        prefix: str,
        *,
        sensor_ids: Sequence[str] | None = None,
    ) -> None:
        # Configured topics only; `{prefix}/telemetry/{id}` is looked up by its id when
        # it comes (a dict of every sensor's default topic would cost 10 MB on a
        # 100 000-sensor plant). A configured topic wins over another sensor's default.
        self._single: dict[bytes, int] = {t.encode(): i for t, i in topics.items()}
        self._per_sensor_prefix = f"{prefix}/telemetry/".encode()
        self._batch_topic = f"{prefix}/telemetry".encode()
        self._ids = sensor_index  # not copied: one index per process (a proxy is as fast)
        # Each sensor's id by index (the config's own strings, for `_sensors_of`).
        self._sensor_ids: Sequence[str] = (
            sensor_ids if sensor_ids is not None else _by_index(sensor_index)
        )
        self._seen: dict[tuple[int, str, str], tuple[list[str], np.ndarray]] = {}
        self._seen_names = 0  # names held by `_seen`
        self.seen_names_max = len(self._sensor_ids) + SEEN_NAMES_SPARE
        self.rejects = Rejects()

    def subscriptions(self) -> list[str]:
        """Topic filters that cover every accepted topic."""
        own = sorted(t.decode() for t in self._single if not t.startswith(self._per_sensor_prefix))
        return [*own, self._per_sensor_prefix.decode() + "+", self._batch_topic.decode()]

    def decode(
        self, topics: Sequence[bytes], payloads: Sequence[bytes], now: float
    ) -> ReadingBatch:
        """One batch of every valid reading in these messages, in message order.

        `now` stamps readings that carry no ``ts``. Never raises (module docstring)."""
        cols = _Columns()
        batch_seq: list[int] = []  # message position of each reading from a batch message
        singles: list[int] = []  # positions of single-reading messages
        single_sensor: list[int] = []
        rejects = self.rejects
        lookup = self._single
        ids = self._ids
        per_sensor = self._per_sensor_prefix
        cut = len(per_sensor)
        for k, topic in enumerate(topics):
            i = lookup.get(topic, -1)
            if i < 0 and topic.startswith(per_sensor):
                try:
                    i = ids.get(topic[cut:].decode(), -1)
                except UnicodeDecodeError:
                    i = -1
            if i >= 0:
                if len(payloads[k]) > MAX_SINGLE_BYTES:
                    rejects.add("too_large", topic, f"{len(payloads[k])} bytes")
                    continue
                singles.append(k)
                single_sensor.append(i)
            elif topic == self._batch_topic:
                before = cols.count
                try:
                    self._decode_batch(topic, payloads[k], now, cols)
                except Exception as exc:  # last resort: the causes we know are handled inside
                    rejects.add("not_json", topic, f"undecodable batch: {type(exc).__name__}")
                batch_seq.extend([k] * (cols.count - before))
            elif topic.startswith(self._per_sensor_prefix):
                rejects.add("unknown_sensor", topic)
            else:
                rejects.add("unknown_topic", topic)
        batch_part = cols.count  # readings from batch messages come first, for now
        if singles:
            parsed = _parse_all([payloads[k] for k in singles])
            seq: list[int] = []
            for k, i, obj in zip(singles, single_sensor, parsed, strict=True):
                try:
                    taken = self._take(topics[k], i, obj, now, cols)
                except Exception as exc:  # last resort, as above
                    rejects.add("bad_value", topics[k], f"undecodable: {type(exc).__name__}")
                    continue
                if taken:
                    seq.append(k)
            if batch_part:
                # Put readings back in message order: the evaluator takes a sensor's
                # readings in the order they arrive.
                order = np.argsort(np.array(batch_seq + seq), kind="stable")
                return cols.batch().take(order)
        return cols.batch()

    def _decode_batch(self, topic: bytes, payload: bytes, now: float, cols: _Columns) -> None:
        if len(payload) > MAX_BATCH_BYTES:
            self.rejects.add("too_large", topic, f"{len(payload)} bytes")
            return
        if self._take_typed(payload, cols):
            return
        try:
            items = json.loads(payload)
        except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
            self.rejects.add("not_json", topic, str(exc)[:80])
            return
        if not isinstance(items, list):
            self.rejects.add("bad_type", topic, "a batch must be a JSON array")
            return
        if self._take_bulk(items, cols):
            return
        ids = self._ids
        for item in items:
            try:
                sid = item.get("id") if type(item) is dict else None
                if type(sid) is not str:
                    self.rejects.add("bad_type", topic, "batch item without a string id")
                    continue
                i = ids.get(sid, -1)
                if i < 0:
                    self.rejects.add("unknown_sensor", topic, sid[:64])
                    continue
                self._take(topic, i, item, now, cols)
            except Exception as exc:  # last resort: one item, never the rest of the batch
                self.rejects.add("bad_value", topic, f"undecodable item: {type(exc).__name__}")

    def _take_typed(self, payload: bytes, cols: _Columns) -> bool:
        """The common case at C speed, from the bytes: like `_take_bulk`, but decoded
        into `_BatchItem`s (msgspec refuses NaN, infinity, out-of-range numbers, a bool
        for a number, a missing field: then False, and the slow path judges)."""
        try:
            items = _BATCH.decode(payload)
        except (msgspec.MsgspecError, ValueError, RecursionError):
            # ValueError: msgspec refuses UTF-8-encoded surrogates, which `json.loads`
            # takes; the judged way then decides, item by item.
            return False
        sens = self._sensors_of([item.id for item in items])
        if sens is None:
            return False
        return _append_in_range(
            sens,
            np.array([item.v for item in items], dtype=np.float64),
            [item.ts for item in items],
            [item.q for item in items],
            cols,
        )

    def _sensors_of(self, names: list[str]) -> np.ndarray | None:
        """The sensor index of each name, or None if one is unknown. A gateway sends the
        same sensors in the same order batch after batch: a batch seen before is matched
        by comparing its names (to the config's own strings), which costs a third of
        looking 100 000 fresh strings up a second in a dict of every sensor."""
        if not names:
            return np.zeros(0, dtype=SENSOR_DTYPE)
        key = (len(names), names[0], names[-1])
        seen = self._seen.get(key)
        if seen is not None and seen[0] == names:
            return seen[1]
        ids = self._ids
        try:
            index = [ids[n] for n in names]
        except KeyError:
            return None
        sens = np.array(index, dtype=SENSOR_DTYPE)
        sens.flags.writeable = False  # shared by every batch like this one
        if self._seen_names + len(index) > self.seen_names_max:
            # Bounded: batches of ever other shapes (a gateway that reports by exception,
            # or someone publishing junk) cost memory no more than this.
            self._seen.clear()
            self._seen_names = 0
        own = self._sensor_ids
        self._seen[key] = ([own[i] for i in index], sens)
        self._seen_names += len(index)
        return sens

    def _take_bulk(self, items: list[Any], cols: _Columns) -> bool:
        """The common case at C speed: a batch whose every item is a known sensor with a
        number, a timestamp in range and a good-or-coded quality. Appends it all and says
        True; for anything else appends nothing and says False, and `_take` judges the
        batch item by item (the same result, with every reject counted by reason)."""
        ids = self._ids
        try:
            sens = [ids[item["id"]] for item in items]
            vs = [item["v"] for item in items]
            ts = [item["ts"] for item in items]
            qs = [item.get("q", 0) for item in items]
        except (TypeError, KeyError, AttributeError):
            return False  # not all dicts, an id unknown or missing, a ts missing
        numbers = {int, float}
        if not (set(map(type, vs)) <= numbers and set(map(type, ts)) <= numbers):
            return False  # a bool, a string, a null: one by one
        if qs and set(map(type, qs)) != {int}:
            return False
        try:
            v = np.array(vs, dtype=np.float64)
        except OverflowError:
            return False  # an integer too large for a float: one by one, counted
        # NaN values pass, on purpose (the evaluator makes them a bad reading).
        return _append_in_range(np.array(sens, dtype=SENSOR_DTYPE), v, ts, qs, cols)

    def _take(
        self,
        topic: bytes,
        i: int,
        obj: object,
        now: float,
        cols: _Columns,
    ) -> bool:
        """Append one reading; False (and counted) if it is not one.

        Appends nothing until every check has passed, so the columns stay aligned."""
        t = type(obj)
        if t is float or t is int:
            v, ts, q = obj, None, 0
        elif t is dict:
            v = obj.get("v")  # type: ignore[attr-defined]
            ts = obj.get("ts")  # type: ignore[attr-defined]
            q = obj.get("q", 0)  # type: ignore[attr-defined]
            tv = type(v)
            # `type(...) is`, not isinstance: a JSON true is a bool, and no number.
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
        try:
            value = float(v)  # type: ignore[arg-type]  # NaN and ±inf pass, on purpose
        except OverflowError:
            self.rejects.add("bad_value", topic, "v is an integer too large for a float")
            return False
        if ts is None:
            stamp = now
        elif (type(ts) is int or type(ts) is float) and 0 < ts < TS_LIMIT_MS:  # NaN fails
            stamp = ts / 1000.0
        else:
            self.rejects.add(
                "bad_timestamp", topic, "ts must be positive milliseconds before year 10000"
            )
            return False
        cols.append(i, value, stamp, Quality.GOOD if q == 0 else min(q, 255))
        return True


class _Invalid:
    """Marks a payload that is not JSON."""


_INVALID = _Invalid()

# Put between payloads for the one-pass parse (module docstring); short, as it is parsed
# once per payload.
_MARK = "~"
_SEP = b',"' + _MARK.encode() + b'",'
_MARK_LITERAL = b'"' + _MARK.encode() + b'"'


def _parse_all(payloads: list[bytes]) -> list[object]:
    """Each payload parsed as one JSON value, `_INVALID` where it is not."""
    n = len(payloads)
    try:
        joined = b"[" + _SEP.join(payloads) + b"]"
        if b"\\" not in joined and joined.count(_MARK_LITERAL) == n - 1:
            parsed = json.loads(joined)
            if (
                type(parsed) is list
                and len(parsed) == 2 * n - 1
                and parsed[1::2] == [_MARK] * (n - 1)
            ):
                return parsed[0::2]
    except Exception:  # ValueError, RecursionError, …: find the bad ones one by one
        pass
    out: list[object] = []
    for p in payloads:
        try:
            out.append(json.loads(p))
        except Exception:  # ValueError (UnicodeDecodeError too), RecursionError, …
            out.append(_INVALID)
    return out


def _append_in_range(
    sens: np.ndarray,
    v: np.ndarray,
    ts: list[Any],
    qs: list[int],
    cols: _Columns,
) -> bool:
    """The bulk paths' common end: append the readings to `cols` if every timestamp
    is in range and every quality a non-negative integer (within int64); else append
    nothing and say False (the batch is then judged item by item)."""
    try:
        t = np.array(ts, dtype=np.float64)
        q = np.array(qs, dtype=np.int64)
    except OverflowError:
        return False  # an integer too large: one by one, counted
    # NaN timestamps fail the range test, as in `TelemetryDecoder._take`.
    if not ((t > 0) & (t < TS_LIMIT_MS)).all() or (q < 0).any():
        return False
    cols.extend(
        ReadingBatch(
            sensor=sens,
            value=v,
            ts=t / 1000.0,
            quality=np.minimum(q, 255).astype(QUALITY_DTYPE),
        )
    )
    return True


class _Columns:
    """The readings of one `decode`, in the order they are taken: whole batches as
    arrays (the bulk paths), single readings as Python scalars (the judged ways)."""

    __slots__ = ("_parts", "_quality", "_sensors", "_stamps", "_values", "count")

    def __init__(self) -> None:
        self._parts: list[ReadingBatch] = []
        self._sensors: list[int] = []
        self._values: list[float] = []
        self._stamps: list[float] = []
        self._quality: list[int] = []
        self.count = 0

    def append(self, sensor: int, value: float, stamp: float, quality: int) -> None:
        self._sensors.append(sensor)
        self._values.append(value)
        self._stamps.append(stamp)
        self._quality.append(quality)
        self.count += 1

    def extend(self, part: ReadingBatch) -> None:
        self._seal()
        self._parts.append(part)
        self.count += len(part)

    def batch(self) -> ReadingBatch:
        self._seal()
        return ReadingBatch.concat(self._parts)

    def _seal(self) -> None:
        if self._sensors:
            self._parts.append(
                ReadingBatch.of(self._sensors, self._values, self._stamps, self._quality)
            )
            self._sensors, self._values, self._stamps, self._quality = [], [], [], []


def _by_index(index: Mapping[str, int]) -> list[str]:
    ids = [""] * (max(index.values(), default=-1) + 1)
    for sid, i in index.items():
        ids[i] = sid
    return ids

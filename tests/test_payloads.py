"""Telemetry payloads (docs/ingest.md): accepted shapes become columns; every kind of garbage
is counted."""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ehswatch.ingest.payloads import MAX_SINGLE_BYTES, TelemetryDecoder
from ehswatch.readings import Quality, ReadingBatch

NOW = 1_764_000_100.0
MARKER_ID = "MARKER-ONLY-7"  # receives only the good readings the property tests mix in
IDS = {"G-201": 0, "O2-301": 1, MARKER_ID: 2}


@pytest.fixture
def decoder() -> TelemetryDecoder:
    return TelemetryDecoder({"plant1/gas/O2-301": 1}, IDS, "ehs")


def test_object_payload_with_ts_in_milliseconds_and_quality(decoder: TelemetryDecoder) -> None:
    b = decoder.decode([b"ehs/telemetry/G-201"], [b'{"v": 12.3, "ts": 1764000000123, "q": 0}'], NOW)
    assert (b.sensor.tolist(), b.value.tolist(), b.ts.tolist(), b.quality.tolist()) == (
        [0],
        [12.3],
        [1764000000.123],
        [0],
    )


def test_bare_number_is_stamped_on_arrival(decoder: TelemetryDecoder) -> None:
    b = decoder.decode([b"plant1/gas/O2-301"], [b"20.9"], NOW)
    assert (b.sensor.tolist(), b.value.tolist(), b.ts.tolist()) == ([1], [20.9], [NOW])


def test_source_quality_flag_makes_the_reading_bad(decoder: TelemetryDecoder) -> None:
    b = decoder.decode([b"ehs/telemetry/G-201"], [b'{"v": 0, "q": 3}'], NOW)
    assert b.quality.tolist() == [3]


def test_batch_array_names_its_sensors(decoder: TelemetryDecoder) -> None:
    items = [{"id": "G-201", "v": 1.2, "ts": 1764000000000}, {"id": "O2-301", "v": 20.8}]
    b = decoder.decode([b"ehs/telemetry"], [json.dumps(items).encode()], NOW)
    assert b.sensor.tolist() == [0, 1] and b.value.tolist() == [1.2, 20.8]


def test_nan_value_reaches_the_evaluator_as_a_bad_reading(decoder: TelemetryDecoder) -> None:
    b = decoder.decode([b"ehs/telemetry/G-201"], [b'{"v": NaN}'], NOW)
    assert math.isnan(b.value[0]) and decoder.rejects.total == 0


GARBAGE = [
    (b"ehs/telemetry/G-201", b"\x00\xff not json", "not_json"),
    (b"ehs/telemetry/G-201", b"", "not_json"),
    (b"ehs/telemetry/G-201", b"[1, 2", "not_json"),
    (b"ehs/telemetry/G-201", b"1,2", "not_json"),
    (b"ehs/telemetry/G-201", b'{"v": "high"}', "bad_type"),
    (b"ehs/telemetry/G-201", b'{"v": true}', "bad_type"),
    (b"ehs/telemetry/G-201", b'{"q": 0}', "bad_type"),
    (b"ehs/telemetry/G-201", b'{"v": 1, "q": -1}', "bad_type"),
    (b"ehs/telemetry/G-201", b'{"v": 1, "q": "ok"}', "bad_type"),
    (b"ehs/telemetry/G-201", b"true", "bad_type"),
    (b"ehs/telemetry/G-201", b'"12.3"', "bad_type"),
    (b"ehs/telemetry/G-201", b"[12.3]", "bad_type"),
    (b"ehs/telemetry/G-201", b'{"v": 1, "ts": "yesterday"}', "bad_timestamp"),
    (b"ehs/telemetry/G-201", b'{"v": 1, "ts": 253402300800000}', "bad_timestamp"),
    (b"ehs/telemetry/G-201", b'{"v": 1, "ts": -5}', "bad_timestamp"),
    (b"ehs/telemetry/G-201", b"9" * (MAX_SINGLE_BYTES + 1), "too_large"),
    (b"ehs/telemetry/NOPE", b"1.0", "unknown_sensor"),
    (b"ehs/telemetry", b'[{"id": "NOPE", "v": 1}]', "unknown_sensor"),
    (b"ehs/telemetry", b'[{"v": 1}]', "bad_type"),
    (b"ehs/telemetry", b"[7]", "bad_type"),
    (b"ehs/telemetry", b'{"id": "G-201", "v": 1}', "bad_type"),
    (b"ehs/telemetry", b"[{", "not_json"),
    (b"somewhere/else", b"1.0", "unknown_topic"),
]


@pytest.mark.parametrize(("topic", "payload", "reason"), GARBAGE)
def test_each_kind_of_garbage_is_counted_by_reason_and_dropped(
    decoder: TelemetryDecoder, topic: bytes, payload: bytes, reason: str
) -> None:
    b = decoder.decode([topic, b"ehs/telemetry/G-201"], [payload, b"4.5"], NOW)
    assert decoder.rejects.by_reason == {reason: 1}
    assert b.value.tolist() == [4.5]  # the good message next to it still arrives


def test_garbage_mixed_into_a_bulk_keeps_every_good_reading(decoder: TelemetryDecoder) -> None:
    topics = [t for t, _, _ in GARBAGE] + [b"ehs/telemetry/G-201"] * 3
    payloads = [p for _, p, _ in GARBAGE] + [b"1.5", b'{"v": 2.5}', b"3.5"]
    b = decoder.decode(topics, payloads, NOW)
    assert b.value.tolist() == [1.5, 2.5, 3.5]
    assert decoder.rejects.total == len(GARBAGE)
    assert "on " in decoder.rejects.last


def test_subscriptions_cover_configured_topics_and_the_telemetry_tree(
    decoder: TelemetryDecoder,
) -> None:
    assert decoder.subscriptions() == ["plant1/gas/O2-301", "ehs/telemetry/+", "ehs/telemetry"]


def test_quality_code_is_kept_for_the_evaluator(decoder: TelemetryDecoder) -> None:
    b = decoder.decode([b"ehs/telemetry/G-201"], [b'{"v": 1, "q": 999}'], NOW)
    assert b.quality.tolist() == [255] and Quality(1)


def test_readings_keep_message_order_across_batch_and_single_messages(
    decoder: TelemetryDecoder,
) -> None:
    topics = [b"ehs/telemetry/G-201", b"ehs/telemetry", b"ehs/telemetry/G-201"]
    payloads = [b"1.0", b'[{"id": "G-201", "v": 2.0}, {"id": "O2-301", "v": 20.0}]', b"3.0"]
    b = decoder.decode(topics, payloads, NOW)
    assert b.value.tolist() == [1.0, 2.0, 20.0, 3.0]


# -- The decoder never raises: every payload is a reading or a counted reject. ---------

BIG = b"1" + b"0" * 399  # a 400-digit integer: float() of it raises OverflowError
POISON = [
    # (topic, payload, reason): each once made `decode` raise, or must never make it.
    (b"ehs/telemetry/G-201", b'{"v": ' + BIG + b"}", "bad_value"),
    (b"ehs/telemetry/G-201", BIG, "bad_value"),
    (b"ehs/telemetry/G-201", b"-" + BIG, "bad_value"),
    (b"ehs/telemetry", b'[{"id": "G-201", "v": ' + BIG + b"}]", "bad_value"),
    (b"ehs/telemetry", b"[" * 100_000, "not_json"),  # RecursionError in json.loads
    (b"ehs/telemetry", b"[" * 100_000 + b"]" * 100_000, "not_json"),
    (b"ehs/telemetry/G-201", b"[" * 100_000, "too_large"),
    (b"ehs/telemetry/G-201", b"[" * 3_000, "not_json"),  # deep, under the size limit
    (b"ehs/telemetry/G-201", b'{"v": [[[[[[[[1]]]]]]]]}', "bad_type"),
    (b"ehs/telemetry/G-201", b'{"v": 1, "x": "\xff\xfe"}', "not_json"),
    (b"ehs/telemetry/G-201", b"\xc3", "not_json"),
    (b"ehs/telemetry", b'[{"id": "G-201\xff", "v": 1}]', "not_json"),
    (b"ehs/telemetry/G-201", b'{"v": true}', "bad_type"),
    (b"ehs/telemetry/G-201", b'{"v": false}', "bad_type"),
    (b"ehs/telemetry/G-201", b'{"v": null}', "bad_type"),
    (b"ehs/telemetry/G-201", b'{"v": {"v": 1}}', "bad_type"),
    (b"ehs/telemetry/G-201", b'{"v": 1, "ts": true}', "bad_timestamp"),
    (b"ehs/telemetry/G-201", b'{"v": 1, "ts": NaN}', "bad_timestamp"),
    (b"ehs/telemetry/G-201", b'{"v": 1, "ts": Infinity}', "bad_timestamp"),
    (b"ehs/telemetry/G-201", b'{"v": 1, "ts": 1e400}', "bad_timestamp"),
    (b"ehs/telemetry/G-201", b'{"v": 1, "ts": ' + BIG + b"}", "bad_timestamp"),
    (b"ehs/telemetry/G-201", b'{"v": 1, "ts": -' + BIG + b"}", "bad_timestamp"),
    (b"ehs/telemetry/G-201", b'{"v": 1, "ts": 0}', "bad_timestamp"),
    (b"ehs/telemetry/G-201", b'{"v": 1, "ts": [1764000000000]}', "bad_timestamp"),
    (b"ehs/telemetry/G-201", b'{"v": 1, "q": true}', "bad_type"),
    (b"ehs/telemetry/G-201", b'{"v": 1, "q": 1e400}', "bad_type"),
    (b"ehs/telemetry/G-201", b'{"v": 1, "q": NaN}', "bad_type"),
    (b"ehs/telemetry", b'[{"id": "G-201", "v": 1, "ts": ' + BIG + b"}]", "bad_timestamp"),
    (b"ehs/telemetry", b'[[{"id": "G-201", "v": 1}]]', "bad_type"),
    (b"ehs/telemetry", b"[null]", "bad_type"),
    (b"ehs/telemetry", b'[{"id": ["G-201"], "v": 1}]', "bad_type"),
    (b"ehs/telemetry", b'[{"id": 201, "v": 1}]', "bad_type"),
    (b"ehs/telemetry", b'[{"id": {"id": "G-201"}, "v": 1}]', "bad_type"),
    (b"ehs/telemetry", b"1" + b"0" * 5000, "not_json"),  # over python's int digit limit
]


@pytest.mark.parametrize(("topic", "payload", "reason"), POISON)
def test_a_payload_that_cannot_be_decoded_is_a_counted_reject_never_an_exception(
    decoder: TelemetryDecoder, topic: bytes, payload: bytes, reason: str
) -> None:
    good = b"ehs/telemetry/G-201"
    b = decoder.decode([good, topic, good], [b"1.5", payload, b"2.5"], NOW)
    assert decoder.rejects.by_reason == {reason: 1}
    assert b.value.tolist() == [1.5, 2.5]  # the payloads around it are still decoded


def test_every_poison_payload_in_one_bulk_is_counted_and_the_good_ones_kept(
    decoder: TelemetryDecoder,
) -> None:
    good = b"ehs/telemetry/G-201"
    topics = [t for pair in ((good, t) for t, _, _ in POISON) for t in pair] + [good]
    payloads = [p for pair in ((b"%d" % k, p) for k, (_, p, _) in enumerate(POISON)) for p in pair]
    b = decoder.decode(topics, [*payloads, b"-1"], NOW)
    assert b.value.tolist() == [*map(float, range(len(POISON))), -1.0]
    assert decoder.rejects.by_reason == Counter(reason for _, _, reason in POISON)


@pytest.mark.parametrize(
    ("topic", "payload"),
    [
        (b"ehs/telemetry/G-201", b"1e400"),
        (b"ehs/telemetry/G-201", b"-1e400"),
        (b"ehs/telemetry/G-201", b'{"v": 1e400, "ts": 1764000000123}'),
        (b"ehs/telemetry/G-201", b'{"v": -Infinity}'),
        (b"ehs/telemetry/G-201", b"NaN"),
        (b"plant1/gas/O2-301", b'{"v": Infinity, "q": 0}'),
        (b"ehs/telemetry", b'[{"id": "G-201", "v": 1e400}]'),
        (b"ehs/telemetry", b'[{"id": "G-201", "v": NaN}]'),
    ],
)
def test_a_non_finite_value_reaches_the_evaluator_as_a_bad_reading(
    decoder: TelemetryDecoder, topic: bytes, payload: bytes
) -> None:
    b = decoder.decode([topic], [payload], NOW)
    assert len(b) == 1 and not math.isfinite(b.value[0])
    assert decoder.rejects.total == 0


@pytest.mark.parametrize(
    "ts_ms",
    [
        (NOW + 3600) * 1000,  # an hour ahead: the evaluator's clock-skew check decides
        99_999_999_999_999,  # the year 5138
        253_402_300_799_999,  # the last millisecond of the year 9999
        1,
    ],
)
def test_the_decoder_leaves_timestamps_ahead_of_the_clock_to_the_evaluator(
    decoder: TelemetryDecoder, ts_ms: float
) -> None:
    payload = json.dumps({"v": 1.0, "ts": ts_ms}).encode()
    b = decoder.decode([b"ehs/telemetry/G-201"], [payload], NOW)
    assert b.ts.tolist() == [ts_ms / 1000] and decoder.rejects.total == 0


@pytest.mark.parametrize(
    "payloads",
    [
        [b"1,2", b"[3", b"4]"],  # parsed together: [1, 2, [3, 4]], three values for three
        [b'1,"~",[2', b"3]"],  # forges the marker put between payloads
        [b'1,"\\u007e",[2', b"3]"],  # … and the same marker written with an escape
        [b'"a', b'b"', b"5"],
    ],
)
def test_a_reading_never_moves_to_the_sensor_of_another_payload(
    decoder: TelemetryDecoder, payloads: list[bytes]
) -> None:
    topics = [b"ehs/telemetry/G-201", b"plant1/gas/O2-301", b"ehs/telemetry/G-201"]
    b = decoder.decode(topics[: len(payloads)], payloads, NOW)
    # Each alone: only the last list's "5" is a reading at all.
    assert list(zip(b.sensor.tolist(), b.value.tolist(), strict=True)) == (
        [(0, 5.0)] if payloads[-1] == b"5" else []
    )
    assert decoder.rejects.by_reason == {"not_json": len(payloads) - (payloads[-1] == b"5")}


# -- Properties, on random input. --------------------------------------------------------

TOPICS = [
    b"ehs/telemetry/G-201",
    b"plant1/gas/O2-301",
    b"ehs/telemetry",
    b"ehs/telemetry/NOPE",
    b"elsewhere",
]
MARKER_TOPIC = f"ehs/telemetry/{MARKER_ID}".encode()


def new_decoder() -> TelemetryDecoder:
    return TelemetryDecoder({"plant1/gas/O2-301": 1}, IDS, "ehs")


def columns(b: ReadingBatch) -> list[list[float]]:
    return [b.sensor.tolist(), b.value.tolist(), b.ts.tolist(), b.quality.tolist()]


def outcomes_expected(topic: bytes, payload: bytes) -> int:
    """How many readings-or-rejects one message must give: one, or one per batch item."""
    if topic != b"ehs/telemetry":
        return 1
    try:
        items = json.loads(payload)
    except (ValueError, RecursionError):
        return 1
    return len(items) if type(items) is list and len(payload) <= 4 * 1024 * 1024 else 1


def check_bulk(messages: Sequence[tuple[bytes, bytes]]) -> None:
    """Decode `messages` with a good reading on the marker sensor after each, and hold
    the decoder to: no exception; each message is decoded as if it came alone (so
    nothing leaks between payloads); each gives one reading or counted reject (one per
    item on the batch topic); every good reading comes through, in order."""
    topics: list[bytes] = []
    payloads: list[bytes] = []
    for k, (topic, payload) in enumerate(messages):
        topics += [topic, MARKER_TOPIC]
        payloads += [payload, b"%d" % k]
    decoder = new_decoder()
    bulk = decoder.decode(topics, payloads, NOW)  # must not raise

    alone_cols: list[list[float]] = [[], [], [], []]
    alone_rejects: Counter[str] = Counter()
    for topic, payload in zip(topics, payloads, strict=True):
        d = new_decoder()
        b = d.decode([topic], [payload], NOW)
        for col, got in zip(alone_cols, columns(b), strict=True):
            col.extend(got)
        alone_rejects += d.rejects.by_reason
        assert len(b) + d.rejects.total == outcomes_expected(topic, payload), (topic, payload)
    got_cols = columns(bulk)
    assert (got_cols[0], got_cols[2], got_cols[3]) == (alone_cols[0], alone_cols[2], alone_cols[3])
    assert np.array_equal(bulk.value, np.array(alone_cols[1]), equal_nan=True)
    assert decoder.rejects.by_reason == alone_rejects
    markers = bulk.value[bulk.sensor == IDS[MARKER_ID]].tolist()
    assert markers == [float(k) for k in range(len(messages))]


FRAGMENTS = [b"1", b"2.5", b",", b"[", b"]", b"{", b"}", b":", b'"', b'"v"', b'"~"', b"\\"]
payload_bytes = st.one_of(
    st.binary(max_size=64),
    st.lists(st.sampled_from(FRAGMENTS), max_size=12).map(b"".join),
    st.integers(min_value=990, max_value=3000).map(lambda n: b"[" * n),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(TOPICS), payload_bytes), max_size=8))
def test_arbitrary_bytes_are_each_a_reading_or_a_counted_reject_never_an_exception(
    messages: list[tuple[bytes, bytes]],
) -> None:
    check_bulk(messages)


KEYS = st.sampled_from(["v", "ts", "q", "id"]) | st.text(max_size=3)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.sampled_from(
        [10**400, -(10**400), 2**1024, 10**308, 1_764_000_000_123, 253_402_300_800_000]
    ),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.sampled_from(["G-201", "O2-301", "NOPE", "~"]),
)
json_values = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(KEYS, children, max_size=5),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(TOPICS), json_values), max_size=8))
def test_arbitrary_json_is_each_a_reading_or_a_counted_reject_never_an_exception(
    messages: list[tuple[bytes, object]],
) -> None:
    check_bulk([(t, json.dumps(v, allow_nan=True).encode()) for t, v in messages])


class ItemByItem(TelemetryDecoder):
    """The decoder without its bulk paths: every batch item judged on its own."""

    def _take_typed(self, *args: object, **kwargs: object) -> bool:
        return False

    def _take_bulk(self, *args: object, **kwargs: object) -> bool:
        return False


class Untyped(TelemetryDecoder):
    """The decoder without its typed path: `json.loads`, then the bulk path."""

    def _take_typed(self, *args: object, **kwargs: object) -> bool:
        return False


# Mostly well-formed items with one field wrong: the cases a shortcut gets wrong.
batch_item = st.builds(
    lambda good, key, bad: {**good, key: bad} if key else good,
    st.fixed_dictionaries(
        {"id": st.sampled_from(list(IDS)), "v": st.just(1.5), "ts": st.just(1_764_000_000_123)}
    ),
    st.sampled_from(["", "id", "v", "ts", "q"]),
    st.sampled_from(
        [
            -1,
            0,
            255,
            256,
            10**20,
            -(10**400),
            True,
            None,
            "x",
            1.5,
            math.nan,
            math.inf,
            -0.0,
            253_402_300_800_000,
            "G-201",
            "nope",
            [1],
        ]
    ),
)
good_item = st.builds(
    lambda i, v, ts, q: {"id": i, "v": v, "ts": ts, "q": q},
    st.sampled_from(list(IDS)),
    st.floats(allow_nan=True, allow_infinity=True) | st.integers(-(10**6), 10**6),
    st.integers(min_value=1, max_value=253_402_300_799_000),
    st.integers(min_value=0, max_value=10**6),
)


@settings(max_examples=400, deadline=None)
@given(
    st.lists(good_item, max_size=30)
    | st.lists(good_item | batch_item, min_size=1, max_size=12)
    | st.lists(good_item | batch_item | json_values, max_size=12)
)
def test_a_batch_decodes_the_same_in_bulk_as_item_by_item(items: list[object]) -> None:
    """The bulk paths are shortcuts, never a different rule: same readings, same rejects,
    whether typed (msgspec), bulk after `json.loads`, or item by item."""
    payload = json.dumps(items, allow_nan=True).encode()
    one_by_one = ItemByItem({"plant1/gas/O2-301": 1}, IDS, "ehs")
    b = one_by_one.decode([b"ehs/telemetry"], [payload], NOW)
    for shortcut in (new_decoder(), Untyped({"plant1/gas/O2-301": 1}, IDS, "ehs")):
        a = shortcut.decode([b"ehs/telemetry"], [payload], NOW)
        assert (a.sensor.tolist(), a.ts.tolist(), a.quality.tolist()) == (
            b.sensor.tolist(),
            b.ts.tolist(),
            b.quality.tolist(),
        ), type(shortcut).__name__
        assert np.array_equal(a.value, b.value, equal_nan=True)
        assert a.value.dtype == b.value.dtype
        assert shortcut.rejects.by_reason == one_by_one.rejects.by_reason


@pytest.mark.parametrize(
    "payload",
    [
        # UTF-8-encoded surrogates: json.loads takes them (surrogatepass), msgspec not
        b'[{"id":"\xed\xa0\x80","v":1,"ts":1},{"id":"G-201","v":2,"ts":1}]',
        # bytes json.loads refuses, in a field the typed items would skip
        b'[{"id":"G-201","v":1,"ts":1,"note":"\xff"}]',
        b'[{"id":"G-201","v":1,"ts":1,"note":"\xc0\x80"}]',
        b'[{"id":"G-201","v":1,"ts":1,"x\xff":1}]',
        b'[{"id":"G-201","v":1,"ts":1,"note":"\xf4\x90\x80\x80"}]',
        # nesting deeper than json.loads goes, in such a field
        b'[{"id":"G-201","v":1,"ts":1,"x":' + b"[" * 995 + b"]" * 995 + b"}]",
        # a field more than the common case, well-formed
        b'[{"id":"G-201","v":1,"ts":1,"unit":"mg/m3"},{"id":"O2-301","v":20.9,"ts":2}]',
    ],
)
def test_a_batch_the_typed_path_cannot_judge_gives_what_the_item_by_item_path_gives(
    payload: bytes,
) -> None:
    typed = new_decoder()
    one_by_one = ItemByItem({"plant1/gas/O2-301": 1}, IDS, "ehs")
    a = typed.decode([b"ehs/telemetry"], [payload], NOW)
    b = one_by_one.decode([b"ehs/telemetry"], [payload], NOW)
    assert columns(a) == columns(b)
    assert typed.rejects.by_reason == one_by_one.rejects.by_reason


def _batch(ids: Sequence[str]) -> bytes:
    return json.dumps([{"id": i, "v": 1.0, "ts": 1764000000000} for i in ids]).encode()


def test_a_remembered_batch_lends_its_sensors_only_to_a_batch_with_the_same_names() -> None:
    """Same length, same first and last id, another sensor (or an unknown one) inside:
    each gets its own sensors, never the remembered batch's."""
    decoder = new_decoder()
    first = decoder.decode([b"ehs/telemetry"], [_batch(["G-201", "O2-301", MARKER_ID])], NOW)
    assert first.sensor.tolist() == [0, 1, 2]
    other = decoder.decode([b"ehs/telemetry"], [_batch(["G-201", "G-201", MARKER_ID])], NOW)
    assert other.sensor.tolist() == [0, 0, 2]
    unknown = decoder.decode([b"ehs/telemetry"], [_batch(["G-201", "NOPE-1", MARKER_ID])], NOW)
    assert unknown.sensor.tolist() == [0, 2]
    assert decoder.rejects.by_reason == Counter({"unknown_sensor": 1})
    again = decoder.decode([b"ehs/telemetry"], [_batch(["G-201", "O2-301", MARKER_ID])], NOW)
    assert again.sensor.tolist() == [0, 1, 2]


def test_the_sensors_a_batch_shares_with_the_ones_before_cannot_be_written() -> None:
    decoder = new_decoder()
    decoder.decode([b"ehs/telemetry"], [_batch(["G-201", "O2-301"])], NOW)
    b = decoder.decode([b"ehs/telemetry"], [_batch(["G-201", "O2-301"])], NOW)
    with pytest.raises(ValueError, match="read-only"):
        b.sensor[0] = 1


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.sampled_from([*IDS, "NOPE-1"]), max_size=6), max_size=12))
def test_one_decoder_over_many_batches_gives_what_a_fresh_one_gives_each(
    batches: list[list[str]],
) -> None:
    """What a decoder remembers of earlier batches never changes a later batch's
    readings or rejects."""
    kept = new_decoder()
    for ids in batches:
        fresh = new_decoder()
        a = kept.decode([b"ehs/telemetry"], [_batch(ids)], NOW)
        b = fresh.decode([b"ehs/telemetry"], [_batch(ids)], NOW)
        assert columns(a) == columns(b)
    assert kept.rejects.total == sum(ids.count("NOPE-1") for ids in batches)


def test_the_batch_shapes_remembered_are_bounded_in_names() -> None:
    """Batches of ever other shapes (report by exception, or junk) cost bounded memory,
    and still decode right."""
    decoder = new_decoder()
    decoder.seen_names_max = 5
    names = list(IDS)
    for k in range(40):
        ids = [names[(k + j) % 3] for j in range(1 + k % 3)]
        b = decoder.decode([b"ehs/telemetry"], [_batch(ids)], NOW)
        assert b.sensor.tolist() == [IDS[i] for i in ids]
        assert decoder._seen_names <= 5

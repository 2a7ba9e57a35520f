"""SPEC §9 payloads: accepted shapes become columns; every kind of garbage is counted."""

from __future__ import annotations

import json
import math

import pytest

from ehswatch.ingest.payloads import MAX_SINGLE_BYTES, TelemetryDecoder
from ehswatch.readings import Quality

NOW = 1_764_000_100.0
IDS = {"G-201": 0, "O2-301": 1}


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
    (b"ehs/telemetry/G-201", b'{"v": 1, "ts": 99999999999999}', "bad_timestamp"),
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

"""Modbus register plans: as few requests as the protocol allows, exact decoding."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from ehswatch.config import ModbusPoint
from ehswatch.ingest.registers import RegisterPlan, Span, encode

LAYOUTS = [
    ("big", "big"),
    ("little", "big"),
    ("big", "little"),
    ("little", "little"),
]  # ABCD CDAB BADC DCBA


def point(
    register: int, dtype: str = "float32", kind: str = "holding", **kw: object
) -> ModbusPoint:
    return ModbusPoint.model_validate(
        {"device": "d", "register": register, "dtype": dtype, "kind": kind, **kw}
    )


def test_adjacent_registers_are_read_with_one_request() -> None:
    plan = RegisterPlan.build(
        [(0, point(0)), (1, point(2)), (2, point(4, "int16")), (3, point(5, "float64"))]
    )
    assert plan.spans == (Span(kind="holding", start=0, count=9),)


def test_registers_that_do_not_touch_are_not_merged() -> None:
    plan = RegisterPlan.build([(0, point(0)), (1, point(3))])
    assert plan.spans == (
        Span(kind="holding", start=0, count=2),
        Span(kind="holding", start=3, count=2),
    )


def test_a_span_never_exceeds_125_registers() -> None:
    plan = RegisterPlan.build([(i, point(2 * i)) for i in range(100)])  # 200 registers
    assert [s.count for s in plan.spans] == [124, 76]


def test_each_table_is_read_separately() -> None:
    plan = RegisterPlan.build(
        [
            (0, point(0)),
            (1, point(0, kind="input")),
            (2, point(0, "bool", "coil")),
            (3, point(1, "bool", "coil")),
            (4, point(7, "bool", "discrete")),
        ]
    )
    assert [(s.kind, s.start, s.count) for s in plan.spans] == [
        ("holding", 0, 2),
        ("input", 0, 2),
        ("coil", 0, 2),
        ("discrete", 7, 1),
    ]


def test_known_byte_layouts_of_a_float() -> None:
    # 123.456 as float32 is 0x42F6E979: A=42 B=F6 C=E9 D=79.
    expected = {
        ("big", "big"): [0x42F6, 0xE979],
        ("little", "big"): [0xE979, 0x42F6],
        ("big", "little"): [0xF642, 0x79E9],
        ("little", "little"): [0x79E9, 0xF642],
    }
    for (word, byte), regs in expected.items():
        assert encode(123.456, point(0, word_order=word, byte_order=byte)) == regs


@given(
    value=st.floats(-1e6, 1e6, allow_nan=False),
    dtype=st.sampled_from(["int16", "uint16", "int32", "uint32", "float32", "float64"]),
    layout=st.sampled_from(LAYOUTS),
    scale=st.sampled_from([1.0, 0.1, 0.01]),
    offset=st.sampled_from([0.0, -40.0]),
)
def test_every_dtype_and_layout_round_trips(
    value: float, dtype: str, layout: tuple[str, str], scale: float, offset: float
) -> None:
    p = point(10, dtype, word_order=layout[0], byte_order=layout[1], scale=scale, offset=offset)
    plan = RegisterPlan.build([(0, p)])
    regs = [0] * 10 + encode(value, p)
    got, ok = plan.decode([regs[10:]], [])
    assert ok.all()
    raw = (value - offset) / scale
    wire = np.dtype(
        {
            "int16": "i2",
            "uint16": "u2",
            "int32": "i4",
            "uint32": "u4",
            "float32": "f4",
            "float64": "f8",
        }[dtype]
    )
    if wire.kind in "iu":
        info = np.iinfo(wire)
        raw = float(np.clip(np.rint(raw), info.min, info.max))
    else:
        raw = float(np.array(raw, dtype=wire))
    assert (
        math.isclose(got[0], raw * scale + offset, rel_tol=0, abs_tol=0)
        or got[0] == raw * scale + offset
    )


def test_a_failed_span_leaves_its_points_nan_and_not_ok() -> None:
    plan = RegisterPlan.build([(0, point(0)), (1, point(10)), (2, point(0, "bool", "coil"))])
    values, ok = plan.decode([encode(5.5, point(0)), None], [[True]])
    assert values[0] == 5.5 and math.isnan(values[1]) and values[2] == 1.0
    assert ok.tolist() == [True, False, True]

"""Modbus register layout of a device: which requests to make, and how to decode them.

A `RegisterPlan` is compiled once per device from its sensors' `modbus` points:

- Points of one kind (holding, input, coil, discrete) whose addresses touch or overlap
  are merged into spans, each read with one request, split only where the protocol's
  limit forces it (125 registers, 2000 bits per read). Points that do not touch are never
  merged: unlisted addresses may not exist on the device and would fail the whole read.
- Decoding is done for all points of a device at once with numpy: the words of each
  point are gathered into a matrix, reordered (word order), byte-swapped (byte order) and
  reinterpreted as the big-endian dtype, then `raw * scale + offset`.

Byte layouts of a 32-bit value ABCD (A most significant): word_order big + byte_order
big = ABCD, little + big = CDAB, big + little = BADC, little + little = DCBA.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from ehswatch.config import ModbusPoint

MAX_REGISTERS_PER_READ = 125  # Modbus application protocol, FC 3 and 4
MAX_BITS_PER_READ = 2000  # FC 1 and 2

WORDS = {"int16": 1, "uint16": 1, "int32": 2, "uint32": 2, "float32": 2, "float64": 4, "bool": 1}
WIRE_DTYPE = {
    "int16": ">i2",
    "uint16": ">u2",
    "int32": ">i4",
    "uint32": ">u4",
    "float32": ">f4",
    "float64": ">f8",
}
BIT_KINDS = ("coil", "discrete")


@dataclass(frozen=True, kw_only=True, slots=True)
class Span:
    """One read request: `count` registers or bits of `kind` from `start`."""

    kind: str
    start: int
    count: int

    @property
    def is_bits(self) -> bool:
        return self.kind in BIT_KINDS


@dataclass(frozen=True, kw_only=True)
class _Group:
    """Points sharing a wire layout: decoded with one gather and one reinterpretation."""

    rows: NDArray[np.intp]  # positions in the plan's point order
    words: NDArray[np.intp]  # (n, w) indices into the concatenated register buffer
    dtype: str
    word_order: str
    byte_order: str


@dataclass(frozen=True, kw_only=True)
class RegisterPlan:
    """The spans to read for a device and how each point is decoded from them."""

    sensor: NDArray[np.int32]  # dense sensor index of each point, in plan order
    spans: tuple[Span, ...]
    point_span: NDArray[np.intp]  # span index of each point
    scale: NDArray[np.float64]
    offset: NDArray[np.float64]
    _groups: tuple[_Group, ...] = field(repr=False)
    _bit_rows: NDArray[np.intp] = field(repr=False)
    _bit_index: NDArray[np.intp] = field(repr=False)

    @classmethod
    def build(cls, points: Sequence[tuple[int, ModbusPoint]]) -> RegisterPlan:
        """`points`: (dense sensor index, point) of every sensor read from one device."""
        spans: list[Span] = []
        point_span = np.zeros(len(points), dtype=np.intp)
        point_pos = np.zeros(len(points), dtype=np.intp)  # offset inside its span
        for kind in ("holding", "input", "coil", "discrete"):
            limit = MAX_BITS_PER_READ if kind in BIT_KINDS else MAX_REGISTERS_PER_READ
            mine = sorted(
                (p.address, p.address + WORDS[p.dtype], i)
                for i, (_, p) in enumerate(points)
                if p.kind == kind
            )
            current: list[tuple[int, int, int]] = []
            for start, end, i in mine:
                lo = current[0][0] if current else start
                hi = max(e for _, e, _ in current) if current else end
                if current and start <= hi and max(hi, end) - lo <= limit:
                    current.append((start, end, i))
                    continue
                if current:
                    _close(spans, kind, current, point_span, point_pos)
                current = [(start, end, i)]
            if current:
                _close(spans, kind, current, point_span, point_pos)

        # Registers of all register spans are concatenated in span order on each poll;
        # bits likewise. Precompute where each point's words sit in those buffers.
        reg_base, bit_base, r, b = [], [], 0, 0
        for s in spans:
            reg_base.append(r if not s.is_bits else -1)
            bit_base.append(b if s.is_bits else -1)
            if s.is_bits:
                b += s.count
            else:
                r += s.count
        groups: dict[tuple[str, str, str], list[int]] = {}
        bit_rows: list[int] = []
        for i, (_, p) in enumerate(points):
            if p.kind in BIT_KINDS:
                bit_rows.append(i)
            else:
                groups.setdefault((p.dtype, p.word_order, p.byte_order), []).append(i)
        built = []
        for (dtype, word_order, byte_order), rows in groups.items():
            first = np.array([reg_base[point_span[i]] + point_pos[i] for i in rows], dtype=np.intp)
            built.append(
                _Group(
                    rows=np.array(rows, dtype=np.intp),
                    words=first[:, None] + np.arange(WORDS[dtype], dtype=np.intp),
                    dtype=dtype,
                    word_order=word_order,
                    byte_order=byte_order,
                )
            )
        return cls(
            sensor=np.array([s for s, _ in points], dtype=np.int32),
            spans=tuple(spans),
            point_span=point_span,
            scale=np.array([p.scale for _, p in points], dtype=np.float64),
            offset=np.array([p.offset for _, p in points], dtype=np.float64),
            _groups=tuple(built),
            _bit_rows=np.array(bit_rows, dtype=np.intp),
            _bit_index=np.array(
                [bit_base[point_span[i]] + point_pos[i] for i in bit_rows], dtype=np.intp
            ),
        )

    def decode(
        self, registers: Sequence[Sequence[int] | None], bits: Sequence[Sequence[bool] | None]
    ) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
        """Values of every point, and which points had their span read.

        `registers` and `bits` hold, in span order, the answer to each register span and
        each bit span (None for a span whose read failed; its points come back NaN).
        """
        reg_spans = [s for s in self.spans if not s.is_bits]
        bit_spans = [s for s in self.spans if s.is_bits]
        regs = (
            np.concatenate(
                [
                    np.asarray(a, dtype=np.uint16)[: s.count]
                    if a is not None
                    else np.zeros(s.count, dtype=np.uint16)
                    for s, a in zip(reg_spans, registers, strict=True)
                ]
            )
            if reg_spans
            else np.zeros(0, dtype=np.uint16)
        )
        bitbuf = (
            np.concatenate(
                [
                    np.asarray(a, dtype=bool)[: s.count]
                    if a is not None
                    else np.zeros(s.count, dtype=bool)
                    for s, a in zip(bit_spans, bits, strict=True)
                ]
            )
            if bit_spans
            else np.zeros(0, dtype=bool)
        )
        span_ok = np.empty(len(self.spans), dtype=bool)
        ri = bi = 0
        for k, s in enumerate(self.spans):
            if s.is_bits:
                span_ok[k] = bits[bi] is not None
                bi += 1
            else:
                span_ok[k] = registers[ri] is not None
                ri += 1

        raw = np.empty(self.sensor.size, dtype=np.float64)
        for g in self._groups:
            words = regs[g.words]
            if g.word_order == "little":
                words = words[:, ::-1]
            if g.byte_order == "little":
                words = words.byteswap()
            wire = np.ascontiguousarray(words).astype(">u2").tobytes()
            raw[g.rows] = np.frombuffer(wire, dtype=WIRE_DTYPE[g.dtype]).astype(np.float64)
        values = raw * self.scale + self.offset
        if self._bit_rows.size:
            values[self._bit_rows] = bitbuf[self._bit_index].astype(np.float64)
        ok = span_ok[self.point_span]
        values[~ok] = np.nan
        return values, ok


def _close(
    spans: list[Span],
    kind: str,
    members: list[tuple[int, int, int]],
    point_span: NDArray[np.intp],
    point_pos: NDArray[np.intp],
) -> None:
    start = members[0][0]
    end = max(e for _, e, _ in members)
    for s, _, i in members:
        point_span[i] = len(spans)
        point_pos[i] = s - start
    spans.append(Span(kind=kind, start=start, count=end - start))


def encode(value: float, point: ModbusPoint) -> list[int]:
    """The registers (or [0|1] for a bit) a device holds for `value` of `point`.

    The inverse of decoding; used by the dust-monitor simulator and the tests. Integer
    types are rounded and clipped to their range, as a device's firmware would.
    """
    if point.dtype == "bool":
        return [1 if value else 0]
    raw = (value - point.offset) / point.scale
    wire = np.dtype(WIRE_DTYPE[point.dtype])
    if wire.kind in "iu":
        info = np.iinfo(wire)
        raw = float(np.clip(np.rint(raw), info.min, info.max))
    words = np.frombuffer(np.array([raw], dtype=wire).tobytes(), dtype=">u2").astype(np.uint16)
    if point.byte_order == "little":
        words = words.byteswap()
    if point.word_order == "little":
        words = words[::-1]
    return [int(w) for w in words]

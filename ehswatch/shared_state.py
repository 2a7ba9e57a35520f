"""The control part's state, shared read-only with the desk part through one mapped file.

Why: pages, exports and reports must never run on the control part's event loop (a
49 MB answer once stopped the PLC heartbeat for 6.5 s). The control part therefore
publishes what people look at into a memory-mapped file, once per evaluator tick; the
desk part (a process of its own) maps it read-only and answers every request from it.
Publishing costs the control part one copy of a few arrays per tick, whatever the number
of readers or the size of what they ask for.

Layout (all little-endian, one file in the run directory, fixed at start):
- a header: magic, the sequence number of the seqlock, the sensor count, the history
  shape, when it was published (monotonic, comparable across processes, and wall time),
  the length of the status document;
- per sensor: tier, faulted, fault reason, last value, last timestamp, and the late,
  future and too-old counters;
- the sparkline history: `points` rows of one value (float32) and one tier per sensor,
  each row a step of `step_s` (see `SensorHistory`), and the row's time;
- the status document: JSON (health, interlock states, metrics), at most `status_cap`
  bytes.

Consistency (a seqlock): the writer makes the sequence odd, writes, and makes it even
again; a reader copies what it needs and keeps the copy only if the sequence was even and
unchanged across the copy. A writer killed mid-write leaves it odd: readers then see the
state as unavailable, and the publish time says since when.
"""

from __future__ import annotations

import contextlib
import json
import mmap
import os
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray

MAGIC = 0x45485357_53544154  # "EHSWSTAT"
VERSION = 1
HEADER = struct.Struct("<QQQQQQddQd")  # magic, version, seq, n, points, next, mono, wall, len, step
HEADER_SIZE = 4096
STATUS_CAP = 4 * 1024 * 1024

T = TypeVar("T")


class StateUnavailable(Exception):
    """The control part is not publishing (not started, killed mid-write, or gone)."""


@dataclass(frozen=True, kw_only=True)
class StateLayout:
    """Where each array lives in the file, for `sensors` sensors and `points` history rows."""

    sensors: int
    points: int
    status_cap: int = STATUS_CAP

    def fields(self) -> list[tuple[str, np.dtype[Any], tuple[int, ...]]]:
        n, p = self.sensors, self.points
        return [
            ("tier", np.dtype(np.int8), (n,)),
            ("faulted", np.dtype(np.bool_), (n,)),
            ("reason", np.dtype(np.int8), (n,)),
            ("value", np.dtype("<f8"), (n,)),
            ("ts", np.dtype("<f8"), (n,)),
            ("late", np.dtype("<i8"), (n,)),
            ("future", np.dtype("<i8"), (n,)),
            ("too_old", np.dtype("<i8"), (n,)),
            ("hist_value", np.dtype("<f4"), (p, n)),
            ("hist_tier", np.dtype(np.int8), (p, n)),
            ("hist_stamp", np.dtype("<f8"), (p,)),
        ]

    def offsets(self) -> tuple[dict[str, tuple[int, np.dtype[Any], tuple[int, ...]]], int]:
        """Each field's (offset, dtype, shape), 64-byte aligned; and the status offset."""
        pos = HEADER_SIZE
        out = {}
        for name, dtype, shape in self.fields():
            out[name] = (pos, dtype, shape)
            pos += -(-(dtype.itemsize * int(np.prod(shape))) // 64) * 64
        return out, pos

    @property
    def size(self) -> int:
        return self.offsets()[1] + self.status_cap


def _views(buf: Any, layout: StateLayout) -> dict[str, NDArray[Any]]:
    offsets, _ = layout.offsets()
    return {
        name: np.frombuffer(buf, dtype, int(np.prod(shape)), off).reshape(shape)
        for name, (off, dtype, shape) in offsets.items()
    }


def _unmap(mm: mmap.mmap, arrays: dict[str, NDArray[Any]]) -> None:
    arrays.clear()
    with contextlib.suppress(BufferError):  # a view still refers to it: unmapped with it
        mm.close()


class StateWriter:
    """The control part's side: owns the file; `publish()` writes one consistent state."""

    def __init__(self, path: Path, layout: StateLayout, step_s: float) -> None:
        self.path = path
        self.layout = layout
        self.step_s = step_s
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.ftruncate(fd, layout.size)
            self._mm = mmap.mmap(fd, layout.size)
        finally:
            os.close(fd)
        self.arrays = _views(self._mm, layout)
        self.arrays["hist_value"][:] = np.nan
        self.arrays["hist_stamp"][:] = np.nan
        self._seq = 0
        self._next = 0
        self._status_at = layout.offsets()[1]
        self.status_bytes = 0
        self.status_truncated = 0
        self._header(0, time.monotonic(), time.time())

    def _header(self, status_len: int, mono: float, wall: float) -> None:
        HEADER.pack_into(
            self._mm,
            0,
            MAGIC,
            VERSION,
            self._seq,
            self.layout.sensors,
            self.layout.points,
            self._next,
            mono,
            wall,
            status_len,
            self.step_s,
        )

    def _set_seq(self, seq: int) -> None:
        self._seq = seq
        struct.pack_into("<Q", self._mm, 16, seq)

    def publish(
        self,
        *,
        tier: NDArray[Any],
        faulted: NDArray[Any],
        reason: NDArray[Any],
        value: NDArray[Any],
        ts: NDArray[Any],
        late: NDArray[Any],
        future: NDArray[Any],
        too_old: NDArray[Any],
        history_row: tuple[NDArray[Any], NDArray[Any], float] | None,
        status: dict[str, Any],
    ) -> None:
        """Write the state of now; `history_row` (values, tiers, time) when a step ended."""
        data = json.dumps(status, ensure_ascii=False, allow_nan=False, default=str).encode()
        if len(data) > self.layout.status_cap:
            self.status_truncated += 1
            data = json.dumps(
                {"truncated": True, "bytes": len(data), "cap": self.layout.status_cap}
            ).encode()
        a = self.arrays
        self._set_seq(self._seq + 1)  # odd: being written
        a["tier"][:] = tier
        a["faulted"][:] = faulted
        a["reason"][:] = reason
        a["value"][:] = value
        a["ts"][:] = ts
        a["late"][:] = late
        a["future"][:] = future
        a["too_old"][:] = too_old
        if history_row is not None:
            row = self._next % self.layout.points
            a["hist_value"][row] = history_row[0]
            a["hist_tier"][row] = history_row[1]
            a["hist_stamp"][row] = history_row[2]
            self._next += 1
        self._mm[self._status_at : self._status_at + len(data)] = data
        self.status_bytes = len(data)
        self._header(len(data), time.monotonic(), time.time())
        self._set_seq(self._seq + 1)  # even: consistent

    def close(self) -> None:
        _unmap(self._mm, self.arrays)
        self.path.unlink(missing_ok=True)


@dataclass(frozen=True, kw_only=True)
class Published:
    """The header of one consistent read."""

    sensors: int
    points: int
    history_rows: int  # rows written so far (the ring holds the last `points`)
    monotonic: float
    wall: float
    step_s: float
    status: dict[str, Any]

    def age_s(self) -> float:
        return time.monotonic() - self.monotonic


class StateReader:
    """The desk part's side: maps the file read-only; `read(take)` runs
    `take(arrays, history_rows)` under the seqlock and returns its result, which must be
    a copy (`history_rows`: rows written so far, of this same consistent state)."""

    def __init__(self, path: Path, attempts: int = 200) -> None:
        self.path = path
        self._attempts = attempts
        fd = os.open(path, os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            self._mm = mmap.mmap(fd, size, access=mmap.ACCESS_READ)
        finally:
            os.close(fd)
        magic, version, _, n, points, *_ = HEADER.unpack_from(self._mm, 0)
        if magic != MAGIC or version != VERSION:
            raise StateUnavailable(f"{path} is not an ehswatch state file of version {VERSION}")
        base = StateLayout(sensors=n, points=points, status_cap=0).size
        self.layout = StateLayout(sensors=n, points=points, status_cap=size - base)
        self.arrays = _views(self._mm, self.layout)
        self._status_at = self.layout.offsets()[1]
        self._last: tuple[tuple[int, float, int], Published] | None = None

    def read(self, take: Callable[[dict[str, NDArray[Any]], int], T]) -> tuple[Published, T]:
        """One consistent copy: the header (with the status document) and `take(arrays)`.

        Reads of the same published state share one `Published` (the status document is
        parsed once per state, not once per request): treat it as read-only."""
        for attempt in range(self._attempts):
            seq = struct.unpack_from("<Q", self._mm, 16)[0]
            if seq % 2 == 0:
                header = HEADER.unpack_from(self._mm, 0)
                # Keyed on the publish's time too: a writer that starts over on the same
                # file counts its sequence from 0 again.
                key = (seq, header[6], header[8])
                last = self._last
                cached = last[1] if last is not None and last[0] == key else None
                if cached is None:
                    status_len = header[8]
                    raw = bytes(self._mm[self._status_at : self._status_at + status_len])
                result = take(self.arrays, header[5])
                if struct.unpack_from("<Q", self._mm, 16)[0] == seq:
                    if seq == 0:
                        raise StateUnavailable("the control part has not published yet")
                    if cached is None:
                        cached = Published(
                            sensors=header[3],
                            points=header[4],
                            history_rows=header[5],
                            monotonic=header[6],
                            wall=header[7],
                            step_s=header[9],
                            status=json.loads(raw) if raw else {},
                        )
                        self._last = (key, cached)
                    return cached, result
            if attempt > 10:
                time.sleep(0.0005)  # a write takes about a millisecond at 100 000 sensors
        raise StateUnavailable("the control part's state is being written and did not settle")

    def close(self) -> None:
        _unmap(self._mm, self.arrays)

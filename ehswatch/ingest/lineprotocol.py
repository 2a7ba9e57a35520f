"""InfluxDB line protocol, built in bulk from numpy columns (never a `Point` per reading).

Measurements (docs/storage.md):

    reading,site=…,zone=…,sensor=…,type=…  value=<float>,tier=<int>i,quality=<int>i  <ns>
    alarm_event,site=…,zone=…,sensor=…,type=…,kind=tier
        tier=…i,from_tier=…i,value=…,threshold=…  <ns>
    alarm_event,site=…,zone=…,sensor=…,type=…,kind=fault
        fault=1i|0i,reason=…i,value=…  <ns>
    interlock,site=…,zone=…  <fields given by the interlock component>  <ns>

Every field is numeric: states are written as numbers (VictoriaMetrics, our test server,
turns strings into 0, and Grafana colours numbers more easily anyway). A value that is
NaN or infinite is left out of its line — line protocol has no NaN — while tier and
quality still record the reading. Timestamps are nanoseconds, rounded to the
microsecond (float seconds carry no more).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import msgspec
import numpy as np
from numpy.typing import NDArray

from ehswatch.thresholds.outcome import Evaluation


def escape_tag(value: str) -> str:
    """Tag keys and values: backslash before comma, equals sign and space."""
    return value.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


def nanoseconds(ts: NDArray[np.float64]) -> list[int]:
    return (np.rint(ts * 1e6).astype(np.int64) * 1000).tolist()  # type: ignore[no-any-return]


def timestamp_strings(ts: NDArray[np.float64]) -> list[str]:
    """`nanoseconds(ts)` as decimal strings. Readings of one poll or one message share
    their timestamp: each run of equal timestamps is formatted once."""
    ns = np.rint(ts * 1e6).astype(np.int64) * 1000
    if len(ns) < 2:
        return list(map(int.__str__, ns.tolist()))
    starts = np.flatnonzero(ns[1:] != ns[:-1]) + 1
    if len(starts) * 2 > len(ns):  # mostly distinct: format each
        return list(map(int.__str__, ns.tolist()))
    text = list(map(int.__str__, ns[np.concatenate(([0], starts))].tolist()))
    run = np.zeros(len(ns), dtype=np.intp)
    run[starts] = 1
    return list(map(text.__getitem__, np.cumsum(run).tolist()))


_JSON = msgspec.json.Encoder()


def _floats(value: NDArray[np.float64]) -> list[str]:
    """Finite floats as line-protocol numbers: the shortest text that reads back as the
    same float (as `repr`, with ``1e16`` for ``1e+16``: InfluxDB reads both), formatted
    by msgspec's JSON encoder in one call, three times faster than `repr` per value."""
    text: str = _JSON.encode(value.tolist())[1:-1].decode()
    return text.split(",")


class LineEncoder:
    """Per-sensor line prefixes computed once; `readings` and `events` encode columns."""

    def __init__(self, site: str, sensors: Sequence[tuple[str, str, str]]) -> None:
        """`sensors`: (sensor id, zone id, sensor type) in dense index order."""
        site_tag = escape_tag(site)
        # One string per sensor, the hot path's: `reading,<tags> value=`. The rarer
        # lines cut their tags out of it (on a 100 000-sensor plant, each list of
        # prefixes kept would cost 12 MB).
        self._reading_value = [
            f"reading,site={site_tag},zone={escape_tag(z)},sensor={escape_tag(s)},"
            f"type={escape_tag(t)} value="
            for s, z, t in sensors
        ]
        self._site = site_tag

    def _tags(self, sensor: int) -> str:
        return self._reading_value[sensor][len("reading,") : -len(" value=")]

    def readings(
        self,
        sensor: NDArray[np.int32],
        value: NDArray[np.float64],
        tier: NDArray[np.int8],
        quality: NDArray[np.uint8],
        ts: NDArray[np.float64],
    ) -> bytes:
        n = len(sensor)
        if n == 0:
            return b""
        ns = timestamp_strings(ts)
        finite = np.isfinite(value)
        # The tier and quality fields take few distinct values: format each pair once.
        code = tier.astype(np.int32) * 256 + quality.astype(np.int32)
        if bool((code == code[0]).all()):  # the usual case: all in one state
            codes, which = code[:1], np.zeros(n, dtype=np.intp)
        else:
            codes, which = np.unique(code, return_inverse=True)
        pairs = [(c >> 8, c & 255) for c in codes.tolist()]
        if bool(finite.all()):
            # Columns of string pieces interleaved by slice assignment, joined once: no
            # Python bytecode runs per reading (float repr is most of the cost).
            mids = [f",tier={t}i,quality={q}i " for t, q in pairs]
            parts = ["\n"] * (5 * n)
            parts[0::5] = map(self._reading_value.__getitem__, sensor.tolist())
            parts[1::5] = _floats(value)
            parts[2::5] = [mids[0]] * n if len(mids) == 1 else map(mids.__getitem__, which.tolist())
            parts[3::5] = ns
            return "".join(parts).encode()
        prefix = self._reading_value
        cut = -len("value=")
        fields = [f"tier={t}i,quality={q}i " for t, q in pairs]
        rows = zip(
            sensor.tolist(), value.tolist(), which.tolist(), ns, finite.tolist(), strict=True
        )
        return "".join(
            [
                f"{prefix[s]}{v!r},{fields[w]}{n}\n" if f else f"{prefix[s][:cut]}{fields[w]}{n}\n"
                for s, v, w, n, f in rows
            ]
        ).encode()

    def events(self, ev: Evaluation) -> bytes:
        """`alarm_event` lines for an evaluation's tier transitions and fault changes."""
        lines = []
        tr = ev.transitions
        for s, a, b, v, thr, n in zip(
            tr.sensor.tolist(),
            tr.from_tier.tolist(),
            tr.to_tier.tolist(),
            tr.value.tolist(),
            tr.threshold.tolist(),
            nanoseconds(tr.ts),
            strict=True,
        ):
            fields = f"tier={b}i,from_tier={a}i"
            if np.isfinite(v):
                fields += f",value={v!r}"
            if np.isfinite(thr):
                fields += f",threshold={thr!r}"
            lines.append(f"alarm_event,{self._tags(s)},kind=tier {fields} {n}\n")
        fc = ev.faults
        for s, on, r, v, n in zip(
            fc.sensor.tolist(),
            fc.faulted.tolist(),
            fc.reason.tolist(),
            fc.value.tolist(),
            nanoseconds(fc.ts),
            strict=True,
        ):
            fields = f"fault={int(on)}i,reason={r}i"
            if np.isfinite(v):
                fields += f",value={v!r}"
            lines.append(f"alarm_event,{self._tags(s)},kind=fault {fields} {n}\n")
        return "".join(lines).encode()

    def interlock(self, zone: str, fields: Mapping[str, int | float], ts: float) -> bytes:
        """One `interlock` line for a zone (fields are numeric states)."""
        body = ",".join(
            f"{k}={v}i" if isinstance(v, int) else f"{k}={v!r}" for k, v in fields.items()
        )
        ns = nanoseconds(np.array([ts]))[0]
        return f"interlock,site={self._site},zone={escape_tag(zone)} {body} {ns}\n".encode()


def alarm_state_line(site: str, alarm: Mapping[str, Any], event_id: int, ts: float) -> bytes:
    """One `alarm_event` line (kind=state) for an alarm after an outbox event."""
    tags = (
        f"site={escape_tag(site)},zone={escape_tag(alarm['zone'])},"
        f"sensor={escape_tag(alarm['sensor'])},type={escape_tag(alarm['sensor_type'])}"
    )
    ns = nanoseconds(np.array([ts]))[0]
    return (
        f"alarm_event,{tags},kind=state state={alarm['state_code']}i,tier={alarm['tier']}i,"
        f"peak_tier={alarm['peak_tier']}i,event_id={event_id}i,alarm_id={alarm['id']}i {ns}\n"
    ).encode()


def count_lines(chunk: bytes) -> int:
    return chunk.count(b"\n")

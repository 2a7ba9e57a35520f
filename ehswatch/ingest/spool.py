"""`Spool`: telemetry that could not be written yet, kept on disk in arrival order.

Layout under `spool_dir`:

    readings/<seq>.lp     line protocol of `reading` points
    events/<seq>.lp       `alarm_event` and `interlock` points
    rejected/<seq>.lp     chunks the server refused as malformed (4xx), kept for a person
                          to look at, never retried

`seq` is one counter across both kinds, so replay is in arrival order. A segment is
written to a temporary name and renamed into place (a crash never leaves half a
segment), and deleted only after the server has accepted it: a crash during replay means
the segment is sent again, which overwrites the same series and timestamps — replay is
idempotent.

The spool is bounded by `max_bytes`. When an append goes over it, the oldest *readings*
segments are deleted and their points counted as dropped (and logged as an error). Event
segments are never dropped: if events alone exceed the bound, the spool grows past it
and says so.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

READINGS, EVENTS = "readings", "events"


@dataclass(frozen=True, slots=True)
class Segment:
    seq: int
    kind: str
    path: Path
    size: int


class Spool:
    def __init__(self, directory: str | os.PathLike[str], max_bytes: int) -> None:
        self.root = Path(directory)
        self.max_bytes = max_bytes
        for sub in (READINGS, EVENTS, "rejected"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self._segments: dict[int, Segment] = {}
        for kind in (READINGS, EVENTS):
            for p in (self.root / kind).glob("*.lp"):
                seq = int(p.stem)
                self._segments[seq] = Segment(seq, kind, p, p.stat().st_size)
            for tmp in (self.root / kind).glob("*.tmp"):
                tmp.unlink()  # a crash mid-append: that chunk was never acknowledged as spooled
        rejected = [int(p.stem) for p in (self.root / "rejected").glob("*.lp")]
        self._next = max([*self._segments, *rejected], default=0) + 1
        self.bytes = sum(s.size for s in self._segments.values())
        self.dropped_points = 0

    def __len__(self) -> int:
        return len(self._segments)

    def append(self, kind: str, chunk: bytes) -> None:
        seq = self._next
        self._next += 1
        final = self.root / kind / f"{seq:016d}.lp"
        tmp = final.with_suffix(".tmp")
        tmp.write_bytes(chunk)
        tmp.replace(final)
        self._segments[seq] = Segment(seq, kind, final, len(chunk))
        self.bytes += len(chunk)
        self._enforce_bound()

    def oldest(self) -> Segment | None:
        return self._segments[min(self._segments)] if self._segments else None

    def read(self, segment: Segment) -> bytes:
        return segment.path.read_bytes()

    def remove(self, segment: Segment) -> None:
        segment.path.unlink(missing_ok=True)
        if self._segments.pop(segment.seq, None) is not None:
            self.bytes -= segment.size

    def set_aside(self, segment: Segment, reason: str) -> Path:
        """Move a segment the server refused to `rejected/`, with the reason beside it."""
        target = self.root / "rejected" / segment.path.name
        segment.path.replace(target)
        target.with_suffix(".reason").write_text(reason + "\n", encoding="utf-8")
        self._segments.pop(segment.seq, None)
        self.bytes -= segment.size
        return target

    def reject(self, chunk: bytes, reason: str) -> Path:
        """Keep a refused chunk that was never spooled in `rejected/`, with the reason."""
        seq = self._next
        self._next += 1
        target = self.root / "rejected" / f"{seq:016d}.lp"
        target.write_bytes(chunk)
        target.with_suffix(".reason").write_text(reason + "\n", encoding="utf-8")
        return target

    def _enforce_bound(self) -> None:
        if self.bytes <= self.max_bytes:
            return
        for seq in sorted(self._segments):
            seg = self._segments[seq]
            if seg.kind != READINGS:
                continue
            points = seg.path.read_bytes().count(b"\n")
            self.remove(seg)
            self.dropped_points += points
            log.error(
                "telemetry spool over %d bytes: dropped %d oldest readings (%d dropped so far)",
                self.max_bytes,
                points,
                self.dropped_points,
            )
            if self.bytes <= self.max_bytes:
                return
        log.error(
            "telemetry spool holds %d bytes of alarm and interlock events, over its bound "
            "of %d; events are never dropped",
            self.bytes,
            self.max_bytes,
        )

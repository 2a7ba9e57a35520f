"""`Spool`: telemetry that could not be written yet, kept on disk in arrival order.

Layout under `spool_dir`:

    readings/<name>.lp    line protocol of `reading` points
    events/<name>.lp      `alarm_event` and `interlock` points
    rejected/<seq>.lp     chunks the server refused as malformed (4xx), kept for a person
                          to look at, never retried (with a `.reason` file beside each)
    quarantine/…          damaged spool data set aside at start or before sending (with a
                          `.reason` file beside each), never sent

A segment's name is `<seq>-<points>-<bytes>-<crc32>`: `seq` is one counter across both
kinds, so replay is in arrival order; the point count, the size and a CRC-32 of the
content let damage be found without parsing (segments of older versions are named
`<seq>` alone and are checked line by line). A segment is written to a temporary name and
renamed into place, and deleted only after the server has accepted it: a crash during
replay means the segment is sent again, which overwrites the same series and timestamps —
replay is idempotent.

Damage (a crash or power loss mid-write, a truncated file, garbage bytes) never stops
the spool. At start, a temporary file left by a crash, a segment shorter or longer than
its name says, or an unnamed file is repaired: its complete lines that parse as line
protocol are kept as a segment, the rest is moved to `quarantine/` and counted. Before a
segment is sent its CRC is checked, and a mismatch is repaired the same way.

The spool is bounded by `max_bytes`. When an append goes over it, the oldest *readings*
segments are deleted and their points counted as dropped (`spool_full`, logged as an
error). Event segments are never dropped for the bound: if events alone exceed it, the
spool grows past it and says so.

Filesystem errors (disk full, read-only, permission denied) never escape as a crash of
the caller's loop unless the caller asked for the operation's result: `append` and
`load` raise `OSError` so the caller can keep the data elsewhere; everything else
records the error in `ok` / `error` / `errors` and goes on.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

READINGS, EVENTS = "readings", "events"
REJECTED, QUARANTINE = "rejected", "quarantine"
#: reasons under which the spool counts lost points (`Spool.dropped`)
SPOOL_FULL, SPOOL_CORRUPT = "spool_full", "spool_corrupt"

_NAME = re.compile(r"(\d{1,19})(?:-(\d{1,12})-(\d{1,15})-([0-9a-f]{8}))?")

# One complete line of line protocol: measurement, tags, fields, timestamp. Used only on
# data that failed its CRC (or has none), to tell the lines worth sending from the rest.
_ESC = rb"\\[^\x00-\x1f\x7f]"
_KEY = rb"(?:[^\x00-\x20,=\\\x7f]|" + _ESC + rb")+"
_MEASUREMENT = rb"(?:[^\x00-\x20,\\\x7f#]|" + _ESC + rb")(?:[^\x00-\x20,\\\x7f]|" + _ESC + rb")*"
_NUMBER = rb"-?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?[iu]?"
_BOOL = rb"(?:t|T|true|True|TRUE|f|F|false|False|FALSE)"
_STRING = rb'"(?:[^"\\\x00\n]|\\[^\x00\n])*"'
_FIELD = _KEY + rb"=(?:" + _NUMBER + rb"|" + _BOOL + rb"|" + _STRING + rb")"
_LINE = re.compile(
    _MEASUREMENT
    + rb"(?:,"
    + _KEY
    + rb"="
    + _KEY
    + rb")* "
    + _FIELD
    + rb"(?:,"
    + _FIELD
    + rb")* -?\d{1,19}"
)


def valid_line(line: bytes) -> bool:
    """A complete line of line protocol (without its newline), with a timestamp."""
    if _LINE.fullmatch(line) is None:
        return False
    try:
        line.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def salvage(data: bytes) -> tuple[bytes, bytes, int, int]:
    """Split `data` into the lines that parse and the rest.

    Returns (good, bad, good_lines, bad_lines): `good` holds the complete lines that parse,
    in order, each with its newline; `bad` everything else, an unterminated last line
    included (a file cut short). Blank lines are neither.
    """
    *lines, tail = data.split(b"\n")
    good: list[bytes] = []
    bad: list[bytes] = []
    for line in lines:
        if line.strip():
            (good if valid_line(line) else bad).append(line)
    if tail.strip():
        bad.append(tail)
    return (
        b"".join(g + b"\n" for g in good),
        b"".join(b + b"\n" for b in bad),
        len(good),
        len(bad),
    )


def describe(exc: OSError) -> str:
    """`ENOSPC No space left on device`: the errno's name and text, no path."""
    code = errno.errorcode.get(exc.errno or 0, type(exc).__name__)
    return f"{code} {exc.strerror or exc}"


@dataclass(frozen=True, slots=True)
class Segment:
    seq: int
    kind: str
    path: Path
    size: int
    points: int
    #: CRC-32 of the content as written; None for a segment of an older version, or one
    #: whose repair could not be written back (read-only disk): checked line by line
    crc: int | None = None


class Spool:
    def __init__(self, directory: str | os.PathLike[str], max_bytes: int) -> None:
        self.root = Path(directory)
        self.max_bytes = max_bytes
        self._segments: dict[int, Segment] = {}
        self._next = 1
        self.bytes = 0
        self.points = 0
        #: points lost, by reason (`spool_full`, `spool_corrupt`)
        self.dropped: dict[str, int] = {}
        #: damaged files or parts of files found (and moved to `quarantine/` if it could be)
        self.quarantined = 0
        #: False since a filesystem operation failed, until a write succeeds again
        self.ok = True
        #: the last filesystem error, e.g. "append: ENOSPC No space left on device"
        self.error = ""
        #: filesystem errors met so far
        self.errors = 0
        self._stale: set[Path] = set()  # sent, but could not be deleted (read-only disk)
        self._ignored: set[Path] = set()  # damaged, could not be moved aside: never sent
        self._counted: set[int] = set()  # damaged segments whose loss is already counted
        self._scan_incomplete = False
        for sub in (READINGS, EVENTS, REJECTED):
            try:
                (self.root / sub).mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                # Go on: what is already there may still be readable (a read-only disk).
                self._failed("create", exc)
        self._scan()

    def __len__(self) -> int:
        return len(self._segments)

    @property
    def dropped_points(self) -> int:
        """Readings deleted to keep the spool under its bound."""
        return self.dropped.get(SPOOL_FULL, 0)

    # ------------------------------------------------------------ writing

    def append(self, kind: str, chunk: bytes, points: int | None = None) -> Segment:
        """Store a chunk as the newest segment. Raises `OSError` (disk full, read-only,
        permission) after recording it in `ok`/`error`; nothing is left half-written."""
        points = chunk.count(b"\n") if points is None else points
        seq = self._next
        crc = zlib.crc32(chunk)
        name = f"{seq:016d}-{points}-{len(chunk)}-{crc:08x}"
        final = self.root / kind / f"{name}.lp"
        tmp = final.with_suffix(".tmp")
        try:
            try:
                self._write(tmp, chunk)
            except FileNotFoundError:  # the directory went away, or was never made
                tmp.parent.mkdir(parents=True, exist_ok=True)
                self._write(tmp, chunk)
            tmp.replace(final)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)  # a partial file holds space the disk lacks
            self._failed("append", exc)
            raise
        self._next = seq + 1
        segment = Segment(seq, kind, final, len(chunk), points, crc)
        self._add(segment)
        self._writable()
        self._enforce_bound()
        return segment

    @staticmethod
    def _write(path: Path, data: bytes) -> None:
        with path.open("wb") as f:
            f.write(data)

    def remove(self, segment: Segment) -> bool:
        """Forget a segment the server accepted and delete its file. False (and the error
        recorded) when the file could not be deleted: it is not sent again by this
        process, and the next start sends it once more, which is harmless."""
        segment = self._current(segment)
        self._forget(segment)
        try:
            segment.path.unlink(missing_ok=True)
        except OSError as exc:
            self._stale.add(segment.path)
            self._failed("delete", exc)
            return False
        return True

    def set_aside(self, segment: Segment, reason: str) -> Path | None:
        """Move a segment the server refused to `rejected/`, with the reason beside it.
        None when it could not be moved (it is forgotten all the same)."""
        segment = self._current(segment)
        self._forget(segment)
        target = self.root / REJECTED / f"{segment.seq:016d}.lp"
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            segment.path.replace(target)
            target.with_suffix(".reason").write_text(reason + "\n", encoding="utf-8")
        except OSError as exc:
            self._stale.add(segment.path)
            self._failed("set aside", exc)
            return None
        return target

    def reject(self, chunk: bytes, reason: str) -> Path | None:
        """Keep a refused chunk that was never spooled in `rejected/`, with the reason.
        None when it could not be written."""
        seq = self._next
        self._next += 1
        target = self.root / REJECTED / f"{seq:016d}.lp"
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(chunk)
            target.with_suffix(".reason").write_text(reason + "\n", encoding="utf-8")
        except OSError as exc:
            self._failed("reject", exc)
            return None
        return target

    def check(self) -> bool:
        """After a failure: can the spool be written again? A small file is written and
        deleted; on success `ok` is set again (and what failed meanwhile is finished)."""
        probe = self.root / READINGS / ".probe.tmp"
        try:
            try:
                self._write(probe, b"\n")
            except FileNotFoundError:
                probe.parent.mkdir(parents=True, exist_ok=True)
                self._write(probe, b"\n")
            probe.unlink()
        except OSError as exc:
            with contextlib.suppress(OSError):
                probe.unlink(missing_ok=True)
            self._failed("check", exc)
            return False
        self._writable()
        return True

    # ------------------------------------------------------------ reading

    def oldest(self) -> Segment | None:
        return self._segments[min(self._segments)] if self._segments else None

    def read(self, segment: Segment) -> bytes:
        """The segment's bytes as they are on disk (unchecked)."""
        return segment.path.read_bytes()

    def load(self, segment: Segment) -> bytes:
        """The segment's content, checked: what fails its CRC is repaired first (the lines
        that parse are kept, the rest quarantined and counted). May return b"" (nothing
        worth sending: the segment is gone). Raises `OSError` when it cannot be read."""
        try:
            data = segment.path.read_bytes()
        except FileNotFoundError:
            self._forget(segment)  # deleted behind our back: nothing to send
            return b""
        except OSError as exc:
            self._failed("read", exc)
            raise
        if segment.crc is not None:
            if len(data) == segment.size and zlib.crc32(data) == segment.crc:
                return data
        elif segment.seq not in self._counted and _looks_whole(data):
            return data  # a segment of an older version, without a CRC, that looks whole
        return self._repair(segment.kind, segment.path, segment.seq, segment.points, data)

    # ------------------------------------------------------------ start: index, recover

    def _scan(self) -> None:
        """Index what is on disk, repairing what a crash left behind. Idempotent."""
        self._scan_incomplete = False
        for kind in (READINGS, EVENTS):
            try:
                entries = sorted((self.root / kind).iterdir())
            except FileNotFoundError:
                continue
            except OSError as exc:
                self._failed("list", exc)
                self._scan_incomplete = True  # tried again after the next good append
                continue
            for p in entries:
                try:
                    self._index(kind, p)
                except OSError as exc:  # unreadable file: try again later
                    self._failed("scan", exc)
                    self._scan_incomplete = True
        try:
            rejected = [
                int(m.group(1))
                for p in (self.root / REJECTED).glob("*.lp")
                if (m := _NAME.fullmatch(p.stem))
            ]
        except OSError:
            rejected = []
        self._next = max(self._next, max([*self._segments, *rejected], default=0) + 1)

    def _index(self, kind: str, p: Path) -> None:
        if p in self._stale or p in self._ignored or not p.is_file():
            return
        if p.suffix == ".repair" or p.name == ".probe.tmp":  # left by a crash: not data
            with contextlib.suppress(OSError):
                p.unlink()
            return
        m = _NAME.fullmatch(p.stem)
        if p.suffix not in (".lp", ".tmp") or m is None:
            if p.suffix in (".lp", ".tmp"):  # a segment-like file with a name we never write
                self._quarantine(p, None, "unrecognised name", p.read_bytes().count(b"\n"))
            return
        seq = int(m.group(1))
        known = self._segments.get(seq)
        if known is not None and known.path == p:
            return
        if known is not None:  # two files with one number: keep both, this one after
            seq = max(self._next, max(self._segments) + 1)
            self._next = seq + 1
        points = int(m.group(2)) if m.group(2) else None
        size = p.stat().st_size
        if p.suffix == ".tmp":
            # A crash mid-append: keep its complete lines, as a segment of their own.
            self._repair(kind, p, seq, points, p.read_bytes(), why="interrupted write")
            return
        if m.group(2) is None:
            if size and not _ends_with_newline(p, size):
                self._repair(kind, p, seq, None, p.read_bytes(), why="cut short")
                return
            points = p.read_bytes().count(b"\n") if size else 0
            crc = None
        else:
            assert points is not None
            if size != int(m.group(3)):
                why = "cut short" if size < int(m.group(3)) else "longer than written"
                self._repair(kind, p, seq, points, p.read_bytes(), why=why)
                return
            crc = int(m.group(4), 16)
        if size == 0:
            with contextlib.suppress(OSError):
                p.unlink()
            return
        self._add(Segment(seq, kind, p, size, points, crc))

    def _repair(
        self,
        kind: str,
        path: Path,
        seq: int,
        points: int | None,
        data: bytes,
        why: str = "failed its check",
    ) -> bytes:
        """Keep the lines of a damaged file that parse (as a segment under the same seq),
        set the rest aside in `quarantine/`, count what was lost. Returns the good bytes."""
        good, bad, good_lines, bad_lines = salvage(data)
        lost = max(points - good_lines, 0) if points is not None else bad_lines
        first_time = seq not in self._counted
        old = self._segments.get(seq)
        if old is not None and old.path == path:
            self._forget(old)
        if first_time and (bad or lost):
            self._counted.add(seq)
            self.quarantined += 1
            self._count(SPOOL_CORRUPT, lost)
            log.error(
                "telemetry spool: %s is damaged (%s): kept %d lines, %d points lost%s",
                path.name,
                why,
                good_lines,
                lost,
                ", the rest set aside in quarantine/" if bad else "",
            )
        if not good:
            if bad and first_time:
                self._quarantine(path, None, why, None)  # the whole file, renamed aside
            else:
                with contextlib.suppress(OSError):
                    path.unlink()
            return b""
        if bad and first_time:
            self._quarantine(path, bad, why, None)
        crc = zlib.crc32(good)
        final = path.with_name(f"{seq:016d}-{good_lines}-{len(good)}-{crc:08x}.lp")
        try:
            tmp = final.with_suffix(".tmp.repair")
            self._write(tmp, good)
            tmp.replace(final)
            if final != path:
                path.unlink(missing_ok=True)
        except OSError as exc:
            # Read-only: use the file as it is, checked line by line each time it is read.
            self._failed("repair", exc)
            self._add(Segment(seq, kind, path, len(data), good_lines, None))
            return good
        self._add(Segment(seq, kind, final, len(good), good_lines, crc))
        return good

    def _quarantine(self, path: Path, part: bytes | None, why: str, lines: int | None) -> None:
        """Set damaged data aside: the whole file renamed (`part` None) or a part of it
        written beside, with the reason. Best effort; `lines` given: count the loss."""
        if lines is not None:
            self.quarantined += 1
            self._count(SPOOL_CORRUPT, lines)
            log.error("telemetry spool: %s set aside in quarantine/ (%s)", path.name, why)
        qdir = self.root / QUARANTINE
        target = qdir / f"{path.parent.name}-{path.name}"
        n = 1
        while target.exists() or target.with_suffix(target.suffix + ".reason").exists():
            target = qdir / f"{path.parent.name}-{path.name}.{n}"
            n += 1
        try:
            qdir.mkdir(parents=True, exist_ok=True)
            if part is None:
                path.replace(target)
            else:
                target.write_bytes(part)
            target.with_suffix(target.suffix + ".reason").write_text(why + "\n", encoding="utf-8")
        except OSError as exc:
            self._failed("quarantine", exc)
            if part is None:
                self._ignored.add(path)  # cannot move it: at least never send it

    # ------------------------------------------------------------ bookkeeping

    def _add(self, seg: Segment) -> None:
        self._segments[seg.seq] = seg
        self.bytes += seg.size
        self.points += seg.points

    def _current(self, segment: Segment) -> Segment:
        """The indexed segment of that seq: `load` may have repaired it into a new file."""
        current = self._segments.get(segment.seq)
        return current if current is not None and current.kind == segment.kind else segment

    def _forget(self, segment: Segment) -> None:
        if self._segments.pop(segment.seq, None) is not None:
            self.bytes -= segment.size
            self.points -= segment.points

    def _count(self, reason: str, points: int) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + points

    def _failed(self, operation: str, exc: OSError) -> None:
        self.errors += 1
        error = f"{operation}: {describe(exc)}"
        if self.ok or error != self.error:
            log.warning("telemetry spool in %s: %s", self.root, error)
        self.ok = False
        self.error = error

    def _writable(self) -> None:
        """A write succeeded: the spool works again; finish what failed meanwhile."""
        if not self.ok:
            log.info("telemetry spool in %s is writable again", self.root)
        self.ok = True
        self.error = ""
        for path in list(self._stale):
            try:
                path.unlink(missing_ok=True)
            except OSError:
                break
            self._stale.discard(path)
        if self._scan_incomplete:
            self._scan()

    def _enforce_bound(self) -> None:
        if self.bytes <= self.max_bytes:
            return
        for seq in sorted(self._segments):
            seg = self._segments[seq]
            if seg.kind != READINGS:
                continue
            self.remove(seg)
            self._count(SPOOL_FULL, seg.points)
            log.error(
                "telemetry spool over %d bytes: dropped %d oldest readings (%d dropped so far)",
                self.max_bytes,
                seg.points,
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


def _looks_whole(data: bytes) -> bool:
    """Ends with a newline, no NUL byte, valid UTF-8: what a cheap look can tell."""
    if not data.endswith(b"\n") or b"\x00" in data:
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _ends_with_newline(path: Path, size: int) -> bool:
    with path.open("rb") as f:
        f.seek(size - 1)
        return f.read(1) == b"\n"

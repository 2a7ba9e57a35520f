"""The run directory: left-overs of a `kill -9` are removed at the next start, and only those."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from ehswatch.run_dir import ORPHAN_AFTER_S, PID_FILE, PREFIX, sweep


def made_by(base: Path, name: str, pid: int | None, age_s: float = 0.0) -> Path:
    d = base / f"{PREFIX}{name}"
    d.mkdir()
    (d / "state").write_bytes(b"\0" * 1024)
    if pid is not None:
        (d / PID_FILE).write_text(str(pid), encoding="ascii")
    then = time.time() - age_s
    os.utime(d, (then, then))
    return d


def test_a_run_directory_is_swept_only_when_its_process_is_gone(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], check=True,
                          capture_output=True, text=True)  # fmt: skip
    gone = made_by(tmp_path, "gone", int(dead.stdout))
    mine = made_by(tmp_path, "mine", os.getpid(), age_s=10 * ORPHAN_AFTER_S)
    orphan = made_by(tmp_path, "orphan", None, age_s=2 * ORPHAN_AFTER_S)
    starting = made_by(tmp_path, "starting", None)  # its pid file is about to be written
    other = tmp_path / "something-else"
    other.mkdir()
    assert sorted(sweep(tmp_path)) == sorted([gone, orphan])
    assert mine.exists() and starting.exists() and other.exists()
    assert not gone.exists() and not orphan.exists()

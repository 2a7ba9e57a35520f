"""The control part's run directory: what lives there, by name (see docs/deploy.md)."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

from ehswatch.config import PlantConfig

STATE_FILE = "state"  # the shared state (`shared_state`), rewritten once per tick
COMMAND_SOCKET = "control.sock"  # the command channel (`control_channel`)
CONFIG_FILE = "config.json"  # the validated config, for the parts' processes


PID_FILE = "pid"  # the process that made it
PREFIX = "ehswatch-"
#: a run directory without a pid file this old is left over from a crash
ORPHAN_AFTER_S = 3600.0


def _base() -> Path:
    shm = Path("/dev/shm")
    return shm if shm.is_dir() else Path(tempfile.gettempdir())


def new_run_dir() -> Path:
    """A private directory (mode 0700) for the shared state and the command socket: in
    memory (/dev/shm) where there is one, so that publishing never waits on a disk.

    A `kill -9` leaves its run directory behind (in memory: 35 MB at 100 000 sensors);
    the next start removes those whose process is gone (`sweep`)."""
    sweep(_base())
    path = Path(tempfile.mkdtemp(prefix=PREFIX, dir=_base()))
    (path / PID_FILE).write_text(str(os.getpid()), encoding="ascii")
    return path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # somebody else's, running
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True
    return "\nState:\tZ" not in status  # a zombie is gone


def sweep(base: Path) -> list[Path]:
    """Remove run directories left by processes that are gone; the ones removed."""
    removed = []
    for d in base.glob(PREFIX + "*"):
        try:
            pid = int((d / PID_FILE).read_text(encoding="ascii"))
            gone = not _alive(pid)
        except (OSError, ValueError):
            try:
                gone = time.time() - d.stat().st_mtime > ORPHAN_AFTER_S
            except OSError:
                continue
        if gone:
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d)
    return removed


def write_config(run_dir: Path, config: PlantConfig) -> None:
    """The config as validated, for a part's process to take as it is."""
    fd = os.open(run_dir / CONFIG_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(config.model_dump_json(by_alias=True))


def read_config(run_dir: Path) -> PlantConfig:
    return PlantConfig.model_validate_json((run_dir / CONFIG_FILE).read_text("utf-8"))

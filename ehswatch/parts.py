"""`ehswatch run`: the control part in this process, the desk part as a child it keeps.

Two processes, so that nothing a person looks at can delay a trip (see docs/deploy.md):
- the **control part** (this process, `Service`): intake, evaluator, interlocks, PLC
  links and heartbeat, alarm states, storage; it publishes its state and takes commands
  through its run directory;
- the **desk part** (`ehswatch desk`, a child, `DeskPart` under uvicorn): the API, the
  board, the event stream, tickets and notifications.

`DeskProcess` starts the desk part once the control part runs, and starts it again
(after `api.desk_restart_s`, doubling up to 30 s) whenever it exits: a dead desk part is
logged, counted and back by itself, and trips and heartbeat never notice. The child is
bound to this process (Linux `PR_SET_PDEATHSIG`): if the control part dies, the desk part
dies with it, the heartbeat stops, and the PLC's watchdog acts — a control part that is
gone is never hidden behind a board that still answers. It runs at a lower CPU priority
(nice 10): on a machine whose cores are busy, the control part is served first.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

from ehswatch.component import Backoff, Component, Job
from ehswatch.config import PlantConfig
from ehswatch.db import Database
from ehswatch.heap import settle_heap
from ehswatch.run_dir import CONFIG_FILE, write_config
from ehswatch.service import Service
from ehswatch.standby import Lease, Standby, live_leases

log = logging.getLogger(__name__)

STOP_WAIT_S = 10.0
PR_SET_PDEATHSIG = 1


#: the desk part's CPU priority below the control part's (nice): when the cores are
#: busy, a trip is decided before a page is built
DESK_NICE = 10
DESK_RESTART_MAX_S = 30.0  # a dead desk part is started again after at most this long


def _desk_child() -> None:  # runs in the child between fork and exec
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    os.nice(DESK_NICE)


class DeskProcess(Component):
    component_name = "desk-part"

    def __init__(self, run_dir: Path, restart_s: float, *, verbose: bool = False) -> None:
        self.run_dir = run_dir
        self.restart_s = restart_s
        self.verbose = verbose
        self.pid: int | None = None
        self.starts = 0
        self.last_exit: int | None = None

    def jobs(self) -> Iterable[tuple[str, Job]]:
        yield "supervise", self._supervise_desk

    def status(self) -> dict[str, object]:
        return {"pid": self.pid, "starts": self.starts, "last_exit": self.last_exit}

    async def _supervise_desk(self) -> None:
        retry = Backoff(first=self.restart_s, longest=DESK_RESTART_MAX_S).retrying()
        while True:
            args = [sys.executable, "-m", "ehswatch", "desk", "--run-dir", str(self.run_dir)]
            proc = await asyncio.create_subprocess_exec(
                *args, *(["-v"] if self.verbose else []), preexec_fn=_desk_child
            )
            self.pid, self.starts = proc.pid, self.starts + 1
            started = asyncio.get_running_loop().time()
            try:
                code = await proc.wait()
            except asyncio.CancelledError:
                await _stop(proc)
                raise
            self.pid, self.last_exit = None, code
            if asyncio.get_running_loop().time() - started > 60:
                retry.succeeded()  # it ran a while: this is a new failure
            delay = retry.failed()
            log.error("the desk part exited with %s; starting it again in %.1f s", code, delay)
            await asyncio.sleep(delay)


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        async with asyncio.timeout(STOP_WAIT_S):
            await proc.wait()
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()


def _check_port_free(config: PlantConfig) -> None:
    """Find out before starting anything that the API's address is free."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((config.api.host, config.api.port))
        except OSError as exc:
            raise RuntimeError(
                f"the API could not start on {config.api.host}:{config.api.port}: "
                f"{exc.strerror or exc}"
            ) from None


class LeaseLost(RuntimeError):
    """The control lease was lost: the control part stopped (a supervisor starts the
    process again, as a standby)."""


async def run(
    config: PlantConfig,
    stop: asyncio.Event,
    *,
    verbose: bool = False,
    run_dir: Path | None = None,
) -> None:
    """The control part here and the desk part beside it, until `stop` (in `run_dir`,
    removed at the end, when given). With `instance.lease`, first as a standby: until
    this instance holds the control lease, and only while it does (`ehswatch.standby`)."""
    if config.instance.lease is None:
        async with Database(config.database.url) as db:
            if held := await live_leases(db):
                # A half-upgraded pair, or a config without its lease: two writers.
                raise RuntimeError(
                    f"another instance holds the control lease {', '.join(held)} on this "
                    "database, and this one has no instance.lease: it would drive the same "
                    "PLCs (give it the same instance.lease to stand by)"
                )
        await _run_parts(config, stop, verbose=verbose, run_dir=run_dir)
        return
    async with Database(config.database.url) as db:
        lease = Lease(db, name=config.instance.lease, lease_s=config.instance.lease_s)
        standby = Standby(lease, stop)
        if not await standby.wait_for_lease():
            return  # stopped while standing by: nothing was started, nothing written
        parts_stop = asyncio.Event()
        lost = False

        async def watch() -> None:
            nonlocal lost
            keeper = asyncio.create_task(standby.keep(), name="standby:keep")
            stopped = asyncio.create_task(stop.wait(), name="standby:stop")
            done, _ = await asyncio.wait({keeper, stopped}, return_when=asyncio.FIRST_COMPLETED)
            lost = keeper in done
            for t in (keeper, stopped):
                t.cancel()
            if lost:
                _stop_within(STOP_WAIT_S)
            parts_stop.set()

        watcher = asyncio.create_task(watch(), name="standby:watch")
        try:
            await _run_parts(
                config, parts_stop, verbose=verbose, run_dir=run_dir, fence=lease.holds
            )
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            if not lost:
                await lease.release()  # a clean stop: the standby takes over at once
        if lost:
            raise LeaseLost(f"the control lease {lease.name} was lost")


def _stop_within(seconds: float) -> None:
    """A control part that lost its lease and cannot stop (a database that does not
    answer holds its shutdown): the process ends anyway, so that it holds no broker
    session, PLC connection or port the new active needs."""
    timer = threading.Timer(seconds, os._exit, (1,))
    timer.daemon = True
    timer.start()


async def _run_parts(
    config: PlantConfig,
    stop: asyncio.Event,
    *,
    verbose: bool,
    run_dir: Path | None,
    fence: Callable[[], bool] | None = None,
) -> None:
    _check_port_free(config)
    async with Service(config, run_dir=run_dir, own_run_dir=True, fence=fence) as service:
        settle_heap()
        if not (service.run_dir / CONFIG_FILE).exists():
            write_config(service.run_dir, config)  # validated once: the desk part takes it
        desk = DeskProcess(service.run_dir, config.api.desk_restart_s, verbose=verbose)
        service.desk_status = desk.status
        async with desk:
            log.info("API and board on http://%s:%d/", config.api.host, config.api.port)
            await stop.wait()

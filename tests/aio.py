"""Running a test coroutine: bounded in time, and failing if it leaves a task behind."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def _tasks_now() -> str:
    """Every task still running and where it waits (the whole chain of awaits), for a
    test that runs out of time."""
    lines = []
    for t in asyncio.all_tasks():
        if t.done():
            continue
        chain: list[str] = []
        coro: Any = t.get_coro()
        while coro is not None and len(chain) < 40:
            frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
            if frame is not None:
                chain.append(f"{frame.f_code.co_name}:{frame.f_lineno}")
            coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
        lines.append(f"  {t.get_name()}: {' > '.join(chain)}")
    return "\n".join(sorted(lines))


def run(main: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
    async def guarded() -> T:
        # Just before the time runs out: what is still running, and where (a test that
        # hangs on its way out says what it waits for).
        loop = asyncio.get_running_loop()
        report = loop.call_later(
            max(timeout - 1.0, 0.0),
            lambda: print(f"\n[tests.aio.run] still running at {timeout - 1:g} s:\n{_tasks_now()}"),
        )
        try:
            async with asyncio.timeout(timeout):
                result = await main
        finally:
            report.cancel()
        for _ in range(3):  # let tasks that are finishing finish
            await asyncio.sleep(0)
        leaked = [
            t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()
        ]
        names = sorted(f"{t.get_name()} ({t.get_coro()})" for t in leaked)
        for t in leaked:
            t.cancel()
        assert not leaked, f"the test left tasks running: {names}"
        return result

    return asyncio.run(guarded())


async def eventually(predicate: Any, timeout: float = 10.0, what: str = "condition") -> None:
    """Wait (polling the event loop, not sleeping the test) until `predicate()` holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.01)


class HandTicker:
    """A `Ticker` moved by hand: `now()` stands still until `advance`; `wait` returns
    when woken or once `advance` has passed its deadline (it looks every millisecond, to
    let I/O and the other jobs run: no wall time decides anything)."""

    def __init__(self, start: float = 1000.0) -> None:
        self.t = start
        self.waits = 0  # waits begun: a job that waits again has looked at the time
        self.looks = 0  # each time a waiting job looked at the time
        self._deadlines: list[float] = []  # of the waits in progress

    def now(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds

    async def wait(self, wake: asyncio.Event, seconds: float) -> None:
        self.waits += 1
        deadline = self.t + seconds
        self._deadlines.append(deadline)
        try:
            while not wake.is_set() and self.t < deadline:
                await asyncio.sleep(0.001)
                self.looks += 1
        finally:
            self._deadlines.remove(deadline)
            wake.clear()

    async def until(
        self, predicate: Any, *, step: float, what: str = "condition", timeout: float = 10.0
    ) -> None:
        """`eventually`, moving the time on while `predicate()` does not hold: for what a
        job does on its own time (a retry delay, a flush interval). The time moves by
        `step` each time a job has looked at it since the last move; when every job
        waits further ahead than that, to the nearest deadline. The hand moves the time,
        never the wall clock."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        looked, idle = -1, 0  # the first move comes at once: a job may be waiting already
        while not predicate():
            if loop.time() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}")
            if self.waits > looked:
                looked, idle = self.waits, 0
                self.advance(step)
            elif (idle := idle + 1) >= 20 and self._deadlines:
                self.t = max(self.t, min(self._deadlines))
                idle = 0
            await asyncio.sleep(0.001)

"""Running a test coroutine: bounded in time, and failing if it leaves a task behind."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
    async def guarded() -> T:
        async with asyncio.timeout(timeout):
            result = await main
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

"""`Component`: the shape of every long-lived job (collector, evaluator, sink, …).

A component is an async context manager that owns its loops in a TaskGroup, as aiomqtt's
`Client` does: entering starts every job as a task named ``component:job``; leaving
cancels them and waits until they are gone.

Jobs are supervised: a job that raises is logged with its traceback, counted in
`health`, and started again after a backoff (1 s doubling to 60 s, reset after a minute
of running) — a failing part is reported and retried, never silently gone, and never
takes the rest of the service down with it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Coroutine, Iterable
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol, Self

log = logging.getLogger(__name__)

Job = Callable[[], Coroutine[Any, Any, None]]


class Wakeable(Protocol):
    """What wakes a job that has work: an `asyncio.Event`, or a wake-up sent to a job
    of another part (`control_channel.Wake`)."""

    def set(self) -> None: ...


BACKOFF_S = (1.0, 60.0)


def still_wanted() -> None:
    """Raise `CancelledError` if this task was asked to stop. A library that turns a
    cancellation into its own error (3.11's `wait_for` can; a client's disconnect can)
    must not keep a reconnect loop running after its component has left: every such
    loop calls this before it tries again."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def wait_set(event: asyncio.Event, within_s: float | None) -> bool:
    """Wait until `event` is set or `within_s` seconds pass (None: no limit); whether it
    was set. (Not `asyncio.wait_for`: in Python 3.11 it can swallow a cancellation that
    arrives as the event is set, and a job that does not stop keeps the whole service
    from stopping.)"""
    try:
        async with asyncio.timeout(within_s):
            await event.wait()
    except TimeoutError:
        return False
    return True


async def woken(wake: asyncio.Event, within_s: float | None) -> bool:
    """`wait_set`, then clear `wake`: cleared before the caller looks for work, so what
    is queued while the caller works sets it again and is never missed."""
    try:
        return await wait_set(wake, within_s)
    finally:
        wake.clear()


async def enter_all(
    stack: AsyncExitStack, parts: Iterable[AbstractAsyncContextManager[Any]]
) -> None:
    """Enter `stack`, then each part in order, on it; if one fails to start, leave the
    ones already started (in reverse) and raise. `stack` then leaves them all."""
    await stack.__aenter__()
    try:
        for part in parts:
            await stack.enter_async_context(part)
    except BaseException:
        await stack.aclose()
        raise


class Ticker(Protocol):
    """The time a periodic job keeps (a heartbeat, a re-assert, a confirmation deadline):
    `now()` in seconds, and `wait` for a wake-up or until `seconds` have passed. Jobs take
    one so that a test can move their time by hand; the service's is the event loop's."""

    def now(self) -> float: ...

    async def wait(self, wake: asyncio.Event, seconds: float) -> None: ...


class LoopTicker:
    """The event loop's monotonic time; `wait` is `woken`."""

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    async def wait(self, wake: asyncio.Event, seconds: float) -> None:
        await woken(wake, seconds)


LOOP_TICKER = LoopTicker()


@dataclass(frozen=True, kw_only=True, slots=True)
class Backoff:
    """Retry delays: `first`, doubling up to `longest`. One policy for every retry loop
    (reconnects, failed writes, failed sends), each with its own bounds."""

    first: float
    longest: float

    def after(self, failures: int) -> float:
        """The delay after `failures` consecutive failures (1: `first`)."""
        return float(min(self.first * 2.0 ** max(failures - 1, 0), self.longest))

    def retrying(self) -> Retrying:
        return Retrying(self)


@dataclass(slots=True)
class Retrying:
    """A retry loop's place in its `Backoff`: `failed()` gives the next delay,
    `succeeded()` starts over."""

    policy: Backoff
    failures: int = 0

    def failed(self) -> float:
        self.failures += 1
        return self.policy.after(self.failures)

    def succeeded(self) -> None:
        self.failures = 0


@dataclass
class JobHealth:
    running: bool = False
    restarts: int = 0
    last_error: str = ""
    last_failure_at: float | None = None


class Component:
    #: prefix of the task names, e.g. "mqtt-collector"
    component_name = "component"
    #: restart backoff of a failed job: first delay, longest delay (seconds)
    restart_backoff_s: tuple[float, float] = BACKOFF_S

    def jobs(self) -> Iterable[tuple[str, Job]]:
        """(name, job) for each task to run while the component is entered; `job()` makes
        a fresh coroutine, so a failed job can be started again."""
        raise NotImplementedError

    @functools.cached_property
    def health(self) -> dict[str, JobHealth]:
        """Each job's health, by name (filled in as the jobs start)."""
        return {}

    async def __aenter__(self) -> Self:
        self._tg = asyncio.TaskGroup()
        await self._tg.__aenter__()
        self._tasks = [
            self._tg.create_task(self._supervise(name, job), name=f"{self.component_name}:{name}")
            for name, job in self.jobs()
        ]
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        for task in self._tasks:
            task.cancel()
        await self._tg.__aexit__(et, e, tb)

    async def _supervise(self, name: str, job: Job) -> None:
        h = self.health.setdefault(name, JobHealth())
        first, longest = self.restart_backoff_s
        retry = Backoff(first=first, longest=longest).retrying()
        while True:
            started = time.monotonic()
            h.running = True
            failure: Exception | None = None
            try:
                await job()
            except asyncio.CancelledError:
                h.running = False
                raise
            except Exception as exc:
                failure = exc
            h.running = False
            still_wanted()  # a job that failed because it was stopped is not restarted
            h.restarts += 1
            h.last_failure_at = time.time()
            if time.monotonic() - started > 60:
                retry.succeeded()  # it ran a while: this is a new failure
            delay = retry.failed()
            if failure is None:
                log.error(
                    "%s:%s ended by itself; starting it again in %.0f s",
                    self.component_name, name, delay,
                )  # fmt: skip
            else:
                log.error(
                    "%s:%s failed: %s; restarting in %.0f s",
                    self.component_name, name, failure, delay, exc_info=failure,
                )  # fmt: skip
                h.last_error = f"{type(failure).__name__}: {failure}"
            await asyncio.sleep(delay)

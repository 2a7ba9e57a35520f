"""Components: named tasks in a TaskGroup, supervised, restarted with backoff."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

import pytest

from ehswatch.component import Component, Job
from tests.aio import eventually, run


class Flaky(Component):
    component_name = "flaky"
    restart_backoff_s = (0.01, 0.04)

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.runs = 0

    def jobs(self) -> Iterable[tuple[str, Job]]:
        yield "work", self._work

    async def _work(self) -> None:
        self.runs += 1
        if self.runs <= self.failures:
            raise RuntimeError(f"broken {self.runs}")
        await asyncio.Event().wait()


def test_a_failing_job_is_reported_and_restarted_with_backoff(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> Flaky:
        async with Flaky(failures=3) as c:
            await eventually(lambda: c.runs == 4 and c.health["work"].running, what="running again")
            names = {t.get_name() for t in asyncio.all_tasks()}
            assert "flaky:work" in names
        return c

    with caplog.at_level(logging.ERROR):
        c = run(main())
    h = c.health["work"]
    assert (h.restarts, h.last_error, h.running) == (3, "RuntimeError: broken 3", False)
    assert sum("flaky:work failed" in r.message for r in caplog.records) == 3


class SwallowsItsStop(Component):
    """A job whose library turns the cancellation into an error of its own (as a client's
    disconnect on the way out can)."""

    component_name = "swallows"
    restart_backoff_s = (0.01, 0.04)

    def __init__(self) -> None:
        self.runs = 0

    def jobs(self) -> Iterable[tuple[str, Job]]:
        yield "work", self._work

    async def _work(self) -> None:
        self.runs += 1
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            raise RuntimeError("disconnected") from None


def test_a_job_that_turns_its_stop_into_an_error_is_not_restarted_and_the_component_leaves() -> (
    None
):
    async def main() -> int:
        c = SwallowsItsStop()
        async with asyncio.timeout(5):  # before the fix: restarted for ever, never left
            async with c:
                await eventually(lambda: c.runs == 1, what="started")
        return c.runs

    assert run(main()) == 1

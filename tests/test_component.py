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

"""`Component`: the shape of every long-lived job (collector, evaluator, simulator, …).

A component is an async context manager that owns its loops in a TaskGroup, as aiomqtt's
`Client` does: entering starts every task (each named ``component:job``), leaving
cancels them and waits until they are gone. An exception in a task propagates out of the
`async with` block, so a failure is never silent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterable
from types import TracebackType
from typing import Any, Self


class Component:
    #: prefix of the task names, e.g. "mqtt-collector"
    component_name = "component"

    def jobs(self) -> Iterable[tuple[str, Coroutine[Any, Any, None]]]:
        """(name, coroutine) of each task to run while the component is entered."""
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        self._tg = asyncio.TaskGroup()
        await self._tg.__aenter__()
        self._tasks = [
            self._tg.create_task(coro, name=f"{self.component_name}:{name}")
            for name, coro in self.jobs()
        ]
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        for task in self._tasks:
            task.cancel()
        await self._tg.__aexit__(et, e, tb)

"""`EventStream`: alarm and interlock events fanned out in-process (the API's SSE feed).

Each subscriber gets its own bounded queue. A subscriber too slow to keep up loses its
oldest events (counted in `dropped`), never slows the publisher: a stuck browser must not
hold up an alarm. Every event carries its outbox id, so a client can tell repeats apart.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any


class EventStream:
    def __init__(self, maxsize: int = 1000) -> None:
        self._subscribers: set[asyncio.Queue[dict[str, Any]]] = set()
        self._maxsize = maxsize
        self.dropped = 0
        self.published = 0
        self.closed = False

    def close(self) -> None:
        """The service is stopping: every subscriber's stream ends."""
        self.closed = True
        for q in self._subscribers:
            if q.full():
                q.get_nowait()
            q.put_nowait({"type": "end"})

    def publish(self, event: dict[str, Any]) -> None:
        self.published += 1
        for q in self._subscribers:
            if q.full():
                q.get_nowait()
                self.dropped += 1
            q.put_nowait(event)

    @asynccontextmanager
    async def subscribe(self) -> AsyncIterator[asyncio.Queue[dict[str, Any]]]:
        q: asyncio.Queue[dict[str, Any]] = asyncio.Queue(self._maxsize)
        self._subscribers.add(q)
        try:
            yield q
        finally:
            self._subscribers.discard(q)

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

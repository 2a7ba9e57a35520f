"""`ReadingQueue`: where collectors hand over batches and the evaluator drains them.

The evaluator takes *everything* that has arrived in one go (a micro-batch), so latency
stays low when traffic is light and throughput high when it is heavy (docs/ingest.md). The queue
never drops: above `high_water` readings, `put` waits, which stalls the collectors; the
MQTT collector then stops reading its socket and the broker keeps the messages.
"""

from __future__ import annotations

import asyncio

from ehswatch.component import wait_set
from ehswatch.readings import ReadingBatch


class ReadingQueue:
    def __init__(self, high_water: int = 2_000_000) -> None:
        self._batches: list[ReadingBatch] = []
        self._count = 0
        self._high_water = high_water
        self._arrived = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self.readings_in = 0  # every reading ever put: the number of the last one put
        self.drained = 0  # the number of the last reading drained (see `drain_nowait`)

    def __len__(self) -> int:
        """Readings waiting."""
        return self._count

    async def put(self, batch: ReadingBatch) -> None:
        if len(batch) == 0:
            return
        while self._count >= self._high_water:
            self._room.clear()
            await self._room.wait()
        self._batches.append(batch)
        self._count += len(batch)
        self.readings_in += len(batch)
        self._arrived.set()

    def drain_nowait(self) -> ReadingBatch:
        """Everything waiting, in arrival order, as one batch (empty if nothing).

        Readings are numbered 1, 2, … as they are put; after a drain, `drained` is the
        number of the last reading it took (so the batch covers every reading up to it)."""
        batches, self._batches, self._count = self._batches, [], 0
        self.drained = self.readings_in
        self._arrived.clear()
        self._room.set()
        return ReadingBatch.concat(batches)

    async def drain(self, within_s: float | None = None) -> ReadingBatch:
        """Wait until something arrives (or `within_s` seconds pass), then drain."""
        if not self._batches:
            await wait_set(self._arrived, within_s)
        return self.drain_nowait()

"""`TicketWebhook`: every ticket change to the management platform, in order, until 2xx.

With `hazards.webhook`, each change the `TicketLedger` stores carries its message in the
same transaction. This component delivers them oldest first: it reads what is due (a
short transaction), POSTs each outside any transaction (the platform may take its 10 s;
the database is not held meanwhile), and marks each one delivered, or its failure with
the next try (2 s doubling, at most 5 min), in a transaction of its own. It stops at the
first failure: a platform must never see a later change before an earlier one. A crash
between the POST and its mark sends that change once more (at least once, in order).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any, Self

import httpx
from sqlalchemy import select, update

from ehswatch.component import Backoff, Component, Job, woken
from ehswatch.config import PlantConfig
from ehswatch.db import Database
from ehswatch.hazards.store import TicketOutboundRecord

log = logging.getLogger(__name__)
POST_TIMEOUT_S = 10.0
POLL_S = 1.0
BATCH = 100  # changes read per pass
RETRY = Backoff(first=2.0, longest=300.0)


class TicketWebhook(Component):
    component_name = "hazard-webhook"

    def __init__(
        self,
        *,
        config: PlantConfig,
        db: Database,
        clock: Callable[[], float] = time.time,
        client: httpx.AsyncClient | None = None,
        backoff: Backoff = RETRY,
    ) -> None:
        assert config.hazards.webhook is not None
        self.url = config.hazards.webhook.url
        self.db = db
        self._clock = clock
        self._client = client
        self._own_client = client is None
        self._backoff = backoff
        self.wake = asyncio.Event()  # set after each commit that changed tickets
        # One pass at a time: two would both read the oldest change and could post it
        # again after a newer one.
        self._pass = asyncio.Lock()

    async def __aenter__(self) -> Self:
        if self._client is None:
            self._client = httpx.AsyncClient()
        return await super().__aenter__()

    async def __aexit__(self, *exc: Any) -> None:
        try:
            await super().__aexit__(*exc)
        finally:
            if self._own_client and self._client is not None:
                await self._client.aclose()

    def jobs(self) -> Iterable[tuple[str, Job]]:
        yield "deliver", self._loop

    async def _loop(self) -> None:
        while True:
            await woken(self.wake, POLL_S)
            while await self.deliver_outbound() == BATCH:
                pass

    async def deliver_outbound(self) -> int:
        """Deliver due changes in order, stopping at the first failure; how many went."""
        async with self._pass, self.db.turn("ticket-webhook") as mine:
            return await self._deliver() if mine else 0

    async def _deliver(self) -> int:
        assert self._client is not None
        now = self._clock()
        async with self.db.new_session() as s:
            due = (
                await s.execute(
                    select(
                        TicketOutboundRecord.id,
                        TicketOutboundRecord.payload,
                        TicketOutboundRecord.attempts,
                        TicketOutboundRecord.next_try,
                    )
                    .where(TicketOutboundRecord.delivered_at.is_(None))
                    .order_by(TicketOutboundRecord.id)
                    .limit(BATCH)
                )
            ).all()
        delivered = 0
        for row_id, payload, attempts, next_try in due:
            if next_try > now:
                break  # the oldest waits for its retry, and every later one behind it
            try:
                resp = await self._client.post(
                    self.url,
                    content=payload.encode(),
                    timeout=POST_TIMEOUT_S,
                    headers={"Content-Type": "application/json"},
                )
                ok, why = resp.is_success, f"HTTP {resp.status_code}"
            except httpx.HTTPError as exc:
                ok, why = False, f"{type(exc).__name__}: {exc}"
            attempts += 1
            done: dict[str, Any] = {"attempts": attempts}
            if ok:
                done["delivered_at"] = self._clock()
            else:
                done |= {"last_error": why, "next_try": now + self._backoff.after(attempts)}
            async with self.db.new_session() as s, s.begin():
                marked = await s.execute(
                    update(TicketOutboundRecord)
                    .where(TicketOutboundRecord.id == row_id)
                    .where(TicketOutboundRecord.delivered_at.is_(None))
                    .values(**done)
                )
            if marked.rowcount == 0:  # type: ignore[attr-defined]
                log.warning("hazard webhook: change %d was delivered by another process", row_id)
                break  # the pass is someone else's now: start again from the database
            if not ok:
                log.warning("hazard webhook: %s; ticket change %d retried later", why, row_id)
                break
            delivered += 1
        return delivered

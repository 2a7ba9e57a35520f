"""`Notifier`: sends the notification queue, one task per channel (docs/alarms.md).

- Rows are due `group_wait_s` after the event; each channel's task takes its due rows.
- **Floods**: per zone, if the due rows plus the messages already sent in the last
  `flood.window_s` come to more than `flood.count`, the due rows go out as one grouped
  message (or, while the zone is already over its count, wait for the window to pass and
  then go out grouped).
- **Retries**: a failed send stays in the queue (the database) and is retried with backoff
  (2 s doubling, at most 5 min); three failures in a row mark the channel down, loudly.
  Channels never wait on each other.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Self

import httpx
from sqlalchemy import func, select

from ehswatch.alarms.channels import Message, Renderer, Sender, SendFailed, senders
from ehswatch.alarms.store import NotificationRecord
from ehswatch.component import Backoff, Component, Job, woken
from ehswatch.config import PlantConfig
from ehswatch.db import Database

log = logging.getLogger(__name__)


@dataclass
class ChannelStats:
    sent: int = 0  # messages
    notifications: int = 0  # rows delivered (a flood message delivers many)
    failures: int = 0
    consecutive_failures: int = 0
    down: bool = False
    last_error: str = ""


class Notifier(Component):
    component_name = "notifier"

    def __init__(
        self,
        *,
        config: PlantConfig,
        db: Database,
        senders_by_channel: dict[str, Sender] | None = None,
        clock: Callable[[], float] = time.time,
        backoff_s: tuple[float, float] = (2.0, 300.0),
    ) -> None:
        self.config = config
        self.db = db
        self.renderer = Renderer(config)
        self._senders = senders_by_channel
        self._client: httpx.AsyncClient | None = None
        self._clock = clock
        self._retry = Backoff(first=backoff_s[0], longest=backoff_s[1])
        self.flood = config.notifications.flood
        self.wake = asyncio.Event()
        self.stats = {c.id: ChannelStats() for c in config.notifications.channels}

    async def __aenter__(self) -> Self:
        if self._senders is None:
            self._client = httpx.AsyncClient()
            self._senders = senders(self.config, self._client)
        return await super().__aenter__()

    async def __aexit__(self, *exc: Any) -> None:
        try:
            await super().__aexit__(*exc)
        finally:
            if self._client is not None:
                await self._client.aclose()

    def jobs(self) -> Iterable[tuple[str, Job]]:
        for channel in self.stats:
            yield channel, functools.partial(self._loop, channel)

    async def _loop(self, channel: str) -> None:
        while True:
            next_due = await self.deliver_due(channel)
            delay = 1.0 if next_due is None else max(0.0, min(1.0, next_due - self._clock()))
            await woken(self.wake, delay)

    async def deliver_due(self, channel: str) -> float | None:
        """Send what is due on one channel; when the next row falls due (None: nothing,
        or another process sending this channel's now: processes on one database take
        turns per channel, so each notification goes once)."""
        async with self.db.turn(f"notify:{channel}") as mine:
            return await self._deliver_due(channel) if mine else None

    async def _deliver_due(self, channel: str) -> float | None:
        assert self._senders is not None
        now = self._clock()
        window = self.flood.window_s
        async with self.db.new_session() as session:
            due = list(
                (
                    await session.execute(
                        select(NotificationRecord)
                        .where(
                            NotificationRecord.channel == channel,
                            NotificationRecord.status == "pending",
                            NotificationRecord.next_try <= now,
                        )
                        .order_by(NotificationRecord.id)
                    )
                ).scalars()
            )
            by_zone: dict[str, list[NotificationRecord]] = defaultdict(list)
            for row in due:
                if row.kind in ("ticket", "predicted"):  # never grouped with alarm floods
                    await self._send(session, channel, [row], self._single(row), now)
                else:
                    by_zone[row.zone].append(row)
            for zone, rows in by_zone.items():
                recent = (
                    await session.scalar(
                        select(func.count())
                        .select_from(NotificationRecord)
                        .where(
                            NotificationRecord.channel == channel,
                            NotificationRecord.zone == zone,
                            NotificationRecord.status == "sent",
                            NotificationRecord.sent_at > now - window,
                            NotificationRecord.grouped_in.is_(None),
                        )
                    )
                    or 0
                )
                if len(rows) + recent <= self.flood.count:
                    for row in rows:
                        await self._send(session, channel, [row], self._single(row), now)
                elif recent >= self.flood.count:
                    for row in rows:  # over the count already: send grouped when the window passes
                        row.next_try = now + window
                else:
                    events = [json.loads(r.payload) for r in rows]
                    await self._send(session, channel, rows, self.renderer.flood(zone, events), now)
            await session.commit()
            next_due: float | None = await session.scalar(
                select(func.min(NotificationRecord.next_try)).where(
                    NotificationRecord.channel == channel, NotificationRecord.status == "pending"
                )
            )
            return next_due

    def _single(self, row: NotificationRecord) -> Message:
        payload = json.loads(row.payload)
        if row.kind == "ticket":
            return self.renderer.ticket(payload)
        if row.kind == "predicted":
            return self.renderer.predicted(payload)
        return self.renderer.single(row.kind, payload)

    async def _send(
        self,
        session: Any,
        channel: str,
        rows: list[NotificationRecord],
        message: Message,
        now: float,
    ) -> None:
        assert self._senders is not None
        stats = self.stats[channel]
        try:
            await self._senders[channel].send(message)
        except SendFailed as exc:
            stats.failures += 1
            stats.consecutive_failures += 1
            stats.last_error = str(exc)
            if stats.consecutive_failures >= 3 and not stats.down:
                stats.down = True
                log.error(
                    "notification channel %s is DOWN: %s (messages wait in the queue)", channel, exc
                )
            for row in rows:
                row.attempts += 1
                row.last_error = str(exc)[:500]
                row.next_try = now + self._retry.after(row.attempts)
            return
        if stats.down:
            log.warning("notification channel %s is up again", channel)
        stats.down = False
        stats.consecutive_failures = 0
        stats.sent += 1
        stats.notifications += len(rows)
        grouped = rows[0].id if message.kind == "flood" else None
        for row in rows:
            row.status, row.sent_at, row.attempts = "sent", now, row.attempts + 1
            row.grouped_in = grouped

"""`AlarmRelay`: publishes the alarm outbox, in event order, exactly once per effect.

For each unpublished outbox event, oldest first:
- MQTT ``{prefix}/alarms/{zone}/{sensor}``, retained, QoS 1: the sensor's current alarms
  (``{"tier": …, "fault": …}``, each the alarm or null), with the event id;
- the in-process `EventStream` (the API's SSE feed), with the event id;
- the `alarm_event` measurement (kind=state) when InfluxDB is configured;
- notification rows for the channels of the matching routes — on `raised`,
  `reactivated`, `tier_raised` and `unshelved` into an unacknowledged state — and for
  the escalation channels on `escalated`. A row is unique per (event, channel), so an
  event relayed twice (a crash before it was marked published) never sends twice.
  An alarm grouped under its device's comm alarm (`grouped_under`) notifies nobody: the
  device alarm does; once `released` it notifies like any other.

The notification rows and the "published" mark are committed together.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any, Self

from sqlalchemy import func, select, update

from ehswatch.alarms.events import EventStream
from ehswatch.alarms.model import STATE_CODE, AlarmState
from ehswatch.alarms.routing import Router
from ehswatch.alarms.store import (
    AlarmRecord,
    OutboxRecord,
    alarm_dict,
    enqueue_notifications,
    notification_rows,
    to_alarm,
)
from ehswatch.component import Component, Job, Wakeable, woken
from ehswatch.config import PlantConfig
from ehswatch.db import Database
from ehswatch.ingest.influx import InfluxSink
from ehswatch.ingest.lineprotocol import alarm_state_line
from ehswatch.publisher import RetainedPublisher

log = logging.getLogger(__name__)
RELAY_BATCH = 500  # outbox events relayed per transaction
POLL_S = 1.0  # a wake-up lost costs at most this long

NOTIFY_EVENTS = {"raised", "reactivated", "tier_raised", "unshelved", "released"}


class RelayedElsewhere(RuntimeError):
    """Events of a batch were marked published by another process first."""


class AlarmRelay(Component):
    component_name = "alarm-relay"

    def __init__(
        self,
        *,
        config: PlantConfig,
        db: Database,
        stream: EventStream,
        publisher: RetainedPublisher | None = None,
        sink: InfluxSink | None = None,
        clock: Callable[[], float] = time.time,
        notify_wake: Wakeable | None = None,
    ) -> None:
        """`notify_wake` is set once notifications are queued (the notifier's)."""
        self.config = config
        self.db = db
        self.stream = stream
        self.publisher = publisher
        self.sink = sink
        self.router = Router(config.notifications)
        self._clock = clock
        self._prefix = config.mqtt.topic_prefix if config.mqtt else "ehs"
        self._group_wait = config.notifications.flood.group_wait_s
        self.wake = asyncio.Event()
        self.notify_wake = notify_wake
        self._current: dict[str, dict[str, Any]] = {}  # sensor → {"tier": …, "fault": …}
        self._last_relayed: int | None = None  # the newest event this relay published
        self.relayed = 0

    async def __aenter__(self) -> Self:
        async with self.db.new_session() as session:
            await self._load_current(session)
            self._last_relayed = await session.scalar(
                select(func.max(OutboxRecord.id)).where(OutboxRecord.published_at.is_not(None))
            )
        self.wake.set()  # relay what a crash left unpublished
        return await super().__aenter__()

    def jobs(self) -> Iterable[tuple[str, Job]]:
        yield "relay", self._loop

    async def _loop(self) -> None:
        while True:
            await woken(self.wake, POLL_S)
            # Again only while a whole batch came: what is committed after the clear
            # sets the wake again (an empty second read per wake-up would cost every
            # alarm change a transaction more).
            while await self.relay_once() == RELAY_BATCH:
                pass

    async def relay_once(self, limit: int = RELAY_BATCH) -> int:
        """Relay up to `limit` unpublished events; how many there were. Several
        processes on one database take turns (`Database.turn`): each event is relayed
        by one of them, in order; 0 while another one is at it."""
        async with self.db.turn("alarm-relay") as mine:
            if not mine:
                return 0
            try:
                return await self._relay(limit)
            except RelayedElsewhere as exc:
                log.warning("alarm relay: %s were relayed by another process", exc)
                await self._reload()
                return 0

    async def _relay(self, limit: int) -> int:
        async with self.db.new_session() as session, session.begin():
            if not self.db.is_sqlite:
                await self._catch_up(session)
            rows = list(
                (
                    await session.execute(
                        select(OutboxRecord)
                        .where(OutboxRecord.published_at.is_(None))
                        .order_by(OutboxRecord.id)
                        .limit(limit)
                    )
                ).scalars()
            )
            if not rows:
                return 0
            now = self._clock()
            notifications = []
            for row in rows:
                alarm = row.alarm()
                self._publish(row, alarm)
                channels: list[str] = []
                kind = "alarm"
                if alarm.get("grouped_under"):
                    pass  # its device's comm alarm is notified instead
                elif row.event in NOTIFY_EVENTS and alarm["state"] == AlarmState.UNACK_ACTIVE:
                    channels = self.router.channels(alarm)
                elif row.event == "escalated":
                    channels, kind = self.router.escalation_channels(alarm), "escalation"
                payload = json.dumps(
                    {"event_id": row.id, "event": row.event, "ts": row.ts, "alarm": alarm},
                    ensure_ascii=False,
                )
                notifications += notification_rows(
                    key=f"alarm-event:{row.id}",
                    channels=channels,
                    zone=alarm["zone"],
                    kind=kind,
                    payload=payload,
                    now=now,
                    wait_s=self._group_wait,
                )
            await enqueue_notifications(self.db, session, notifications)
            marked = await session.execute(
                update(OutboxRecord)
                .where(OutboxRecord.id.in_([r.id for r in rows]))
                .where(OutboxRecord.published_at.is_(None))
                .values(published_at=now)
            )
            if marked.rowcount != len(rows):  # type: ignore[attr-defined]
                # Another process relayed some of them meanwhile (it had the turn after
                # a lost lock): this batch is not marked twice; the next reads afresh.
                raise RelayedElsewhere(f"{len(rows) - marked.rowcount} events")  # type: ignore[attr-defined]
        self.relayed += len(rows)
        self._last_relayed = rows[-1].id
        if notifications and self.notify_wake is not None:
            self.notify_wake.set()
        return len(rows)

    async def _catch_up(self, session: Any) -> None:
        """Another process relayed since this one last did: the sensors' current alarms
        (what the retained messages carry) are read again from the database, so that
        this relay's next messages do not go back on what that one published."""
        latest = await session.scalar(
            select(func.max(OutboxRecord.id)).where(OutboxRecord.published_at.is_not(None))
        )
        if latest is None or latest == self._last_relayed:
            return
        await self._load_current(session)
        self._last_relayed = latest

    async def _reload(self) -> None:
        async with self.db.new_session() as session:
            await self._load_current(session)

    async def _load_current(self, session: Any) -> None:
        self._current = {}
        rows = (
            await session.execute(select(AlarmRecord).where(AlarmRecord.closed_at.is_(None)))
        ).scalars()
        for r in rows:
            d = alarm_dict(to_alarm(r))
            self._current.setdefault(r.sensor, {"tier": None, "fault": None})[r.kind] = d

    def _publish(self, row: OutboxRecord, alarm: dict[str, Any]) -> None:
        sensor = alarm["sensor"]
        current = self._current.setdefault(sensor, {"tier": None, "fault": None})
        current[alarm["kind"]] = alarm if alarm["closed_at"] is None else None
        event = {
            "type": "alarm",
            "event_id": row.id,
            "event": row.event,
            "ts": row.ts,
            "actor": row.actor,
            "alarm": alarm,
        }
        self.stream.publish(event)
        if self.publisher is not None:
            self.publisher.publish(
                f"{self._prefix}/alarms/{alarm['zone']}/{sensor}",
                {"sensor": sensor, "zone": alarm["zone"], "event_id": row.id, **current},
            )
        if self.sink is not None:
            code = STATE_CODE[AlarmState(alarm["state"])]
            self.sink.submit_lines(
                alarm_state_line(self.config.site.id, {**alarm, "state_code": code}, row.id, row.ts)
            )

"""`GovernanceWatch`: the shifts that ended without their cleaning record, and the
patrol rounds that were missed, each turned into a ticket.

Every `governance.check_s` (30 s) on the service's clock it looks at what fell due since
it last looked (its cursor, kept in the database; the first look starts from then: what
was due before the watch ever ran is not held against anyone). A shift whose grace ended
with no record opens a ticket "cleaning not recorded" of the rule's grade on the zone; a
round window whose grace ended with no round opens a ticket "round missed" of the
checkpoint's grade, and tells the zone's department head at once. Both are then
registered to the zone's team leader and climb its chain when overdue, like any ticket.
A ticket's `source` is unique: looking twice, or again after a restart, opens none twice.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from ehswatch.component import Component, Job
from ehswatch.config import Checkpoint, CleaningRule
from ehswatch.governance import cleaning, patrols
from ehswatch.governance.store import CleaningRecord, PatrolRecord, WatchCursor
from ehswatch.governance.tickets import open_ticket
from ehswatch.hazards.rooms import Rooms

log = logging.getLogger(__name__)
CATCH_UP_S = 7 * 86400  # after a long stop, what fell due in the last week is looked at


class GovernanceWatch(Component):
    component_name = "governance-watch"

    def __init__(
        self, rooms: Rooms, *, store_figures: Callable[[], Awaitable[int]] | None = None
    ) -> None:
        """`store_figures`: keeps the closed shifts' figures, at each look."""
        self.rooms = rooms
        self._store_figures = store_figures
        self.config = rooms.config
        self.tz = ZoneInfo(self.config.site.timezone)

    def jobs(self) -> Iterable[tuple[str, Job]]:
        yield "watch", self._loop

    async def _loop(self) -> None:
        while True:
            await self.run_watch()
            if self._store_figures is not None:
                await self._store_figures()
            await asyncio.sleep(self.config.governance.check_s)

    async def run_watch(self) -> int:
        """Open the tickets of what was missed since the last look; how many. Each zone
        and checkpoint is looked at in a transaction of its own: one that fails is logged
        and looked at again next time, and holds back none of the others. One process at
        a time on a shared database (0 while another one looks)."""
        async with self.rooms.db.turn("governance-watch") as mine:
            return await self._run_watch() if mine else 0

    async def _run_watch(self) -> int:
        now = self.rooms.clock()
        looks: list[tuple[str, Callable[[AsyncSession], Awaitable[int]]]] = []
        for z in self.config.zones:
            if z.cleaning is not None:
                look = functools.partial(self._cleanings, zone=z.id, rule=z.cleaning, now=now)
                looks.append((f"cleaning:{z.id}", look))
        looks += [
            (f"round:{cp.id}", functools.partial(self._rounds, cp=cp, now=now))
            for cp in self.config.governance.checkpoints
        ]
        opened = 0
        for name, looked_at in looks:
            try:
                async with self.rooms.db.new_session() as s, s.begin():
                    opened += await looked_at(s)
            except Exception:
                log.exception("governance watch: %s could not be looked at", name)
        if opened:
            self.rooms.changed.set()
        return opened

    async def _since(self, s: AsyncSession, name: str, now: float) -> float:
        """Where the look of `name` starts; the cursor moves to `now`. A cursor ahead of
        now (the clock stepped back since) starts again from now, so nothing is held
        silent until time catches up; a look never goes back more than `CATCH_UP_S`."""
        cursor = await s.get(WatchCursor, name)
        since = cursor.until if cursor is not None else now
        if since > now + 60:
            log.warning("governance watch: %s had looked up to %.0f, ahead of now", name, since)
            since = now
        if since < now - CATCH_UP_S:
            log.warning(
                "governance watch: %s looks back %d days at most", name, CATCH_UP_S // 86400
            )
            since = now - CATCH_UP_S
        await s.merge(WatchCursor(name=name, until=max(since, now)))
        return since

    async def _cleanings(
        self, s: AsyncSession, *, zone: str, rule: CleaningRule, now: float
    ) -> int:
        since = await self._since(s, f"cleaning:{zone}", now)
        if now <= since:
            return 0
        q = select(CleaningRecord.shift_start).where(
            CleaningRecord.zone == zone, CleaningRecord.shift_start >= since - 3 * 86400
        )
        recorded = set((await s.execute(q)).scalars())
        opened = 0
        for shift in cleaning.missed(rule, self.config.site.shifts, self.tz, since, now, recorded):
            t = await open_ticket(
                s,
                self.rooms,
                source=f"cleaning:{zone}:{shift.start:.0f}",
                kind="cleaning",
                zone=zone,
                grade=rule.grade,
                title=f"清洁未记录 cleaning not recorded: {shift.label(self.tz)}",
                now=now,
            )
            if t is not None:
                opened += 1
                log.warning("%s: no cleaning record for %s (ticket %d)", zone, shift.name, t.id)
        return opened

    async def _rounds(self, s: AsyncSession, *, cp: Checkpoint, now: float) -> int:
        since = await self._since(s, f"round:{cp.id}", now)
        if now <= since:
            return 0
        lookback = since - cp.grace_min * 60 - 2 * cp.every_h * 3600
        q = select(PatrolRecord.window_start).where(
            PatrolRecord.checkpoint == cp.id, PatrolRecord.window_start >= lookback
        )
        done = set((await s.execute(q)).scalars())
        opened = 0
        for start, end in patrols.missed_windows(cp, self.tz, since, now, done):
            label = (
                f"{datetime.fromtimestamp(start, self.tz):%Y-%m-%d %H:%M}–"
                f"{datetime.fromtimestamp(end, self.tz):%H:%M}"
            )
            t = await open_ticket(
                s,
                self.rooms,
                source=f"round:{cp.id}:{start:.0f}",
                kind="round",
                zone=cp.zone,
                grade=cp.grade,
                title=f"巡检漏检 round missed at {cp.name or cp.id}: {label}",
                now=now,
            )
            if t is not None:
                opened += 1
                chain = await self.rooms.owners.chain(s, cp.zone)
                await self.rooms.ledger.notify(
                    s, t, "round-missed", "dept_head", now, person=chain.of("dept_head")
                )
                log.warning("%s: round %s missed (ticket %d)", cp.id, label, t.id)
        return opened

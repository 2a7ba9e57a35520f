"""`Responsibilities`: who answers for each zone, by role — the responsibility map.

A zone's people are its config (`zones[].owners`) over the plant's defaults
(`governance.owners`), with an admin's edits on top (kept in the database, audited; an
empty name gives the config's back). The map decides where work goes: a new ticket is
registered to the zone's team leader; notices go to its department head, safety director
and GM; an overdue ticket climbs this zone's chain (`ESCALATION`), not a global list.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from ehswatch.audit import record
from ehswatch.config import OWNER_ROLES, PlantConfig
from ehswatch.db import Database
from ehswatch.governance.store import ZoneOwnerRecord
from ehswatch.people.store import can_act
from ehswatch.refusals import Refusal, refuse
from ehswatch.roles import Actor, NotFound

#: the chain an overdue ticket climbs, one level at a time, after its owner
ESCALATION = ("dept_head", "safety_director", "gm")


@dataclass(frozen=True, kw_only=True, slots=True)
class Chain:
    """A zone's people by role ("" where nobody is named)."""

    zone: str
    people: Mapping[str, str]

    def of(self, role: str) -> str:
        return self.people.get(role, "")

    @property
    def team_leader(self) -> str:
        return self.of("team_leader")


def configured(config: PlantConfig, zone: str) -> dict[str, str]:
    """The config's people of `zone`: the zone's own names over the plant's defaults."""
    own = next(z for z in config.zones if z.id == zone).owners
    default = config.governance.owners
    return {r: getattr(own, r) or getattr(default, r) for r in OWNER_ROLES}


class Responsibilities:
    def __init__(
        self, *, config: PlantConfig, db: Database, clock: Callable[[], float] = time.time
    ) -> None:
        self.config = config
        self.db = db
        self._clock = clock
        self._zones = {z.id for z in config.zones}
        self._machines = {u.name for u in config.users}

    async def chain(self, s: AsyncSession, zone: str) -> Chain:
        """`zone`'s people now, read in the caller's transaction."""
        people = configured(self.config, zone)
        q = select(ZoneOwnerRecord).where(ZoneOwnerRecord.zone == zone)
        for row in (await s.execute(q)).scalars():
            if row.name:
                people[row.role] = row.name
        return Chain(zone=zone, people=people)

    async def chains(self) -> list[Chain]:
        """Every zone's people, in config order."""
        async with self.db.new_session() as s:
            return [await self.chain(s, z.id) for z in self.config.zones]

    async def change(  # noqa: RET503 (refuse raises)
        self, zone: str, changes: Mapping[str, str], actor: Actor, *, comment: str = ""
    ) -> Chain:
        """An admin names people for `zone`'s roles ("" gives the config's back). Every
        name must be able to act; refused (audited) otherwise, and nothing changes."""
        now = self._clock()
        if zone not in self._zones:
            raise NotFound(f"no zone {zone!r}")
        why = ""
        if not actor.at_least("admin"):
            why = f"{actor.name} ({actor.role}) may not change who answers for a zone"
        elif unknown_roles := sorted(set(changes) - set(OWNER_ROLES)):
            why = f"no such role in the map: {', '.join(unknown_roles)}"
        async with self.db.new_session() as s, s.begin():
            if not why:
                unknown = [
                    n for n in changes.values() if n and not await can_act(s, n, self._machines)
                ]
                if unknown:
                    why = f"not a known person (they must be able to sign in): {', '.join(unknown)}"
            if not why:
                before = await self.chain(s, zone)
                for role, name in changes.items():
                    await s.merge(
                        ZoneOwnerRecord(zone=zone, role=role, name=name, by=actor.name, at=now)
                    )
                await s.flush()
                after = await self.chain(s, zone)
                record(
                    s,
                    ts=now,
                    actor=actor,
                    action="owners changed",
                    subject=f"zone:{zone}",
                    detail={
                        "before": dict(before.people),
                        "after": dict(after.people),
                        "changed": dict(changes),
                    },
                    comment=comment,
                )
                return after
        await refuse(
            self.db,
            Refusal(
                actor=actor,
                action="owners change",
                subject=f"zone:{zone}",
                why=why,
                forbidden=not actor.at_least("admin"),
                detail={"changes": dict(changes)},
                comment=comment,
            ),
            now,
        )

"""`Dispatch`: a new ticket goes to its zone's people, by the responsibility map.

A ticket just opened (by an alarm, a missed cleaning, a patrol) is registered to the
zone's team leader with its grade's full deadline, by the service, and the team leader
is told; a B ticket tells the department head at once, an A ticket the safety director
and the GM. A grade raised to B or A later tells whom the new grade tells. A zone with no
team leader leaves the ticket *detected* for a supervisor to register; so does a team
leader who cannot act (not a known person), and the audit log says why: nothing is
assigned to a name nobody signs in as.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from sqlalchemy.ext.asyncio import AsyncSession

from ehswatch.audit import record
from ehswatch.config import PlantConfig
from ehswatch.governance.responsibility import Responsibilities
from ehswatch.hazards import model
from ehswatch.hazards.ledger import TicketLedger
from ehswatch.hazards.model import HazardTicket
from ehswatch.people.store import can_act
from ehswatch.roles import SYSTEM, Forbidden, Refused

log = logging.getLogger(__name__)
#: who is told at once when a ticket of the grade opens (besides its owner)
AT_ONCE: dict[str, tuple[str, ...]] = {"A": ("safety_director", "gm"), "B": ("dept_head",)}


class Dispatch:
    def __init__(
        self,
        *,
        config: PlantConfig,
        ledger: TicketLedger,
        owners: Responsibilities,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.ledger = ledger
        self.owners = owners
        self._clock = clock
        self._machines = {u.name for u in config.users}

    async def opened(self, s: AsyncSession, t: HazardTicket) -> HazardTicket:
        """Register `t` (just saved) to its zone's team leader and tell who must know."""
        now = self._clock()
        chain = await self.owners.chain(s, t.zone)
        leader = chain.team_leader
        why = ""
        if not leader:
            pass  # no map for this zone: a supervisor registers it, as without one
        elif not await can_act(s, leader, self._machines):
            why = f"the zone's team leader {leader} is not a known person"
        else:
            rule = self.config.hazards.grades[t.grade]  # type: ignore[index]
            try:
                t, what = model.register(
                    t, SYSTEM, owner=leader, due_at=None, now=now, rule=rule, owner_known=True
                )
            except (Refused, Forbidden) as exc:  # e.g. taken in after its deadline
                why = str(exc)
            else:
                t = await self.ledger.save(
                    s, t, SYSTEM, what, {"owner": leader, "by": "responsibility map"}
                )
                await self.ledger.notify(s, t, "assigned", "team_leader", now, person=leader)
        if why:
            record(
                s,
                ts=now,
                actor=SYSTEM,
                action="ticket not dispatched",
                subject=f"ticket:{t.id}",
                detail={"zone": t.zone, "why": why},
            )
            log.error("hazard ticket %d was not dispatched: %s", t.id, why)
        for role in AT_ONCE.get(t.grade, ()):
            await self.ledger.notify(s, t, f"opened-{role}", role, now, person=chain.of(role))
        return t

    async def regraded(self, s: AsyncSession, before: HazardTicket, t: HazardTicket) -> None:
        """Tell whom `t`'s new, higher grade tells that its old grade did not."""
        now = self._clock()
        chain = await self.owners.chain(s, t.zone)
        for role in AT_ONCE.get(t.grade, ()):
            if role not in AT_ONCE.get(before.grade, ()):
                what = f"opened-{role}-{t.grade}"
                await self.ledger.notify(s, t, what, role, now, person=chain.of(role))

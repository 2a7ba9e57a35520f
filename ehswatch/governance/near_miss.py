"""`NearMisses`: hazard and near-miss reports by anyone, into the ticket flow.

A worker scans the zone's public code (`/report/{zone}`) and says what they saw, with a
photo if they like: signed in, or anonymously where `governance.anonymous_reports`
allows it. The report enters the ticket flow as *reported*, on the zone, for its team
leader (who is told) to grade — it then becomes a ticket of that grade, registered and
escalated like any other — or to dismiss with a reason. Reports are counted per zone and
person (plants reward useful ones). An anonymous sender is limited to
`governance.reports_per_hour` reports per client address.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

from sqlalchemy import select

from ehswatch.audit import record
from ehswatch.governance.desk import GovernanceDesk, Photo
from ehswatch.governance.store import NearMissRecord
from ehswatch.governance.tickets import open_ticket
from ehswatch.hazards.model import TicketState
from ehswatch.hazards.store import TicketRecord
from ehswatch.refusals import Refusal, refuse
from ehswatch.roles import Actor, Forbidden, NotFound, Refused

ANONYMOUS = Actor(name="anonymous", role="viewer")


class TooMany(Refused):
    """An address sent more reports this hour than it may (HTTP 429)."""


class NearMisses:
    def __init__(
        self, governance: GovernanceDesk, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.governance = governance
        self.config = governance.config
        self.db = governance.db
        self._sent: dict[str, deque[float]] = {}
        self._mono = clock

    def _limit(self, address: str) -> None:
        now = self._mono()
        sent = self._sent.setdefault(address, deque())
        while sent and now - sent[0] > 3600:
            sent.popleft()
        if len(sent) >= self.config.governance.reports_per_hour:
            raise TooMany("too many reports from here this hour: try again later")
        sent.append(now)
        if len(self._sent) > 10_000:  # forget the quietest addresses
            for key in [k for k, v in self._sent.items() if not v][:5000]:
                del self._sent[key]

    async def report(
        self,
        zone: str,
        actor: Actor | None,
        *,
        text: str,
        photo: Photo | None,
        address: str,
    ) -> dict[str, Any]:
        """Take a report: a ticket *reported* on `zone` with the photo, its team leader
        told. `actor` None: anonymous (refused unless the site allows it)."""
        gov = self.governance
        if zone not in {z.id for z in self.config.zones}:
            raise NotFound(f"no zone {zone!r}")
        now = gov.rooms.clock()
        who = actor or ANONYMOUS
        try:
            if actor is None:
                if not self.config.governance.anonymous_reports:
                    raise Forbidden("this site takes reports from people who sign in")
                self._limit(address)
            if not text.strip():
                raise Refused("a report says what was seen")
            stored = gov.store_photo(f"reports/{zone}", photo) if photo is not None else None
        except (Forbidden, Refused) as exc:
            await refuse(
                self.db,
                Refusal(
                    actor=who,
                    action="report",
                    subject=f"zone:{zone}",
                    why=str(exc),
                    forbidden=isinstance(exc, Forbidden),
                ),
                now,
                error=exc,
            )
        async with self.db.new_session() as s, s.begin():
            row = NearMissRecord(
                zone=zone,
                by=actor.name if actor else "",
                anonymous=actor is None,
                text=text.strip()[:2000],
                at=now,
            )
            s.add(row)
            await s.flush()
            t = await open_ticket(
                s,
                gov.rooms,
                source=f"report:{row.id}",
                kind="report",
                zone=zone,
                grade="C",  # until the team leader grades it
                title=f"上报 report: {row.text[:300]}",
                now=now,
                evidence=[(stored, who.name)] if stored else (),
                by=who,
                state=TicketState.REPORTED,
            )
            assert t is not None
            row.ticket_id = t.id
            chain = await gov.rooms.owners.chain(s, zone)
            await gov.rooms.ledger.notify(
                s, t, "reported", "team_leader", now, person=chain.team_leader
            )
            record(
                s,
                ts=now,
                actor=who,
                action="report made",
                subject=f"zone:{zone}",
                detail={"ticket": t.id, "anonymous": actor is None},
            )
            answer = {"id": row.id, "zone": zone, "ticket_id": t.id, "anonymous": actor is None}
        gov.rooms.changed.set()
        return answer

    async def counts(self, *, since: float, until: float) -> dict[str, Any]:
        """Reports per zone and per person in [since, until), and how many were graded
        (taken up) or dismissed."""
        async with self.db.new_session() as s:
            rows = (
                await s.execute(
                    select(
                        NearMissRecord.zone,
                        NearMissRecord.by,
                        TicketRecord.state,
                        TicketRecord.measure,
                    )
                    .join(TicketRecord, TicketRecord.id == NearMissRecord.ticket_id, isouter=True)
                    .where(NearMissRecord.at >= since, NearMissRecord.at < until)
                )
            ).all()
        by_zone, by_person, taken = Counter[str](), Counter[str](), Counter[str]()
        for zone, by, state, measure in rows:
            by_zone[zone] += 1
            if by:
                by_person[by] += 1
                useful = state not in (TicketState.REPORTED, None) and not str(
                    measure or ""
                ).startswith("dismissed")
                taken[by] += int(useful)
        return {
            "total": len(rows),
            "by_zone": dict(by_zone),
            "by_person": [
                {"name": name, "reports": n, "taken_up": taken[name]}
                for name, n in by_person.most_common()
            ],
        }

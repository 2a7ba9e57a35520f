"""`HazardDesk`: opens a ticket for every alarm episode and runs the workflow (docs/hazards.md).

- **Intake.** It reads the alarm outbox with its own cursor (committed with the tickets
  it causes): a `raised` event opens the episode's ticket, graded by
  `hazards.tier_grade`; a later `tier_raised` raises the same ticket's grade. A ticket is
  unique per alarm episode, so a restart never duplicates one. A Modbus device that
  stops answering is one ticket (its `comm` alarm, graded as a fault); the faults of its
  sensors grouped under that alarm open none — a grouped fault that is `released` (its
  sensor still faulted after the device answers again) opens its own.
- **People.** `register`, `start`, `add_evidence`, `submit`, `verify`, `approve`,
  `lower_grade` (rules in `model`); every action and every refusal is audited; every
  change is queued for the outbound webhook.
- **Deadlines** (`run_schedule`, every 10 s): until the rectification is submitted, at
  75 % of the time the owner is reminded; from the due time the ticket escalates one
  level at a time — department head, then safety director (a quarter of the allowed time
  later), then general manager (another quarter) — through `hazards.notify` channels.
- **Recurrence.** A sensor's tickets within `recurrence_days` (30) are linked and counted;
  the `chronic_count`-th (3rd) is flagged chronic and escalated to the safety director.
- **Outbound.** With `hazards.webhook`, every ticket change is POSTed as JSON, retried
  with backoff (2 s doubling, at most 5 min) until the platform answers 2xx.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import logging
import statistics
import time
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any, Self
from zoneinfo import ZoneInfo

import httpx
from sqlalchemy import func, select
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from ehswatch.alarms.model import route_tier_of
from ehswatch.alarms.store import NotificationRecord, OutboxRecord
from ehswatch.audit import record
from ehswatch.component import Component, Job, Wakeable
from ehswatch.config import PlantConfig
from ehswatch.db import Database
from ehswatch.hazards import model
from ehswatch.hazards.evidence import EvidenceStore
from ehswatch.hazards.model import ESCALATION_LADDER, HazardTicket, TicketState
from ehswatch.hazards.store import (
    CursorRecord,
    EvidenceRecord,
    TicketOutboundRecord,
    TicketRecord,
    ticket_dict,
    ticket_from_row,
    to_record,
    to_ticket,
)
from ehswatch.refusals import Refusal, refuse
from ehswatch.roles import SYSTEM, Actor, Forbidden, NotFound, Refused

log = logging.getLogger(__name__)
INTAKE_BATCH = 500  # alarm events taken in per transaction
CURSOR = "hazard-desk"
INTAKE_EVENTS = ("raised", "tier_raised", "reactivated", "released")
DAY = 86400.0


class HazardDesk(Component):
    component_name = "hazard-desk"

    def __init__(
        self,
        *,
        config: PlantConfig,
        db: Database,
        clock: Callable[[], float] = time.time,
        client: httpx.AsyncClient | None = None,
        backoff_s: tuple[float, float] = (2.0, 300.0),
    ) -> None:
        self.config = config
        self.settings = config.hazards
        self.db = db
        self.evidence = EvidenceStore(
            self.settings.evidence_dir, int(self.settings.evidence_max_mb * 1024 * 1024)
        )
        self._clock = clock
        self._client = client
        self._own_client = client is None
        self._backoff = backoff_s
        self.wake = asyncio.Event()  # the alarm manager sets it after each commit
        self.notify_wake: Wakeable | None = None
        self._outbound_wake = asyncio.Event()
        self.tz = ZoneInfo(config.site.timezone)

    async def __aenter__(self) -> Self:
        if self._client is None:
            self._client = httpx.AsyncClient()
        self.wake.set()  # catch up with what arrived while we were down
        return await super().__aenter__()

    async def __aexit__(self, *exc: Any) -> None:
        try:
            await super().__aexit__(*exc)
        finally:
            if self._own_client and self._client is not None:
                await self._client.aclose()

    def jobs(self) -> Iterable[tuple[str, Job]]:
        yield "intake", self._intake_loop
        yield "schedule", self._schedule_loop
        if self.settings.webhook is not None:
            yield "outbound", self._outbound_loop

    # ------------------------------------------------------------ intake

    async def _intake_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), 1.0)
            self.wake.clear()
            # Again only while a whole batch came (see `AlarmRelay._loop`).
            while await self.intake_once() == INTAKE_BATCH:
                pass

    async def intake_once(self, limit: int = INTAKE_BATCH) -> int:
        """Open or regrade tickets for new alarm events; how many events were read."""
        async with self.db.new_session() as s, s.begin():
            cursor = await s.get(CursorRecord, CURSOR) or CursorRecord(name=CURSOR, last_event_id=0)
            rows = list(
                (
                    await s.execute(
                        select(OutboxRecord)
                        .where(OutboxRecord.id > cursor.last_event_id)
                        .order_by(OutboxRecord.id)
                        .limit(limit)
                    )
                ).scalars()
            )
            if not rows:
                return 0
            for row in rows:
                if row.event in INTAKE_EVENTS:
                    alarm = row.alarm()
                    if not alarm.get("grouped_under"):  # grouped: its device's ticket
                        await self._intake(s, alarm, row.ts)
            cursor.last_event_id = rows[-1].id
            await s.merge(cursor)
        self._outbound_wake.set()
        return len(rows)

    def _grade_of(self, alarm: dict[str, Any]) -> str:
        tier = route_tier_of(alarm["kind"], alarm["peak_tier"])
        return self.settings.tier_grade[tier]  # type: ignore[index]

    async def _intake(self, s: AsyncSession, alarm: dict[str, Any], ts: float) -> None:
        grade = self._grade_of(alarm)
        rule = self.settings.grades[grade]  # type: ignore[index]
        existing = (
            await s.execute(select(TicketRecord).where(TicketRecord.alarm_id == alarm["id"]))
        ).scalar_one_or_none()
        if existing is not None:
            t = to_ticket(existing)
            raised = model.raise_grade(t, grade, rule)
            if raised is not None:
                new, what = raised
                await self._save(s, new, SYSTEM, what, {"alarm": alarm["id"]})
                if new.stop_work and not t.stop_work:
                    await self._stop_work(s, new)
            return
        window = self.settings.recurrence_days * DAY
        earlier = list(
            (
                await s.execute(
                    select(TicketRecord.id)
                    .where(
                        TicketRecord.sensor == alarm["sensor"],
                        TicketRecord.created_at > ts - window,
                    )
                    .order_by(TicketRecord.id)
                )
            ).scalars()
        )
        count = len(earlier) + 1
        t = HazardTicket(
            alarm_id=alarm["id"],
            sensor=alarm["sensor"],
            zone=alarm["zone"],
            kind=alarm["kind"],
            grade=grade,
            created_at=ts,
            due_at=ts + rule.deadline_h * 3600,
            recurrence=count,
            related=tuple(earlier),
            chronic=count >= self.settings.chronic_count,
            stop_work=rule.stop_work,
        )
        t = await self._save(
            s, t, SYSTEM, "opened", {"alarm": alarm["id"], "grade": grade, "recurrence": count}
        )
        log.warning(
            "hazard ticket %d opened: grade %s, %s in %s (alarm %d)",
            t.id,
            grade,
            t.sensor,
            t.zone,
            alarm["id"],
        )
        if t.stop_work:
            await self._stop_work(s, t)
        if t.chronic:
            record(
                s,
                ts=ts,
                actor=SYSTEM,
                action="chronic hazard",
                subject=f"ticket:{t.id}",
                detail={
                    "sensor": t.sensor,
                    "tickets": [*t.related, t.id],
                    "days": self.settings.recurrence_days,
                },
            )
            await self._notify(s, t, "chronic", "safety_director", ts)
            log.error(
                "CHRONIC HAZARD: %s has had %d tickets in %g days (ticket %d); escalated "
                "to the safety director",
                t.sensor,
                count,
                self.settings.recurrence_days,
                t.id,
            )

    async def _stop_work(self, s: AsyncSession, t: HazardTicket) -> None:
        now = self._clock()
        record(
            s,
            ts=now,
            actor=SYSTEM,
            action="stop work",
            subject=f"zone:{t.zone}",
            detail={"ticket": t.id, "grade": t.grade},
        )
        await self._notify(s, t, "stop_work", "dept_head", now)
        log.error(
            "MAJOR HAZARD (grade A), ticket %d: work in %s stops until it is controlled",
            t.id,
            t.zone,
        )

    # ------------------------------------------------------------ people

    async def register(
        self,
        ticket_id: int,
        actor: Actor,
        *,
        owner: str,
        due_at: float | None = None,
        comment: str = "",
    ) -> HazardTicket:
        return await self._act(
            ticket_id,
            actor,
            "register",
            comment,
            lambda t, now: model.register(
                t, actor, owner=owner, due_at=due_at, now=now, rule=self._rule(t)
            ),
        )

    async def start(self, ticket_id: int, actor: Actor, comment: str = "") -> HazardTicket:
        return await self._act(
            ticket_id, actor, "start", comment, lambda t, now: model.start(t, actor)
        )

    async def submit(
        self, ticket_id: int, actor: Actor, *, measure: str, comment: str = ""
    ) -> HazardTicket:
        async with self.db.new_session() as s:
            n = (
                await s.scalar(
                    select(func.count())
                    .select_from(EvidenceRecord)
                    .where(EvidenceRecord.ticket_id == ticket_id)
                )
                or 0
            )
        return await self._act(
            ticket_id,
            actor,
            "submit",
            comment,
            lambda t, now: model.submit(t, actor, measure=measure, evidence=n, now=now),
        )

    async def verify(
        self, ticket_id: int, actor: Actor, *, passed: bool, reason: str = "", comment: str = ""
    ) -> HazardTicket:
        return await self._act(
            ticket_id,
            actor,
            "verify",
            comment or reason,
            lambda t, now: model.verify(t, actor, passed=passed, reason=reason),
        )

    async def approve(self, ticket_id: int, actor: Actor, comment: str = "") -> HazardTicket:
        return await self._act(
            ticket_id,
            actor,
            "approve",
            comment,
            lambda t, now: model.approve(t, actor, now=now, rule=self._rule(t)),
        )

    async def lower_grade(
        self, ticket_id: int, actor: Actor, *, grade: str, reason: str
    ) -> HazardTicket:
        if grade not in self.settings.grades:
            refusal = Refusal(
                actor=actor,
                action="lower grade",
                subject=f"ticket:{ticket_id}",
                why=f"no grade {grade!r}",
                comment=reason,
            )
            await refuse(self.db, refusal, self._clock())
        return await self._act(
            ticket_id,
            actor,
            "lower grade",
            reason,
            lambda t, now: model.lower_grade(
                t, actor, grade, reason, current=self._rule(t), new=self.settings.grades[grade]
            ),
        )

    async def add_evidence(
        self, ticket_id: int, actor: Actor, *, filename: str, content: bytes
    ) -> EvidenceRecord:
        now = self._clock()
        t = await self.get(ticket_id)
        refused = functools.partial(
            Refusal,
            actor=actor,
            action="evidence",
            subject=f"ticket:{ticket_id}",
            detail={"file": filename},
        )
        if t.owner != actor.name and not actor.at_least("supervisor"):
            why = f"only the owner ({t.owner}) or a supervisor may add evidence"
            await refuse(self.db, refused(why=why, forbidden=True), now)
        if t.state not in (TicketState.REGISTERED, TicketState.RECTIFYING):
            why = f"ticket {ticket_id} is {t.state}: evidence goes with a rectification"
            await refuse(self.db, refused(why=why), now)
        try:
            stored = self.evidence.store(ticket_id, content)
        except Refused as exc:  # too large, not a photo or document: its own status
            await refuse(self.db, refused(why=str(exc)), now, error=exc)
        async with self.db.new_session() as s, s.begin():
            ev = EvidenceRecord(
                ticket_id=ticket_id,
                filename=filename[:255],
                content_type=stored.content_type,
                size=stored.size,
                sha256=stored.sha256,
                path=str(stored.path),
                uploaded_by=actor.name,
                at=now,
            )
            s.add(ev)
            record(
                s,
                ts=now,
                actor=actor,
                action="evidence added",
                subject=f"ticket:{ticket_id}",
                detail={"file": filename, "sha256": stored.sha256, "size": stored.size},
            )
        return ev

    async def get(self, ticket_id: int) -> HazardTicket:
        async with self.db.new_session() as s:
            r = await s.get(TicketRecord, ticket_id)
        if r is None:
            raise NotFound(f"no ticket {ticket_id}")
        return to_ticket(r)

    async def tickets(self, *, open_only: bool = False) -> list[HazardTicket]:
        async with self.db.new_session() as s:
            q = select(*TicketRecord.__table__.columns).order_by(TicketRecord.id)
            if open_only:
                q = q.where(TicketRecord.state != TicketState.ARCHIVED)
            return [ticket_from_row(row) for row in (await s.execute(q)).mappings()]

    def _rule(self, t: HazardTicket) -> Any:
        return self.settings.grades[t.grade]  # type: ignore[index]

    async def _act(
        self,
        ticket_id: int,
        actor: Actor,
        action: str,
        comment: str,
        step: Callable[[HazardTicket, float], model.Outcome],
    ) -> HazardTicket:
        now = self._clock()
        async with self.db.new_session() as s, s.begin():
            r = await s.get(TicketRecord, ticket_id)
            if r is None:
                raise NotFound(f"no ticket {ticket_id}")
            t = to_ticket(r)
            refusal: Refusal | None = None
            try:
                new, what = step(t, now)
            except (Refused, Forbidden) as exc:
                refusal = Refusal.of(
                    exc,
                    actor=actor,
                    action=action,
                    subject=f"ticket:{ticket_id}",
                    detail={"state": str(t.state)},
                    comment=comment,
                )
            else:
                new = await self._save(s, new, actor, what, {"from": str(t.state)}, comment)
        if refusal is not None:
            await refuse(self.db, refusal, now)
        self._outbound_wake.set()
        return new

    async def _save(
        self,
        s: AsyncSession,
        t: HazardTicket,
        actor: Actor,
        what: str,
        detail: dict[str, Any],
        comment: str = "",
    ) -> HazardTicket:
        rec = await s.merge(to_record(t))
        await s.flush()
        t = dataclasses.replace(t, id=rec.id)
        now = self._clock()
        record(
            s,
            ts=now,
            actor=actor,
            action=f"ticket {what}",
            subject=f"ticket:{t.id}",
            detail={**detail, "state": str(t.state), "grade": t.grade},
            comment=comment,
        )
        if self.settings.webhook is not None:
            s.add(
                TicketOutboundRecord(
                    ticket_id=t.id,
                    ts=now,
                    next_try=now,
                    payload=json.dumps(
                        {
                            "site": self.config.site.id,
                            "change": what,
                            "by": actor.name,
                            "ts": now,
                            "ticket": ticket_dict(t),
                        },
                        ensure_ascii=False,
                    ),
                )
            )
        return t

    # ------------------------------------------------------------ deadlines

    async def _schedule_loop(self) -> None:
        while True:
            await asyncio.sleep(10.0)
            await self.run_schedule()

    async def run_schedule(self) -> None:
        now = self._clock()
        async with self.db.new_session() as s, s.begin():
            rows = (
                await s.execute(
                    select(TicketRecord).where(
                        TicketRecord.state.in_(
                            [TicketState.DETECTED, TicketState.REGISTERED, TicketState.RECTIFYING]
                        )
                    )
                )
            ).scalars()
            for r in list(rows):
                t = to_ticket(r)
                span = max(t.due_at - t.created_at, 1.0)
                if not t.reminded and now >= t.created_at + 0.75 * span:
                    t = dataclasses.replace(t, reminded=True)
                    await self._save(s, t, SYSTEM, "reminder", {"due_at": t.due_at})
                    await self._notify(s, t, "reminder", "owner", now)
                if now > t.due_at:
                    level = min(
                        1 + int((now - t.due_at) // (0.25 * span)), len(ESCALATION_LADDER) - 1
                    )
                    while t.escalation_level < level:
                        t = dataclasses.replace(t, escalation_level=t.escalation_level + 1)
                        to = ESCALATION_LADDER[t.escalation_level]
                        await self._save(
                            s,
                            t,
                            SYSTEM,
                            f"overdue: escalated to {to}",
                            {"due_at": t.due_at, "level": t.escalation_level},
                        )
                        await self._notify(s, t, f"overdue-{t.escalation_level}", to, now)
                        log.error(
                            "hazard ticket %d overdue (grade %s, due %s): escalated to %s",
                            t.id,
                            t.grade,
                            self._when(t.due_at),
                            to,
                        )
        self._outbound_wake.set()

    async def _notify(
        self, s: AsyncSession, t: HazardTicket, what: str, to: str, now: float
    ) -> None:
        if not self.settings.notify:
            return
        payload = json.dumps(
            {"what": what, "to": to, "ts": now, "ticket": ticket_dict(t)}, ensure_ascii=False
        )
        rows = [
            {
                "key": f"ticket:{t.id}:{what}",
                "channel": c,
                "zone": t.zone,
                "kind": "ticket",
                "payload": payload,
                "created_at": now,
                "next_try": now,
                "attempts": 0,
                "status": "pending",
                "last_error": "",
            }
            for c in self.settings.notify
        ]
        await s.execute(
            sqlite_insert(NotificationRecord).values(rows).on_conflict_do_nothing()
            if self.db.is_sqlite
            else _pg_insert(rows)
        )
        if self.notify_wake is not None:
            self.notify_wake.set()

    def _when(self, ts: float) -> str:
        return datetime.fromtimestamp(ts, self.tz).strftime("%Y-%m-%d %H:%M")

    # ------------------------------------------------------------ outbound webhook

    async def _outbound_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._outbound_wake.wait(), 1.0)
            self._outbound_wake.clear()
            await self.deliver_outbound()

    async def deliver_outbound(self) -> int:
        """Push due ticket changes in order; stop at the first failure (order matters)."""
        assert self.settings.webhook is not None and self._client is not None
        now = self._clock()
        delivered = 0
        async with self.db.new_session() as s, s.begin():
            rows = (
                await s.execute(
                    select(TicketOutboundRecord)
                    .where(TicketOutboundRecord.delivered_at.is_(None))
                    .order_by(TicketOutboundRecord.id)
                )
            ).scalars()
            for row in list(rows):
                if row.next_try > now:
                    break
                try:
                    resp = await self._client.post(
                        self.settings.webhook.url,
                        content=row.payload.encode(),
                        timeout=10.0,
                        headers={"Content-Type": "application/json"},
                    )
                    ok, why = resp.is_success, f"HTTP {resp.status_code}"
                except httpx.HTTPError as exc:
                    ok, why = False, f"{type(exc).__name__}: {exc}"
                row.attempts += 1
                if not ok:
                    row.last_error = why
                    row.next_try = now + min(
                        self._backoff[0] * 2 ** (row.attempts - 1), self._backoff[1]
                    )
                    log.warning("hazard webhook: %s; ticket change %d retried later", why, row.id)
                    break
                row.delivered_at = now
                delivered += 1
        return delivered

    # ------------------------------------------------------------ reports

    async def report(self) -> dict[str, Any]:
        now = self._clock()
        tickets = await self.tickets()
        open_ = [t for t in tickets if t.open]
        rectify = [t.submitted_at - t.created_at for t in tickets if t.submitted_at is not None]
        this_month = datetime.fromtimestamp(now, self.tz).replace(
            day=1, hour=0, minute=0, second=0, microsecond=0
        )
        last_month = (this_month.replace(day=1) - _ONE_DAY).replace(day=1)
        per_zone: dict[str, dict[str, int]] = {}
        for t in tickets:
            when = datetime.fromtimestamp(t.created_at, self.tz)
            bucket = (
                "this_month"
                if when >= this_month
                else ("last_month" if when >= last_month else None)
            )
            if bucket:
                per_zone.setdefault(t.zone, {"this_month": 0, "last_month": 0})[bucket] += 1
        return {
            "by_grade": dict(Counter(t.grade for t in open_)),
            "by_zone": dict(Counter(t.zone for t in open_)),
            "by_state": dict(Counter(str(t.state) for t in tickets)),
            "overdue": [
                {
                    "id": t.id,
                    "grade": t.grade,
                    "zone": t.zone,
                    "sensor": t.sensor,
                    "due_at": t.due_at,
                    "owner": t.owner,
                    "level": t.escalation_level,
                }
                for t in open_
                if t.state in (TicketState.DETECTED, TicketState.REGISTERED, TicketState.RECTIFYING)
                and now > t.due_at
            ],
            "chronic": [t.id for t in open_ if t.chronic],
            "mean_time_to_rectify_h": round(statistics.fmean(rectify) / 3600, 2)
            if rectify
            else None,
            "month_over_month": {
                z: {**v, "change": v["this_month"] - v["last_month"]}
                for z, v in sorted(per_zone.items())
            },
        }


_ONE_DAY = datetime(2000, 1, 2) - datetime(2000, 1, 1)


def _pg_insert(rows: list[dict[str, Any]]) -> Any:
    from sqlalchemy.dialects.postgresql import insert

    return insert(NotificationRecord).values(rows).on_conflict_do_nothing()

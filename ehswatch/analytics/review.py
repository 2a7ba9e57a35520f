"""The monthly safety performance review (月度安全履职评估), from what the system holds.

Per person, for a calendar month on the site's clock:
- `tickets_owned`, `closed_on_time` (submitted by their due time and archived),
  `overdue` (past due without being submitted), `mean_rectify_h` (detection to
  submission, over the tickets they rectified);
- `alarms_acked`, `mean_ack_s` (an alarm's start to their acknowledgement);
- `rounds_done` and, for a zone's team leader, `rounds_planned` (the round windows of
  their zones' checkpoints in the month); `cleaning_done` and `cleaning_planned` (the
  shifts of their zones' cleaning rules);
- `reports` (hazard and near-miss reports made).

Scores (0–1, for the radar chart): on time (closed on time of those due), rounds and
cleaning done against planned, acknowledgement within 10 minutes (1 at once, 0 at 10
min or more), and reports (1 at 4 a month or more). A department is the zones a
department head answers for; its figures are its people's summed. `review` is the rule
on rows read from the database (`gather`).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select

from ehswatch.alarms.store import AlarmRecord
from ehswatch.config import PlantConfig
from ehswatch.db import Database
from ehswatch.governance import patrols
from ehswatch.governance.cleaning import rule_shifts
from ehswatch.governance.responsibility import Chain
from ehswatch.governance.shifts import month_span, spans
from ehswatch.governance.store import CleaningRecord, NearMissRecord, PatrolRecord
from ehswatch.hazards.store import TicketRecord

AXES = ("on_time", "ack", "rounds", "cleaning", "reports")


@dataclass
class Figures:
    tickets_owned: int = 0
    closed_on_time: int = 0
    due_in_month: int = 0
    overdue: int = 0
    rectify_h: list[float] = field(default_factory=list)
    ack_s: list[float] = field(default_factory=list)
    rounds_done: int = 0
    rounds_planned: int = 0
    cleaning_done: int = 0
    cleaning_planned: int = 0
    reports: int = 0

    def add(self, other: Figures) -> None:
        for name in ("tickets_owned", "closed_on_time", "due_in_month", "overdue", "rounds_done",
                     "rounds_planned", "cleaning_done", "cleaning_planned", "reports"):  # fmt: skip
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.rectify_h += other.rectify_h
        self.ack_s += other.ack_s

    def scores(self) -> dict[str, float | None]:
        def ratio(a: int, b: int) -> float | None:
            return None if b == 0 else round(min(a / b, 1.0), 3)

        mean_ack = _mean(self.ack_s)
        return {
            "on_time": ratio(self.closed_on_time, self.due_in_month),
            "ack": None if mean_ack is None else round(max(0.0, 1 - mean_ack / 600), 3),
            "rounds": ratio(self.rounds_done, self.rounds_planned),
            "cleaning": ratio(self.cleaning_done, self.cleaning_planned),
            "reports": round(min(self.reports / 4, 1.0), 3),
        }

    def public(self) -> dict[str, Any]:
        return {
            "tickets_owned": self.tickets_owned,
            "closed_on_time": self.closed_on_time,
            "due_in_month": self.due_in_month,
            "overdue": self.overdue,
            "mean_rectify_h": _round(_mean(self.rectify_h)),
            "alarms_acked": len(self.ack_s),
            "mean_ack_s": _round(_mean(self.ack_s)),
            "rounds_done": self.rounds_done,
            "rounds_planned": self.rounds_planned,
            "cleaning_done": self.cleaning_done,
            "cleaning_planned": self.cleaning_planned,
            "reports": self.reports,
            "scores": self.scores(),
        }


def _mean(xs: Sequence[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 2)


@dataclass(frozen=True, kw_only=True, slots=True)
class Rows:
    """What a month's review reads: each a plain tuple, as the database gives it."""

    tickets: Sequence[tuple[str, str, float, float, float | None, float | None, str]]
    # (owner, rectifier, created_at, due_at, submitted_at, archived_at, zone)
    acks: Sequence[tuple[str, float, float]]  # (acked_by, first_at, acked_at)
    rounds: Sequence[tuple[str, str]]  # (by, zone)
    cleanings: Sequence[tuple[str, str]]  # (by, zone)
    reports: Sequence[str]  # by (signed in)


def review(
    config: PlantConfig, chains: Iterable[Chain], rows: Rows, since: float, until: float
) -> dict[str, Any]:
    """Each person's and each department's figures and scores for [since, until)."""
    tz = ZoneInfo(config.site.timezone)
    people: dict[str, Figures] = defaultdict(Figures)
    for owner, rectifier, created, due, submitted, archived, _zone in rows.tickets:
        if owner:
            f = people[owner]
            f.tickets_owned += 1
            if since <= due < until:
                f.due_in_month += 1
                if submitted is not None and submitted <= due and archived is not None:
                    f.closed_on_time += 1
            if (submitted is None and due < until) or (submitted is not None and submitted > due):
                f.overdue += 1
        if rectifier and submitted is not None and since <= submitted < until:
            people[rectifier].rectify_h.append((submitted - created) / 3600)
    for by, first, acked in rows.acks:
        people[by].ack_s.append(max(acked - first, 0.0))
    for by, _zone in rows.rounds:
        people[by].rounds_done += 1
    for by, _zone in rows.cleanings:
        people[by].cleaning_done += 1
    for by in rows.reports:
        people[by].reports += 1
    chain_list = list(chains)
    # What a team leader's zones planned: their rounds and cleanings.
    for chain in chain_list:
        leader = chain.team_leader
        if not leader:
            continue
        f = people[leader]
        f.rounds_planned += _rounds_planned(config, chain.zone, tz, since, until)
        f.cleaning_planned += _cleanings_planned(config, chain.zone, tz, since, until)
    departments: dict[str, Figures] = defaultdict(Figures)
    members: dict[str, set[str]] = defaultdict(set)
    for chain in chain_list:
        head = chain.of("dept_head")
        if head:
            members[head] |= {n for n in (chain.team_leader, chain.of("on_call")) if n}
    for head, names in members.items():
        for name in names | {head}:
            if name in people:
                departments[head].add(people[name])
    return {
        "since": since,
        "until": until,
        "axes": list(AXES),
        "people": {name: f.public() for name, f in sorted(people.items())},
        "departments": {head: f.public() for head, f in sorted(departments.items())},
    }


def _rounds_planned(
    config: PlantConfig, zone: str, tz: ZoneInfo, since: float, until: float
) -> int:
    n = 0
    for cp in config.governance.checkpoints:
        if cp.zone == zone:
            start, _ = patrols.window_at(cp, tz, since)
            n += max(0, math.ceil((until - start) / (cp.every_h * 3600)))
    return n


def _cleanings_planned(
    config: PlantConfig, zone: str, tz: ZoneInfo, since: float, until: float
) -> int:
    found = next(z for z in config.zones if z.id == zone)
    if found.cleaning is None:
        return 0
    return sum(1 for _ in spans(rule_shifts(found.cleaning, config.site.shifts), tz, since, until))


async def gather(db: Database, since: float, until: float) -> Rows:
    """The month's rows from the database."""
    async with db.new_session() as s:
        tickets = (
            await s.execute(
                select(
                    TicketRecord.owner, TicketRecord.rectifier, TicketRecord.created_at,
                    TicketRecord.due_at, TicketRecord.submitted_at, TicketRecord.archived_at,
                    TicketRecord.zone,
                ).where(
                    ((TicketRecord.due_at >= since) & (TicketRecord.due_at < until))
                    | ((TicketRecord.submitted_at >= since) & (TicketRecord.submitted_at < until))
                )
            )
        ).all()  # fmt: skip
        acks = (
            await s.execute(
                select(AlarmRecord.acked_by, AlarmRecord.first_at, AlarmRecord.acked_at).where(
                    AlarmRecord.acked_at >= since, AlarmRecord.acked_at < until
                )
            )
        ).all()
        rounds = (
            await s.execute(
                select(PatrolRecord.by, PatrolRecord.zone).where(
                    PatrolRecord.at >= since, PatrolRecord.at < until
                )
            )
        ).all()
        cleanings = (
            await s.execute(
                select(CleaningRecord.by, CleaningRecord.zone).where(
                    CleaningRecord.shift_start >= since, CleaningRecord.shift_start < until
                )
            )
        ).all()
        reports = (
            await s.execute(
                select(NearMissRecord.by).where(
                    NearMissRecord.at >= since, NearMissRecord.at < until, NearMissRecord.by != ""
                )
            )
        ).scalars()
        return Rows(
            tickets=[tuple(r) for r in tickets],
            acks=[(str(a), float(f), float(t)) for a, f, t in acks if a],
            rounds=[(str(b), str(z)) for b, z in rounds],
            cleanings=[(str(b), str(z)) for b, z in cleanings],
            reports=[str(b) for b in reports],
        )


def radar_svg(scores: Mapping[str, float | None], size: int = 220) -> str:
    """A radar chart of the scores (SVG, no script): one axis per score, 0 at the centre."""
    cx = cy = size / 2
    r = size / 2 - 34
    n = len(AXES)

    def point(k: int, v: float) -> tuple[float, float]:
        a = -math.pi / 2 + 2 * math.pi * k / n
        return cx + r * v * math.cos(a), cy + r * v * math.sin(a)

    def polygon(values: Sequence[float]) -> str:
        return " ".join(f"{x:.1f},{y:.1f}" for x, y in (point(k, v) for k, v in enumerate(values)))

    rings = "".join(
        f'<polygon points="{polygon([q] * n)}" fill="none" stroke="#d9dde3"/>'
        for q in (0.25, 0.5, 0.75, 1.0)
    )
    shape = polygon([scores.get(a) or 0.0 for a in AXES])
    labels = "".join(
        f'<text x="{x:.1f}" y="{y:.1f}" font-size="11" text-anchor="middle">{a}</text>'
        for a, (x, y) in zip(AXES, (point(k, 1.22) for k in range(n)), strict=True)
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {size} {size}" width="{size}" '
        f'height="{size}" role="img">{rings}<polygon points="{shape}" fill="rgba(21,87,176,.35)" '
        f'stroke="#1557b0"/>{labels}</svg>'
    )


async def monthly(
    config: PlantConfig, db: Database, chains: Sequence[Chain], year: int, month: int
) -> tuple[dict[str, Any], dict[str, Any], str]:
    """The review of a month and of the month before, and the month's label."""
    tz = ZoneInfo(config.site.timezone)
    since, until = month_span(year, month, tz)
    py, pm = (year - 1, 12) if month == 1 else (year, month - 1)
    last_since, last_until = month_span(py, pm, tz)
    this = review(config, chains, await gather(db, since, until), since, until)
    last = review(config, chains, await gather(db, last_since, last_until), last_since, last_until)
    return this, last, f"{year:04d}-{month:02d}"

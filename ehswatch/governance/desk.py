"""`GovernanceDesk`: what people record for dust governance — cleaning at the end of a
shift, a patrol round at a checkpoint — and the lists of what was recorded.

Rules are in `cleaning` and `patrols` (pure); this shell checks who may record, stores
the photos (with the hazard evidence, by content), writes the record and its audit
entry, and opens the ticket a failed record calls for, all in one transaction. Every
refusal is audited where it is decided.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from ehswatch.audit import record
from ehswatch.config import ChecklistItem, Checkpoint, CleaningRule
from ehswatch.governance import board, cleaning, exports, patrols, sheets
from ehswatch.governance.shifts import ShiftSpan
from ehswatch.governance.store import CleaningRecord, ExposureRecord, PatrolRecord
from ehswatch.governance.tickets import open_ticket
from ehswatch.hazards.evidence import EvidenceRejected, EvidenceStore, StoredEvidence
from ehswatch.hazards.rooms import Rooms
from ehswatch.refusals import Refusal, refuse
from ehswatch.roles import Actor, Forbidden, NotFound, Refused


@dataclass(frozen=True, kw_only=True, slots=True)
class Photo:
    content: bytes
    thumbnail: bytes | None = None


def cleaning_dict(r: CleaningRecord) -> dict[str, Any]:
    return {
        "id": r.id,
        "zone": r.zone,
        "shift": r.shift,
        "shift_start": r.shift_start,
        "shift_end": r.shift_end,
        "by": r.by,
        "at": r.at,
        "residue_mm": r.residue_mm,
        "items": json.loads(r.items),
        "photo": bool(r.photo),
        "passed": r.passed,
        "ticket_id": r.ticket_id,
        "comment": r.comment,
    }


def patrol_dict(r: PatrolRecord) -> dict[str, Any]:
    return {
        "id": r.id,
        "checkpoint": r.checkpoint,
        "zone": r.zone,
        "window_start": r.window_start,
        "by": r.by,
        "at": r.at,
        "answers": [{**a, "photo": bool(a["photo"])} for a in json.loads(r.answers)],
        "passed": r.passed,
        "ticket_id": r.ticket_id,
        "comment": r.comment,
    }


BOARD_S = 5.0


class GovernanceDesk:
    def __init__(
        self,
        rooms: Rooms,
        *,
        evidence: EvidenceStore,
        published: Callable[[], dict[str, Any] | None] = lambda: None,
    ) -> None:
        """`published`: the control part's latest status document (its shift figures)."""
        self.rooms = rooms
        self._published = published
        self._board: tuple[float, dict[str, Any]] | None = None
        self.config = rooms.config
        self.db = rooms.db
        self.evidence = evidence
        self.tz = ZoneInfo(self.config.site.timezone)
        self.rules: dict[str, CleaningRule] = {
            z.id: z.cleaning for z in self.config.zones if z.cleaning is not None
        }
        self.checkpoints: dict[str, Checkpoint] = {
            c.id: c for c in self.config.governance.checkpoints
        }
        self._risk = {z.id: z.risk for z in self.config.zones}

    async def store_figures(self) -> int:
        """Keep the closed shifts' figures the control part published (once each), and
        their exposures: a sensor's shift TWA above its type's limit opens a ticket."""
        return await self._keep_closed(self._published())

    async def _keep_closed(self, published: dict[str, Any] | None) -> int:
        added = await board.store_figures(self.db, published)
        await self._store_exposures(published)
        return added

    async def _store_exposures(self, published: dict[str, Any] | None) -> None:
        closed = ((published or {}).get("shift_figures") or {}).get("closed") or []
        now = self._now()
        opened = False
        async with self.db.new_session() as s, s.begin():
            for shift in closed:
                span = ShiftSpan(name=shift["shift"], start=shift["start"], end=shift["end"])
                for e in shift.get("exposure") or []:
                    have = await s.scalar(
                        select(ExposureRecord.id).where(
                            ExposureRecord.sensor == e["sensor"],
                            ExposureRecord.shift_start == shift["start"],
                        )
                    )
                    if have is not None:
                        continue
                    row = ExposureRecord(
                        sensor=e["sensor"],
                        zone=e["zone"],
                        sensor_type=e["sensor_type"],
                        shift=shift["shift"],
                        shift_start=shift["start"],
                        shift_end=shift["end"],
                        twa=e["twa"],
                        peak=e["peak"],
                        limit=e["limit"],
                        measured_s=e["measured_s"],
                    )
                    s.add(row)
                    if e["twa"] is not None and e["twa"] > e["limit"]:
                        unit = self.config.sensor_types[e["sensor_type"]].unit
                        t = await open_ticket(
                            s,
                            self.rooms,
                            source=f"exposure:{e['sensor']}:{shift['start']:.0f}",
                            kind="exposure",
                            zone=e["zone"],
                            sensor=e["sensor"],
                            grade=self.config.governance.exposure_grade,
                            title=f"接触超限 exposure over its limit: {e['sensor']} shift TWA "
                            f"{e['twa']:g} {unit} > {e['limit']:g} {unit}, {span.label(self.tz)}",
                            now=now,
                        )
                        row.ticket_id = t.id if t else None
                        opened = True
        if opened:
            self.rooms.changed.set()

    async def board(self) -> dict[str, Any]:
        """The governance board's figures (see `board`), closed shifts stored first; kept
        for `BOARD_S` (ten screens and the Influx snapshot ask for the same figures)."""
        now = self._now()
        kept = self._board
        if kept is not None and 0 <= now - kept[0] < BOARD_S:
            return kept[1]
        published = self._published()
        await self._keep_closed(published)
        figures = await board.board(self.config, self.db, published, now)
        self._board = (now, figures)
        return figures

    async def export(
        self, kind: str, *, since: float, until: float, zone: str | None = None
    ) -> bytes:
        if zone is not None and zone not in self._risk:
            raise NotFound(f"no zone {zone!r}")
        site = self.config.site
        return await exports.export(
            kind,
            self.db,
            site=site.name,
            timezone=site.timezone,
            since=since,
            until=until,
            zone=zone,
        )

    def _now(self) -> float:
        return self.rooms.clock()

    def checklist(self, cp: Checkpoint) -> list[ChecklistItem]:
        """The checkpoint's checklist: its own, or its zone's risk's."""
        return list(self.config.governance.checklists[cp.checklist or self._risk[cp.zone]])

    async def _refuse(self, actor: Actor, action: str, subject: str, exc: Exception) -> NoReturn:
        refusal = Refusal(
            actor=actor,
            action=action,
            subject=subject,
            why=str(exc),
            forbidden=isinstance(exc, Forbidden),
        )
        await refuse(self.db, refusal, self._now(), error=exc)

    def store_photo(self, folder: str, photo: Photo) -> StoredEvidence:
        stored = self.evidence.store(folder, photo.content)
        if photo.thumbnail:
            ext = self.evidence.check_thumbnail(photo.thumbnail)
            self.evidence.store_thumbnail(stored.path, photo.thumbnail, ext)
        return stored

    # ------------------------------------------------------------------ cleaning

    async def shift_to_record(self, zone: str) -> ShiftSpan | None:
        """The shift a record made now in `zone` would be for (the workbench shows it)."""
        rule = self._rule(zone)
        return cleaning.shift_for_record(rule, self.config.site.shifts, self.tz, self._now())

    def _rule(self, zone: str) -> CleaningRule:
        if zone not in self._risk:
            raise NotFound(f"no zone {zone!r}")
        rule = self.rules.get(zone)
        if rule is None:
            raise NotFound(f"zone {zone} has no cleaning rule")
        return rule

    async def _recorded(self, zone: str, since: float) -> set[float]:
        async with self.db.new_session() as s:
            q = select(CleaningRecord.shift_start).where(
                CleaningRecord.zone == zone, CleaningRecord.shift_start >= since
            )
            return set((await s.execute(q)).scalars())

    async def record_cleaning(
        self,
        zone: str,
        actor: Actor,
        *,
        items_done: Sequence[str],
        residue_mm: float,
        photo: Photo | None,
        comment: str = "",
    ) -> dict[str, Any]:
        """Record `zone`'s cleaning for the shift ending now (or just ended). The zone's
        team leader or a supervisor or above; a photo when the rule requires one; once
        per shift. A record that does not pass opens a ticket carrying its photo."""
        rule = self._rule(zone)
        now = self._now()
        subject = f"zone:{zone}"
        try:
            async with self.db.new_session() as s:
                chain = await self.rooms.owners.chain(s, zone)
            if not actor.at_least("supervisor") and actor.name != chain.team_leader:
                raise Forbidden(
                    f"{actor.name} ({actor.role}) may not record {zone}'s cleaning: its team "
                    "leader or a supervisor does"
                )
            if unknown := sorted(set(items_done) - set(rule.items)):
                raise Refused(f"not an item of {zone}'s cleaning rule: {', '.join(unknown)}")
            if rule.photo_required and photo is None:
                raise Refused(f"{zone}'s cleaning rule requires a photo of the cleaned surfaces")
            recorded = await self._recorded(zone, now - 3 * 86400)
            shift = cleaning.shift_for_record(rule, self.config.site.shifts, self.tz, now)
            if shift is None:
                raise Refused(
                    f"{zone}'s cleaning is recorded at the end of a shift: from "
                    f"{rule.record_from_min:g} min before it ends to {rule.grace_min:g} min after"
                )
            if shift.start in recorded:
                raise Refused(f"{zone}'s cleaning for {shift.label(self.tz)} is recorded already")
            stored = self.store_photo(f"cleaning/{zone}", photo) if photo is not None else None
        except (Forbidden, Refused) as exc:
            await self._refuse(actor, "cleaning record", subject, exc)
        verdict = cleaning.judge(rule, items_done=items_done, residue_mm=residue_mm)
        try:
            answer = await self._keep_cleaning(
                zone, actor, rule, shift, stored, verdict, residue_mm, items_done, comment, now
            )
        except IntegrityError:  # the same shift recorded at the same moment by another
            await self._refuse(
                actor,
                "cleaning record",
                subject,
                Refused(f"{zone}'s cleaning for {shift.label(self.tz)} is recorded already"),
            )
        self.rooms.changed.set()
        return answer

    async def _keep_cleaning(
        self,
        zone: str,
        actor: Actor,
        rule: CleaningRule,
        shift: ShiftSpan,
        stored: StoredEvidence | None,
        verdict: cleaning.Verdict,
        residue_mm: float,
        items_done: Sequence[str],
        comment: str,
        now: float,
    ) -> dict[str, Any]:
        subject = f"zone:{zone}"
        async with self.db.new_session() as s, s.begin():
            row = CleaningRecord(
                zone=zone,
                shift=shift.name,
                shift_start=shift.start,
                shift_end=shift.end,
                by=actor.name,
                at=now,
                residue_mm=residue_mm,
                items=json.dumps(list(items_done), ensure_ascii=False),
                photo=str(stored.path) if stored else "",
                photo_sha256=stored.sha256 if stored else "",
                passed=verdict.passed,
                comment=comment,
            )
            s.add(row)
            await s.flush()
            if not verdict.passed:
                t = await open_ticket(
                    s,
                    self.rooms,
                    source=f"residue:{zone}:{shift.start:.0f}",
                    kind="residue",
                    zone=zone,
                    grade=rule.grade,
                    title=f"清洁不合格 cleaning not passed, {shift.label(self.tz)}: "
                    + "; ".join(verdict.problems),
                    now=now,
                    evidence=[(stored, actor.name)] if stored else (),
                )
                row.ticket_id = t.id if t else None
            record(
                s,
                ts=now,
                actor=actor,
                action="cleaning recorded",
                subject=subject,
                detail={
                    "shift": shift.label(self.tz),
                    "residue_mm": residue_mm,
                    "passed": verdict.passed,
                    "problems": list(verdict.problems),
                    "ticket": row.ticket_id,
                },
                comment=comment,
            )
            return cleaning_dict(row)

    async def cleaning_records(
        self, *, zone: str | None = None, since: float | None = None, until: float | None = None
    ) -> list[dict[str, Any]]:
        """Cleaning records, newest shift first, of one zone or all, by shift start."""
        q = select(CleaningRecord).order_by(
            CleaningRecord.shift_start.desc(), CleaningRecord.id.desc()
        )
        if zone is not None:
            q = q.where(CleaningRecord.zone == zone)
        if since is not None:
            q = q.where(CleaningRecord.shift_start >= since)
        if until is not None:
            q = q.where(CleaningRecord.shift_start < until)
        async with self.db.new_session() as s:
            return [cleaning_dict(r) for r in (await s.execute(q.limit(10_000))).scalars()]

    async def cleaning_photo(self, record_id: int) -> str:
        async with self.db.new_session() as s:
            r = await s.get(CleaningRecord, record_id)
        if r is None or not r.photo:
            raise NotFound(f"no photo of cleaning record {record_id}")
        return r.photo

    # ------------------------------------------------------------------ patrols

    def checkpoint(self, checkpoint_id: str) -> Checkpoint:
        cp = self.checkpoints.get(checkpoint_id)
        if cp is None:
            raise NotFound(f"no checkpoint {checkpoint_id!r}")
        return cp

    def checkpoint_url(self, checkpoint_id: str) -> str:
        """What the checkpoint's QR code holds: its checklist in the workbench."""
        api = self.config.api
        base = api.public_url or f"http://{api.host}:{api.port}"
        return sheets.checkpoint_url(base, checkpoint_id)

    def qr_svg(self, checkpoint_id: str) -> bytes:
        return sheets.qr_svg(self.checkpoint_url(self.checkpoint(checkpoint_id).id))

    def zone_sheet(self, zone: str) -> bytes:
        """The A4 PDF of `zone`'s checkpoint codes, to print and post."""
        found = next((z for z in self.config.zones if z.id == zone), None)
        if found is None:
            raise NotFound(f"no zone {zone!r}")
        name = f"{found.name} {zone}".strip() if found.name else zone
        codes = [
            sheets.Code(
                url=self.checkpoint_url(cp.id),
                title=cp.name or cp.id,
                lines=(
                    f"{name}{f' · {cp.device}' if cp.device else ''}",
                    f"{cp.id} · 每 {cp.every_h:g} h 巡检 a round every {cp.every_h:g} h",
                ),
            )
            for cp in self.checkpoints.values()
            if cp.zone == zone
        ]
        api = self.config.api
        base = (api.public_url or f"http://{api.host}:{api.port}").rstrip("/")
        codes.append(  # the zone's public code: anyone reports what they saw
            sheets.Code(
                url=f"{base}/app/report/{zone}",
                title="隐患上报 report a hazard",
                lines=(name, "扫码上报隐患或未遂事件 scan to report a near miss"),
            )
        )
        return sheets.sheet_pdf(f"{self.config.site.name} · {name} · 巡检点 checkpoints", codes)

    async def record_patrol(
        self,
        checkpoint_id: str,
        actor: Actor,
        *,
        values: Mapping[str, Any],
        photos: Mapping[str, Photo],
        comment: str = "",
    ) -> dict[str, Any]:
        """Record a round at a checkpoint (anyone signed in, operator or above): every
        item answered, a photo for each photo item and for each item that fails. A
        failed item opens a ticket carrying its photo."""
        cp = self.checkpoint(checkpoint_id)
        items = self.checklist(cp)
        now = self._now()
        subject = f"checkpoint:{cp.id}"
        try:
            if not actor.at_least("operator"):
                raise Forbidden(f"{actor.name} ({actor.role}) may not record a patrol round")
            if extra := sorted(set(photos) - {i.id for i in items}):
                raise Refused(f"no such checklist item: {', '.join(extra)}")
            # Judged first with the photos' presence only: nothing is stored for a refusal.
            answers = patrols.judge(items, values, dict.fromkeys(photos, "pending"))
            texts = {i.id: i.text for i in items}
            if bare := [a.item for a in answers if not a.passed and a.item not in photos]:
                raise Refused("a failed item needs its photo: " + ", ".join(texts[i] for i in bare))
            stored = {k: self.store_photo(f"patrol/{cp.id}", p) for k, p in photos.items()}
        except (Forbidden, Refused) as exc:
            await self._refuse(actor, "patrol record", subject, exc)
        answers = patrols.judge(items, values, {k: str(v.path) for k, v in stored.items()})
        failed = [a for a in answers if not a.passed]
        window = await self._window_for_round(cp, now)
        async with self.db.new_session() as s, s.begin():
            row = PatrolRecord(
                checkpoint=cp.id,
                zone=cp.zone,
                window_start=window,
                by=actor.name,
                at=now,
                answers=json.dumps([a.as_dict() for a in answers], ensure_ascii=False),
                passed=not failed,
                comment=comment,
            )
            s.add(row)
            await s.flush()
            if failed:
                t = await open_ticket(
                    s,
                    self.rooms,
                    source=f"patrol:{row.id}",
                    kind="patrol",
                    zone=cp.zone,
                    grade=cp.grade,
                    title=f"巡检发现 patrol finding at {cp.name or cp.id}: "
                    + "; ".join(a.problem for a in failed),
                    now=now,
                    evidence=[(stored[a.item], actor.name) for a in failed],
                    by=actor,
                )
                row.ticket_id = t.id if t else None
            record(
                s,
                ts=now,
                actor=actor,
                action="patrol recorded",
                subject=subject,
                detail={
                    "passed": not failed,
                    "failed": [a.item for a in failed],
                    "ticket": row.ticket_id,
                },
                comment=comment,
            )
            answer = patrol_dict(row)
        self.rooms.changed.set()
        return answer

    async def _window_for_round(self, cp: Checkpoint, now: float) -> float:
        """The window a round made now counts for: the one that ended within the grace,
        while it has no round (a patrol a few minutes late is not a missed round), else
        the one it falls in."""
        start, _ = patrols.window_at(cp, self.tz, now)
        before = start - cp.every_h * 3600
        if now - start <= cp.grace_min * 60:
            async with self.db.new_session() as s:
                done = await s.scalar(
                    select(PatrolRecord.id).where(
                        PatrolRecord.checkpoint == cp.id, PatrolRecord.window_start == before
                    )
                )
            if done is None:
                return before
        return start

    async def patrol_records(
        self,
        *,
        zone: str | None = None,
        checkpoint: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 10_000,
    ) -> list[dict[str, Any]]:
        q = select(PatrolRecord).order_by(PatrolRecord.at.desc(), PatrolRecord.id.desc())
        if zone is not None:
            q = q.where(PatrolRecord.zone == zone)
        if checkpoint is not None:
            q = q.where(PatrolRecord.checkpoint == checkpoint)
        if since is not None:
            q = q.where(PatrolRecord.at >= since)
        if until is not None:
            q = q.where(PatrolRecord.at < until)
        async with self.db.new_session() as s:
            return [patrol_dict(r) for r in (await s.execute(q.limit(limit))).scalars()]


__all__ = ["EvidenceRejected", "GovernanceDesk", "Photo"]

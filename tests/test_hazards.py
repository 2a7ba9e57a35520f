"""Hazard tickets (docs/hazards.md): one per alarm, graded, worked through to the archive."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from sqlalchemy import select, text

from ehswatch.alarms.manager import AlarmManager
from ehswatch.alarms.store import NotificationRecord
from ehswatch.component import Backoff
from ehswatch.config import PlantConfig, parse_config
from ehswatch.db import Database
from ehswatch.hazards.desk import HazardDesk
from ehswatch.hazards.evidence import EvidenceRejected
from ehswatch.hazards.model import TicketState
from ehswatch.ingest.queue import ReadingQueue
from ehswatch.people.directory import People
from ehswatch.readings import ReadingBatch
from ehswatch.roles import Actor, Forbidden, Refused
from ehswatch.thresholds.stage import EvaluatorStage
from ehswatch.thresholds.table import ThresholdTable
from tests.aio import eventually, run
from tests.fakes import RobotServer
from tests.postgres import database_url

T0 = 1_800_000_000.0
LI = Actor(name="li.wei", role="operator")
ZHANG = Actor(name="zhang.min", role="supervisor")
SUN = Actor(name="sun.li", role="supervisor")
DEPT = Actor(name="zhou.qiang", role="dept_head")
CHEN = Actor(name="chen.jie", role="safety_director")
ZHAO = Actor(name="zhao.lei", role="gm")
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 100


def plant(tmp_path: Path, robots: RobotServer | None = None) -> PlantConfig:
    url = robots.url if robots else "http://127.0.0.1:9"
    doc: dict[str, Any] = {
        "site": {"id": "plant-1", "name": "华东机加工厂", "timezone": "Asia/Shanghai"},
        "database": {"url": database_url(tmp_path, "db.sqlite")},
        "mqtt": {"url": "mqtt://127.0.0.1:1"},
        "sensor_types": {
            "dust": {
                "unit": "mg/m3",
                "high": {"warning": 10, "alarm": 20, "interlock": 40},
                "deadband": 1.0,
                "stale_after_s": 1e6,
            }
        },
        "zones": [{"id": "polishing-1", "name": "打磨车间1"}],
        "sensors": [{"id": f"D-{k}", "type": "dust", "zone": "polishing-1"} for k in range(10)],
        "notifications": {"channels": [{"id": "hook", "type": "webhook", "url": f"{url}/hook"}]},
        "hazards": {
            "notify": ["hook"],
            "webhook": {"url": f"{url}/platform"},
            "evidence_dir": str(tmp_path / "evidence"),
            "evidence_max_mb": 1,
        },
    }
    return parse_config(yaml.safe_dump(doc, allow_unicode=True), env={})


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@dataclass
class Rig:
    clock: Clock
    stage: EvaluatorStage
    db: Database
    alarms: AlarmManager
    desk: HazardDesk

    async def read(self, values: dict[str, float], quality: int = 0) -> None:
        self.clock.now += 1.0
        idx = self.stage.table.index
        self.stage.evaluate(
            ReadingBatch.of(
                [idx[s] for s in values],
                list(values.values()),
                [self.clock.now] * len(values),
                [quality] * len(values),
            )
        )
        await eventually(
            lambda: not self.alarms._queue and not self.alarms._wake.is_set(), what="alarms written"
        )
        async with self.alarms._lock:
            pass
        while await self.desk.intake_once():
            pass

    async def ticket_of(self, sensor: str) -> Any:
        """The sensor's newest open ticket."""
        return [t for t in await self.desk.tickets() if t.sensor == sensor and t.open][-1]

    async def audit(self, subject: str) -> list[tuple[Any, ...]]:
        async with self.db.engine.connect() as con:
            rows = await con.execute(
                text("SELECT action, actor, comment FROM audit_log WHERE subject = :s ORDER BY id"),
                {"s": subject},
            )
            return [tuple(r) for r in rows]

    async def notifications(self) -> list[str]:
        async with self.db.new_session() as s:
            return [
                n.key
                for n in (
                    await s.execute(
                        select(NotificationRecord)
                        .where(NotificationRecord.kind == "ticket")
                        .order_by(NotificationRecord.id)
                    )
                ).scalars()
            ]


@asynccontextmanager
async def rig(
    tmp_path: Path, config: PlantConfig | None = None, clock: Clock | None = None
) -> AsyncIterator[Rig]:
    config = config or plant(tmp_path)
    clock = clock or Clock()
    stage = EvaluatorStage(
        table=ThresholdTable.from_config(config), queue=ReadingQueue(), clock=clock
    )
    async with Database(config.database.url) as db, httpx.AsyncClient() as client:
        # The owner the tests register tickets to: a known person (owners must be).
        with contextlib.suppress(Refused):  # there from a run before a restart
            await People(db=db).add("li.wei", "operator", "rectifier-pass", by=ZHANG)
        alarms = AlarmManager(config=config, evaluator=stage.evaluator, db=db, clock=clock)
        desk = HazardDesk(
            config=config,
            db=db,
            clock=clock,
            client=client,
            backoff=Backoff(first=2.0, longest=60.0),
        )
        stage.listen(alarms.on_evaluation)
        async with alarms:
            yield Rig(clock, stage, db, alarms, desk)


def test_every_alarm_opens_one_ticket_graded_by_its_tier(tmp_path: Path) -> None:
    async def main() -> None:
        async with rig(tmp_path) as r:
            await r.read({"D-1": 12.0, "D-2": 25.0, "D-3": 45.0})
            await r.read({"D-4": math.nan}, quality=2)
            grades = {t.sensor: (t.grade, t.kind) for t in await r.desk.tickets()}
            assert grades == {
                "D-1": ("C", "tier"),
                "D-2": ("B", "tier"),
                "D-3": ("A", "tier"),
                "D-4": ("C", "fault"),
            }
            b = await r.ticket_of("D-2")
            assert b.state == TicketState.DETECTED and b.due_at == b.created_at + 24 * 3600

    run(main())


def test_a_tier_rise_raises_the_grade_of_the_same_ticket(tmp_path: Path) -> None:
    async def main() -> None:
        async with rig(tmp_path) as r:
            await r.read({"D-1": 12.0})
            await r.read({"D-1": 25.0})
            await r.read({"D-1": 45.0})
            (t,) = await r.desk.tickets()
            assert t.grade == "A" and t.stop_work
            assert t.due_at == t.created_at + 2 * 3600  # the tighter deadline of grade A
            actions = [a for a, _, _ in await r.audit(f"ticket:{t.id}")]
            assert actions == [
                "ticket opened",
                "ticket grade raised C → B",
                "ticket grade raised B → A",
            ]

    run(main())


def test_no_duplicate_tickets_across_a_restart(tmp_path: Path) -> None:
    clock = Clock()

    async def first() -> None:
        async with rig(tmp_path, clock=clock) as r:
            await r.read({"D-1": 25.0, "D-2": 26.0})

    async def second() -> int:
        async with rig(tmp_path, clock=clock) as r:
            while await r.desk.intake_once():
                pass
            await r.read({"D-1": 45.0})  # the same episode rises: no new ticket
            return len(await r.desk.tickets())

    run(first())
    assert run(second()) == 2


def test_grade_a_stops_work_in_the_zone(tmp_path: Path) -> None:
    async def main() -> None:
        async with rig(tmp_path) as r:
            await r.read({"D-3": 45.0})
            t = await r.ticket_of("D-3")
            assert t.stop_work
            assert ("stop work", "ehswatch", "") in await r.audit("zone:polishing-1")
            assert f"ticket:{t.id}:stop_work" in await r.notifications()

    run(main())


async def _to_verifying(r: Rig, sensor: str = "D-2", value: float = 25.0) -> int:
    await r.read({sensor: value})
    tid = (await r.ticket_of(sensor)).id
    await r.desk.register(tid, ZHANG, owner="li.wei", comment="fix the hood")
    await r.desk.start(tid, LI)
    await r.desk.add_evidence(tid, LI, filename="after.png", content=PNG)
    await r.desk.submit(tid, LI, measure="hood extraction repaired, duct cleaned")
    return int(tid)


def test_the_workflow_from_detection_to_the_archive(tmp_path: Path) -> None:
    async def main() -> None:
        async with rig(tmp_path) as r:
            tid = await _to_verifying(r)
            t = await r.desk.verify(tid, SUN, passed=True)
            assert t.state == TicketState.APPROVING
            t = await r.desk.approve(tid, DEPT, comment="ok")
            assert t.state == TicketState.ARCHIVED and t.archived_at == r.clock.now
            assert [a for a, _, _ in await r.audit(f"ticket:{tid}")][-6:] == [
                "ticket registered",
                "ticket rectification started",
                "evidence added",
                "ticket rectification submitted",
                "ticket verified",
                "ticket approved and archived",
            ]
            assert ("ticket registered", "zhang.min", "fix the hood") in await r.audit(
                f"ticket:{tid}"
            )

    run(main())


def test_every_illegal_move_is_refused_with_a_reason_and_audited(tmp_path: Path) -> None:
    async def main() -> None:
        async with rig(tmp_path) as r:
            await r.read({"D-2": 25.0})
            tid = (await r.ticket_of("D-2")).id
            with pytest.raises(Refused, match="needs registered"):
                await r.desk.start(tid, ZHANG)
            with pytest.raises(Forbidden):
                await r.desk.register(tid, LI, owner="li.wei")
            with pytest.raises(Refused, match="at the latest the grade B deadline"):
                await r.desk.register(tid, ZHANG, owner="li.wei", due_at=r.clock.now + 48 * 3600)
            await r.desk.register(tid, ZHANG, owner="li.wei")
            await r.desk.start(tid, LI)
            with pytest.raises(Refused, match="needs evidence"):
                await r.desk.submit(tid, LI, measure="done")
            await r.desk.add_evidence(tid, LI, filename="a.png", content=PNG)
            with pytest.raises(Refused, match="description of the measure"):
                await r.desk.submit(tid, LI, measure=" ")
            await r.desk.submit(tid, ZHANG, measure="done")  # a supervisor submitted it
            with pytest.raises(Refused, match="other than the rectifier"):
                await r.desk.verify(tid, ZHANG, passed=True)
            with pytest.raises(Forbidden):
                await r.desk.verify(tid, LI, passed=True)
            await r.desk.verify(tid, SUN, passed=True)
            with pytest.raises(Forbidden, match="approved by dept_head"):
                await r.desk.approve(tid, LI)  # lower than the approver: no stand-in
            refused = [a for a, _, _ in await r.audit(f"ticket:{tid}") if a.endswith("refused")]
            assert len(refused) == 8

    run(main())


def test_verifying_can_send_it_back(tmp_path: Path) -> None:
    async def main() -> None:
        async with rig(tmp_path) as r:
            tid = await _to_verifying(r)
            with pytest.raises(Refused, match="needs a reason"):
                await r.desk.verify(tid, SUN, passed=False)
            t = await r.desk.verify(tid, SUN, passed=False, reason="dust still on the beams")
            assert (t.state, t.sent_back) == (TicketState.RECTIFYING, 1)
            t = await r.desk.submit(tid, LI, measure="beams cleaned too")
            assert t.state == TicketState.VERIFYING

    run(main())


def test_grade_a_is_archived_only_with_a_gm_and_a_safety_director(tmp_path: Path) -> None:
    async def main() -> None:
        async with rig(tmp_path) as r:
            tid = await _to_verifying(r, "D-3", 45.0)
            await r.desk.verify(tid, SUN, passed=True)
            with pytest.raises(Forbidden):
                await r.desk.approve(tid, DEPT)
            t = await r.desk.approve(tid, CHEN)
            assert t.state == TicketState.APPROVING
            with pytest.raises(Refused, match="already has the safety_director"):
                await r.desk.approve(tid, Actor(name="wu.gang", role="safety_director"))
            t = await r.desk.approve(tid, ZHAO)
            assert t.state == TicketState.ARCHIVED and not t.stop_work
            assert [(a.name, a.role) for a in t.approvals] == [
                ("chen.jie", "safety_director"),
                ("zhao.lei", "gm"),
            ]

    run(main())


def test_a_grade_is_lowered_only_by_a_named_approver(tmp_path: Path) -> None:
    async def main() -> None:
        async with rig(tmp_path) as r:
            await r.read({"D-3": 45.0})
            tid = (await r.ticket_of("D-3")).id
            with pytest.raises(Forbidden):
                await r.desk.lower_grade(tid, DEPT, grade="B", reason="sensor drift")
            with pytest.raises(Refused, match="needs a reason"):
                await r.desk.lower_grade(tid, CHEN, grade="B", reason="")
            with pytest.raises(Refused, match="no grade 'D'"):
                await r.desk.lower_grade(tid, CHEN, grade="D", reason="sensor drift")
            refused = [
                (a, who) for a, who, _ in await r.audit(f"ticket:{tid}") if a.endswith("refused")
            ]
            assert (
                refused
                == [("lower grade refused", DEPT.name)] + [("lower grade refused", CHEN.name)] * 2
            )
            t = await r.desk.lower_grade(tid, CHEN, grade="B", reason="sensor drift confirmed")
            assert t.grade == "B" and not t.stop_work
            assert (
                "ticket grade lowered A → B",
                "chen.jie",
                "sensor drift confirmed",
            ) in await r.audit(f"ticket:{tid}")

    run(main())


def test_deadlines_remind_at_75_percent_then_escalate_level_by_level(tmp_path: Path) -> None:
    async def main() -> None:
        async with rig(tmp_path) as r:
            await r.read({"D-2": 25.0})  # grade B: 24 h
            t = await r.ticket_of("D-2")
            opened = f"ticket:{t.id}:opened-dept_head"  # a B ticket: at once
            r.clock.now = t.created_at + 17.9 * 3600
            await r.desk.run_schedule()
            assert await r.notifications() == [opened]
            r.clock.now = t.created_at + 18 * 3600
            await r.desk.run_schedule()
            assert await r.notifications() == [opened, f"ticket:{t.id}:reminder"]
            r.clock.now = t.due_at + 1
            await r.desk.run_schedule()
            assert (await r.ticket_of("D-2")).escalation_level == 1  # department head
            r.clock.now = t.due_at + 6 * 3600 + 1  # a quarter of 24 h later
            await r.desk.run_schedule()
            assert (await r.ticket_of("D-2")).escalation_level == 2  # safety director
            r.clock.now = t.due_at + 30 * 24 * 3600  # long overdue: gm, and no further
            await r.desk.run_schedule()
            assert (await r.ticket_of("D-2")).escalation_level == 3
            assert await r.notifications() == [opened] + [
                f"ticket:{t.id}:{k}" for k in ("reminder", "overdue-1", "overdue-2", "overdue-3")
            ]
            actions = [a for a, _, _ in await r.audit(f"ticket:{t.id}")]
            assert "ticket overdue: escalated to dept_head" in actions
            assert "ticket overdue: escalated to gm" in actions
            # Tickets never close by themselves.
            assert (await r.ticket_of("D-2")).state == TicketState.DETECTED

    run(main())


def test_the_third_ticket_of_a_sensor_in_30_days_is_a_chronic_hazard(tmp_path: Path) -> None:
    async def main() -> None:
        async with rig(tmp_path) as r:
            for day in range(3):
                r.clock.now = T0 + day * 5 * 86400
                await r.read({"D-5": 25.0})
                t = await r.ticket_of("D-5")
                assert t.recurrence == day + 1
                assert t.chronic == (day == 2)
                await r.alarms.ack(r.alarms.open[("D-5", "tier")].id or 0, ZHANG)  # type: ignore[index]
                await r.read({"D-5": 2.0})
                await r.desk.register(t.id, ZHANG, owner="li.wei")
            chronic = (await r.desk.tickets())[-1]
            assert len(chronic.related) == 2
            assert f"ticket:{chronic.id}:chronic" in await r.notifications()
            assert ("chronic hazard", "ehswatch", "") in await r.audit(f"ticket:{chronic.id}")

    run(main())


def test_evidence_is_checked_for_size_and_type_and_stored_with_its_checksum(tmp_path: Path) -> None:
    async def main() -> None:
        async with rig(tmp_path) as r:
            await r.read({"D-6": 25.0})
            tid = (await r.ticket_of("D-6")).id
            await r.desk.register(tid, ZHANG, owner="li.wei")
            with pytest.raises(EvidenceRejected) as too_big:
                await r.desk.add_evidence(
                    tid, LI, filename="huge.png", content=PNG + b"\0" * 2_000_000
                )
            assert too_big.value.status == 413
            with pytest.raises(EvidenceRejected) as not_a_photo:
                await r.desk.add_evidence(
                    tid, LI, filename="photo.jpg", content=b"MZ\x90\x00 an exe"
                )
            assert not_a_photo.value.status == 415
            ev = await r.desk.add_evidence(tid, LI, filename="after.png", content=PNG)
            assert ev.sha256 == hashlib.sha256(PNG).hexdigest() and ev.content_type == "image/png"
            assert Path(ev.path).read_bytes() == PNG
            with pytest.raises(Forbidden):
                await r.desk.add_evidence(
                    tid, Actor(name="x", role="operator"), filename="a.png", content=PNG
                )
            refused = [a for a, _, _ in await r.audit(f"ticket:{tid}") if a == "evidence refused"]
            assert len(refused) == 3  # too big, not a photo, and not the owner's to add

    run(main())


def test_the_outbound_webhook_is_retried_until_the_platform_accepts(tmp_path: Path) -> None:
    with RobotServer() as robots:

        async def main() -> None:
            async with rig(tmp_path, plant(tmp_path, robots)) as r:
                robots.down = True
                await r.read({"D-7": 25.0})
                assert await r.desk.deliver_outbound() == 0
                robots.down = False
                assert await r.desk.deliver_outbound() == 0  # waits for its backoff
                r.clock.now += 3
                assert await r.desk.deliver_outbound() == 1
            (change,) = robots.delivered("/platform")
            assert change["change"] == "opened" and change["ticket"]["grade"] == "B"

        run(main())


def test_the_webhook_holds_no_database_connection_while_the_platform_answers(
    tmp_path: Path,
) -> None:
    """Commit, then POST, then mark delivered: a platform that takes its time never
    holds a connection (or a transaction) of the database's pool. (On PostgreSQL the
    webhook's turn among processes is an advisory lock held on a connection of a pool
    of its own, `Database.turn`: the work's pool stays free.)"""
    held: list[int] = []
    with RobotServer() as robots:

        async def main() -> None:
            async with rig(tmp_path, plant(tmp_path, robots)) as r:
                pool = r.db.engine.sync_engine.pool
                robots.on_request = lambda path: held.append(pool.checkedout())  # type: ignore[attr-defined]
                await r.read({"D-7": 25.0})
                tid = (await r.ticket_of("D-7")).id
                await r.desk.register(tid, ZHANG, owner="li.wei")
                assert await r.desk.deliver_outbound() == 2
            changes = [c["change"] for c in robots.delivered("/platform")]
            assert changes == ["opened", "registered"]

        run(main())
    assert held == [0, 0]


def test_two_webhook_passes_at_once_deliver_each_change_once_in_order(tmp_path: Path) -> None:
    with RobotServer() as robots:

        async def main() -> None:
            async with rig(tmp_path, plant(tmp_path, robots)) as r:
                await r.read({"D-7": 25.0})
                tid = (await r.ticket_of("D-7")).id
                await r.desk.register(tid, ZHANG, owner="li.wei")
                sent = await asyncio.gather(r.desk.deliver_outbound(), r.desk.deliver_outbound())
                assert sorted(sent) == [0, 2]
            changes = [c["change"] for c in robots.delivered("/platform")]
            assert changes == ["opened", "registered"]

        run(main())


def test_a_refusal_with_text_the_database_cannot_take_is_still_audited(tmp_path: Path) -> None:
    """A lone surrogate in a reason (JSON allows one) is stored escaped: a 409, never a
    500 with no audit entry."""

    async def main() -> None:
        async with rig(tmp_path) as r:
            await r.read({"D-3": 45.0})
            tid = (await r.ticket_of("D-3")).id
            with pytest.raises(Refused, match="no grade 'Z'"):
                await r.desk.lower_grade(tid, CHEN, grade="Z", reason="drift \ud800")
            assert ("lower grade refused", "chen.jie", "drift \\ud800") in await r.audit(
                f"ticket:{tid}"
            )

    run(main())


def test_a_refusal_stands_when_the_database_cannot_audit_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A database that refuses the entry (here: read-only) is logged; the person is
    still refused (409), not answered 500."""
    from sqlalchemy import event

    from ehswatch.refusals import Refusal, refuse

    async def main() -> None:
        async with Database(f"sqlite+aiosqlite:///{tmp_path}/ro.db") as db:
            event.listen(
                db.engine.sync_engine,
                "connect",
                lambda conn, _: conn.execute("PRAGMA query_only = 1"),
            )
            await db.engine.dispose()  # connections from now on are read-only
            refusal = Refusal(actor=CHEN, action="verify", subject="ticket:1", why="not yet")
            with pytest.raises(Refused, match="not yet"):
                await refuse(db, refusal, 1.0)

    run(main())
    (logged,) = [r for r in caplog.records if "could not be audited" in r.getMessage()]
    assert "readonly" in logged.getMessage()


def test_reports_for_the_plant_manager(tmp_path: Path) -> None:
    async def main() -> None:
        async with rig(tmp_path) as r:
            await r.read({"D-2": 25.0})
            tid = (await r.ticket_of("D-2")).id
            await r.desk.register(tid, ZHANG, owner="li.wei")
            await r.desk.start(tid, LI)
            r.clock.now += 1.5 * 3600  # submitted an hour and a half after it was opened
            await r.desk.add_evidence(tid, LI, filename="after.png", content=PNG)
            await r.desk.submit(tid, LI, measure="hood extraction repaired")
            await r.read({"D-8": 12.0, "D-9": 45.0})
            r.clock.now += 10 * 3600  # grade A (2 h) is overdue now
            rep = await r.desk.report()
            assert rep["by_grade"] == {"B": 1, "C": 1, "A": 1}
            assert [o["sensor"] for o in rep["overdue"]] == ["D-9"]
            assert rep["mean_time_to_rectify_h"] == 1.5
            assert rep["month_over_month"]["polishing-1"]["this_month"] == 3

    run(main())

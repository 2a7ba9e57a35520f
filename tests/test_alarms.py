"""Alarms (docs/alarms.md): ISA-18.2 states, the outbox, publishing, notifications, escalation."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from sqlalchemy import func, select

from ehswatch.alarms import model
from ehswatch.alarms.channels import senders
from ehswatch.alarms.events import EventStream
from ehswatch.alarms.manager import AlarmManager
from ehswatch.alarms.metrics import alarm_metrics
from ehswatch.alarms.model import Alarm, AlarmKind, AlarmState
from ehswatch.alarms.notifier import Notifier
from ehswatch.alarms.relay import AlarmRelay
from ehswatch.alarms.store import NotificationRecord, OutboxRecord
from ehswatch.audit import AuditEntry
from ehswatch.config import PlantConfig, parse_config
from ehswatch.db import Database
from ehswatch.ingest.queue import ReadingQueue
from ehswatch.publisher import RetainedPublisher
from ehswatch.readings import ReadingBatch
from ehswatch.roles import Actor, Forbidden, Refused
from ehswatch.thresholds.stage import EvaluatorStage
from ehswatch.thresholds.table import ThresholdTable
from tests.aio import eventually, run
from tests.fakes import RobotServer, SmtpServer
from tests.postgres import database_url
from tests.servers import Mosquitto

VIEWER = Actor(name="wang.fang", role="viewer")
LI = Actor(name="li.wei", role="operator")
ZHANG = Actor(name="zhang.min", role="supervisor")
T0 = 1_800_000_000.0


# ------------------------------------------------------------------ the state machine, pure


def fresh(tier: int = 2, kind: AlarmKind = AlarmKind.TIER) -> Alarm:
    a, events = model.raised(
        sensor="D-101",
        zone="z",
        sensor_type="dust",
        kind=kind,
        tier=tier,
        value=25.0,
        threshold=20.0,
        at=T0,
    )
    assert events == ["raised"]
    return a


def test_a_new_alarm_is_unacknowledged_and_active() -> None:
    a = fresh()
    assert (a.state, a.active, a.tier, a.peak_tier) == (AlarmState.UNACK_ACTIVE, True, 2, 2)


def test_ack_takes_an_active_alarm_to_ack_active() -> None:
    a, events = model.ack(fresh(), LI, T0 + 5)
    assert (a.state, a.acked_by, a.acked_at, events) == (
        AlarmState.ACK_ACTIVE,
        "li.wei",
        T0 + 5,
        ["acked"],
    )


def test_an_unacknowledged_alarm_that_returns_waits_for_its_ack_then_closes() -> None:
    a, events = model.condition(fresh(), active=False, tier=0, value=5.0, threshold=None, at=T0 + 9)
    assert (a.state, events, a.open) == (AlarmState.UNACK_RETURNED, ["returned"], True)
    a, events = model.ack(a, LI, T0 + 20)
    assert (a.state, a.closed_at, events) == (AlarmState.NORMAL, T0 + 20, ["acked", "closed"])


def test_an_acknowledged_alarm_that_returns_closes_its_episode() -> None:
    a, _ = model.ack(fresh(), LI, T0 + 5)
    a, events = model.condition(a, active=False, tier=0, value=5.0, threshold=None, at=T0 + 9)
    assert (a.state, a.closed_at, events) == (AlarmState.NORMAL, T0 + 9, ["returned", "closed"])


def test_a_returned_alarm_that_comes_back_is_active_and_unacknowledged_again() -> None:
    a, _ = model.condition(fresh(), active=False, tier=0, value=5.0, threshold=None, at=T0 + 9)
    a, events = model.condition(a, active=True, tier=1, value=12.0, threshold=10.0, at=T0 + 12)
    assert (a.state, events, a.peak_tier) == (AlarmState.UNACK_ACTIVE, ["reactivated"], 2)


def test_a_tier_rise_after_ack_alarms_again() -> None:
    a, _ = model.ack(fresh(tier=2), LI, T0 + 5)
    a, events = model.condition(a, active=True, tier=3, value=45.0, threshold=40.0, at=T0 + 8)
    assert (a.state, a.peak_tier, events) == (AlarmState.UNACK_ACTIVE, 3, ["tier_raised"])
    a, events = model.condition(a, active=True, tier=2, value=30.0, threshold=40.0, at=T0 + 9)
    assert (a.state, a.peak_tier, a.tier, events) == (
        AlarmState.UNACK_ACTIVE,
        3,
        2,
        ["tier_changed"],
    )


def test_ack_needs_an_operator_or_above_and_an_unacknowledged_alarm() -> None:
    with pytest.raises(Forbidden):
        model.ack(fresh(), VIEWER, T0)
    a, _ = model.ack(fresh(), LI, T0)
    with pytest.raises(Refused, match="not unacknowledged"):
        model.ack(a, LI, T0)


def test_shelve_needs_a_supervisor_a_reason_and_bounded_minutes() -> None:
    with pytest.raises(Forbidden):
        model.shelve(fresh(), LI, T0, minutes=30, reason="sensor cleaning", max_minutes=240)
    with pytest.raises(Refused, match="needs a reason"):
        model.shelve(fresh(), ZHANG, T0, minutes=30, reason=" ", max_minutes=240)
    with pytest.raises(Refused, match="at most 240 minutes"):
        model.shelve(fresh(), ZHANG, T0, minutes=241, reason="cleaning", max_minutes=240)
    a, events = model.shelve(fresh(), ZHANG, T0, minutes=30, reason="cleaning", max_minutes=240)
    assert (a.state, a.shelved_until, events) == (AlarmState.SHELVED, T0 + 1800, ["shelved"])


def test_an_interlock_tier_alarm_cannot_be_shelved() -> None:
    with pytest.raises(Refused, match="interlock tier cannot be shelved"):
        model.shelve(fresh(tier=3), ZHANG, T0, minutes=10, reason="r", max_minutes=240)


def test_reaching_tier_3_while_shelved_unshelves() -> None:
    a, _ = model.shelve(fresh(tier=1), ZHANG, T0, minutes=30, reason="r", max_minutes=240)
    a, events = model.condition(a, active=True, tier=3, value=45.0, threshold=40.0, at=T0 + 1)
    assert (a.state, events) == (AlarmState.UNACK_ACTIVE, ["unshelved", "tier_raised"])


def test_the_shelf_ends_active_or_closed() -> None:
    a, _ = model.shelve(fresh(), ZHANG, T0, minutes=30, reason="r", max_minutes=240)
    assert model.unshelve(a, T0 + 1800)[0].state == AlarmState.UNACK_ACTIVE
    a, _ = model.condition(a, active=False, tier=0, value=1.0, threshold=None, at=T0 + 60)
    assert a.state == AlarmState.SHELVED
    closed, events = model.unshelve(a, T0 + 1800)
    assert (closed.state, closed.closed_at, events) == (
        AlarmState.NORMAL,
        T0 + 1800,
        ["unshelved", "closed"],
    )


def test_chattering_is_flagged_once() -> None:
    a, events = model.flag_chattering(fresh(), 2)
    assert events == [] and not a.chattering
    a, events = model.flag_chattering(a, 3)
    assert events == ["chattering"] and a.chattering
    assert model.flag_chattering(a, 9)[1] == []


# ------------------------------------------------------------------ with the database


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def plant(
    db: Path, robots: RobotServer | None = None, smtp: int = 25, **notifications: Any
) -> PlantConfig:
    url = robots.url if robots else "http://127.0.0.1:9"
    doc: dict[str, Any] = {
        "site": {"id": "plant-1", "name": "华东机加工厂", "timezone": "Asia/Shanghai"},
        "database": {"url": database_url(db.parent, db.name)},
        "sensor_types": {
            "dust": {
                "unit": "mg/m3",
                "high": {"warning": 10, "alarm": 20, "interlock": 40},
                "deadband": 1.0,
                "stale_after_s": 3600,
            }
        },
        "zones": [{"id": "polishing-1", "name": "打磨车间1"}, {"id": "wood", "name": "木工车间"}],
        "sensors": [
            {"id": f"D-{k}", "name": f"粉尘{k}", "type": "dust", "zone": "polishing-1"}
            for k in range(60)
        ]
        + [{"id": "W-1", "type": "dust", "zone": "wood"}],
        "mqtt": {"url": "mqtt://127.0.0.1:1"},
        "notifications": {
            "channels": [
                {"id": "hook", "type": "webhook", "url": f"{url}/hook"},
                {
                    "id": "ding",
                    "type": "dingtalk",
                    "url": f"{url}/dingtalk?access_token=abc",
                    "secret": robots.dingtalk_secret if robots else "x",
                },
                {"id": "wecom", "type": "wecom", "url": f"{url}/wecom"},
                {
                    "id": "mail",
                    "type": "email",
                    "smtp": {"host": "127.0.0.1", "port": smtp},
                    "to": ["ehs@example.com"],
                },
            ],
            "routes": [
                {
                    "match": {"tiers": ["alarm", "interlock"]},
                    "notify": ["hook", "ding"],
                    "escalate_after_s": 300,
                    "escalate_to": ["mail"],
                },
                {"match": {"tiers": ["fault"]}, "notify": ["wecom"]},
            ],
            **notifications,
        },
    }
    return parse_config(yaml.safe_dump(doc, allow_unicode=True), env={})


@dataclass
class Rig:
    config: PlantConfig
    clock: Clock
    stage: EvaluatorStage
    db: Database
    manager: AlarmManager
    relay: AlarmRelay
    stream: EventStream
    notifier: Notifier

    def read(self, values: dict[str, float], quality: int = 0, after: float = 1.0) -> None:
        self.clock.now += after
        idx = self.stage.table.index
        self.stage.evaluate(
            ReadingBatch.of(
                [idx[s] for s in values],
                list(values.values()),
                [self.clock.now] * len(values),
                [quality] * len(values),
            )
        )

    def alarm(self, sensor: str, kind: AlarmKind = AlarmKind.TIER) -> Alarm:
        return self.manager.open[(sensor, kind)]

    async def outbox(self) -> list[tuple[int, str]]:
        async with self.db.new_session() as s:
            rows = (await s.execute(select(OutboxRecord).order_by(OutboxRecord.id))).scalars()
            return [(r.alarm_id, r.event) for r in rows]

    async def settle(self) -> None:
        """Let the manager write what it has, then relay it."""
        await eventually(
            lambda: not self.manager._queue and not self.manager._wake.is_set(), what="manager idle"
        )
        async with self.manager._lock:
            pass
        while await self.relay.relay_once():
            pass

    async def deliver(self, *channels: str) -> None:
        for c in channels or tuple(self.notifier.stats):
            await self.notifier.deliver_due(c)


@asynccontextmanager
async def rig(
    tmp_path: Path, config: PlantConfig | None = None, publisher: RetainedPublisher | None = None
) -> AsyncIterator[Rig]:
    config = config or plant(tmp_path / "db.sqlite")
    clock = Clock()
    table = ThresholdTable.from_config(config)
    stage = EvaluatorStage(table=table, queue=ReadingQueue(), clock=clock)
    async with Database(config.database.url) as db, httpx.AsyncClient() as client:
        manager = AlarmManager(config=config, evaluator=stage.evaluator, db=db, clock=clock)
        stream = EventStream()
        relay = AlarmRelay(config=config, db=db, stream=stream, publisher=publisher, clock=clock)
        notifier = Notifier(
            config=config,
            db=db,
            senders_by_channel=senders(config, client),
            clock=clock,
            backoff_s=(2.0, 60.0),
        )
        stage.listen(manager.on_evaluation)
        async with manager:
            yield Rig(config, clock, stage, db, manager, relay, stream, notifier)


def test_every_transition_is_stored_with_its_outbox_event(tmp_path: Path) -> None:
    async def main() -> None:
        async with rig(tmp_path) as r:
            r.read({"D-1": 25.0})
            r.read({"D-1": 45.0}, after=31)  # far enough apart not to chatter
            r.read({"D-1": 3.0}, after=31)
            await r.settle()
            a = r.alarm("D-1")
            assert (a.state, a.peak_tier, a.tier) == (AlarmState.UNACK_RETURNED, 3, 0)
            assert await r.outbox() == [(a.id, "raised"), (a.id, "tier_raised"), (a.id, "returned")]
            await r.manager.ack(a.id or 0, LI, comment="seen")
            assert ("D-1", AlarmKind.TIER) not in r.manager.open  # closed
            assert [e for _, e in await r.outbox()][-2:] == ["acked", "closed"]

    run(main())


def test_a_new_episode_after_a_closed_one_is_a_new_alarm(tmp_path: Path) -> None:
    async def main() -> None:
        async with rig(tmp_path) as r:
            r.read({"D-1": 25.0})
            await r.settle()
            first = r.alarm("D-1").id
            await r.manager.ack(first or 0, LI)
            r.read({"D-1": 3.0})
            r.read({"D-1": 26.0})
            await r.settle()
            assert r.alarm("D-1").id != first
            assert r.alarm("D-1").state == AlarmState.UNACK_ACTIVE

    run(main())


def test_an_instrument_fault_is_its_own_alarm(tmp_path: Path) -> None:
    async def main() -> None:
        async with rig(tmp_path) as r:
            r.read({"D-2": 25.0})
            r.read({"D-2": math.nan}, quality=2)
            await r.settle()
            assert r.alarm("D-2", AlarmKind.FAULT).state == AlarmState.UNACK_ACTIVE
            assert r.alarm("D-2").tier == 2  # the tier alarm stands apart

    run(main())


def test_shelve_refusals_are_audited_and_the_shelf_expires_by_itself(tmp_path: Path) -> None:
    async def main() -> None:
        async with rig(tmp_path) as r:
            r.read({"D-3": 12.0})
            await r.settle()
            aid = r.alarm("D-3").id or 0
            with pytest.raises(Forbidden):
                await r.manager.shelve(aid, LI, minutes=10, reason="cleaning")
            a = await r.manager.shelve(aid, ZHANG, minutes=10, reason="cleaning")
            assert a.state == AlarmState.SHELVED
            r.clock.now += 601
            await r.manager.run_schedule()
            assert r.alarm("D-3").state == AlarmState.UNACK_ACTIVE
            assert [e for _, e in await r.outbox()] == ["raised", "shelved", "unshelved"]

    run(main())


def test_a_sensor_out_of_service_raises_no_alarms_until_back(tmp_path: Path) -> None:
    async def main() -> None:
        async with rig(tmp_path) as r:
            r.read({"D-4": 25.0})
            await r.settle()
            with pytest.raises(Forbidden):
                await r.manager.take_out_of_service("D-4", LI, "recalibration")
            with pytest.raises(Refused, match="needs a reason"):
                await r.manager.take_out_of_service("D-4", ZHANG, " ")
            async with r.db.new_session() as s:
                refused = (
                    await s.execute(
                        select(AuditEntry.action, AuditEntry.actor).where(
                            AuditEntry.subject == "sensor:D-4"
                        )
                    )
                ).all()
            assert [tuple(x) for x in refused] == [
                ("out of service refused", LI.name),
                ("out of service refused", ZHANG.name),
            ]
            await r.manager.take_out_of_service("D-4", ZHANG, "recalibration")
            assert r.alarm("D-4").state == AlarmState.OUT_OF_SERVICE
            r.read({"D-4": 45.0})
            r.read({"D-4": 3.0})
            await r.settle()
            assert r.alarm("D-4").state == AlarmState.OUT_OF_SERVICE
            await r.manager.return_to_service("D-4", ZHANG)
            assert ("D-4", AlarmKind.TIER) not in r.manager.open  # reads normal now: no alarm

    run(main())


def test_the_outbox_survives_a_crash_between_commit_and_publish(tmp_path: Path) -> None:
    class CrashingRelay(AlarmRelay):
        def _publish(self, row: OutboxRecord, alarm: dict[str, Any]) -> None:
            super()._publish(row, alarm)
            if row.id == 2:
                raise RuntimeError("power cut")

    with RobotServer() as robots:
        config = plant(tmp_path / "db.sqlite", robots)

        async def main() -> None:
            async with rig(tmp_path, config) as r:
                r.read({"D-5": 25.0, "D-6": 26.0, "D-7": 27.0})
                async with asyncio.timeout(10):
                    while len(await r.outbox()) < 3:
                        await asyncio.sleep(0.01)
            # The process died before anything was relayed; the events are in the outbox.
            async with rig(tmp_path, config) as r:
                crashing = CrashingRelay(config=config, db=r.db, stream=r.stream, clock=r.clock)
                seen: list[int] = []
                async with r.stream.subscribe() as q:
                    with pytest.raises(RuntimeError, match="power cut"):
                        await crashing.relay_once()
                    while await r.relay.relay_once():  # the restarted relay
                        pass
                    while not q.empty():
                        seen.append(q.get_nowait()["event_id"])
                # Event 1 was published twice (before the crash and after): same event id.
                assert sorted(set(seen)) == [1, 2, 3] and seen.count(1) == 2
                async with r.db.new_session() as s:
                    n = await s.scalar(select(func.count()).select_from(NotificationRecord))
                    unpublished = await s.scalar(
                        select(func.count())
                        .select_from(OutboxRecord)
                        .where(OutboxRecord.published_at.is_(None))
                    )
                assert n == 3 * 2 and unpublished == 0  # hook + ding for each, exactly once
                r.clock.now += 2
                await r.deliver("hook", "ding")
            assert len(robots.delivered("/hook")) == 3 and len(robots.delivered("/dingtalk")) == 3

        run(main())


def test_webhook_dingtalk_and_wecom_get_the_exact_formats(tmp_path: Path) -> None:
    with RobotServer() as robots:

        async def main() -> None:
            async with rig(tmp_path, plant(tmp_path / "db.sqlite", robots)) as r:
                r.read({"D-8": 25.0})
                r.read({"D-9": math.nan}, quality=2)
                await r.settle()
                r.clock.now += 2
                await r.deliver()
            (hook,) = robots.delivered("/hook")
            assert hook["site"] == "plant-1" and hook["kind"] == "alarm"
            assert hook["alarms"][0]["sensor"] == "D-8" and "打磨车间1" in hook["text"]
            (ding,) = [q for q in robots.requests if q.path == "/dingtalk"]
            assert ding.verdict == "ok", ding.verdict  # signature checked by the fake robot
            assert ding.query["access_token"] == "abc"
            assert ding.body["markdown"]["title"].startswith("[华东机加工厂] 报警 alarm: D-8")
            (wecom,) = robots.delivered("/wecom")  # the fault route
            assert "仪表故障" in wecom["markdown"]["content"]

        run(main())


def test_a_wrong_dingtalk_secret_is_a_failed_send(tmp_path: Path) -> None:
    with RobotServer(dingtalk_secret="the-old-one") as robots:
        config = plant(tmp_path / "db.sqlite", robots)  # signs with the old secret

        async def main() -> None:
            async with rig(tmp_path, config) as r:
                r.read({"D-8": 25.0})
                await r.settle()
                r.clock.now += 2
                await r.deliver("ding")
                assert r.notifier.stats["ding"].failures == 1
                assert "310000" in r.notifier.stats["ding"].last_error

        robots.dingtalk_secret = "rotated-on-the-robot"
        run(main())


def test_email_lands_on_an_smtp_server(tmp_path: Path) -> None:
    with SmtpServer() as smtp, RobotServer() as robots:

        async def main() -> None:
            config = plant(tmp_path / "db.sqlite", robots, smtp=smtp.port)
            async with rig(tmp_path, config) as r:
                r.read({"D-10": 25.0})
                await r.settle()
                r.clock.now += 301  # unacknowledged past escalate_after_s: mail
                await r.manager.run_schedule()
                await r.settle()
                r.clock.now += 2
                await r.deliver("mail")
            (mail,) = smtp.messages
            assert mail["To"] == "ehs@example.com"
            assert "ESCALATION" in str(mail["Subject"])
            assert "D-10" in mail.get_content()  # type: ignore[attr-defined]

        run(main())


def test_escalation_fires_after_the_delay_repeats_and_stops_on_ack(tmp_path: Path) -> None:
    async def main() -> None:
        async with rig(tmp_path) as r:
            r.read({"D-11": 25.0})
            await r.settle()
            r.clock.now += 299
            await r.manager.run_schedule()
            assert r.alarm("D-11").escalations == 0
            r.clock.now += 2
            await r.manager.run_schedule()
            assert r.alarm("D-11").escalations == 1
            r.clock.now += 300
            await r.manager.run_schedule()
            assert r.alarm("D-11").escalations == 2
            await r.manager.ack(r.alarm("D-11").id or 0, LI)
            r.clock.now += 900
            await r.manager.run_schedule()
            assert r.alarm("D-11").escalations == 2
            await r.settle()
            async with r.db.new_session() as s:
                mails = (
                    (
                        await s.execute(
                            select(NotificationRecord).where(NotificationRecord.channel == "mail")
                        )
                    )
                    .scalars()
                    .all()
                )
            assert [m.kind for m in mails] == ["escalation", "escalation"]

    run(main())


def test_a_flood_of_50_alarms_is_one_grouped_message(tmp_path: Path) -> None:
    with RobotServer() as robots:

        async def main() -> None:
            async with rig(tmp_path, plant(tmp_path / "db.sqlite", robots)) as r:
                r.read({f"D-{k}": 25.0 for k in range(10, 60)})
                await r.settle()
                r.clock.now += 2
                await r.deliver("hook")
            (flood,) = robots.delivered("/hook")
            assert flood["kind"] == "flood" and len(flood["alarms"]) == 50
            assert "FLOOD: 50 alarms" in flood["title"]

        run(main())


def test_a_channel_that_is_down_is_retried_and_others_are_not_held_up(tmp_path: Path) -> None:
    with RobotServer() as robots:

        async def main() -> None:
            async with rig(tmp_path, plant(tmp_path / "db.sqlite", robots)) as r:
                robots.down = True
                r.read({"D-12": 25.0})
                await r.settle()
                for _ in range(3):
                    r.clock.now += 70
                    await r.deliver("hook")
                assert r.notifier.stats["hook"].down and r.notifier.stats["hook"].failures == 3
                robots.down = False
                await r.deliver("ding")  # another channel is not held up by the dead one
                assert len(robots.delivered("/dingtalk")) == 1
                r.clock.now += 70
                await r.deliver("hook")
                assert not r.notifier.stats["hook"].down
            assert len(robots.delivered("/hook")) == 1  # delivered once, when it came back

        run(main())


def test_a_late_subscriber_sees_the_retained_alarm_state(tmp_path: Path) -> None:
    with Mosquitto(tmp_path) as broker:
        config = plant(tmp_path / "db.sqlite")
        mqtt = config.mqtt.model_copy(update={"url": f"mqtt://127.0.0.1:{broker.port}"})  # type: ignore[union-attr]

        async def main() -> None:
            publisher = RetainedPublisher(mqtt, "plant-1")
            async with publisher, rig(tmp_path, config, publisher) as r:
                r.read({"D-13": 45.0})
                await r.settle()
                await eventually(
                    lambda: publisher.published >= 1 and not publisher._unsent, what="published"
                )
            import aiomqtt

            async with aiomqtt.Client("127.0.0.1", broker.port) as late:
                await late.subscribe("ehs/alarms/#", qos=1)
                async with asyncio.timeout(5):
                    async for message in late.messages:
                        assert message.retain
                        state = json.loads(message.payload)
                        break
            assert str(message.topic) == "ehs/alarms/polishing-1/D-13"
            assert state["tier"]["state"] == "unack-active" and state["tier"]["tier"] == 3
            assert state["fault"] is None and state["event_id"] == 1

        run(main())


def test_alarm_metrics_for_the_plant(tmp_path: Path) -> None:
    async def main() -> None:
        async with rig(tmp_path) as r:
            r.read({"D-14": 25.0, "D-15": 12.0})
            await r.settle()
            r.clock.now += 30
            await r.manager.ack(r.alarm("D-14").id or 0, LI)
            for v in (3.0, 25.0, 3.0):  # chatters
                r.read({"D-15": v})
            await r.settle()
            m = await alarm_metrics(r.db, r.clock.now)
            # D-14 still reads 25 (acknowledged, active); D-15 is back to normal.
            assert m["alarms_last_10_min"] == 2 and m["active"] == 1
            assert m["median_time_to_ack_s"] == 30.0
            assert m["chattering"] == 1

    run(main())


def test_going_in_and_out_of_alarm_is_chattering_climbing_the_tiers_is_not(tmp_path: Path) -> None:
    async def main() -> None:
        async with rig(tmp_path) as r:
            for v in (12.0, 25.0, 45.0):  # a steady climb, three transitions in 3 s
                r.read({"D-16": v})
            await r.settle()
            assert not r.alarm("D-16").chattering
            for v in (3.0, 12.0, 3.0, 12.0):  # out, in, out, in
                r.read({"D-17": v})
            r.read({"D-17": 12.0})
            await r.settle()
            assert r.alarm("D-17").chattering
            assert [e for _, e in await r.outbox()].count("chattering") == 1

    run(main())

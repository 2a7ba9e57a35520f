"""Shift cleaning records (docs/governance.md), on the real database with a clock moved
by hand through shift ends: a shift without its record opens a ticket to the zone's team
leader; a record over the residue limit opens one carrying its photo."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml
from sqlalchemy import select

from ehswatch.config import PlantConfig, parse_config
from ehswatch.governance.desk import Photo
from ehswatch.hazards.model import TicketState
from ehswatch.hazards.store import EvidenceRecord
from ehswatch.roles import Actor, Forbidden, Refused
from tests.aio import run
from tests.test_hazards import PNG, Clock, Rig, rig
from tests.test_responsibility import mapped_plant, with_people

SHANGHAI = ZoneInfo("Asia/Shanghai")
LEADER = Actor(name="zhang.wei", role="supervisor")
ITEMS = ["设备表面积尘清除 equipment surfaces", "地面 floor"]


def at(text: str) -> float:
    """A time on the site's clock, e.g. "2027-01-15 20:30"."""
    return datetime.fromisoformat(text).replace(tzinfo=SHANGHAI).timestamp()


def governed_plant(tmp_path: Path, **governance: Any) -> PlantConfig:
    """The mapped plant with two shifts, a cleaning rule on polishing-1, checkpoints."""
    doc = yaml.safe_load(yaml.safe_dump(mapped_plant(tmp_path).model_dump(mode="json")))
    doc["site"]["shifts"] = [
        {"name": "day", "start": "08:00", "end": "20:00"},
        {"name": "night", "start": "20:00", "end": "08:00"},
    ]
    doc["zones"][0]["cleaning"] = {"items": ITEMS, "residue_limit_mm": 1.0, "grace_min": 30}
    doc["governance"].update(governance)
    return parse_config(yaml.safe_dump(doc, allow_unicode=True), env={})


def clock_at(text: str) -> Clock:
    clock = Clock()
    clock.now = at(text)
    return clock


async def tickets_of(r: Rig, kind: str) -> list[Any]:
    return [t for t in await r.desk.tickets() if t.kind == kind]


def test_a_shift_that_ends_without_its_record_opens_a_ticket_to_the_team_leader(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        clock = clock_at("2027-01-15 16:00")
        async with rig(tmp_path, governed_plant(tmp_path), clock) as r:
            await with_people(r)
            assert await r.desk.run_watch() == 0  # the first look: from now on
            clock.now = at("2027-01-15 20:29:59")  # the day shift's grace not yet over
            assert await r.desk.run_watch() == 0
            clock.now = at("2027-01-15 20:30:01")
            assert await r.desk.run_watch() == 1
            (t,) = await tickets_of(r, "cleaning")
            assert (t.zone, t.grade, t.owner) == ("polishing-1", "C", "zhang.wei")
            assert t.state == TicketState.REGISTERED and t.alarm_id is None
            assert "day 2027-01-15 08:00–20:00" in t.title
            assert t.due_at == clock.now + 72 * 3600  # grade C's deadline
            assert await r.desk.run_watch() == 0  # looked at again: not twice
            assert not [t for t in await r.desk.tickets() if t.zone == "polishing-2"]

    run(main())


def test_a_record_made_in_the_grace_is_for_the_shift_that_just_ended(tmp_path: Path) -> None:
    async def main() -> None:
        clock = clock_at("2027-01-15 19:00")
        async with rig(tmp_path, governed_plant(tmp_path), clock) as r:
            await with_people(r)
            gov = r.desk.governance
            await r.desk.run_watch()
            clock.now = at("2027-01-15 20:10")  # the night shift has begun
            shift = await gov.shift_to_record("polishing-1")
            assert shift is not None and shift.name == "day"
            done = await gov.record_cleaning(
                "polishing-1", LEADER, items_done=ITEMS, residue_mm=0.4, photo=Photo(content=PNG)
            )
            assert (done["shift"], done["passed"], done["ticket_id"]) == ("day", True, None)
            still = await gov.shift_to_record("polishing-1")
            assert still is not None and still.name == "day"  # in its grace: the day's still
            with pytest.raises(Refused, match="recorded already"):  # never the night's
                await gov.record_cleaning(
                    "polishing-1",
                    LEADER,
                    items_done=ITEMS,
                    residue_mm=0.1,
                    photo=Photo(content=PNG),
                )
            clock.now = at("2027-01-16 08:30:01")  # night's grace over, no record
            assert await r.desk.run_watch() == 1
            (t,) = await tickets_of(r, "cleaning")
            assert "night 2027-01-15 20:00–08:00" in t.title
            listed = await gov.cleaning_records(zone="polishing-1")
            assert [(x["shift"], x["by"], x["residue_mm"]) for x in listed] == [
                ("day", "zhang.wei", 0.4)
            ]

    run(main())


def test_a_record_over_the_residue_limit_opens_a_ticket_carrying_its_photo(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        clock = clock_at("2027-01-15 19:50")
        async with rig(tmp_path, governed_plant(tmp_path), clock) as r:
            await with_people(r)
            done = await r.desk.governance.record_cleaning(
                "polishing-1",
                LEADER,
                items_done=ITEMS[:1],
                residue_mm=1.5,
                photo=Photo(content=PNG + b"residue"),
            )
            assert not done["passed"]
            t = await r.desk.get(done["ticket_id"])
            assert t.kind == "residue" and t.owner == "zhang.wei"
            assert "1.5 mm is over the limit of 1 mm" in t.title and "not done: 地面" in t.title
            async with r.db.new_session() as s:
                (ev,) = (
                    await s.execute(select(EvidenceRecord).where(EvidenceRecord.ticket_id == t.id))
                ).scalars()
            assert Path(ev.path).read_bytes() == PNG + b"residue"
            clock.now = at("2027-01-15 20:31")
            assert await r.desk.run_watch() == 0  # recorded, if not passed: not "missed"

    run(main())


def test_a_cleaning_record_is_refused_and_audited_unless_it_meets_the_rule(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        clock = clock_at("2027-01-15 19:50")
        async with rig(tmp_path, governed_plant(tmp_path), clock) as r:
            await with_people(r)
            gov = r.desk.governance

            async def record(actor: Actor = LEADER, **kw: Any) -> Any:
                args: dict[str, Any] = {
                    "items_done": ITEMS,
                    "residue_mm": 0.2,
                    "photo": Photo(content=PNG),
                } | kw
                return await gov.record_cleaning("polishing-1", actor, **args)

            with pytest.raises(Refused, match="requires a photo"):
                await record(photo=None)
            with pytest.raises(Refused, match="not an item"):
                await record(items_done=["something else"])
            with pytest.raises(Forbidden):
                await record(Actor(name="li.wei", role="operator"))
            await record()
            with pytest.raises(Refused, match="recorded already"):
                await record()
            clock.now = at("2027-01-15 21:00")  # past the grace, long before the night's end
            with pytest.raises(Refused, match="at the end of a shift"):
                await record()
            clock.now = at("2027-01-16 06:30")  # the night's last two hours
            assert (await record())["shift"] == "night"
            refused = [a for a, _, _ in await r.audit("zone:polishing-1")]
            assert refused.count("cleaning record refused") == 5
            assert refused.count("cleaning recorded") == 2
            assert len(await gov.cleaning_records()) == 2

    run(main())


def test_the_watch_after_a_long_stop_opens_every_missed_shift_once(tmp_path: Path) -> None:
    async def main() -> None:
        clock = clock_at("2027-01-15 12:00")
        async with rig(tmp_path, governed_plant(tmp_path), clock) as r:
            await with_people(r)
            await r.desk.run_watch()
            clock.now = at("2027-01-17 12:00")  # two days: 4 shifts ended unrecorded
            assert await r.desk.run_watch() == 4
            clock.now = at("2027-01-16 12:00")  # the clock stepped back a day
            assert await r.desk.run_watch() == 0
            clock.now = at("2027-01-17 12:00")
            assert await r.desk.run_watch() == 0
            assert len(await tickets_of(r, "cleaning")) == 4

    run(main())


def test_two_records_of_one_shift_at_once_keep_one_and_refuse_the_other(tmp_path: Path) -> None:
    import asyncio

    async def main() -> None:
        clock = clock_at("2027-01-15 19:50")
        async with rig(tmp_path, governed_plant(tmp_path), clock) as r:
            await with_people(r)
            gov = r.desk.governance

            async def one(residue: float) -> Any:
                return await gov.record_cleaning(
                    "polishing-1", LEADER, items_done=ITEMS, residue_mm=residue,
                    photo=Photo(content=PNG),
                )  # fmt: skip

            done = await asyncio.gather(one(0.2), one(0.3), return_exceptions=True)
            assert sorted(type(d).__name__ for d in done) == ["Refused", "dict"]
            assert len(await gov.cleaning_records()) == 1
            actions = [a for a, _, _ in await r.audit("zone:polishing-1")]
            assert actions.count("cleaning record refused") == 1

    run(main())


def test_a_watch_cursor_ahead_of_the_clock_starts_again_from_now(tmp_path: Path) -> None:
    """The desk once ran with its clock days ahead: the watch must not stay silent until
    real time catches up."""
    from ehswatch.governance.store import WatchCursor

    async def main() -> None:
        clock = clock_at("2027-01-15 12:00")
        async with rig(tmp_path, governed_plant(tmp_path), clock) as r:
            await with_people(r)
            async with r.db.new_session() as s, s.begin():
                await s.merge(
                    WatchCursor(name="cleaning:polishing-1", until=clock.now + 10 * 86400)
                )
            assert await r.desk.run_watch() == 0
            clock.now = at("2027-01-15 20:31")  # the day shift's grace is over, no record
            assert await r.desk.run_watch() == 1

    run(main())


def test_a_shift_exposure_over_its_limit_opens_one_ticket_to_the_team_leader(
    tmp_path: Path,
) -> None:
    from ehswatch.governance.store import ExposureRecord

    async def main() -> None:
        doc = governed_plant(tmp_path).model_dump(mode="json")
        doc["sensor_types"]["dust"]["exposure_limit"] = 4.0
        config = parse_config(yaml.safe_dump(doc, allow_unicode=True), env={})
        clock = clock_at("2027-01-15 20:05")
        async with rig(tmp_path, config, clock) as r:
            await with_people(r)
            shift = {
                "shift": "day", "start": at("2027-01-15 08:00"), "end": at("2027-01-15 20:00"),
                "covered_s": 43200.0, "rows": [],
                "exposure": [
                    {"sensor": "D-1", "zone": "polishing-1", "sensor_type": "dust",
                     "twa": 5.2, "peak": 18.0, "limit": 4.0, "measured_s": 43000.0},
                    {"sensor": "D-2", "zone": "polishing-1", "sensor_type": "dust",
                     "twa": 3.1, "peak": 9.0, "limit": 4.0, "measured_s": 43000.0},
                ],
            }  # fmt: skip
            r.desk.governance._published = lambda: {"shift_figures": {"closed": [shift]}}
            await r.desk.governance.store_figures()
            await r.desk.governance.store_figures()  # seen again: nothing twice
            (t,) = await tickets_of(r, "exposure")
            assert (t.sensor, t.owner, t.grade) == ("D-1", "zhang.wei", "B")
            assert "TWA 5.2 mg/m3 > 4 mg/m3" in t.title
            async with r.db.new_session() as s:
                rows = (await s.execute(select(ExposureRecord))).scalars().all()
            assert sorted((e.sensor, e.ticket_id) for e in rows) == [("D-1", t.id), ("D-2", None)]

    run(main())

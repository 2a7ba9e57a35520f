"""Patrol rounds (docs/governance.md): a round records who stood at the checkpoint, when,
each item and its photos; a failed item opens a ticket carrying its photo; a missed round
opens one and climbs the zone's chain."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select

from ehswatch.config import ChecklistItem, Checkpoint, PlantConfig
from ehswatch.governance import patrols
from ehswatch.governance.desk import Photo
from ehswatch.hazards.store import EvidenceRecord
from ehswatch.roles import Actor, Forbidden, Refused
from tests.aio import run
from tests.test_cleaning import SHANGHAI, at, clock_at, governed_plant, tickets_of
from tests.test_hazards import PNG, Rig, rig
from tests.test_responsibility import notices, with_people

PATROLLER = Actor(name="li.wei", role="operator")
CHECKLISTS = {
    "high": [
        {"id": "duct", "text": "除尘管道无积尘 duct clear of dust"},
        {
            "id": "dp",
            "text": "滤袋压差 filter pressure drop",
            "kind": "number",
            "min": 0.5,
            "max": 2.5,
            "unit": "kPa",
        },
        {"id": "view", "text": "现场照片 the place", "kind": "photo"},
    ],
    "medium": [{"id": "floor", "text": "地面无积尘 floor clear"}],
}
CHECKPOINTS = [
    {"id": "cp-mill", "name": "打磨机1号", "zone": "polishing-1", "checklist": "high"},
    {"id": "cp-2", "zone": "polishing-2", "every_h": 8, "grace_min": 30},
]


def patrol_plant(tmp_path: Path) -> PlantConfig:
    return governed_plant(tmp_path, checklists=CHECKLISTS, checkpoints=CHECKPOINTS)


def good(**more: Any) -> dict[str, Any]:
    return {"duct": "yes", "dp": 1.2} | more


async def evidence_of(r: Rig, ticket: int) -> list[bytes]:
    async with r.db.new_session() as s:
        rows = (
            await s.execute(select(EvidenceRecord).where(EvidenceRecord.ticket_id == ticket))
        ).scalars()
        return [Path(e.path).read_bytes() for e in rows]


def test_a_failed_checklist_item_opens_a_ticket_carrying_its_photo(tmp_path: Path) -> None:
    async def main() -> None:
        clock = clock_at("2027-01-15 10:00")
        async with rig(tmp_path, patrol_plant(tmp_path), clock) as r:
            await with_people(r)
            gov = r.desk.governance
            ok = await gov.record_patrol(
                "cp-mill", PATROLLER, values=good(), photos={"view": Photo(content=PNG)}
            )
            assert ok["passed"] and ok["ticket_id"] is None and ok["by"] == "li.wei"
            bad = await gov.record_patrol(
                "cp-mill",
                PATROLLER,
                values=good(dp=3.1),
                photos={"view": Photo(content=PNG), "dp": Photo(content=PNG + b"gauge")},
            )
            assert not bad["passed"]
            t = await r.desk.get(bad["ticket_id"])
            assert (t.kind, t.zone, t.owner) == ("patrol", "polishing-1", "zhang.wei")
            assert "3.1 kPa is above 2.5" in t.title and "打磨机1号" in t.title
            assert t.id is not None
            assert await evidence_of(r, t.id) == [PNG + b"gauge"]  # the failed item's photo
            listed = await gov.patrol_records(checkpoint="cp-mill")
            assert [x["passed"] for x in listed] == [False, True]
            assert ("patrol recorded", "li.wei", "") in await r.audit("checkpoint:cp-mill")

    run(main())


def test_a_round_is_refused_and_nothing_kept_unless_every_item_is_answered(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        clock = clock_at("2027-01-15 10:00")
        async with rig(tmp_path, patrol_plant(tmp_path), clock) as r:
            await with_people(r)
            gov = r.desk.governance
            photo = {"view": Photo(content=PNG)}
            cases: list[tuple[dict[str, Any], dict[str, Photo], str]] = [
                ({"duct": "yes"}, photo, "not answered"),
                (good(), {}, "a photo is required"),
                (good(dp="NaN"), photo, "a number is required"),
                (good(dp=math.inf), photo, "a number is required"),
                (good(duct="maybe"), photo, "answer yes or no"),
                (good(extra=1), photo, "no such checklist item"),
                (good(duct="no"), photo, "a failed item needs its photo"),
            ]
            for values, photos, why in cases:
                with pytest.raises(Refused, match=why):
                    await gov.record_patrol("cp-mill", PATROLLER, values=values, photos=photos)
            with pytest.raises(Forbidden):
                await gov.record_patrol(
                    "cp-mill", Actor(name="v", role="viewer"), values=good(), photos=photo
                )
            assert await gov.patrol_records() == []
            assert not (tmp_path / "evidence" / "patrol").exists()  # no photo kept
            refused = [a for a, _, _ in await r.audit("checkpoint:cp-mill")]
            assert refused.count("patrol record refused") == len(cases) + 1

    run(main())


def test_a_missed_round_opens_a_ticket_and_climbs_the_zones_chain(tmp_path: Path) -> None:
    async def main() -> None:
        clock = clock_at("2027-01-15 09:00")  # in the 08–16 window
        async with rig(tmp_path, patrol_plant(tmp_path), clock) as r:
            await with_people(r)
            await r.desk.run_watch()
            await r.desk.governance.record_patrol(
                "cp-2", PATROLLER, values={"floor": "yes"}, photos={}
            )
            clock.now = at("2027-01-16 00:30:01")  # 16–24 over with its grace, no round
            assert await r.desk.run_watch() == 4  # 3 rounds, and the day's cleaning
            rounds = await tickets_of(r, "round")
            windows = sorted((t.zone, t.title.rsplit(": ", 1)[1]) for t in rounds)
            assert windows == [
                ("polishing-1", "2027-01-15 08:00–16:00"),  # cp-mill: none all day
                ("polishing-1", "2027-01-15 16:00–00:00"),
                ("polishing-2", "2027-01-15 16:00–00:00"),  # cp-2: 08–16 was done
            ]
            mine = [t for t in rounds if t.zone == "polishing-2"]
            assert len(mine) == 1 and mine[0].owner == "wu.gang"
            assert (await notices(r, mine[0].id))["round-missed"] == "he.ping"  # at once
            clock.now = mine[0].due_at + 1
            await r.desk.run_schedule()
            assert (await notices(r, mine[0].id))["overdue-1"] == "he.ping"

    run(main())


checkpoint_hours = st.sampled_from([1.0, 2.0, 4.0, 8.0, 12.0, 24.0, 168.0])


@given(checkpoint_hours, st.floats(1.7e9, 2.0e9), st.floats(0, 3 * 86400))
def test_round_windows_tile_time_and_each_missed_window_is_found_once(
    hours: float, since: float, span: float
) -> None:
    cp = Checkpoint(id="c", zone="z", every_h=hours, grace_min=30)
    start, end = patrols.window_at(cp, SHANGHAI, since)
    assert start <= since < end and math.isclose(end - start, hours * 3600)
    middle = since + span / 2
    once = patrols.missed_windows(cp, SHANGHAI, since, since + span, set())
    twice = patrols.missed_windows(cp, SHANGHAI, since, middle, set()) + patrols.missed_windows(
        cp, SHANGHAI, middle, since + span, set()
    )
    assert once == twice  # looking in two steps finds what one look finds, once
    for _, b in once:
        assert since < b + 1800 <= since + span


def test_a_checklist_item_takes_limits_only_as_a_number() -> None:
    with pytest.raises(ValueError, match="only a number item"):
        ChecklistItem(id="x", text="x", kind="yes_no", min=1)
    with pytest.raises(ValueError, match="min is above max"):
        ChecklistItem(id="x", text="x", kind="number", min=2, max=1)


def test_a_round_a_few_minutes_late_counts_for_the_window_that_just_ended(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        clock = clock_at("2027-01-15 15:00")
        async with rig(tmp_path, patrol_plant(tmp_path), clock) as r:
            await with_people(r)
            await r.desk.run_watch()
            clock.now = at("2027-01-15 16:10")  # cp-2's 08–16 window ended 10 min ago
            late = await r.desk.governance.record_patrol(
                "cp-2", PATROLLER, values={"floor": "yes"}, photos={}
            )
            assert late["window_start"] == at("2027-01-15 08:00")
            clock.now = at("2027-01-15 16:31")
            await r.desk.run_watch()
            assert not [t for t in await tickets_of(r, "round") if t.zone == "polishing-2"]

    run(main())


def test_a_number_too_large_for_a_float_is_refused_not_a_crash(tmp_path: Path) -> None:
    async def main() -> None:
        async with rig(tmp_path, patrol_plant(tmp_path), clock_at("2027-01-15 10:00")) as r:
            await with_people(r)
            with pytest.raises(Refused, match="a number is required"):
                await r.desk.governance.record_patrol(
                    "cp-mill",
                    PATROLLER,
                    values=good(dp=10**400),
                    photos={"view": Photo(content=PNG)},
                )

    run(main())

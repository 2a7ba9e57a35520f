"""The responsibility map (docs/governance.md): each zone's people by role decide where a
new ticket goes, whom it tells, and whom an overdue ticket climbs to."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import select

from ehswatch.alarms.store import NotificationRecord
from ehswatch.config import PlantConfig, Role, parse_config
from ehswatch.hazards.model import TicketState
from ehswatch.people.directory import People
from ehswatch.roles import Actor, Forbidden, Refused
from tests.aio import run
from tests.postgres import database_url
from tests.test_hazards import Rig, rig

ADMIN = Actor(name="admin", role="admin")
CHAINS = {
    "polishing-1": {"team_leader": "zhang.wei", "dept_head": "sun.li"},
    "polishing-2": {"team_leader": "wu.gang", "dept_head": "he.ping"},
}
DEFAULTS = {"safety_director": "wang.jun", "gm": "chen.gang"}
PEOPLE: dict[str, Role] = {
    "zhang.wei": "supervisor",
    "wu.gang": "supervisor",
    "zhao.yun": "supervisor",
    "sun.li": "dept_head",
    "he.ping": "dept_head",
    "wang.jun": "safety_director",
    "chen.gang": "gm",
}


def mapped_plant(tmp_path: Path) -> PlantConfig:
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
        "zones": [{"id": z, "owners": owners} for z, owners in CHAINS.items()],
        "sensors": [
            {"id": f"D-{k}", "type": "dust", "zone": "polishing-1" if k < 5 else "polishing-2"}
            for k in range(10)
        ],
        "notifications": {"channels": [{"id": "hook", "type": "webhook", "url": "http://x/h"}]},
        "hazards": {"notify": ["hook"], "evidence_dir": str(tmp_path / "evidence")},
        "governance": {"owners": DEFAULTS},
    }
    return parse_config(yaml.safe_dump(doc, allow_unicode=True), env={})


async def with_people(r: Rig) -> None:
    people = People(db=r.db)
    for name, role in PEOPLE.items():
        with contextlib.suppress(Refused):
            await people.add(name, role, f"{name}-password", by=ADMIN)


async def notices(r: Rig, ticket: int) -> dict[str, str]:
    """Each notice queued about `ticket`: what → the person it names."""
    async with r.db.new_session() as s:
        rows = (
            await s.execute(
                select(NotificationRecord)
                .where(NotificationRecord.key.startswith(f"ticket:{ticket}:"))
                .order_by(NotificationRecord.id)
            )
        ).scalars()
        return {n.key.split(":", 2)[2]: json.loads(n.payload)["person"] for n in rows}


def test_a_new_ticket_is_registered_to_its_zones_team_leader_with_the_grades_deadline(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        async with rig(tmp_path, mapped_plant(tmp_path)) as r:
            await with_people(r)
            await r.read({"D-1": 25.0, "D-6": 25.0})  # grade B in each zone
            one, two = await r.ticket_of("D-1"), await r.ticket_of("D-6")
            assert (one.owner, two.owner) == ("zhang.wei", "wu.gang")
            for t in (one, two):
                assert t.state == TicketState.REGISTERED and t.registered_by == "ehswatch"
                assert t.due_at == t.created_at + 24 * 3600
            # B: the department head of *that* zone at once; the team leader told too.
            assert await notices(r, one.id) == {
                "assigned": "zhang.wei",
                "opened-dept_head": "sun.li",
            }
            assert await notices(r, two.id) == {
                "assigned": "wu.gang",
                "opened-dept_head": "he.ping",
            }
            audit = await r.audit(f"ticket:{one.id}")
            assert ("ticket registered", "ehswatch", "") in audit

    run(main())


def test_an_a_ticket_tells_the_safety_director_and_the_gm_at_once(tmp_path: Path) -> None:
    async def main() -> None:
        async with rig(tmp_path, mapped_plant(tmp_path)) as r:
            await with_people(r)
            await r.read({"D-2": 45.0})
            t = await r.ticket_of("D-2")
            assert t.grade == "A" and t.owner == "zhang.wei"
            told = await notices(r, t.id)
            assert told["opened-safety_director"] == "wang.jun"
            assert told["opened-gm"] == "chen.gang"
            assert told["stop_work"] == "sun.li"  # the zone's department head

    run(main())


def test_a_grade_raised_to_a_tells_whom_a_tells(tmp_path: Path) -> None:
    async def main() -> None:
        async with rig(tmp_path, mapped_plant(tmp_path)) as r:
            await with_people(r)
            await r.read({"D-7": 25.0})
            await r.read({"D-7": 45.0})
            t = await r.ticket_of("D-7")
            told = await notices(r, t.id)
            assert t.grade == "A"
            assert told["opened-safety_director-A"] == "wang.jun"
            assert told["opened-gm-A"] == "chen.gang"

    run(main())


def test_an_overdue_ticket_climbs_its_own_zones_chain(tmp_path: Path) -> None:
    async def main() -> None:
        async with rig(tmp_path, mapped_plant(tmp_path)) as r:
            await with_people(r)
            await r.read({"D-3": 25.0, "D-8": 25.0})
            one, two = await r.ticket_of("D-3"), await r.ticket_of("D-8")
            r.clock.now = one.due_at + 12 * 3600 + 1  # two quarters past: safety director
            await r.desk.run_schedule()
            assert (await notices(r, one.id))["overdue-1"] == "sun.li"
            assert (await notices(r, two.id))["overdue-1"] == "he.ping"
            assert (await notices(r, two.id))["overdue-2"] == "wang.jun"
            assert (await notices(r, one.id))["reminder"] == "zhang.wei"  # its owner

    run(main())


def test_an_a_ticket_past_its_deadline_escalates_until_stop_work_is_confirmed(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        async with rig(tmp_path, mapped_plant(tmp_path)) as r:
            await with_people(r)
            await r.read({"D-4": 45.0})
            t = await r.ticket_of("D-4")
            quarter = 0.25 * (t.due_at - t.created_at)
            r.clock.now = t.due_at + 2 * quarter + 1  # the GM
            await r.desk.run_schedule()
            assert (await r.ticket_of("D-4")).escalation_level == 3
            for k in (1, 2):  # and on past the GM, a quarter at a time
                r.clock.now += quarter
                await r.desk.run_schedule()
                told = await notices(r, t.id)
                assert told[f"stop-work-unconfirmed-{k}"] == "chen.gang"
            leader = Actor(name="zhang.wei", role="supervisor")
            confirmed = await r.desk.confirm_stop_work(t.id, leader)
            assert confirmed.stop_work_confirmed_by == "zhang.wei"
            before = await notices(r, t.id)
            r.clock.now += 10 * quarter
            await r.desk.run_schedule()
            assert await notices(r, t.id) == before  # confirmed: no more
            with pytest.raises(Refused, match="already confirmed"):
                await r.desk.confirm_stop_work(t.id, leader)

    run(main())


def test_an_admins_edit_of_the_map_is_audited_and_takes_over_from_the_config(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        async with rig(tmp_path, mapped_plant(tmp_path)) as r:
            await with_people(r)
            owners = r.desk.owners
            chain = await owners.change("polishing-1", {"team_leader": "zhao.yun"}, ADMIN)
            assert chain.team_leader == "zhao.yun" and chain.of("dept_head") == "sun.li"
            await r.read({"D-0": 25.0})
            assert (await r.ticket_of("D-0")).owner == "zhao.yun"
            (entry,) = [a for a in await r.audit("zone:polishing-1") if a[0] == "owners changed"]
            assert entry[1] == "admin"
            with pytest.raises(Refused, match="not a known person"):
                await owners.change("polishing-1", {"dept_head": "nobody.here"}, ADMIN)
            with pytest.raises(Forbidden):
                await owners.change(
                    "polishing-1",
                    {"team_leader": "wu.gang"},
                    Actor(name="zhang.wei", role="supervisor"),
                )
            refused = [a for a, _, _ in await r.audit("zone:polishing-1")]
            assert refused.count("owners change refused") == 2
            back = await owners.change("polishing-1", {"team_leader": ""}, ADMIN)
            assert back.team_leader == "zhang.wei"  # the config's, again
            assert (await owners.chains())[0].of("dept_head") == "sun.li"

    run(main())


def test_a_team_leader_who_cannot_sign_in_leaves_the_ticket_detected_and_says_why(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        async with rig(tmp_path, mapped_plant(tmp_path)) as r:  # nobody added
            await r.read({"D-1": 25.0})
            t = await r.ticket_of("D-1")
            assert t.state == TicketState.DETECTED and t.owner == ""
            actions = [a for a, _, _ in await r.audit(f"ticket:{t.id}")]
            assert "ticket not dispatched" in actions

    run(main())

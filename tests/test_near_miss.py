"""Hazard and near-miss reports by anyone (ehswatch/governance/near_miss.py): into the
ticket flow as *reported*, graded or dismissed by a supervisor, counted per person."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from ehswatch.config import parse_config
from ehswatch.governance.desk import Photo
from ehswatch.governance.near_miss import TooMany
from ehswatch.hazards.model import TicketState
from ehswatch.roles import Actor, Forbidden, Refused
from tests.aio import run
from tests.test_cleaning import clock_at, governed_plant
from tests.test_hazards import PNG, rig
from tests.test_responsibility import notices, with_people

LI = Actor(name="li.wei", role="operator")
LEADER = Actor(name="zhang.wei", role="supervisor")


def reporting_plant(tmp_path: Path, anonymous: bool) -> Any:
    doc = governed_plant(tmp_path).model_dump(mode="json")
    doc["governance"]["anonymous_reports"] = anonymous
    doc["governance"]["reports_per_hour"] = 3
    return parse_config(yaml.safe_dump(doc, allow_unicode=True), env={})


def test_a_report_enters_the_flow_as_reported_and_is_graded_into_a_ticket(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        clock = clock_at("2027-01-15 10:00")
        async with rig(tmp_path, reporting_plant(tmp_path, anonymous=False), clock) as r:
            await with_people(r)
            reports = r.desk.near_misses
            made = await reports.report(
                "polishing-1", LI, text="积尘 dust on the hood", photo=Photo(content=PNG),
                address="10.0.0.5",
            )  # fmt: skip
            t = await r.desk.get(made["ticket_id"])
            assert t.id is not None
            assert t.state == TicketState.REPORTED and t.kind == "report" and t.owner == ""
            assert (await notices(r, t.id))["reported"] == "zhang.wei"  # the team leader told
            assert len(await r.desk.evidence_of(t.id)) == 1
            with pytest.raises(Forbidden):
                await r.desk.accept_report(t.id, LI, grade="B")
            clock.now += 600
            graded = await r.desk.accept_report(t.id, LEADER, grade="B")
            assert (graded.state, graded.grade, graded.owner) == (
                TicketState.REGISTERED, "B", "zhang.wei",
            )  # fmt: skip
            assert graded.due_at == t.created_at + 24 * 3600  # from the report
            other = await reports.report(
                "polishing-2", LI, text="a loose cover", photo=None, address="x"
            )
            with pytest.raises(Refused, match="says why"):
                await r.desk.dismiss_report(other["ticket_id"], LEADER, reason=" ")
            dismissed = await r.desk.dismiss_report(other["ticket_id"], LEADER, reason="seen: fine")
            assert dismissed.state == TicketState.ARCHIVED
            counts = await reports.counts(since=0, until=clock.now + 1)
            assert counts["by_zone"] == {"polishing-1": 1, "polishing-2": 1}
            assert counts["by_person"] == [{"name": "li.wei", "reports": 2, "taken_up": 1}]

    run(main())


def test_an_anonymous_report_is_refused_unless_the_site_allows_it(tmp_path: Path) -> None:
    async def main() -> None:
        async with rig(tmp_path, reporting_plant(tmp_path, anonymous=False)) as r:
            with pytest.raises(Forbidden, match="sign in"):
                await r.desk.near_misses.report(
                    "polishing-1", None, text="x", photo=None, address="a"
                )
            assert ("report refused", "anonymous", "") in await r.audit("zone:polishing-1")

    run(main())


def test_anonymous_reports_are_limited_per_address_and_hour(tmp_path: Path) -> None:
    async def main() -> None:
        async with rig(tmp_path, reporting_plant(tmp_path, anonymous=True)) as r:
            reports = r.desk.near_misses
            for _ in range(3):
                made = await reports.report("polishing-1", None, text="x", photo=None, address="a")
                assert made["anonymous"]
            with pytest.raises(TooMany):
                await reports.report("polishing-1", None, text="x", photo=None, address="a")
            await reports.report("polishing-1", None, text="x", photo=None, address="b")
            counts = await reports.counts(since=0, until=2e9)
            assert counts["total"] == 4 and counts["by_person"] == []

    run(main())

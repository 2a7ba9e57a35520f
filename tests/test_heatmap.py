"""The risk heatmap (ehswatch/analytics/heatmap.py): counts by zone and hour of the week
against the database, on the site's clock."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import given
from hypothesis import strategies as st

from ehswatch.analytics.heatmap import HOURS, hour_of_week, ranking, risk_grid
from tests.aio import run
from tests.postgres import database_url, query
from tests.test_cleaning import at, clock_at
from tests.test_hazards import rig
from tests.test_responsibility import mapped_plant

SHANGHAI = ZoneInfo("Asia/Shanghai")


def test_the_heatmap_counts_what_the_database_holds_at_the_hour_of_the_site(
    tmp_path: Path,
) -> None:
    async def main() -> dict[str, Any]:
        # Friday 15 January 2027: 09:00 in Shanghai is 01:00 UTC.
        clock = clock_at("2027-01-15 09:00")
        async with rig(tmp_path, mapped_plant(tmp_path), clock) as r:
            await r.read({"D-1": 25.0})  # an alarm (tier 2) and a B ticket, polishing-1
            await r.read({"D-1": 2.0})
            clock.now = at("2027-01-15 09:40")
            await r.read({"D-7": 45.0})  # interlock tier: an A ticket, polishing-2
            clock.now = at("2027-01-18 22:10")  # Monday night
            await r.read({"D-2": 12.0})  # a warning, a C ticket
            from ehswatch.analytics.heatmap import heatmap

            return await heatmap(
                r.db, ["polishing-1", "polishing-2"], "Asia/Shanghai", at("2027-01-01 00:00"),
                at("2027-02-01 00:00"),
            )  # fmt: skip

    found = run(main())
    friday_9 = 4 * 24 + 9
    monday_22 = 0 * 24 + 22
    assert found["alarms"][0][friday_9] == 1 and found["tickets"][0][friday_9] == 1
    assert found["score"][0][friday_9] == 3 + 3  # an alarm at tier 2, a B ticket
    assert found["score"][1][friday_9] == 9 + 9  # interlock tier, an A ticket
    assert found["alarms"][0][monday_22] == 1
    url = database_url(tmp_path, "db.sqlite")
    ((alarms,),) = query(url, "SELECT count(*) FROM alarm")
    ((tickets,),) = query(url, "SELECT count(*) FROM hazard_ticket")
    assert sum(map(sum, found["alarms"])) == alarms
    assert sum(map(sum, found["tickets"])) == tickets
    top = found["top"]["periods"][0]
    assert (top["zone"], top["weekday"], top["hour"]) == ("polishing-2", 4, 9)


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["a", "b", "elsewhere"]),
            st.floats(1.7e9, 1.9e9),
            st.sampled_from([1.0, 3.0, 9.0]),
        ),
        max_size=40,
    )
)
def test_every_event_of_a_known_zone_lands_in_its_hour_of_the_week(
    events: list[tuple[str, float, float]],
) -> None:
    grid = risk_grid(["a", "b"], events, [], SHANGHAI)
    known = [e for e in events if e[0] != "elsewhere"]
    assert grid.alarms.sum() == len(known)
    assert abs(grid.score.sum() - sum(w for _, _, w in known)) < 1e-9
    for zone, ts, _ in known:
        local = datetime.fromtimestamp(ts, SHANGHAI)
        h = hour_of_week(ts, SHANGHAI)
        assert 0 <= h < HOURS and h == local.weekday() * 24 + local.hour
        assert grid.alarms[["a", "b"].index(zone), h] >= 1
    r = ranking(grid)
    scores = [p["score"] for p in r["periods"]]
    assert scores == sorted(scores, reverse=True)

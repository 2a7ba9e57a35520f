"""Interlock outputs that never wait and never lie: the trip reaches the PLC while the
database is locked (and says it is not durable yet), the heartbeat stops when the control
loop does, and an unconfirmed command is an A-grade alarm with its ticket, per command."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path
from typing import Any, cast

import pytest
from pymodbus.constants import ExcCodes

from ehswatch.alarms.model import AlarmKind, AlarmState
from ehswatch.alarms.routing import Router
from ehswatch.config import Notifications
from ehswatch.readings import ReadingBatch
from ehswatch.roles import Refused
from ehswatch.simulators.modbus_server import WRITE_COIL, WRITE_COILS
from ehswatch.simulators.plc import PlcSim
from ehswatch.thresholds.outcome import Evaluation
from tests.aio import HandTicker, eventually, run
from tests.test_interlock import CHEN, ZHANG, ZHAO, ZONES, Rig, rig, settled

ZONES_COIL = {z: coil for z, (_, _, coil, _) in ZONES.items()}

NOT_DURABLE = ("zone:z1oo1", AlarmKind.NOT_DURABLE)
OUTPUT_FAULT = ("zone:z1oo1", AlarmKind.OUTPUT_FAULT)


def rows(tmp_path: Path, sql: str) -> list[tuple[Any, ...]]:
    """A read of the database file by another connection (WAL: works while it is locked)."""
    con = sqlite3.connect(tmp_path / "ehswatch.db", timeout=0.1)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def zone_alarms(tmp_path: Path, kind: str) -> list[tuple[Any, ...]]:
    return rows(
        tmp_path,
        f"SELECT id, state, active, peak_tier FROM alarm WHERE sensor = 'zone:z1oo1' "
        f"AND kind = '{kind}' ORDER BY id",
    )


def zone_tickets(tmp_path: Path) -> list[tuple[Any, ...]]:
    return rows(
        tmp_path,
        "SELECT alarm_id, kind, grade FROM hazard_ticket WHERE sensor = 'zone:z1oo1' ORDER BY id",
    )


# ------------------------------------------------------------------ output first


def test_the_trip_reaches_the_plc_while_the_database_is_locked(tmp_path: Path) -> None:
    async def main() -> None:
        async with rig(tmp_path, alarms=True) as r:
            assert r.alarms is not None
            loop = asyncio.get_running_loop()
            # A backup, a DBA, a full disk: another connection holds the write lock.
            locker = sqlite3.connect(
                tmp_path / "ehswatch.db", isolation_level=None, check_same_thread=False
            )
            await asyncio.to_thread(locker.execute, "BEGIN EXCLUSIVE")
            try:
                t0 = loop.time()
                r.read({"A1": 45.0})
                await eventually(lambda: r.coil("z1oo1") is True, timeout=0.5, what="the coil")
                took = loop.time() - t0
                s = r.state("z1oo1")
                assert s.tripped and not s.latch_durable
                assert rows(tmp_path, "SELECT tripped FROM interlock_zone") == []  # not stored
                # The writer keeps trying; past 2 s the latch is reported not durable.
                assert r.alarms.conditions.get(NOT_DURABLE) is False
                r.clock.advance(2.5)
                await eventually(
                    lambda: r.alarms is not None and r.alarms.conditions.get(NOT_DURABLE) is True,
                    what="'interlock latch not durable' raised",
                )
                assert r.coil("z1oo1") is True  # the output stays asserted
            finally:
                await asyncio.to_thread(locker.execute, "ROLLBACK")
                locker.close()
            await eventually(
                lambda: r.state("z1oo1").latch_durable, timeout=10, what="the latch stored"
            )
            assert rows(tmp_path, "SELECT tripped, seq FROM interlock_zone") == [(1, 1)]
            await settled(r)
            actions = [e.action for e in await r.audit()]
            assert actions.count("trip") == 1
            assert r.alarms.conditions[NOT_DURABLE] is False
            # The alarm episode is in the database: raised at the interlock tier, returned;
            # and its hazard ticket is grade A.
            await eventually(
                lambda: (
                    [a[1:] for a in zone_alarms(tmp_path, "not-durable")]
                    == [(AlarmState.UNACK_RETURNED.value, 0, 3)]
                ),
                what="the alarm raised and returned",
            )
            await eventually(
                lambda: [t[1:] for t in zone_tickets(tmp_path)] == [("not-durable", "A")],
                what="an A ticket",
            )
            assert took < 0.5

    run(main())


def test_a_trip_stored_in_time_raises_no_durability_alarm(tmp_path: Path) -> None:
    async def main() -> None:
        async with rig(tmp_path, alarms=True) as r:
            assert r.alarms is not None
            r.read({"A1": 45.0})
            await eventually(lambda: r.state("z1oo1").latch_durable, what="the latch stored")
            r.clock.advance(5.0)
            await eventually(lambda: r.controller.turns > 5, what="turns")
            assert NOT_DURABLE not in r.alarms.conditions or not r.alarms.conditions[NOT_DURABLE]
            assert zone_alarms(tmp_path, "not-durable") == []

    run(main())


class Locked:
    """Another connection holding the database's write lock while inside."""

    def __init__(self, tmp_path: Path) -> None:
        self.con = sqlite3.connect(
            tmp_path / "ehswatch.db", isolation_level=None, check_same_thread=False
        )

    async def __aenter__(self) -> Locked:
        await asyncio.to_thread(self.con.execute, "BEGIN EXCLUSIVE")
        return self

    async def __aexit__(self, *_: object) -> None:
        await asyncio.to_thread(self.con.execute, "ROLLBACK")
        self.con.close()


def test_a_vote_back_while_the_reset_is_stored_trips_again_and_the_coil_never_drops(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        async with rig(tmp_path) as r:
            r.read({"A1": 45.0})
            await eventually(lambda: r.coil("z1oo1") is True, what="trip")
            await settled(r)
            r.read({"A1": 2.0})
            await eventually(lambda: not r.state("z1oo1").vote_holds, what="vote gone")
            async with Locked(tmp_path):
                reset = asyncio.create_task(r.controller.reset("z1oo1", ZHANG))
                await eventually(lambda: bool(r.controller._writes), what="the reset queued")
                r.read({"A1": 45.0})  # the vote comes back before the reset is stored
                await eventually(lambda: r.state("z1oo1").vote_holds, what="vote back")
                assert r.state("z1oo1").tripped  # still latched: the reset has not acted
            s = await reset
            assert s.tripped and s.seq == 3
            await settled(r)
            writes = [w.values for w in r.plc.writes if w.table == "coil" and w.address == 0]
            assert set(writes) == {(1,)}  # never the normal value
            assert [e.action for e in await r.audit()] == ["trip", "reset", "trip"]

    run(main())


def test_a_vote_while_the_bypass_is_stored_withdraws_the_bypass(tmp_path: Path) -> None:
    async def main() -> None:
        async with rig(tmp_path) as r:
            await r.controller.request_bypass(
                "z1oo1", CHEN, reason="replace filter", measure="fire watch", hours=2
            )
            async with Locked(tmp_path):
                second = asyncio.create_task(
                    r.controller.request_bypass("z1oo1", ZHAO, reason="", measure="", hours=2)
                )
                await eventually(lambda: bool(r.controller._writes), what="the bypass queued")
                r.read({"A1": 45.0})
                await eventually(lambda: r.coil("z1oo1") is True, what="the trip, at once")
            with pytest.raises(Refused, match="held while the bypass was being recorded"):
                await second
            s = r.state("z1oo1")
            assert s.tripped and not s.bypassed(r.clock()) and s.bypass_until is None
            await settled(r)
            assert rows(tmp_path, "SELECT tripped, bypass_until FROM interlock_zone") == [(1, None)]
            entries = [(e.action, e.actor) for e in await r.audit()]
            assert entries[-4:] == [
                ("bypass on", ZHAO.name),
                ("trip", "ehswatch"),
                ("bypass withdrawn", "ehswatch"),
                ("bypass refused", ZHAO.name),  # the person's refusal, audited too
            ]

    run(main())


# ------------------------------------------------------------------ heartbeat liveness


def test_the_heartbeat_stops_while_the_control_loop_is_stuck_and_resumes_after(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        async with rig(tmp_path, heartbeat_s=0.1) as r:
            link = r.controller.links["plc-1"]
            await eventually(lambda: len(r.plc.heartbeats) >= 3, what="heartbeats")
            async with r.controller._lock:  # the control loop cannot take a turn
                stuck_at = len(r.plc.heartbeats)
                await eventually(lambda: link.heartbeats_held >= 5, what="beats held back")
                # Within about 2 periods of the last turn, the register stops changing.
                assert len(r.plc.heartbeats) - stuck_at <= 3
                frozen = len(r.plc.heartbeats)
                await eventually(lambda: link.heartbeats_held >= 10, what="more beats held")
                assert len(r.plc.heartbeats) == frozen
                assert link.connected  # the link itself is fine: only the control path died
            await eventually(lambda: len(r.plc.heartbeats) >= frozen + 3, what="resumes")
            beats = r.plc.heartbeats
            assert beats[frozen:] == list(range(beats[frozen], beats[frozen] + len(beats) - frozen))

    run(main())


def test_the_heartbeat_stops_while_the_control_loop_fails(tmp_path: Path) -> None:
    async def main() -> None:
        async with rig(tmp_path, heartbeat_s=0.1) as r:
            link = r.controller.links["plc-1"]
            voter = r.controller.voter
            real = voter.feed

            def broken(ev: Evaluation) -> Any:
                raise RuntimeError("voter broke")

            voter.feed = broken  # type: ignore[method-assign]
            r.read({"A1": 45.0})  # the next turn fails on it
            await eventually(lambda: link.heartbeats_held >= 5, what="beats held back")
            frozen = len(r.plc.heartbeats)
            voter.feed = real  # type: ignore[method-assign]
            # The supervisor starts the loop again; the evaluation it failed on is kept.
            await eventually(lambda: r.coil("z1oo1") is True, timeout=5, what="the trip")
            await eventually(lambda: len(r.plc.heartbeats) >= frozen + 3, what="resumes")

    run(main())


# ------------------------------------------------------------------ output fault per command


class StuckPlc(PlcSim):
    """A PLC that accepts coil writes but, while `stuck`, keeps the old value: its
    readback never matches. `silent` (from PlcSim) stops it answering at all."""

    stuck = False

    async def _answer(
        self,
        fc: int,
        start: int,
        address: int,
        count: int,
        registers: list[int],
        values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        if self.stuck and values is not None and fc in (WRITE_COIL, WRITE_COILS):
            for k in range(len(values)):
                a = address + k
                values[k] = bool(registers[a // 16 - start] >> (a % 16) & 1)
        return await super()._answer(fc, start, address, count, registers, values)


def output_alarm(r: Rig) -> Any:
    assert r.alarms is not None
    return r.alarms.open.get(OUTPUT_FAULT)


def test_an_unconfirmed_command_is_an_a_grade_alarm_with_its_ticket_per_command(
    tmp_path: Path,
) -> None:
    ticker = HandTicker()  # the link's time: confirmation deadlines, retries

    async def main() -> None:
        async with rig(
            tmp_path, confirm_timeout_s=0.3, plc_class=StuckPlc, alarms=True, link_ticker=ticker
        ) as r:
            plc = cast(StuckPlc, r.plc)
            assert r.alarms is not None and r.desk is not None
            # 1. The trip (seq 1) is written but never reads back.
            plc.stuck = True
            r.read({"A1": 45.0})
            await ticker.until(
                lambda: r.state("z1oo1").output_fault, step=0.05, what="output fault"
            )
            assert r.state("z1oo1").tripped and r.coil("z1oo1") is not True
            await ticker.until(
                lambda: output_alarm(r) is not None and output_alarm(r).id is not None,
                step=0.05,
                what="the alarm written",
            )
            a = output_alarm(r)
            assert (a.active, a.peak_tier, a.state) == (True, 3, AlarmState.UNACK_ACTIVE)
            assert a.route_tier == "interlock"
            await ticker.until(
                lambda: [t[1:] for t in zone_tickets(tmp_path)] == [("output-fault", "A")],
                step=0.05,
                what="an A ticket",
            )
            routes = Notifications.model_validate(
                {"routes": [{"match": {"tiers": ["interlock"]}, "notify": ["shift-lead"]}]}
            )
            assert Router(routes).channels(a) == ["shift-lead"]
            with pytest.raises(Refused, match="cannot be shelved"):
                await r.alarms.shelve(a.id, ZHANG, minutes=10, reason="nuisance")

            # 2. The PLC takes it: command 1 confirmed clears the fault; the alarm returns.
            plc.stuck = False
            await ticker.until(
                lambda: not r.state("z1oo1").output_fault, step=0.05, what="confirmed"
            )
            assert r.coil("z1oo1") is True
            await ticker.until(lambda: not output_alarm(r).active, step=0.05, what="alarm returned")
            await r.alarms.ack(output_alarm(r).id, ZHANG)  # the episode closes

            # 3. Reset (seq 2), confirmed.
            r.read({"A1": 2.0})
            await r.controller.reset("z1oo1", ZHANG)
            await ticker.until(lambda: r.coil("z1oo1") is False, step=0.05, what="normal again")
            await ticker.until(
                lambda: r.controller.links["plc-1"].pending("z1oo1") is None,
                step=0.05,
                what="seq 2 confirmed",
            )
            assert not r.state("z1oo1").output_fault

            # 4. The next trip (seq 3) unconfirmed: its own record raises the fault again.
            plc.stuck = True
            r.read({"A1": 45.0})
            await ticker.until(
                lambda: r.state("z1oo1").output_fault, step=0.05, what="output fault again"
            )
            assert r.state("z1oo1").seq == 3
            await ticker.until(
                lambda: output_alarm(r) is not None and output_alarm(r).active,
                step=0.05,
                what="a new alarm episode",
            )
            await ticker.until(
                lambda: len(zone_tickets(tmp_path)) == 2, step=0.05, what="its own A ticket"
            )
            assert [t[2] for t in zone_tickets(tmp_path)] == ["A", "A"]

            # 5. A reset alone never clears it: the PLC answers nothing now.
            plc.silent = True
            r.read({"A1": 2.0})
            s = await r.controller.reset("z1oo1", ZHANG)
            assert s.seq == 4 and s.output_fault
            until = ticker.now() + 1.0  # past the 0.3 s confirm timeout of command 4
            await ticker.until(lambda: ticker.now() > until, step=0.05, what="1 s of link time")
            assert r.state("z1oo1").output_fault and output_alarm(r).active
            # Only a confirmed readback of a later (or the same) command does.
            plc.silent = False
            plc.stuck = False
            await ticker.until(
                lambda: not r.state("z1oo1").output_fault,
                step=0.05,
                timeout=10,
                what="command 4 confirmed",
            )
            assert r.coil("z1oo1") is False
            await ticker.until(lambda: not output_alarm(r).active, step=0.05, what="alarm returned")
            await settled(r)
            audit = [(e.action, e.details().get("seq")) for e in await r.audit()]
            faults = [seq for action, seq in audit if action == "output fault"]
            assert faults[0] == 1 and 3 in faults and 4 in faults
            assert [seq for action, seq in audit if action == "output confirmed"] == [1, 4]

    run(main(), timeout=90)


def test_a_late_confirmation_of_an_older_command_does_not_clear_a_newer_fault(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        async with rig(tmp_path, alarms=True) as r:
            report = r.controller._output_report  # what the PLC link calls, per command
            report("z1oo1", 3, False, "seq 3 not confirmed")
            assert r.state("z1oo1").output_fault
            report("z1oo1", 2, True, "seq 2 read back, late")
            assert r.state("z1oo1").output_fault
            report("z1oo1", 4, False, "seq 4 not confirmed either")
            report("z1oo1", 3, True, "seq 3 read back, late")
            assert r.state("z1oo1").output_fault
            report("z1oo1", 4, True, "seq 4 read back")
            assert not r.state("z1oo1").output_fault
            assert r.alarms is not None and r.alarms.conditions[OUTPUT_FAULT] is False

    run(main())


def test_time_is_the_service_clock(tmp_path: Path) -> None:
    async def main() -> None:
        async with rig(tmp_path) as r:
            r.read({"A1": 45.0})
            await eventually(lambda: r.state("z1oo1").tripped, what="trip")
            assert r.state("z1oo1").tripped_at == r.clock()
            assert abs(r.clock() - time.time()) > 1000  # the test clock, not the wall clock

    run(main())


@pytest.mark.parametrize(
    ("zone", "trip", "sensor", "value", "quality"),
    [
        ("z1oo1", {"A1": 45.0}, "A1", 39.5, 0),  # back inside setpoint - deadband
        ("znofault", {"E1": 45.0, "E2": 2.0}, "E1", float("nan"), 2),  # faulted
        ("z2oo3", {"D1": 45.0, "D2": 45.0, "D3": 2.0}, "D1", float("nan"), 2),  # faulted
    ],
)
def test_a_reset_that_stops_being_clear_while_it_is_stored_trips_again(
    tmp_path: Path, zone: str, trip: dict[str, float], sensor: str, value: float, quality: int
) -> None:
    """Clear to reset when asked, not any more once stored: the zone trips again at once
    and its output is never written back to normal."""

    async def main() -> None:
        async with rig(tmp_path) as r:
            r.read(trip)
            await eventually(lambda: r.coil(zone) is True, what="trip")
            await settled(r)
            r.read(dict.fromkeys(trip, 2.0))
            await eventually(lambda: not r.state(zone).vote_holds, what="vote gone")
            writes = len(r.plc.writes)
            async with Locked(tmp_path):
                reset = asyncio.create_task(r.controller.reset(zone, ZHANG))
                await eventually(lambda: bool(r.controller._writes), what="the reset queued")
                r.clock.advance(1.0)
                idx = r.stage.table.index
                r.stage.evaluate(ReadingBatch.of([idx[sensor]], [value], [r.clock()], [quality]))
            s = await reset
            assert s.tripped
            await settled(r)
            address = ZONES_COIL[zone]
            assert [
                w
                for w in r.plc.writes[writes:]
                if w.table == "coil" and w.address == address and w.values == (0,)
            ] == []
            assert r.coil(zone) is True
            last = (await r.audit())[-1]
            assert last.action == "trip"
            assert "while the reset was being stored" in last.details()["why"]

    run(main())


def test_text_the_database_cannot_take_never_holds_back_a_trip(tmp_path: Path) -> None:
    """A reason with a lone surrogate (not over HTTP, which refuses it; a direct call) is
    stored escaped; the trip after it is stored too."""

    async def main() -> None:
        async with rig(tmp_path) as r:
            await r.controller.request_bypass(
                "z1oo1", CHEN, reason="filter \ud800", measure="watch", hours=1
            )
            r.read({"B1": 45.0})
            await eventually(lambda: r.coil("z1oo2") is True, what="trip")
            await eventually(lambda: r.state("z1oo2").latch_durable, what="the trip stored")
            actions = [e.action for e in await r.audit()]
            assert actions[-2:] == ["bypass requested", "trip"]

    run(main())

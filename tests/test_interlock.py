"""Interlocks, against the PLC simulator over real Modbus TCP."""

from __future__ import annotations

import asyncio
import itertools
import math
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from pymodbus.constants import ExcCodes
from sqlalchemy import select

from ehswatch.alarms.manager import AlarmManager
from ehswatch.alarms.model import AlarmKind
from ehswatch.audit import AuditEntry
from ehswatch.clock import ServiceClock, SteppableClock
from ehswatch.component import LOOP_TICKER, Ticker
from ehswatch.config import PlantConfig, parse_config
from ehswatch.db import Database
from ehswatch.hazards.desk import HazardDesk
from ehswatch.ingest.queue import ReadingQueue
from ehswatch.interlock.bypass import APPROVAL_WINDOW_S
from ehswatch.interlock.controller import InterlockController
from ehswatch.interlock.voting import VotingTable, vote
from ehswatch.readings import ReadingBatch
from ehswatch.roles import Actor, Forbidden, Refused
from ehswatch.simulators.modbus_server import WRITE_COIL, WRITE_COILS
from ehswatch.simulators.plc import PlcSim
from ehswatch.thresholds.stage import EvaluatorStage
from ehswatch.thresholds.table import ThresholdTable
from tests.aio import HandTicker, eventually, run
from tests.postgres import database_url, query
from tests.servers import free_port

OK, TRIP, FAULT = "ok", "trip", "fault"
LI = Actor(name="li.wei", role="operator")
ZHANG = Actor(name="zhang.min", role="supervisor")
CHEN = Actor(name="chen.jie", role="safety_director")
ZHAO = Actor(name="zhao.lei", role="gm")
WU = Actor(name="wu.gang", role="safety_director")

ZONES = {  # zone: (voting, voters, coil, fault_counts_as_trip)
    "z1oo1": ("1oo1", ["A1"], 0, True),
    "z1oo2": ("1oo2", ["B1", "B2"], 1, True),
    "z2oo2": ("2oo2", ["C1", "C2"], 2, True),
    "z2oo3": ("2oo3", ["D1", "D2", "D3"], 3, True),
    "znofault": ("1oo2", ["E1", "E2"], 4, False),
}
COIL = {z: coil for z, (_, _, coil, _) in ZONES.items()}


def plant(
    plc_port: int, db: Path, confirm_timeout_s: float = 1.0, heartbeat_s: float = 0.1
) -> PlantConfig:
    doc: dict[str, Any] = {
        "site": {"id": "plant-1", "name": "test"},
        "database": {"url": database_url(db.parent, db.name)},
        "sensor_types": {
            "dust": {
                "unit": "mg/m3",
                "high": {"warning": 10, "alarm": 20, "interlock": 40},
                "deadband": 1.0,
                "stale_after_s": 3600,
            }
        },
        "modbus_devices": [{"id": "dm", "host": "127.0.0.1", "port": 1}],
        "plcs": [
            {
                "id": "plc-1",
                "host": "127.0.0.1",
                "port": plc_port,
                "confirm_timeout_s": confirm_timeout_s,
                "heartbeat": {"register": 100, "period_s": heartbeat_s},
            }
        ],
        "zones": [
            {
                "id": z,
                "interlock": {
                    "plc": "plc-1",
                    "coil": coil,
                    "voting": v,
                    "sensor_types": ["dust"],
                    "fault_counts_as_trip": f,
                    "max_bypass_h": 8,
                },
            }
            for z, (v, _, coil, f) in ZONES.items()
        ],
        "sensors": [
            {"id": s, "type": "dust", "zone": z, "modbus": {"device": "dm", "register": k * 2}}
            for k, (z, s) in enumerate((z, s) for z, (_, ss, _, _) in ZONES.items() for s in ss)
        ],
        "hazards": {"evidence_dir": str(db.parent / "evidence")},
    }
    return parse_config(yaml.safe_dump(doc), env={})


class Clock:
    """The service clock of the tests, on a `SteppableClock`: time moves when told."""

    def __init__(self) -> None:
        self.steps = SteppableClock()
        self.service: ServiceClock = self.steps.service_clock()

    def __call__(self) -> float:
        return self.service()

    def advance(self, seconds: float) -> None:
        self.steps.advance(seconds)


@dataclass
class Rig:
    config: PlantConfig
    plc: PlcSim
    stage: EvaluatorStage
    controller: InterlockController
    db: Database
    clock: Clock
    alarms: AlarmManager | None = None
    desk: HazardDesk | None = None

    def read(self, values: dict[str, float]) -> None:
        """Readings a second later, through the evaluator stage."""
        self.clock.advance(1.0)
        now = self.clock()
        idx = self.stage.table.index
        self.stage.evaluate(
            ReadingBatch.of([idx[s] for s in values], list(values.values()), [now] * len(values))
        )

    @asynccontextmanager
    async def rules_held(self) -> AsyncIterator[None]:
        """Hold the rules as a person's command does while it is stored: evaluations
        queue up in the inbox and no turn is taken until the block ends."""
        async with self.controller.rules_held():
            yield

    def batch(self, readings: list[tuple[str, float, float]]) -> None:
        """One batch a second later: (sensor, value, seconds after the batch's time)."""
        self.clock.advance(1.0)
        now = self.clock()
        idx = self.stage.table.index
        self.stage.evaluate(
            ReadingBatch.of(
                [idx[s] for s, _, _ in readings],
                [v for _, v, _ in readings],
                [now + dt for _, _, dt in readings],
            )
        )

    def fault(self, sensor: str) -> None:
        self.clock.advance(1.0)
        self.stage.evaluate(
            ReadingBatch.of([self.stage.table.index[sensor]], [math.nan], [self.clock()], [2])
        )

    def state(self, zone: str) -> Any:
        return self.controller.states[zone]

    def coil(self, zone: str) -> bool | None:
        return self.plc.coils.get(COIL[zone])

    async def audit(self) -> list[AuditEntry]:
        async with self.db.new_session() as session:
            return list(
                (await session.execute(select(AuditEntry).order_by(AuditEntry.id))).scalars()
            )


async def after_a_turn(r: Rig) -> None:
    """Until the control loop has taken a turn of the rules from here: by then whatever
    the rules decide on everything fed so far is decided, and any output it calls for is
    commanded to its link (a command is given inside the turn). No wall time decides."""
    turns = r.controller.turns
    async with r.controller.rules_held():
        pass  # leaving the block wakes the control loop
    await eventually(lambda: r.controller.turns > turns, what="a turn of the rules")


def nothing_commanded(r: Rig, zone: str) -> bool:
    """No output was commanded for `zone`: none waits on the link, none reached the PLC."""
    out = r.controller.links["plc-1"].outputs[zone]
    return r.controller.links["plc-1"].pending(zone) is None and out.address not in (
        r.plc.coils if out.table == "coil" else r.plc.holding
    )


async def settled(r: Rig) -> None:
    """Until the controller has stored everything it queued."""
    await eventually(lambda: not r.controller._writes, what="the interlock writes stored")


@asynccontextmanager
async def rig(
    tmp_path: Path,
    *,
    plc_port: int | None = None,
    clock: Clock | None = None,
    confirm_timeout_s: float = 1.0,
    heartbeat_s: float = 0.1,
    plc_class: type[PlcSim] = PlcSim,
    alarms: bool = False,
    link_ticker: Ticker = LOOP_TICKER,
    fence: Callable[[], bool] | None = None,
) -> AsyncIterator[Rig]:
    config = plant(
        plc_port or free_port(), tmp_path / "ehswatch.db", confirm_timeout_s, heartbeat_s
    )
    clock = clock or Clock()
    table = ThresholdTable.from_config(config)
    stage = EvaluatorStage(table=table, queue=ReadingQueue(), clock=clock)
    async with AsyncExitStack() as stack:
        sim = await stack.enter_async_context(plc_class(config.plcs[0]))
        db = await stack.enter_async_context(Database(config.database.url))
        manager = desk = None
        if alarms:
            desk = HazardDesk(config=config, db=db, clock=clock)
            manager = AlarmManager(
                config=config, evaluator=stage.evaluator, db=db, clock=clock, on_commit=[desk.wake]
            )
            stage.listen(manager.on_evaluation)
            await stack.enter_async_context(desk)
            await stack.enter_async_context(manager)
        controller = InterlockController(
            config=config,
            evaluator=stage.evaluator,
            db=db,
            alarms=manager,
            clock=clock,
            reconcile_s=0.2,
            link_ticker=link_ticker,
            fence=fence,
        )
        stage.listen(controller.on_evaluation)
        await stack.enter_async_context(controller)
        await eventually(lambda: controller.links["plc-1"].connected, what="PLC link")
        yield Rig(config, sim, stage, controller, db, clock, manager, desk)


# ------------------------------------------------------------------ voting, pure


def votes_for(voting: str, states: tuple[str, ...], fault_trips: bool = True) -> bool:
    tv = VotingTable(
        zone_ids=("z",),
        voter=np.arange(len(states)),
        zone_of=np.zeros(len(states), dtype=np.intp),
        need=np.array([int(voting[0])]),
        fault_trips=np.array([fault_trips]),
    )
    tier = np.array([3 if s == TRIP else (3 if s == FAULT else 0) for s in states], dtype=np.int8)
    faulted = np.array([s == FAULT for s in states])
    return bool(vote(tv, tier, faulted)[0][0])


def test_voting_truth_table_1oo1() -> None:
    assert [votes_for("1oo1", (s,)) for s in (OK, TRIP, FAULT)] == [False, True, True]


def test_voting_truth_table_1oo2() -> None:
    table = {
        (OK, OK): False,
        (OK, TRIP): True,
        (TRIP, OK): True,
        (TRIP, TRIP): True,
        (OK, FAULT): True,
        (FAULT, OK): True,
        (FAULT, FAULT): True,
        (TRIP, FAULT): True,
        (FAULT, TRIP): True,
    }
    assert {k: votes_for("1oo2", k) for k in table} == table


def test_voting_truth_table_2oo2() -> None:
    table = {
        (OK, OK): False,
        (OK, TRIP): False,
        (TRIP, OK): False,
        (TRIP, TRIP): True,
        (OK, FAULT): False,
        (FAULT, OK): False,
        (FAULT, FAULT): True,
        (TRIP, FAULT): True,
        (FAULT, TRIP): True,
    }
    assert {k: votes_for("2oo2", k) for k in table} == table


def test_voting_truth_table_2oo3() -> None:
    for states in itertools.product((OK, TRIP, FAULT), repeat=3):
        assert votes_for("2oo3", states) == (sum(s != OK for s in states) >= 2), states


def test_a_faulted_sensor_does_not_vote_when_the_zone_tolerates_a_lost_channel() -> None:
    # fault_counts_as_trip: false — and its held tier 3 is never used either.
    assert votes_for("1oo2", (FAULT, OK), fault_trips=False) is False
    assert votes_for("1oo2", (FAULT, FAULT), fault_trips=False) is False
    assert votes_for("1oo2", (FAULT, TRIP), fault_trips=False) is True
    for states in itertools.product((OK, TRIP, FAULT), repeat=3):
        assert votes_for("2oo3", states, fault_trips=False) == (sum(s == TRIP for s in states) >= 2)


# ------------------------------------------------------------------ trips on real Modbus


def test_a_holding_vote_latches_the_zone_and_the_plc_confirms_the_trip(tmp_path: Path) -> None:
    async def main() -> None:
        async with rig(tmp_path) as r:
            r.read({"B1": 5.0, "B2": 45.0})
            await eventually(lambda: r.plc.coils.get(1) is True, what="coil 1 tripped")
            await eventually(
                lambda: r.state("z1oo2").tripped and not r.state("z1oo2").output_fault,
                what="latched and confirmed",
            )
            s = r.state("z1oo2")
            assert s.seq == 1 and s.trip_cause == ("B2",) and s.trip_votes == 1
            assert [w.values for w in r.plc.writes if w.table == "coil" and w.address == 1] == [
                (1,)
            ]
            assert r.plc.coils.get(0) is None  # other zones untouched
            await eventually(lambda: r.state("z1oo2").latch_durable, what="the trip stored")
            assert [e.action for e in await r.audit()] == ["trip"]

    run(main())


def test_2oo2_needs_both_and_2oo3_needs_two(tmp_path: Path) -> None:
    async def main() -> None:
        async with rig(tmp_path) as r:
            r.read({"C1": 45.0, "D1": 45.0})
            await eventually(
                lambda: r.state("z2oo2").votes == 1 and r.state("z2oo3").votes == 1,
                what="one vote each",
            )
            assert not r.state("z2oo2").tripped and not r.state("z2oo3").tripped
            r.read({"C2": 41.0, "D3": 50.0})
            await eventually(
                lambda: r.state("z2oo2").tripped and r.state("z2oo3").tripped, what="both tripped"
            )
            await eventually(
                lambda: r.plc.coils.get(2) is True and r.plc.coils.get(3) is True, what="coils"
            )

    run(main())


def test_a_lost_sensor_trips_a_fail_safe_zone(tmp_path: Path) -> None:
    async def main() -> None:
        async with rig(tmp_path) as r:
            r.fault("A1")
            r.fault("E1")
            await eventually(lambda: r.state("z1oo1").tripped, what="fail-safe trip")
            assert r.state("z1oo1").trip_cause == ("A1",)
            assert not r.state("znofault").tripped  # it tolerates a lost channel
            assert r.state("znofault").votes == 0

    run(main())


def test_the_latch_holds_after_the_values_fall(tmp_path: Path) -> None:
    async def main() -> None:
        async with rig(tmp_path) as r:
            r.read({"A1": 45.0})
            await eventually(lambda: r.plc.coils.get(0) is True, what="coil tripped")
            r.read({"A1": 3.0})
            for _ in range(5):
                r.read({"A1": 2.0})
            await eventually(lambda: not r.state("z1oo1").vote_holds, what="vote gone")
            writes = len(r.plc.writes)
            await eventually(lambda: len(r.plc.writes) > writes + 3, what="the link writing on")
            assert r.state("z1oo1").tripped
            assert r.plc.coils.get(0) is True

    run(main())


# ------------------------------------------------------------------ votes on events, not snapshots


def test_a_transient_inside_one_batch_trips_2oo2(tmp_path: Path) -> None:
    async def main() -> None:
        async with rig(tmp_path) as r:
            # Both CH channels at the interlock tier together for 100 ms, inside one batch.
            r.batch([("C1", 60.0, 0.0), ("C2", 61.0, 0.1), ("C1", 5.0, 0.2), ("C2", 5.0, 0.3)])
            tier = r.stage.evaluator.tier
            assert tier[r.stage.table.index["C1"]] == tier[r.stage.table.index["C2"]] == 0
            await eventually(lambda: r.coil("z2oo2") is True, what="coil 2 tripped")
            s = r.state("z2oo2")
            assert s.tripped and s.trip_cause == ("C1", "C2") and not s.vote_holds

    run(main())


def test_a_1oo1_spike_inside_one_batch_trips(tmp_path: Path) -> None:
    async def main() -> None:
        async with rig(tmp_path) as r:
            r.batch([("A1", 5.0, 0.0), ("A1", 45.0, 0.1), ("A1", 5.0, 0.2)])
            await eventually(lambda: r.coil("z1oo1") is True, what="coil 0 tripped")
            assert r.state("z1oo1").tripped and r.state("z1oo1").votes == 0

    run(main())


def test_a_nan_then_a_good_value_trips_as_a_fault_vote(tmp_path: Path) -> None:
    async def main() -> None:
        async with rig(tmp_path) as r:
            r.batch(
                [("A1", math.nan, 0.0), ("A1", 5.0, 0.1), ("E1", math.nan, 0.0), ("E1", 5.0, 0.1)]
            )
            await eventually(lambda: r.coil("z1oo1") is True, what="coil 0 tripped")
            assert r.state("z1oo1").trip_cause == ("A1",)
            # A zone that tolerates a lost channel: the fault is no vote.
            await after_a_turn(r)
            assert not r.state("znofault").tripped and nothing_commanded(r, "znofault")

    run(main())


def test_a_trip_is_commanded_within_the_evaluation_that_completes_the_vote(
    tmp_path: Path,
) -> None:
    """Nothing else runs between the evaluation and the PLC command: storage, alarms and
    tickets hear of the evaluation only after the output is commanded."""

    async def main() -> None:
        async with rig(tmp_path) as r:
            r.read({"A1": 45.0})  # no await between the evaluation and the checks
            assert r.state("z1oo1").tripped
            assert r.controller.links["plc-1"].pending("z1oo1") == r.state("z1oo1").seq
            await eventually(lambda: r.coil("z1oo1") is True, what="coil tripped")

    run(main())


def test_two_batches_evaluated_before_the_controller_runs_both_count(tmp_path: Path) -> None:
    async def main() -> None:
        async with rig(tmp_path) as r:
            async with r.rules_held():
                r.batch([("C1", 60.0, 0.0)])
                r.batch([("C2", 61.0, 0.0), ("C1", 5.0, 0.1), ("C2", 5.0, 0.2)])
                r.batch([("A1", 45.0, 0.0)])
                r.batch([("A1", 5.0, 0.0)])
                assert len(r.controller.inbox) == 4  # nothing has run in between
                assert not r.state("z2oo2").tripped
            await eventually(
                lambda: r.coil("z2oo2") is True and r.coil("z1oo1") is True, what="both coils"
            )

    run(main())


def test_a_vote_that_held_once_trips_only_once(tmp_path: Path) -> None:
    async def main() -> None:
        async with rig(tmp_path) as r:
            r.batch([("A1", 45.0, 0.0), ("A1", 5.0, 0.1)])
            await eventually(lambda: r.coil("z1oo1") is True, what="trip")
            for _ in range(3):
                r.read({"A1": 2.0})
            await settled(r)
            assert r.state("z1oo1").seq == 1
            assert [e.action for e in await r.audit()] == ["trip"]

    run(main())


# ------------------------------------------------------------------ reset


def test_reset_refused_while_the_vote_holds(tmp_path: Path) -> None:
    async def main() -> None:
        async with rig(tmp_path) as r:
            r.read({"A1": 45.0})
            await eventually(lambda: r.state("z1oo1").tripped, what="trip")
            with pytest.raises(Refused, match="vote still holds"):
                await r.controller.reset("z1oo1", ZHANG)
            assert r.state("z1oo1").tripped and r.plc.coils[0] is True
            entries = await r.audit()
            assert entries[-1].action == "reset refused" and entries[-1].actor == "zhang.min"
            assert "vote still holds" in entries[-1].details()["why"]

    run(main())


def test_reset_refused_for_a_role_too_low(tmp_path: Path) -> None:
    async def main() -> None:
        async with rig(tmp_path) as r:
            r.read({"A1": 45.0})
            await eventually(lambda: r.state("z1oo1").tripped, what="trip")
            r.read({"A1": 2.0})
            with pytest.raises(Forbidden):
                await r.controller.reset("z1oo1", LI)
            assert r.state("z1oo1").tripped
            assert (await r.audit())[-1].action == "reset refused"

    run(main())


def test_reset_refused_until_the_value_is_back_past_setpoint_minus_deadband(tmp_path: Path) -> None:
    async def main() -> None:
        async with rig(tmp_path) as r:
            r.read({"A1": 45.0})
            await eventually(lambda: r.state("z1oo1").tripped, what="trip")
            r.read({"A1": 39.5})  # below 40, inside the 1.0 deadband: tier 3 holds, vote too
            with pytest.raises(Refused, match="vote still holds"):
                await r.controller.reset("z1oo1", ZHANG)
            r.fault("A1")  # no valid reading: never resettable
            with pytest.raises(Refused, match="A1 has no valid reading"):
                await r.controller.reset("z1oo1", ZHANG)
            r.read({"A1": 38.9})  # past 40 - 1: the vote is gone, and the reset acts
            s = await r.controller.reset("z1oo1", ZHANG)
            assert not s.tripped
            await eventually(lambda: r.coil("z1oo1") is False, what="coil back to normal")

    run(main())


def test_a_reset_is_refused_while_a_voting_value_is_inside_the_deadband(tmp_path: Path) -> None:
    async def main() -> None:
        async with rig(tmp_path) as r:
            r.read({"C1": 45.0, "C2": 45.0})
            await eventually(lambda: r.state("z2oo2").tripped, what="trip")
            # C1 below the setpoint 40 but not below 40 - 1: its tier holds, one vote of 2.
            r.read({"C1": 39.5, "C2": 5.0})
            await eventually(lambda: r.state("z2oo2").votes == 1, what="one vote left")
            assert not r.state("z2oo2").vote_holds
            with pytest.raises(Refused, match=r"C1 reads 39.5, not yet below 40 - deadband 1"):
                await r.controller.reset("z2oo2", ZHANG)
            assert r.state("z2oo2").tripped and r.coil("z2oo2") is True
            last = (await r.audit())[-1]
            assert last.action == "reset refused" and "deadband" in last.details()["why"]
            r.read({"C1": 38.5, "C2": 5.0})  # past the deadband
            s = await r.controller.reset("z2oo2", ZHANG)
            assert not s.tripped
            await eventually(lambda: r.coil("z2oo2") is False, what="coil back to normal")

    run(main())


def test_a_reset_decides_on_what_happened_not_yet_seen_by_the_control_loop(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        async with rig(tmp_path) as r:
            r.read({"A1": 45.0})
            await eventually(lambda: r.state("z1oo1").tripped, what="trip")
            r.read({"A1": 2.0})
            await eventually(lambda: not r.state("z1oo1").vote_holds, what="vote gone")
            r.read({"A1": 45.0})  # the control loop has not run since
            with pytest.raises(Refused, match="vote still holds"):
                await r.controller.reset("z1oo1", ZHANG)
            assert r.state("z1oo1").tripped and r.coil("z1oo1") is True

    run(main())


def test_reset_accepted_writes_the_normal_value_with_readback(tmp_path: Path) -> None:
    async def main() -> None:
        async with rig(tmp_path) as r:
            r.read({"A1": 45.0})
            await eventually(lambda: r.plc.coils.get(0) is True, what="trip")
            r.read({"A1": 2.0})
            s = await r.controller.reset("z1oo1", ZHANG, comment="extraction repaired")
            assert not s.tripped and s.seq == 2
            await eventually(lambda: r.plc.coils.get(0) is False, what="coil back to normal")
            last = (await r.audit())[-1]
            assert (last.action, last.actor, last.role, last.comment) == (
                "reset",
                "zhang.min",
                "supervisor",
                "extraction repaired",
            )
            with pytest.raises(Refused, match="not tripped"):
                await r.controller.reset("z1oo1", ZHANG)

    run(main())


def test_nothing_resets_by_itself(tmp_path: Path) -> None:
    async def main() -> None:
        async with rig(tmp_path) as r:
            r.read({"A1": 45.0})
            await eventually(lambda: r.plc.coils.get(0) is True, what="trip")
            for _ in range(10):
                r.read({"A1": 1.0})
            r.clock.advance(24 * 3600)
            await after_a_turn(r)
            r.read({"A1": 1.0})
            await after_a_turn(r)
            assert r.state("z1oo1").tripped and r.plc.coils[0] is True
            assert r.controller.links["plc-1"].pending("z1oo1") is None  # no reset commanded

    run(main())


# ------------------------------------------------------------------ outputs


def test_a_plc_that_does_not_confirm_raises_an_output_fault(tmp_path: Path) -> None:
    async def main() -> None:
        async with rig(tmp_path, confirm_timeout_s=0.5) as r:
            r.plc.silent = True
            r.read({"A1": 45.0})
            await eventually(lambda: r.state("z1oo1").output_fault, timeout=10, what="output fault")
            assert r.state("z1oo1").tripped
            r.plc.silent = False
            await eventually(
                lambda: not r.state("z1oo1").output_fault and r.plc.coils.get(0) is True,
                timeout=10,
                what="confirmed once the PLC answers",
            )
            await settled(r)
            actions = [e.action for e in await r.audit()]
            assert actions == ["trip", "output fault", "output confirmed"]

    run(main())


def test_a_restarted_plc_gets_its_trip_reasserted(tmp_path: Path) -> None:
    async def main() -> None:
        async with rig(tmp_path) as r:
            r.read({"A1": 45.0})
            await eventually(lambda: r.plc.coils.get(0) is True, what="trip")
            await r.plc.stop()
            await r.plc.start()  # comes up with every output off
            assert r.plc.coils == {}
            await eventually(lambda: r.plc.coils.get(0) is True, timeout=10, what="re-asserted")
            assert r.plc.coils.get(1) is None  # only latched zones are written

    run(main())


def test_the_heartbeat_is_written_once_per_period_and_counts_up(tmp_path: Path) -> None:
    """On the link's own time (moved by hand): one beat at connection, then exactly one
    per period — none while the time stands still, however long the wall clock runs."""
    ticker = HandTicker()

    async def main() -> None:
        async with rig(tmp_path, link_ticker=ticker, heartbeat_s=0.5) as r:
            await eventually(lambda: len(r.plc.heartbeats) == 1, what="the first beat")
            for k in range(2, 7):
                looked = ticker.waits
                ticker.advance(0.25)  # half a period: no beat
                await eventually(lambda looked=looked: ticker.waits > looked, what="a look")
                assert len(r.plc.heartbeats) == k - 1
                ticker.advance(0.25)
                await eventually(lambda k=k: len(r.plc.heartbeats) == k, what=f"beat {k}")
            beats = r.plc.heartbeats
            assert beats == list(range(beats[0], beats[0] + 6))

    run(main())


# ------------------------------------------------------------------ bypass


async def bypass(r: Rig, zone: str = "z1oo1", hours: float = 2.0) -> None:
    await r.controller.request_bypass(
        zone, CHEN, reason="replace filter", measure="portable monitor + fire watch", hours=hours
    )
    await r.controller.request_bypass(zone, ZHAO, reason="", measure="", hours=hours)


def test_a_bypass_needs_two_different_people_one_safety_director_one_gm(tmp_path: Path) -> None:
    async def main() -> None:
        async with rig(tmp_path) as r:
            with pytest.raises(Forbidden):
                await r.controller.request_bypass("z1oo1", ZHANG, reason="r", measure="m", hours=1)
            with pytest.raises(Refused, match="reason and a compensating measure"):
                await r.controller.request_bypass("z1oo1", CHEN, reason="r", measure=" ", hours=1)
            s = await r.controller.request_bypass(
                "z1oo1", CHEN, reason="replace filter", measure="fire watch", hours=2
            )
            assert s.pending is not None and not s.bypassed(r.clock())
            with pytest.raises(Refused, match="different person"):
                await r.controller.request_bypass("z1oo1", CHEN, reason="x", measure="y", hours=2)
            with pytest.raises(Refused, match="from the gm"):
                await r.controller.request_bypass("z1oo1", WU, reason="x", measure="y", hours=2)
            s = await r.controller.request_bypass("z1oo1", ZHAO, reason="", measure="", hours=3)
            assert s.bypassed(r.clock()) and s.bypass_by == ("chen.jie", "zhao.lei")
            assert s.bypass_until == r.clock() + 2 * 3600  # the smaller of the two asks
            assert s.bypass_reason == "replace filter"
            actions = [e.action for e in await r.audit()]
            assert actions.count("bypass refused") == 4 and actions[-1] == "bypass on"

    run(main())


def test_a_bypass_is_at_most_max_bypass_h_and_never_on_a_tripped_zone(tmp_path: Path) -> None:
    async def main() -> None:
        async with rig(tmp_path) as r:
            with pytest.raises(Refused, match="at most 8 h"):
                await r.controller.request_bypass("z1oo1", CHEN, reason="r", measure="m", hours=9)
            r.read({"A1": 45.0})
            await eventually(lambda: r.state("z1oo1").tripped, what="trip")
            with pytest.raises(Refused, match="vote of z1oo1 holds now"):
                await r.controller.request_bypass("z1oo1", CHEN, reason="r", measure="m", hours=1)
            r.read({"A1": 2.0})  # the vote is gone, the latch holds
            with pytest.raises(Refused, match="tripped now"):
                await r.controller.request_bypass("z1oo1", CHEN, reason="r", measure="m", hours=1)

    run(main())


def test_a_bypass_is_refused_while_the_vote_holds_before_the_zone_latched(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        async with rig(tmp_path) as r:
            await r.controller.request_bypass(
                "z1oo1", CHEN, reason="replace filter", measure="fire watch", hours=2
            )
            async with r.rules_held():
                r.read({"A1": 45.0})  # the vote holds; no turn of the rules latched it yet
                assert not r.state("z1oo1").tripped
            # The bypass takes the rules before the control loop's next turn.
            with pytest.raises(Refused, match="refused while the vote holds"):
                await r.controller.request_bypass("z1oo1", ZHAO, reason="", measure="", hours=2)
            assert not r.state("z1oo1").bypassed(r.clock())
            await eventually(lambda: r.coil("z1oo1") is True, what="the trip, not a bypass")
            last = (await r.audit())[-1]
            assert (last.action, last.actor) == ("bypass refused", "zhao.lei")
            assert "vote of z1oo1 holds now" in last.details()["why"]

            # Latched or not: a 1oo2 zone whose vote holds while it is latched.
            r.read({"B1": 45.0})
            await eventually(lambda: r.state("z1oo2").tripped, what="z1oo2 trip")
            with pytest.raises(Refused, match="refused while the vote holds"):
                await r.controller.request_bypass("z1oo2", CHEN, reason="r", measure="m", hours=1)

    run(main())


def test_the_first_approval_lapses_after_the_window(tmp_path: Path) -> None:
    async def main() -> None:
        async with rig(tmp_path) as r:
            await r.controller.request_bypass("z1oo1", CHEN, reason="r", measure="m", hours=1)
            r.clock.advance(APPROVAL_WINDOW_S + 1)
            s = await r.controller.request_bypass("z1oo1", ZHAO, reason="r2", measure="m2", hours=1)
            assert s.pending is not None and s.pending.by == "zhao.lei"  # a new first approval
            assert not s.bypassed(r.clock())

    run(main())


def test_a_bypass_suppresses_the_output_while_alarms_still_raise(tmp_path: Path) -> None:
    async def main() -> None:
        async with rig(tmp_path, alarms=True) as r:
            assert r.alarms is not None
            await bypass(r)
            r.read({"A1": 45.0})
            await eventually(lambda: r.state("z1oo1").vote_holds, what="vote")
            alarms = r.alarms
            await eventually(
                lambda: (a := alarms.open.get(("A1", AlarmKind.TIER))) is not None and a.tier == 3,
                what="A1's interlock-tier alarm, raised while the zone is bypassed",
            )
            await after_a_turn(r)
            assert not r.state("z1oo1").tripped
            assert nothing_commanded(r, "z1oo1")
            await settled(r)
            assert "trip suppressed by bypass" in [e.action for e in await r.audit()]

    run(main())


def test_ending_a_bypass_that_is_not_on_is_refused_and_audited(tmp_path: Path) -> None:
    async def main() -> None:
        async with rig(tmp_path) as r:
            with pytest.raises(Forbidden):
                await r.controller.end_bypass("z1oo1", LI)
            with pytest.raises(Refused, match="z1oo1 is not bypassed"):
                await r.controller.end_bypass("z1oo1", ZHANG, comment="end of shift")
            entries = [(e.action, e.actor, e.comment) for e in await r.audit()]
            assert entries == [
                ("end bypass refused", LI.name, ""),
                ("end bypass refused", ZHANG.name, "end of shift"),
            ]

    run(main())


def test_a_bypass_expires_by_itself_and_a_holding_vote_then_trips(tmp_path: Path) -> None:
    async def main() -> None:
        async with rig(tmp_path) as r:
            await bypass(r, hours=1)
            r.read({"A1": 45.0})
            await eventually(lambda: r.state("z1oo1").vote_holds, what="vote")
            r.clock.advance(3600)
            await eventually(lambda: r.state("z1oo1").tripped, timeout=5, what="trip after expiry")
            await eventually(lambda: r.plc.coils.get(0) is True, what="coil")
            await settled(r)
            actions = [e.action for e in await r.audit()]
            assert actions[-2:] == ["bypass expired", "trip"]

    run(main())


# ------------------------------------------------------------------ persistence and audit


def test_a_latched_zone_and_a_live_bypass_survive_a_restart(tmp_path: Path) -> None:
    port = free_port()
    clock = Clock()

    async def before() -> None:
        async with rig(tmp_path, plc_port=port, clock=clock) as r:
            r.read({"A1": 45.0})
            await bypass(r, zone="z1oo2", hours=4)
            await eventually(lambda: r.plc.coils.get(0) is True, what="trip")

    async def after() -> None:
        async with rig(tmp_path, plc_port=port, clock=clock) as r:  # a fresh PLC: outputs off
            assert r.state("z1oo1").tripped and r.state("z1oo1").seq == 1
            assert r.state("z1oo2").bypass_until == clock() + 4 * 3600
            await eventually(lambda: r.plc.coils.get(0) is True, what="re-asserted after restart")

    run(before())
    run(after())


def test_a_closed_fence_writes_nothing_to_the_plc_and_reports_no_output_fault(
    tmp_path: Path,
) -> None:
    """An instance that lost its control lease (ehswatch/standby.py): no trip, reset or
    heartbeat reaches the PLC, and its fenced commands are not the PLC's refusals — no
    output fault is stored or alarmed for the instance that drives the PLC now."""
    held = [True]

    async def main() -> None:
        async with rig(tmp_path, confirm_timeout_s=0.3, fence=lambda: held[0]) as r:
            await eventually(lambda: len(r.plc.heartbeats) >= 2, what="beating")
            held[0] = False
            await asyncio.sleep(0.2)  # a write in flight lands
            writes = len(r.plc.writes)
            r.read({"A1": 45.0})  # a trip decided after the fence closed
            await eventually(lambda: r.state("z1oo1").tripped, what="latched")
            await asyncio.sleep(1.0)  # past the confirmation timeout, several beats
            link = r.controller.links["plc-1"]
            assert len(r.plc.writes) == writes and r.plc.coils.get(0) is not True
            assert link.fenced > 0 and link.refusals == 0
            assert not r.state("z1oo1").output_fault

    run(main())


def test_the_audit_log_is_append_only(tmp_path: Path) -> None:
    async def main() -> None:
        async with rig(tmp_path) as r:
            r.read({"A1": 45.0})
            await eventually(lambda: r.state("z1oo1").tripped, what="trip")

    run(main())
    url = database_url(tmp_path)  # the rig's database, on either engine
    with pytest.raises(Exception, match="append-only"):
        query(url, "UPDATE audit_log SET actor = 'someone else'")
    with pytest.raises(Exception, match="append-only"):
        query(url, "DELETE FROM audit_log")
    assert query(url, "SELECT action, actor FROM audit_log") == [("trip", "ehswatch")]


# ------------------------------------------------------------------ a PLC that refuses


class RefusesCoil0(PlcSim):
    """A PLC that answers writes to coil 0 with an exception response (illegal address)."""

    async def _answer(
        self,
        fc: int,
        start: int,
        address: int,
        count: int,
        registers: list[int],
        values: list[int] | list[bool] | None,
    ) -> Any:
        if values is not None and fc in (WRITE_COIL, WRITE_COILS) and address == 0:
            return ExcCodes.ILLEGAL_ADDRESS
        return await super()._answer(fc, start, address, count, registers, values)


def test_an_output_the_plc_refuses_never_keeps_another_zone_from_tripping(
    tmp_path: Path,
) -> None:
    ticker = HandTicker()  # the link's time: confirmation deadline, retries, heartbeat

    async def main() -> None:
        async with rig(
            tmp_path, plc_class=RefusesCoil0, confirm_timeout_s=0.5, link_ticker=ticker
        ) as r:
            r.read({"A1": 45.0})  # z1oo1: coil 0, refused by the PLC
            await ticker.until(
                lambda: r.state("z1oo1").output_fault, step=0.05, what="z1oo1 output fault"
            )
            r.read({"B2": 45.0, "B1": 5.0})  # z1oo2: coil 1, fine
            await ticker.until(lambda: r.coil("z1oo2") is True, step=0.05, what="coil 1 written")
            # The refused command keeps being tried, on the same connection.
            link = r.controller.links["plc-1"]
            refused = link.refusals
            assert link.connected and refused >= 1
            beats = len(r.plc.heartbeats)
            await ticker.until(
                lambda: len(r.plc.heartbeats) > beats + 2 and link.refusals > refused,
                step=0.05,
                what="heartbeat goes on, and the refused command is tried again",
            )
            assert r.state("z1oo1").output_fault and not r.state("z1oo2").output_fault

    run(main())


def test_a_reset_is_refused_while_a_late_reading_holds_a_voter_at_the_interlock_tier(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        async with rig(tmp_path) as r:
            r.read({"C1": 60.0, "C2": 61.0})
            await eventually(lambda: r.coil("z2oo2") is True, what="trip")
            r.read({"C1": 5.0, "C2": 5.0})
            # A late reading (older than C1's latest) raises C1 again; its latest value
            # stays 5, below the setpoint by more than the deadband.
            idx = r.stage.table.index
            r.stage.evaluate(ReadingBatch.of([idx["C1"]], [50.0], [r.clock() - 0.5]))
            assert r.stage.evaluator.tier[idx["C1"]] == 3
            with pytest.raises(Refused, match="C1 is at the interlock tier"):
                await r.controller.reset("z2oo2", ZHANG)
            assert r.state("z2oo2").tripped

    run(main())


def test_a_zones_public_state_is_every_field_but_extra_as_json_takes_it() -> None:
    import dataclasses
    import json

    from ehswatch.interlock.state import PendingBypass, ZoneState

    pending = PendingBypass(by="王", role="supervisor", at=5.0, reason="r", measure="m", hours=2)
    for s in (
        ZoneState(zone="z1"),
        ZoneState(
            zone="z1",
            tripped=True,
            trip_cause=("D-1", "D-2"),
            bypass_until=100.0,
            bypass_by=("a", "b"),
            pending=pending,
            extra={"x": [1]},
        ),
    ):
        expected = dataclasses.asdict(s)
        del expected["extra"]
        expected |= {
            "bypassed": s.bypassed(50.0),
            "trip_cause": list(s.trip_cause),
            "bypass_by": list(s.bypass_by),
        }
        got = s.public(50.0)
        assert got == expected and list(got) == list(expected)
        json.dumps(got)

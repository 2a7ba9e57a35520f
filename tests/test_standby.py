"""Active + standby on one control lease (ehswatch/standby.py), as real processes: two
`ehswatch run` of one config on a real PostgreSQL database, a real broker and the PLC
simulator. `kill -9` of the active while a trip is pending: the standby takes over and
trips it; the former active, started again, stands by and writes nothing; no alarm or
ticket twice. And the lease's rules on their own, on both engines."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
from pathlib import Path
from typing import Any

import aiomqtt
import yaml

from ehswatch.config import parse_config
from ehswatch.db import Database
from ehswatch.simulators.plc import PlcSim
from ehswatch.standby import Lease
from tests.aio import eventually, run
from tests.postgres import database_url, query, session_cluster
from tests.servers import Mosquitto, free_port, start_service
from tests.test_interlock_restart import plant as restart_plant


class Hand:
    """A monotonic clock moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_lease_is_held_by_one_and_taken_by_another_only_once_it_expired(
    tmp_path: Path,
) -> None:
    url = database_url(tmp_path)
    hand = Hand()

    async def main() -> None:
        async with Database(url) as db:
            a = Lease(db, name="plant-1", lease_s=0.6, holder="a", monotonic=hand)
            b = Lease(db, name="plant-1", lease_s=0.6, holder="b", monotonic=hand)
            assert await a.try_take() and a.holds()
            assert not await b.try_take() and not b.holds()  # held, not expired
            # A second process of the same name (a container's pid 1 again) is not
            # the holder: only this life's epoch renews.
            twin = Lease(db, name="plant-1", lease_s=0.6, holder="a", monotonic=hand)
            assert not await twin.try_take() and not twin.holds()
            assert await a.try_take()  # renewed: the same epoch
            first = a.epoch
            hand.now += 0.55  # the fence closes before the lease could have expired
            assert not a.holds()
            await asyncio.sleep(0.7)  # the database's clock: expired now
            assert await b.try_take() and b.holds() and b.epoch == (first or 0) + 1
            assert not await a.try_take()  # the former holder cannot renew it back
            await b.release()
            assert not b.holds()
            assert await a.try_take() and a.epoch == (first or 0) + 2  # released: at once

    run(main())


def standby_plant(tmp_path: Path, broker: int, plc: int, url: str) -> dict[str, Any]:
    doc = restart_plant(tmp_path, broker, plc)
    doc["database"]["url"] = url
    doc["instance"] = {"lease": "plant-1", "lease_s": 1.0}
    doc["sensor_types"]["ch4"]["on_delay_s"] = 1.0  # a trip pending for a second
    return doc


def test_kill_9_of_the_active_with_a_trip_pending_the_standby_takes_over_and_trips_it(
    tmp_path: Path,
) -> None:
    url = session_cluster().new_database(migrated=True)
    with Mosquitto(tmp_path) as broker:
        doc = standby_plant(tmp_path, broker.port, free_port(), url)
        config_file = tmp_path / "plant.yaml"
        config_file.write_text(yaml.safe_dump(doc), encoding="utf-8")
        plc_cfg = parse_config(yaml.safe_dump(doc), env={}).plcs[0]
        logs = [tmp_path / f"{name}.log" for name in ("a", "b", "a-again")]

        def said(log: Path, what: str) -> bool:
            return log.exists() and what in log.read_text("utf-8", "replace")

        async def main() -> dict[str, Any]:
            plc = PlcSim(plc_cfg)
            async with plc, aiomqtt.Client("127.0.0.1", broker.port) as pub:
                a = await start_service(config_file, logs[0])
                await eventually(lambda: len(plc.heartbeats) >= 2, timeout=30, what="a active")
                b = await start_service(config_file, logs[1])
                await eventually(
                    lambda: said(logs[1], "waiting for the control lease"), timeout=30,
                    what="b standing by",
                )  # fmt: skip

                # The gas detector reads above the interlock setpoint, once a second.
                async def detector() -> None:
                    while True:
                        await pub.publish("ehs/telemetry/G-301", json.dumps({"v": 62.0}), qos=1)
                        await asyncio.sleep(0.25)

                publishing = asyncio.create_task(detector(), name="test:detector")
                try:
                    await asyncio.sleep(0.3)  # a has the reading: its trip is pending
                    assert plc.coils.get(0) is not True
                    a.send_signal(signal.SIGKILL)
                    killed = time.monotonic()
                    await a.wait()
                    beats = len(plc.heartbeats)
                    await eventually(lambda: plc.coils.get(0) is True, timeout=30, what="trip")
                    tripped_after = time.monotonic() - killed
                    await eventually(
                        lambda: len(plc.heartbeats) > beats + 2, timeout=10, what="b's beat"
                    )
                    # The former active, started again: it stands by and writes nothing.
                    writes = len(plc.writes)
                    again = await start_service(config_file, logs[2])
                    await eventually(
                        lambda: said(logs[2], "waiting for the control lease"), timeout=30,
                        what="a standing by",
                    )  # fmt: skip
                    await asyncio.sleep(2.0)
                    beats_from_b = [w for w in plc.writes[writes:] if w.table == "register"]
                    assert all(w.address == plc_cfg.heartbeat.address for w in beats_from_b)  # type: ignore[union-attr]
                    await eventually(
                        lambda: "ticket opened" in [r for (r,) in query(url,
                            "SELECT action FROM audit_log")], timeout=20, what="the ticket",
                    )  # fmt: skip
                finally:
                    publishing.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await publishing
                for p in (b, again):
                    p.send_signal(signal.SIGINT)
                    await p.wait()
                return {"tripped_after": tripped_after}

        try:
            found = run(main(), timeout=150)
        except AssertionError as exc:
            tails = "\n".join(
                f"--- {p.name} ---\n{p.read_text('utf-8', 'replace')[-2500:]}"
                for p in logs
                if p.exists()
            )
            raise AssertionError(f"{exc}\n{tails}") from exc
    # b took over: it said so, tripped the pending zone, opened one alarm and one ticket.
    b_log, again_log = (p.read_text("utf-8", "replace") for p in logs[1:])
    assert "taking over" in b_log and "Traceback" not in b_log
    assert "taking over" not in again_log and "ehswatch running" not in again_log
    assert query(url, "SELECT count(*) FROM alarm WHERE sensor = 'G-301'") == [(1,)]
    assert query(url, "SELECT count(*) FROM hazard_ticket") == [(1,)]
    actions = [a for (a,) in query(url, "SELECT action FROM audit_log")]
    assert actions.count("trip") == 1
    # lease (1 s) + the former holder's fence (1 s) + start + the on-delay (1 s)
    assert found["tripped_after"] < 12, found


def test_an_active_cut_off_from_the_database_stops_writing_before_its_lease_can_pass(
    tmp_path: Path,
) -> None:
    """The database's host is lost (its server killed): the active's renewals fail, its
    fence closes within `lease_s` of its last renewal — before any standby could take the
    lease — so its PLC writes (the heartbeat too) stop, and the process stops for its
    supervisor to start it again as a standby."""
    from tests.postgres import PostgresCluster

    with PostgresCluster() as cluster, Mosquitto(tmp_path) as broker:
        url = cluster.new_database(migrated=True)
        doc = standby_plant(tmp_path, broker.port, free_port(), url)
        config_file = tmp_path / "plant.yaml"
        config_file.write_text(yaml.safe_dump(doc), encoding="utf-8")
        plc_cfg = parse_config(yaml.safe_dump(doc), env={}).plcs[0]
        log = tmp_path / "a.log"

        async def main() -> tuple[float, float, int]:
            plc = PlcSim(plc_cfg)
            async with plc:
                a = await start_service(config_file, log)
                await eventually(lambda: len(plc.heartbeats) >= 3, timeout=30, what="active")
                cluster.kill()
                cut = time.time()
                code = await asyncio.wait_for(a.wait(), 20)
                last = max(w.ts for w in plc.writes)
                return cut, last, code

        cut, last, code = run(main(), timeout=60)
    text = log.read_text("utf-8", "replace")
    assert code == 1 and "control lease plant-1 lost" in text
    # No write later than one lease after the cut (its last renewal was before it).
    assert last < cut + 1.0, (last - cut, text[-2000:])


def test_an_instance_without_the_lease_refuses_to_start_while_another_holds_it(
    tmp_path: Path,
) -> None:
    """A half-upgraded pair, or one config missing its `instance.lease`: the instance
    without it would drive the same PLCs as the lease's holder. It refuses to start."""
    url = session_cluster().new_database(migrated=True)
    with Mosquitto(tmp_path) as broker:
        doc = restart_plant(tmp_path, broker.port, free_port())
        doc["database"]["url"] = url
        config_file = tmp_path / "plant.yaml"
        config_file.write_text(yaml.safe_dump(doc), encoding="utf-8")
        log = tmp_path / "plain.log"

        async def main() -> int:
            async with Database(url) as db:
                holder = Lease(db, name="plant-1", lease_s=30.0, holder="the-active")
                assert await holder.try_take()
                plain = await start_service(config_file, log)
                return await asyncio.wait_for(plain.wait(), 60)

        code = run(main(), timeout=90)
    text = log.read_text("utf-8", "replace")
    assert code == 1, text
    assert "another instance holds the control lease plant-1" in text
    assert "ehswatch running" not in text

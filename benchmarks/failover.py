"""Failover of active + standby: `kill -9` of the active → the standby driving the PLC.
Prints one JSON object.

Two `ehswatch run` of one config with `instance.lease` (ehswatch/standby.py) on a
throw-away PostgreSQL cluster, a real mosquitto and the PLC simulator. Each round:
1. the active trips the tank farm (a CH4 reading above its interlock setpoint), and the
   latch is stored;
2. the active is killed (`kill -9`), and the PLC drops its outputs, as a PLC whose
   heartbeat stops does (its watchdog; the simulator is started again, outputs off);
3. the clock runs until the standby's first heartbeat and the latched zone's coil
   re-asserted at the simulator.

`takeover_s` is the slowest of the rounds, from the kill to both. The standby waits
for the lease to expire (`lease_s`, 1 s) and then for the former holder's fence (1 s
more), then starts the control part. The killed instance comes back as the standby of
the next round. `duplicates` counts alarms or tickets created twice: the tank farm's
one alarm episode and its one ticket must stay one across every takeover.

Goals: `takeover_s` ≤ 3, `duplicates` 0.

Usage: python benchmarks/failover.py [--rounds N] [--lease-s S]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiomqtt  # noqa: E402
import yaml  # noqa: E402

from ehswatch.config import parse_config  # noqa: E402
from ehswatch.simulators.plc import PlcSim  # noqa: E402
from tests.aio import eventually  # noqa: E402
from tests.postgres import PostgresCluster, query  # noqa: E402
from tests.servers import Mosquitto, free_port, reap_services, start_service  # noqa: E402
from tests.test_interlock_restart import plant  # noqa: E402


async def measure(work: Path, rounds: int, lease_s: float) -> dict[str, object]:
    with PostgresCluster() as cluster, Mosquitto(work) as broker:
        url = cluster.new_database(migrated=True)
        doc = plant(work, broker.port, free_port())
        doc["database"]["url"] = url
        doc["instance"] = {"lease": "plant-1", "lease_s": lease_s}
        config_file = work / "plant.yaml"
        config_file.write_text(yaml.safe_dump(doc), encoding="utf-8")
        plc_cfg = parse_config(yaml.safe_dump(doc), env={}).plcs[0]
        plc = PlcSim(plc_cfg)
        takeovers: list[float] = []
        async with plc:
            log = work / "service.log"
            active = await start_service(config_file, log)
            await eventually(lambda: len(plc.heartbeats) >= 2, timeout=60, what="the active")
            standby = await start_service(config_file, log)
            await asyncio.sleep(2.0)  # standing by
            async with aiomqtt.Client("127.0.0.1", broker.port) as pub:
                await pub.publish("ehs/telemetry/G-301", json.dumps({"v": 62.0}), qos=1)
            await eventually(lambda: plc.coils.get(0) is True, timeout=30, what="the trip")
            await eventually(
                lambda: query(url, "SELECT tripped FROM interlock_zone") == [(True,)],
                timeout=30,
                what="the latch stored",
            )
            await asyncio.sleep(1.0)
            for _ in range(rounds):
                active.send_signal(signal.SIGKILL)
                killed = time.monotonic()
                await active.wait()
                # The PLC, its heartbeat gone, drops its outputs (a watchdog; here the
                # simulator starts again: outputs off, its writes counted afresh).
                await plc.stop()
                await plc.start()
                plc.writes.clear()
                while not (plc.heartbeats and plc.coils.get(0) is True):
                    if time.monotonic() - killed > 60:
                        tail = log.read_text("utf-8", "replace")[-4000:]
                        raise TimeoutError(f"the standby did not take over in 60 s:\n{tail}")
                    await asyncio.sleep(0.005)
                takeovers.append(time.monotonic() - killed)
                active, standby = standby, await start_service(config_file, log)
                await asyncio.sleep(3.0)  # the new standby waits for the lease
            for p in (active, standby):
                p.send_signal(signal.SIGINT)
                await p.wait()
        alarms = query(url, "SELECT count(*) FROM alarm WHERE sensor = 'G-301'")[0][0]
        tickets = query(url, "SELECT count(*) FROM hazard_ticket")[0][0]
        trips = query(url, "SELECT count(*) FROM audit_log WHERE action = 'trip'")[0][0]
    reap_services()
    return {
        "rounds": rounds,
        "lease_s": lease_s,
        "takeover_s": round(max(takeovers), 2),
        "takeover_s_each": [round(t, 2) for t in takeovers],
        "alarms": alarms,
        "tickets": tickets,
        "trips": trips,
        "duplicates": max(0, alarms - 1) + max(0, tickets - 1) + max(0, trips - 1),
        "goals": {"takeover_s": 3, "duplicates": 0},
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--lease-s", type=float, default=1.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="ehswatch-failover-") as work:
        print(json.dumps(asyncio.run(measure(Path(work), args.rounds, args.lease_s))))


if __name__ == "__main__":
    main()

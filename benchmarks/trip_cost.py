"""What one zone trip costs in CPU, both parts together. Prints one JSON object.

Both parts run in this process (`tests.parts.both_parts`: the control part and the desk
part, talking through their run directory as in production) on a generated plant of
`--sensors` dust sensors and `--trips` zones of one CH4 detector each, voting 1oo1 on
their own coil of a PLC simulator; no broker (the collector retries on its own, as a
plant's would while the broker is down). `--trips` readings above the interlock setpoint
are evaluated one every `--pause` s; each latches its zone, writes its coil, raises an
A-grade alarm, relays its events and opens an A-grade ticket (each of these a database
transaction on SQLite).

`cpu_per_trip_ms` is the process's CPU time over the trips minus its CPU time over the
same wall time with nothing happening (the floor, measured in the same run right after,
with every zone still latched and every ticket open), divided by the trips.

Usage: python benchmarks/trip_cost.py [--sensors N] [--trips N] [--pause S]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ehswatch.config import load_config  # noqa: E402
from ehswatch.heap import settle_heap  # noqa: E402
from ehswatch.readings import ReadingBatch  # noqa: E402
from ehswatch.simulators.plc import PlcSim  # noqa: E402
from tests.big_plant import TRIP_SETPOINT, plant_doc, write_config  # noqa: E402
from tests.parts import both_parts  # noqa: E402
from tests.servers import free_port  # noqa: E402


async def main(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        doc = plant_doc(
            work,
            broker=free_port(),
            plc=free_port(),
            api=free_port(),
            sensors=args.sensors,
            trips=args.trips,
        )
        config = load_config(write_config(work, doc))
        async with PlcSim(config.plcs[0]) as plc, both_parts(config, tick_s=1.0) as (svc, desk):
            await asyncio.sleep(2.0)  # started, first ticks done
            settle_heap()  # as each part does once started
            index = svc.table.index
            t0, c0 = time.perf_counter(), time.process_time()
            for k in range(args.trips):
                i = index[f"T-{k}"]
                reading = ReadingBatch.of([i], [TRIP_SETPOINT + 12.5], [svc.clock()])
                svc.stage.evaluate(reading)
                await asyncio.sleep(args.pause)
            c1, t1 = time.process_time(), time.perf_counter()
            await asyncio.sleep(t1 - t0)  # the floor: as long, nothing happening
            c2 = time.process_time()
            coils = sum(1 for w in plc.writes if w.table == "coil" and w.values[0])
            tickets = len(await desk.hazards.tickets(open_only=True))
    busy, idle = c1 - c0, c2 - c1
    return {
        "sensors": args.sensors,
        "trips": args.trips,
        "coils_written": coils,
        "tickets_opened": tickets,
        "seconds": round(t1 - t0, 2),
        "cpu_s": round(busy, 3),
        "floor_cpu_s": round(idle, 3),
        "cpu_per_trip_ms": round((busy - idle) / args.trips * 1000, 2),
        "floor_core_fraction": round(idle / (t1 - t0), 3),
    }


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--sensors", type=int, default=1000)
    ap.add_argument("--trips", type=int, default=60)
    ap.add_argument("--pause", type=float, default=0.3)
    logging.disable(logging.WARNING)  # each trip logs a trip, a ticket and a stop-work
    print(json.dumps(asyncio.run(main(ap.parse_args()))))

"""A 100 000-sensor plant on one machine, the whole service, with people looking. One JSON.

`ehswatch run` (the control part and its desk part, two processes) on a generated plant
(`tests/big_plant.py`): `--sensors` dust sensors at 1 Hz over MQTT in batches of 1 000
readings on a real mosquitto, the InfluxDB sink on (a real VictoriaMetrics behind the v2
write API), `--trips` trip zones voting 1oo1 on one coil each of a PLC simulator whose
heartbeat period is 0.5 s.

Phases, after a warm-up of `--warmup` s:
1. idle: `--samples` trip readings, each timed from the publish to the coil write the
   PLC simulator receives (`trip_p99_idle_ms`);
2. watched, for `--seconds` s (at least `--samples` trip intervals): ten board clients
   poll as the board page does (every 2 s: the zone summaries, the alarms, the tickets,
   and one zone's sensors with ten minutes of sparkline) and one full export of every
   sensor with sparklines runs, from a process of their own at the lowest CPU priority
   (they stand for browsers on other machines); the same number of trips is timed
   (`trip_p99_ms`), one every `--trip-interval` s, and CPU and memory of every ehswatch
   process are measured over this phase (`cpu_core_fraction`: CPU seconds of both parts
   / wall seconds; `rss_mb`: the sum of their resident sets at the end; `pss_mb`: the
   same with the pages they share counted once).

`max_heartbeat_gap_s` is the longest gap between two heartbeat writes over both phases;
`stored_ratio` is readings stored in VictoriaMetrics / readings sent over the whole run
(counted after the load stops and the sink has flushed).

Goals: cpu_core_fraction <= 0.35, rss_mb <= 400, max_heartbeat_gap_s <= 2 x period,
trip_p99_ms <= 1.2 x trip_p99_idle_ms, stored_ratio = 1.0.

Each trip latches a zone and opens an A-grade ticket: one a second (the default) is
already a plant-wide disaster (3 600 stop-work tickets an hour), and it costs the two
parts about 20 ms of CPU each (`benchmarks/trip_cost.py`), so the trip rate is a
parameter, printed with the figures, and the CPU at another rate follows from both.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiomqtt  # noqa: E402
import httpx  # noqa: E402

from ehswatch.config import load_config  # noqa: E402
from ehswatch.simulators.plc import PlcSim  # noqa: E402
from tests.big_plant import (  # noqa: E402
    Trips,
    heartbeat_gaps,
    plant_doc,
    until_answering,
    write_config,
)
from tests.servers import Mosquitto, VictoriaMetrics, free_port, start_service  # noqa: E402

HEARTBEAT_S = 0.5
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def _proc_mb(path: str, key: str) -> float:
    """A `key:  N kB` line of a /proc file, in MB (0 if missing)."""
    for line in Path(path).read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1]) / 1024
    return 0.0


def rss_mb(pid: int) -> float:
    return _proc_mb(f"/proc/{pid}/status", "VmRSS:")


def pss_mb(pid: int) -> float:
    """Proportional set size: pages shared by several processes (the state file both
    parts map, the libraries) counted once across them, not once in each."""
    return _proc_mb(f"/proc/{pid}/smaps_rollup", "Pss:")


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


def stored_readings(vm: VictoriaMetrics, sent: int, timeout: float = 60.0) -> int:
    """Readings of the load in VictoriaMetrics, once all `sent` are there (or timeout):
    the sink writes in batches, so the last second's readings arrive a moment later."""
    deadline = time.monotonic() + timeout
    while True:
        got = vm.count('sum(count_over_time(reading_value{sensor=~"D-.*"}[1d]))')
        if got >= sent or time.monotonic() > deadline:
            return got
        time.sleep(1.0)


async def timed_trips(trips: Trips, mqtt: aiomqtt.Client, n: int, pause: float) -> list[float]:
    out = []
    for _ in range(n):
        out.append(await trips.trip(mqtt))
        await asyncio.sleep(pause)
    return out


async def main(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "vm").mkdir()
        with Mosquitto(work) as broker, VictoriaMetrics(work / "vm") as vm:
            api = free_port()
            doc = plant_doc(
                work,
                broker=broker.port,
                plc=free_port(),
                api=api,
                sensors=args.sensors,
                trips=2 * args.samples,
                heartbeat_s=HEARTBEAT_S,
                influx_url=vm.url,
            )
            path = write_config(work, doc)
            config = load_config(path)
            trips = Trips(broker.port)
            plc = PlcSim(config.plcs[0], on_write=trips.on_write)
            async with (
                plc,
                httpx.AsyncClient(base_url=f"http://127.0.0.1:{api}", timeout=120) as http,
                aiomqtt.Client("127.0.0.1", broker.port) as mqtt,
            ):
                service = await start_service(path, work / "service.log")
                counted = work / "sent"
                watched_file = work / "watched.json"
                loader: asyncio.subprocess.Process | None = None
                try:
                    report = await until_answering(http, timeout=120)
                    desk = int(report["desk"]["pid"])
                    # In a process of its own: formatting 100 000 readings a second would
                    # starve this process's PLC simulator and timers.
                    loader = await asyncio.create_subprocess_exec(
                        sys.executable, "-m", "tests.big_plant", str(broker.port),
                        str(args.sensors), str(counted), cwd=ROOT,
                    )  # fmt: skip
                    start = time.time()
                    await asyncio.sleep(args.warmup)
                    pids = [service.pid, desk]
                    idle_start, t_idle = [cpu_s(p) for p in pids], time.perf_counter()
                    idle = await timed_trips(trips, mqtt, args.samples, 0.2)
                    cpu_start = [cpu_s(p) for p in pids]
                    t0 = time.perf_counter()
                    idle_by_part = [
                        round((c - c0) / (t0 - t_idle), 3)
                        for c, c0 in zip(cpu_start, idle_start, strict=True)
                    ]
                    # The watchers, too, in a process of their own: reading their
                    # answers here would delay the PLC simulator's stamps. They stand
                    # for browsers on other machines, so they get what CPU is left
                    # (nice 19) instead of competing with the service for two cores.
                    watchers = await asyncio.create_subprocess_exec(
                        sys.executable, "-m", "tests.big_plant", "watch", str(api),
                        str(watched_file), cwd=ROOT, preexec_fn=lambda: os.nice(19),
                    )  # fmt: skip
                    watched = await timed_trips(trips, mqtt, args.samples, args.trip_interval)
                    while time.perf_counter() - t0 < args.seconds:
                        await asyncio.sleep(0.2)
                    wall = time.perf_counter() - t0
                    by_part = [
                        round((cpu_s(p) - c) / wall, 3)
                        for p, c in zip(pids, cpu_start, strict=True)
                    ]
                    cpu = sum(by_part)
                    rss_by_part = [round(rss_mb(p), 1) for p in pids]
                    rss = sum(rss_by_part)
                    pss = sum(pss_mb(p) for p in pids)
                    watchers.send_signal(signal.SIGTERM)
                    await watchers.wait()
                    stats = json.loads(watched_file.read_text())
                    gap = heartbeat_gaps(plc, start)
                    loader.send_signal(signal.SIGTERM)
                    await loader.wait()
                    sent = int(counted.read_text())
                    health = (await http.get("/health")).json()
                    stored = await asyncio.to_thread(stored_readings, vm, sent)
                finally:
                    if loader is not None and loader.returncode is None:
                        loader.kill()
                        await loader.wait()
                    if service.returncode is None:
                        service.send_signal(signal.SIGTERM)
                        await service.wait()
    return {
        "sensors": args.sensors,
        "readings_per_s": args.sensors,
        "cpu_core_fraction": round(cpu, 3),
        "rss_mb": round(rss, 1),
        "cpu_by_part": dict(zip(("control", "desk"), by_part, strict=True)),
        "cpu_idle_by_part": dict(zip(("control", "desk"), idle_by_part, strict=True)),
        "pss_mb": round(pss, 1),
        "rss_mb_by_part": dict(zip(("control", "desk"), rss_by_part, strict=True)),
        "max_heartbeat_gap_s": round(gap, 3),
        "heartbeat_period_s": HEARTBEAT_S,
        "watched_s": round(wall, 1),
        "trips_per_s": round(args.samples / wall, 2),
        "trip_p99_ms": round(p99(watched) * 1000, 1),
        "trip_p99_idle_ms": round(p99(idle) * 1000, 1),
        "trip_p99_ratio": round(p99(watched) / p99(idle), 2),
        "trip_median_ms": round(statistics.median(watched) * 1000, 1),
        "trip_median_idle_ms": round(statistics.median(idle) * 1000, 1),
        "stored_ratio": round(stored / sent, 4) if sent else None,
        "readings_sent": sent,
        "readings_stored": stored,
        "board_requests": stats.get("board_requests", 0),
        "board_max_s": round(stats.get("board_max_s", 0.0), 3),
        "export_s": stats.get("export_s"),
        "export_mb": round(stats.get("export_bytes", 0) / 1e6, 1),
        "watcher_failures": stats.get("failures"),
        "health": health.get("status"),
        "health_reasons": health.get("reasons"),
    }


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--sensors", type=int, default=100_000)
    ap.add_argument("--samples", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=100.0)
    ap.add_argument("--trip-interval", type=float, default=1.0)
    ap.add_argument("--warmup", type=float, default=10.0)
    print(json.dumps(asyncio.run(main(ap.parse_args()))))

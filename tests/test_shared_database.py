"""Several processes on one PostgreSQL database: the work one process at a time must do
— relay the alarm outbox, take tickets in, deliver the ticket webhook, send each
channel's notifications — is done once, whichever process does it (`Database.turn`).

On the real PostgreSQL cluster of the session (whatever engine the rest of the run
uses), with two worker processes racing over the same events."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from ehswatch.alarms.manager import AlarmManager
from ehswatch.config import PlantConfig, parse_config
from ehswatch.db import Database
from ehswatch.ingest.queue import ReadingQueue
from ehswatch.readings import ReadingBatch
from ehswatch.roles import Actor
from ehswatch.thresholds import ThresholdTable
from ehswatch.thresholds.stage import EvaluatorStage
from tests.aio import eventually, run
from tests.fakes import RobotServer
from tests.postgres import query, session_cluster
from tests.test_hazards import Clock
from tests.test_hazards import plant as hazard_plant

ROOT = Path(__file__).resolve().parent.parent
ZHANG = Actor(name="zhang.min", role="supervisor")


def on_postgres(tmp_path: Path, robots: RobotServer) -> tuple[PlantConfig, Path]:
    doc: dict[str, Any] = hazard_plant(tmp_path, robots).model_dump(mode="json")
    doc["database"]["url"] = session_cluster().new_database()
    path = tmp_path / "plant.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    return parse_config(path.read_text(encoding="utf-8"), env={}), path


async def alarm_episodes(config: PlantConfig, rounds: int) -> None:
    """Each round: all ten sensors alarm, half of them climb to the interlock tier, all
    are acknowledged and come back — every step an outbox event for the workers."""
    clock = Clock()
    stage = EvaluatorStage(
        table=ThresholdTable.from_config(config), queue=ReadingQueue(), clock=clock
    )
    idx = stage.table.index
    async with Database(config.database.url) as db:
        alarms = AlarmManager(config=config, evaluator=stage.evaluator, db=db, clock=clock)
        stage.listen(alarms.on_evaluation)
        async with alarms:

            async def read(values: dict[str, float]) -> None:
                clock.now += 1.0
                stage.evaluate(
                    ReadingBatch.of(
                        [idx[s] for s in values], list(values.values()), [clock.now] * len(values)
                    )
                )
                await eventually(
                    lambda: not alarms._queue and not alarms._wake.is_set(), what="written"
                )
                async with alarms._lock:
                    pass

            sensors = [f"D-{k}" for k in range(10)]
            for _ in range(rounds):
                await read(dict.fromkeys(sensors, 25.0))
                await read(dict.fromkeys(sensors[:5], 45.0))
                for a in list(alarms.open.values()):
                    await alarms.ack(a.id or 0, ZHANG)
                await read(dict.fromkeys(sensors, 3.0))


def test_two_processes_on_one_database_do_each_piece_of_shared_work_once(
    tmp_path: Path,
) -> None:
    with RobotServer() as robots:
        config, path = on_postgres(tmp_path, robots)
        run(alarm_episodes(config, rounds=3))
        url = config.database.url
        workers = [
            subprocess.Popen(
                [sys.executable, "-m", "tests.shared_desk", str(path), "1.5"],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        reports = []
        for w in workers:
            out, err = w.communicate(timeout=120)
            assert w.returncode == 0, err
            reports.append(json.loads(out.strip().splitlines()[-1]))
        hook = robots.delivered("/hook")
        platform = robots.delivered("/platform")
    events = query(url, "SELECT count(*), count(published_at) FROM alarm_outbox")
    ((episodes,),) = query(url, "SELECT count(*) FROM alarm")
    tickets = query(url, "SELECT alarm_id, count(*) FROM hazard_ticket GROUP BY alarm_id")
    notes = query(url, "SELECT count(*), count(*) FILTER (WHERE status = 'sent') FROM notification")
    ((outbound,),) = query(
        url, "SELECT count(*) FROM hazard_outbound WHERE delivered_at IS NOT NULL"
    )
    ((total, published),) = events
    assert total > 0 and published == total  # every event relayed
    assert sum(r["relayed"] for r in reports) == total  # … by one of the two, once
    assert episodes == 30 and len(tickets) == 30  # one ticket per alarm episode
    assert all(n == 1 for _, n in tickets)
    ((rows, sent),) = notes
    not_due = query(
        url,
        "SELECT count(*) FROM notification WHERE status = 'pending' AND next_try > ?",
        (time.time(),),
    )
    # each notification due went once (a chronic-alarm notice is due at the alarms'
    # own time, years ahead of this run)
    assert rows > 0 and sent == rows - not_due[0][0] == len(hook)
    assert len({json.dumps(b, sort_keys=True) for b in hook}) == len(hook)
    assert outbound == len(platform) > 0  # each ticket change to the platform once
    assert len({json.dumps(b, sort_keys=True) for b in platform}) == len(platform)
    # Both did work: the turns were really shared, not one process doing it all.
    assert all(sum(r.values()) > 0 for r in reports), reports

"""One of several processes doing the shared work of a plant's database at once: relay
the alarm outbox, take tickets in, deliver the ticket webhook and send notifications —
the jobs `Database.turn` hands to one process at a time. Run by the tests as
``python -m tests.shared_desk CONFIG IDLE_S``: it works until nothing has come for
IDLE_S seconds, then prints what it did as one JSON line."""

from __future__ import annotations

import asyncio
import json
import sys
import time

import httpx

from ehswatch.alarms.channels import senders
from ehswatch.alarms.events import EventStream
from ehswatch.alarms.notifier import Notifier
from ehswatch.alarms.relay import AlarmRelay
from ehswatch.component import Backoff
from ehswatch.config import load_config
from ehswatch.db import Database
from ehswatch.hazards.desk import HazardDesk


async def work(config_path: str, idle_s: float) -> dict[str, int]:
    config = load_config(config_path, env={})
    done = {"relayed": 0, "taken_in": 0, "webhook": 0, "sent": 0}
    async with Database(config.database.url) as db, httpx.AsyncClient() as client:
        relay = AlarmRelay(config=config, db=db, stream=EventStream())
        desk = HazardDesk(
            config=config, db=db, clock=time.time, client=client,
            backoff=Backoff(first=0.2, longest=1.0),
        )  # fmt: skip
        notifier = Notifier(
            config=config, db=db, senders_by_channel=senders(config, client),
            backoff_s=(0.2, 1.0),
        )  # fmt: skip
        channels = list(notifier.stats)
        last = time.monotonic()
        while time.monotonic() - last < idle_s:
            did = {
                "relayed": await relay.relay_once(),
                "taken_in": await desk.intake_once(),
                "webhook": await desk.deliver_outbound(),
            }
            before = sum(s.sent for s in notifier.stats.values())
            for c in channels:
                await notifier.deliver_due(c)
            did["sent"] = sum(s.sent for s in notifier.stats.values()) - before
            for k, v in did.items():
                done[k] += v
            if any(did.values()):
                last = time.monotonic()
            await asyncio.sleep(0.005)
    return done


if __name__ == "__main__":
    print(json.dumps(asyncio.run(work(sys.argv[1], float(sys.argv[2])))))

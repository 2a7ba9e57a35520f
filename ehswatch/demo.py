"""`ehswatch demo`: the whole thing on one machine, nothing to install.

It starts an embedded MQTT broker (amqtt) on the config's MQTT port unless a broker
already answers there, the simulators of a scenario (dust monitors, PLC, gas detectors),
and the service with its API and board, then prints where to look.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import socket
from contextlib import AsyncExitStack
from pathlib import Path
from urllib.parse import urlsplit

from sqlalchemy.engine import make_url

from ehswatch.config import PlantConfig, Role
from ehswatch.db import Database
from ehswatch.parts import run
from ehswatch.people.directory import People
from ehswatch.roles import Actor, NotFound
from ehswatch.simulators.runner import Simulation
from ehswatch.simulators.scenario import Scenario

log = logging.getLogger("ehswatch.demo")
DEMO_TOKENS = {
    "viewer": "demo-viewer",
    "operator": "demo-operator",
    "supervisor": "demo-supervisor",
    "safety_director": "demo-safety-director",
    "gm": "demo-gm",
}

# The demo's people: (name, display name, role, password). Passwords for a demo only:
# printed at start, and the same on every machine.
DEMO_PEOPLE: tuple[tuple[str, str, Role, str], ...] = (
    ("zhang.wei", "张伟 (班组长)", "supervisor", "demo-zhang-wei"),
    ("li.na", "李娜 (整改人)", "operator", "demo-li-na"),
    ("sun.li", "孙丽 (部门负责人)", "dept_head", "demo-sun-li"),
    ("wang.jun", "王军 (安全总监)", "safety_director", "demo-wang-jun"),
    ("chen.gang", "陈刚 (总经理)", "gm", "demo-chen-gang"),
    ("admin", "管理员", "admin", "demo-admin-1"),
)


def fresh_story(config: PlantConfig) -> list[Path]:
    """Forget the last demo's story: its SQLite database (with its journal files) and its
    evidence. What was removed, for the log. A database that is not a local SQLite file
    is never touched."""
    removed: list[Path] = []
    url = make_url(config.database.url)
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        db = Path(str(url.database))
        for path in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
            if path.exists():
                path.unlink()
                removed.append(path)
    evidence = Path(config.hazards.evidence_dir)
    if evidence.is_dir():
        shutil.rmtree(evidence)
        removed.append(evidence)
    return removed


async def demo_people(config: PlantConfig) -> None:
    """Add the demo's people who are not there yet (a kept story keeps its people)."""
    async with Database(config.database.url) as db:
        people = People(db=db)
        by = Actor(name="ehswatch-demo", role="admin")
        for name, display, role, password in DEMO_PEOPLE:
            try:
                await people.get(name)
            except NotFound:
                await people.add(name, role, password, by=by, display_name=display)


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


async def _embedded_broker(host: str, port: int) -> object:
    from amqtt.broker import Broker

    for name in ("amqtt", "transitions"):
        logging.getLogger(name).setLevel(logging.WARNING)
    broker = Broker(
        {
            "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}},
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}
            },
        }
    )
    await broker.start()
    return broker


async def demo(
    config: PlantConfig, scenario: Scenario, stop: asyncio.Event, *, keep: bool = False
) -> None:
    """`keep`: go on with the last demo's story (its alarms, tickets, people); by default
    each demo starts a fresh one."""
    if not keep:
        for path in fresh_story(config):
            log.info("fresh story: removed %s (ehswatch demo --keep goes on with it)", path)
    assert config.mqtt is not None
    url = urlsplit(config.mqtt.url)
    host, port = url.hostname or "127.0.0.1", url.port or 1883
    async with AsyncExitStack() as stack:
        if _answers(host, port):
            log.info("using the MQTT broker already on %s:%d", host, port)
        else:
            broker = await _embedded_broker(host, port)
            stack.push_async_callback(broker.shutdown)  # type: ignore[attr-defined]
            log.info("embedded MQTT broker (amqtt) on %s:%d", host, port)
        await stack.enter_async_context(Simulation(config, scenario))
        await demo_people(config)
        board = f"http://{config.api.host}:{config.api.port}/#token={DEMO_TOKENS['viewer']}"
        people = "\n".join(
            f"    {name:12} {password:16} {role:16} {display}"
            for name, display, role, password in DEMO_PEOPLE
        )
        print(
            f"\n  ehswatch demo — {config.site.name}\n"
            f"  Board:    {board}\n"
            f"  API docs: http://{config.api.host}:{config.api.port}/docs "
            f"(tokens: {', '.join(f'{r} {t}' for r, t in DEMO_TOKENS.items())})\n"
            f"  Workbench: http://{config.api.host}:{config.api.port}/app/ — sign in as:\n"
            f"{people}\n"
            f"  Scenario: {scenario.name} — watch polishing-1 go warning → alarm → interlock\n"
            f"  Ctrl-C stops everything.\n",
            flush=True,
        )
        await run(config, stop)

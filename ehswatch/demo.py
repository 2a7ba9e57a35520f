"""`ehswatch demo`: the whole thing on one machine, nothing to install.

It starts an embedded MQTT broker (amqtt) on the config's MQTT port unless a broker
already answers there, the simulators of a scenario (dust monitors, PLC, gas detectors),
and the service with its API and board, then prints where to look.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
import socket
import struct
import time
import zlib
from contextlib import AsyncExitStack
from pathlib import Path
from urllib.parse import urlsplit

from sqlalchemy.engine import make_url

from ehswatch.config import PlantConfig, Role
from ehswatch.db import Database
from ehswatch.governance.store import WatchCursor
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


async def demo_governance(config: PlantConfig) -> None:
    """The story's dust governance: the governance watch is told it last looked twelve
    hours ago, so the shift that ended since without a cleaning record opens its ticket
    at the service's first look, as it would on a plant that had been running."""
    now = time.time()
    async with Database(config.database.url) as db, db.new_session() as s, s.begin():
        for zone in config.zones:
            if zone.cleaning is not None:
                await s.merge(WatchCursor(name=f"cleaning:{zone.id}", until=now - 12 * 3600))


def _png(width: int = 64, height: int = 48, rgb: tuple[int, int, int] = (150, 120, 90)) -> bytes:
    """A small photo (PNG) for the story's patrol round, made here: no file shipped."""
    raw = b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


async def patrol_story(config: PlantConfig) -> None:
    """A patrol round as the story's rectifier records it from a phone, through the API:
    the collector's pressure drop is over its limit, photographed — the failed item opens
    a ticket carrying the photo. Runs once the API answers; a failure is only logged."""
    import httpx

    cp = next((c for c in config.governance.checkpoints if c.id == "cp-polish"), None)
    if cp is None:
        return
    base = f"http://{config.api.host}:{config.api.port}"
    try:
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            for _ in range(120):
                try:
                    r = await client.post(
                        "/auth/login", json={"username": "li.na", "password": "demo-li-na"}
                    )
                    if r.status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.5)
            else:
                return
            photo = _png()
            answer = await client.post(
                f"/api/checkpoints/{cp.id}/rounds",
                headers={"X-CSRF-Token": r.json()["csrf_token"]},
                data={
                    "answers": json.dumps({"dust": "no", "dp": 3.2, "grounding": "yes"}),
                    "photo_items": ["dust", "dp", "view"],
                    "comment": "演示 demo",
                },
                files=[
                    ("photos", ("dust.png", photo, "image/png")),
                    ("photos", ("dp.png", _png(rgb=(90, 90, 160)), "image/png")),
                    ("photos", ("view.png", _png(rgb=(80, 140, 80)), "image/png")),
                ],
            )
            log.info("story: li.na's patrol round at %s: %s", cp.id, answer.status_code)
    except Exception as exc:  # the story is a demo's; the service goes on without it
        log.warning("story: the patrol round could not be recorded: %s", exc)


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
        if not keep:
            await demo_governance(config)
            story = asyncio.create_task(patrol_story(config), name="demo:patrol-story")
            stack.push_async_callback(_cancelled, story)
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
            f"  Governance board: http://{config.api.host}:{config.api.port}/governance — a "
            "shift without its cleaning record and a failed patrol item, each a ticket\n"
            f"  Scenario: {scenario.name} — watch polishing-1 go warning → alarm → interlock\n"
            f"  Ctrl-C stops everything.\n",
            flush=True,
        )
        await run(config, stop)


async def _cancelled(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task

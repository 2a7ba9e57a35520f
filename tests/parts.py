"""The control part and the desk part in this process, talking as in production."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI

from ehswatch.api.app import create_app
from ehswatch.config import PlantConfig
from ehswatch.desk_part import DeskPart
from ehswatch.desk_server import ApiServer
from ehswatch.hazards.model import HazardTicket
from ehswatch.service import Service


@asynccontextmanager
async def both_parts(
    config: PlantConfig, **service: Any
) -> AsyncIterator[tuple[Service, DeskPart]]:
    """`Service` (the control part) and its `DeskPart` (tickets, notifications, the
    command channel), through the same run directory, socket and shared state."""
    control = Service(config, **service)
    async with control, DeskPart(config, control.run_dir, clock=control.clock) as desk:
        yield control, desk


def api_server(config: PlantConfig, service: Service | None = None) -> tuple[FastAPI, ApiServer]:
    """Both parts in this process behind a real HTTP server on `config.api.port`, not
    started yet (`server.serve()`): the app, whose lifespan starts the parts (`service`,
    e.g. one on a clock the test moves, or a new one), and the server, which closes the
    event streams before it shuts down."""
    app = create_app(config, service=service)
    server = ApiServer(
        uvicorn.Config(app, host="127.0.0.1", port=config.api.port, log_level="warning")
    )
    server.before_shutdown = lambda: app.state.desk.events.close()
    return app, server


async def open_tickets(desk: DeskPart, timeout: float = 10.0) -> list[HazardTicket]:
    """The open tickets once the hazard desk has opened one (its intake runs on its own)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not (tickets := await desk.hazards.tickets(open_only=True)):
        if loop.time() > deadline:
            raise AssertionError(f"no ticket opened within {timeout} s")
        await asyncio.sleep(0.05)
    return tickets

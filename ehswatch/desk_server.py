"""`ehswatch desk`: the desk part under uvicorn (started by `ehswatch run`, see `parts`).

This module imports only what the desk part needs: not the collectors, the storage or the
interlocks, which live in the control part's process.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import uvicorn

from ehswatch.heap import settle_heap
from ehswatch.run_dir import read_config


class ApiServer(uvicorn.Server):
    """uvicorn without its own signal handling (ehswatch's handlers set `stop`), that ends
    the open event streams first when it shuts down, so that it does not wait on them."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    before_shutdown: Callable[[], None] | None = None

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self.before_shutdown is not None:
            self.before_shutdown()
        await super().shutdown(sockets)


async def serve_desk(run_dir: Path, stop: asyncio.Event) -> None:
    """`ehswatch desk`: the desk part on `api.host:api.port`, with the config the control
    part validated, until `stop`."""
    from ehswatch.api.app import create_app

    config = read_config(run_dir)
    app = create_app(config, run_dir=run_dir)
    server = ApiServer(
        uvicorn.Config(
            app, host=config.api.host, port=config.api.port, log_level="warning", lifespan="on"
        )
    )
    server.before_shutdown = lambda: app.state.desk.events.close()
    serving = asyncio.create_task(server.serve(), name="desk:server")
    while not server.started and not serving.done():  # noqa: ASYNC110 (uvicorn has no event)
        await asyncio.sleep(0.05)
    if server.started:
        app.state.desk.sensor_prefixes  # built now, to be kept with what start made  # noqa: B018
    settle_heap()
    stopped = asyncio.create_task(stop.wait(), name="desk:stop")
    await asyncio.wait({serving, stopped}, return_when=asyncio.FIRST_COMPLETED)
    server.should_exit = True
    await serving
    stopped.cancel()
    if not server.started:
        raise RuntimeError(f"the API could not start on {config.api.host}:{config.api.port}")

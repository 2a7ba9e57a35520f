"""The FastAPI application: routes of SPEC §9 over a running `Service`.

`create_app(config)` builds the app; its lifespan starts the whole service (collectors,
evaluator, storage, interlocks, alarms, hazards) and stops it with the server, and the
routes reach the parts through the `...Dep` aliases of `deps`. Domain refusals become
JSON errors: `Forbidden` 403, `Refused` 409 (evidence: 413/415), unknown ids 404.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse

from ehswatch import __version__
from ehswatch.api.routers import (
    alarms,
    audit,
    events,
    hazards,
    health,
    interlocks,
    metrics,
    sensors,
)
from ehswatch.config import PlantConfig
from ehswatch.hazards.evidence import EvidenceRejected
from ehswatch.roles import Forbidden, Refused
from ehswatch.service import Service

BOARD = Path(__file__).parent / "board" / "index.html"


def create_app(config: PlantConfig, service: Service | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        svc = service if service is not None else Service(config)
        async with svc:
            app.state.service = svc
            yield

    app = FastAPI(
        title="ehswatch",
        version=__version__,
        lifespan=lifespan,
        description="Telemetry, three-tier alarms, PLC interlocks and hazard tickets for "
        "combustible-dust and gas sensors. Bearer tokens; roles viewer < operator "
        "< supervisor < dept_head < safety_director < gm < admin.",
    )
    for r in (health, metrics, sensors, alarms, interlocks, hazards, audit, events):
        app.include_router(r.router)

    @app.exception_handler(Forbidden)
    async def forbidden(_: Request, exc: Forbidden) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=403)

    @app.exception_handler(EvidenceRejected)
    async def rejected(_: Request, exc: EvidenceRejected) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=exc.status)

    @app.exception_handler(Refused)
    async def refused(_: Request, exc: Refused) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=409)

    @app.exception_handler(KeyError)
    async def missing(_: Request, exc: KeyError) -> JSONResponse:
        return JSONResponse(
            {"detail": str(exc.args[0]) if exc.args else "not found"}, status_code=404
        )

    @app.get("/", include_in_schema=False)
    async def board() -> FileResponse:
        return FileResponse(BOARD, media_type="text/html")

    return app

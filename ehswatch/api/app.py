"""The FastAPI application of the desk part: the API and the board.

`create_app(config, run_dir=...)` builds the app of the desk part for the control part
whose run directory that is (what `ehswatch desk` serves); its lifespan starts the
`DeskPart` (tickets, notifications, the command channel) and stops it with the server.
Without `run_dir` (tests, tools) the lifespan starts a control part (`Service`) in the
same process first and the desk part beside it, talking through the same run directory,
socket and shared state as in production. Routes reach the desk part's pieces through
the `...Dep` aliases of `deps`. Domain refusals become JSON errors: `Forbidden` 403,
`Refused` 409 (evidence: 413/415), unknown ids 404, a control part that does not answer
503. A malformed request (path, query, body) is a 4xx with a JSON `{"detail": ...}`,
never a 500: see `errors`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException

from ehswatch import __version__
from ehswatch.api.errors import error_response, http_error, invalid_request, strict_json
from ehswatch.api.idempotency import IdempotencyMiddleware
from ehswatch.api.iso_times import IsoTimesMiddleware, times_format
from ehswatch.api.routers import (
    alarms,
    audit,
    auth,
    checkpoints,
    cleaning,
    events,
    governance,
    hazards,
    health,
    heatmap,
    interlocks,
    metrics,
    owners,
    people,
    predictions,
    reports,
    reviews,
    sensors,
)
from ehswatch.config import PlantConfig
from ehswatch.control_channel import ControlUnavailable, RemoteError
from ehswatch.db import Database
from ehswatch.desk_part import DeskPart
from ehswatch.governance.near_miss import TooMany
from ehswatch.hazards.evidence import EvidenceRejected
from ehswatch.roles import Forbidden, NotFound, Refused
from ehswatch.workbench import pages

if TYPE_CHECKING:
    from ehswatch.service import Service

BOARD = Path(__file__).parent / "board" / "index.html"


def _desk_database(scope: Any) -> Database | None:
    """The desk part's database, once its lifespan has started it."""
    desk: DeskPart = scope["app"].state.desk  # set by the lifespan, before any request
    return desk.db


def create_app(
    config: PlantConfig, *, run_dir: Path | None = None, service: Service | None = None
) -> FastAPI:
    # (The control part is imported only when it runs here: the desk part's process
    # has no use for the collectors' and storage's libraries.)
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if run_dir is not None:
            async with DeskPart(config, run_dir) as desk:
                app.state.desk = desk
                yield
            return
        from ehswatch.service import Service

        svc = service if service is not None else Service(config)
        async with svc, DeskPart(config, svc.run_dir, clock=svc.clock) as desk:
            app.state.service = svc
            app.state.desk = desk
            yield

    # FastAPIOffline: FastAPI with /docs served from assets in the package (plain FastAPI
    # loads Swagger UI from a CDN: a blank page on a plant network). No /redoc: ReDoc's
    # bundle still fetches its logo from the internet.
    app = FastAPIOffline(
        redoc_url=None,
        title="ehswatch",
        version=__version__,
        lifespan=lifespan,
        description="Telemetry, three-tier alarms, PLC interlocks and hazard tickets for "
        "combustible-dust and gas sensors. Bearer tokens; roles viewer < operator "
        "< supervisor < dept_head < safety_director < gm < admin.",
        dependencies=[Depends(strict_json)],  # NaN / Infinity in a JSON body: 422
    )
    # A POST with an Idempotency-Key is done once; sent again, it is answered again.
    app.add_middleware(IdempotencyMiddleware, database=_desk_database)
    # Outside it: an answer kept for a replay is kept in one form, given in the asked one.
    app.add_middleware(IsoTimesMiddleware, timezone=config.site.timezone)
    for r in (
        auth,
        health,
        sensors,
        alarms,
        interlocks,
        hazards,
        owners,
        cleaning,
        checkpoints,
        governance,
        predictions,
        heatmap,
        reports,
        reviews,
        people,
        audit,
    ):
        app.include_router(r.router, dependencies=[Depends(times_format)])  # ?times=iso
    for r in (metrics, events):  # Prometheus text, the event stream: no JSON times
        app.include_router(r.router)
    # The workbench: its pages, and its script and style from the package (no CDN).
    app.mount("/app/static", StaticFiles(directory=pages.STATIC), name="workbench-static")
    app.include_router(pages.router)
    app.include_router(pages.board_router)  # /governance

    # Every error answer is written through `json_safe`: what it echoes may be anything.
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(HTTPException, http_error)

    @app.exception_handler(Forbidden)
    async def forbidden(_: Request, exc: Forbidden) -> JSONResponse:
        return error_response(403, str(exc))

    @app.exception_handler(EvidenceRejected)
    async def rejected(_: Request, exc: EvidenceRejected) -> JSONResponse:
        return error_response(exc.status, str(exc))

    @app.exception_handler(TooMany)
    async def too_many(_: Request, exc: TooMany) -> JSONResponse:
        answer = error_response(429, str(exc))
        answer.headers["Retry-After"] = "3600"
        return answer

    @app.exception_handler(Refused)
    async def refused(_: Request, exc: Refused) -> JSONResponse:
        return error_response(409, str(exc))

    @app.exception_handler(ControlUnavailable)
    async def unavailable(_: Request, exc: ControlUnavailable) -> JSONResponse:
        return error_response(503, str(exc))

    @app.exception_handler(RemoteError)
    async def remote(_: Request, exc: RemoteError) -> JSONResponse:
        # A failure inside the control part is its bug, logged there: here it is a
        # service that could not do it (503), never a 500.
        return error_response(exc.status if 400 <= exc.status < 500 else 503, str(exc))

    @app.exception_handler(NotFound)
    async def missing(_: Request, exc: NotFound) -> JSONResponse:
        return error_response(404, str(exc))

    @app.get("/", include_in_schema=False)
    async def board() -> FileResponse:
        return FileResponse(BOARD, media_type="text/html")

    return app

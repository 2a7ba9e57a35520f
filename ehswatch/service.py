"""Wiring: the components of one ehswatch process, started and stopped together.

`Service` is an async context manager: entering starts the storage sink, the evaluator
stage, then the collectors that the config calls for; leaving stops them in reverse
order (collectors first, so nothing is left half-handed to the evaluator, and the sink
last, so it spools whatever it still holds). `run()` serves until `stop`.

Every part that decides by time (the evaluator's ticks and staleness, interlocks, alarms,
hazards, notifications, the stamps on readings that carry none) runs on the one
`ServiceClock` of the service (`service.clock`), so that a step of the wall clock changes
none of their decisions; `ClockWatch` logs when the wall clock moves away from it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable, Iterable, Iterator
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Self

import uvicorn

from ehswatch.alarms.events import EventStream
from ehswatch.alarms.manager import AlarmManager
from ehswatch.alarms.notifier import Notifier
from ehswatch.alarms.relay import AlarmRelay
from ehswatch.clock import ServiceClock
from ehswatch.component import Component, Job
from ehswatch.config import PlantConfig
from ehswatch.db import Database
from ehswatch.hazards.desk import HazardDesk
from ehswatch.history import SensorHistory
from ehswatch.ingest.influx import InfluxSink
from ehswatch.ingest.modbus import ModbusCollector
from ehswatch.ingest.mqtt import MqttCollector
from ehswatch.ingest.queue import ReadingQueue
from ehswatch.interlock.controller import InterlockController
from ehswatch.publisher import RetainedPublisher
from ehswatch.roles import Actor
from ehswatch.thresholds.stage import EvaluatorStage
from ehswatch.thresholds.table import ThresholdTable

log = logging.getLogger(__name__)

#: how far (seconds) the wall clock may move away from the service clock before the
#: service says so (a warning in the log, `degraded` on /health)
WALL_OFFSET_TOLERANCE_S = 1.0


def wall_offset_problem(offset: float) -> str | None:
    """The operator's reason when the wall clock is too far from the service clock."""
    if abs(offset) <= WALL_OFFSET_TOLERANCE_S:
        return None
    return f"wall clock stepped or drifted by {offset:+.1f} s since start"


class ClockWatch(Component):
    """Compares the wall clock with the service clock every `period_s`: one warning when
    they first drift apart by more than `WALL_OFFSET_TOLERANCE_S`, one line when they
    agree again. The service's decisions do not change either way (they run on the
    service clock); the log tells the operator why records and wall time disagree."""

    component_name = "clock-watch"

    def __init__(self, clock: ServiceClock, period_s: float = 1.0) -> None:
        self.clock = clock
        self.period_s = period_s
        self.wall_off = False  # the wall clock is currently out of tolerance

    def jobs(self) -> Iterable[tuple[str, Job]]:
        yield "check", self._run

    def check(self) -> float:
        offset = self.clock.wall_offset()
        problem = wall_offset_problem(offset)
        if problem is not None and not self.wall_off:
            log.warning(
                "%s; decisions keep the service clock (a restart takes the wall time again)",
                problem,
            )
        elif problem is None and self.wall_off:
            log.info("wall clock back within %.0f s of the service clock", WALL_OFFSET_TOLERANCE_S)
        self.wall_off = problem is not None
        return offset

    async def _run(self) -> None:
        while True:
            self.check()
            await asyncio.sleep(self.period_s)


class Service:
    def __init__(
        self, config: PlantConfig, *, tick_s: float = 1.0, clock: ServiceClock | None = None
    ) -> None:
        self.config = config
        # The one clock of every decision; see `ehswatch.clock`.
        self.clock = clock if clock is not None else ServiceClock()
        self.clock_watch = ClockWatch(self.clock)
        self.table = ThresholdTable.from_config(config)
        self.queue = ReadingQueue()
        self.stage = EvaluatorStage(
            table=self.table,
            queue=self.queue,
            names={s.id: s.name for s in config.sensors},
            timezone=config.site.timezone,
            tick_s=tick_s,
            clock=self.clock,
        )
        self.sink = (
            InfluxSink.from_config(config, self.table.sensor_ids, clock=self.clock)
            if config.influxdb is not None
            else None
        )
        self.db = Database(config.database.url)
        self.publisher = (
            RetainedPublisher(config.mqtt, config.site.id) if config.mqtt is not None else None
        )
        self.alarms = AlarmManager(
            config=config, evaluator=self.stage.evaluator, db=self.db, clock=self.clock
        )
        self.interlock = (
            InterlockController(
                config=config,
                evaluator=self.stage.evaluator,
                db=self.db,
                alarms=self.alarms,
                publisher=self.publisher,
                sink=self.sink,
                clock=self.clock,
            )
            if any(z.interlock is not None for z in config.zones)
            else None
        )
        # The interlock hears of an evaluation first: it commands a trip within the
        # evaluator's turn, before storage, alarms and tickets start their work.
        if self.interlock is not None:
            self.stage.listen(self.interlock.on_evaluation)
        if self.sink is not None:
            self.stage.listen(self.sink.submit)
        self.events = EventStream()
        self.relay = AlarmRelay(
            config=config,
            db=self.db,
            stream=self.events,
            publisher=self.publisher,
            sink=self.sink,
            clock=self.clock,
        )
        self.notifier = Notifier(config=config, db=self.db, clock=self.clock)
        self.alarms.on_commit.append(self.relay.wake)
        self.hazards = HazardDesk(config=config, db=self.db, clock=self.clock)
        self.alarms.on_commit.append(self.hazards.wake)
        self.hazards.notify_wake = self.notifier.wake
        self.relay.notify_wake = self.notifier.wake
        self.stage.listen(self.alarms.on_evaluation)
        self.history = SensorHistory(self.stage.evaluator)
        self.stage.listen(self.history.on_evaluation)
        if self.interlock is not None:
            self.interlock.stream = self.events
        self.users = {u.token_sha256: Actor(name=u.name, role=u.role) for u in config.users}
        self.started_at = self.clock()
        self.modbus = (
            ModbusCollector.from_config(config, self.table, self.queue, clock=self.clock)
            if config.modbus_devices
            else None
        )
        if self.modbus is not None:  # a device that stops answering: one alarm, not one each
            self.modbus.on_status.append(self.alarms.on_device_status)
        self.mqtt = (
            MqttCollector.from_config(config, self.table, self.queue, clock=self.clock)
            if config.mqtt is not None
            else None
        )
        if self.sink is not None:
            # Acknowledge after durable: the stage tells the sink what each drained batch
            # covered; MQTT PUBACKs wait for the sink's watermark (docs/ingest.md).
            self.stage.on_covered(self.sink.mark)
            if self.mqtt is not None:
                self.mqtt.ack_after_durable(self.sink.on_durable)
        self._stack = AsyncExitStack()

    async def __aenter__(self) -> Self:
        await self._stack.__aenter__()
        try:
            await self._stack.enter_async_context(self.clock_watch)
            await self._stack.enter_async_context(self.db)
            if self.publisher is not None:
                await self._stack.enter_async_context(self.publisher)
            # Storage before and out after the stage: it takes what the stage hands it.
            if self.sink is not None:
                await self._stack.enter_async_context(self.sink)
            # Alarms and interlocks before the evaluator feeds them; out after it.
            await self._stack.enter_async_context(self.notifier)
            await self._stack.enter_async_context(self.hazards)
            await self._stack.enter_async_context(self.relay)
            await self._stack.enter_async_context(self.alarms)
            if self.interlock is not None:
                await self._stack.enter_async_context(self.interlock)
            await self._stack.enter_async_context(self.stage)
            if self.modbus is not None:
                await self._stack.enter_async_context(self.modbus)
            if self.mqtt is not None:
                await self._stack.enter_async_context(self.mqtt)
        except BaseException:
            await self._stack.aclose()
            raise
        log.info("ehswatch running: %s", self.config.summary())
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stack.__aexit__(et, e, tb)
        log.info("ehswatch stopped")

    def components(self) -> list[Component]:
        parts: list[Component | None] = [
            self.publisher,
            self.sink,
            self.notifier,
            self.hazards,
            self.relay,
            self.alarms,
            self.interlock,
            self.stage,
            self.modbus,
            self.mqtt,
            self.clock_watch,
        ]
        return [c for c in parts if c is not None]


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


async def run(config: PlantConfig, stop: asyncio.Event) -> None:
    """The service with its API and board on `api.host:api.port`, until `stop`."""
    from ehswatch.api.app import create_app

    # Find out before starting anything that the API's address is free.
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((config.api.host, config.api.port))
        except OSError as exc:
            raise RuntimeError(
                f"the API could not start on {config.api.host}:{config.api.port}: "
                f"{exc.strerror or exc}"
            ) from None

    app = create_app(config)
    server = ApiServer(
        uvicorn.Config(
            app, host=config.api.host, port=config.api.port, log_level="warning", lifespan="on"
        )
    )
    server.before_shutdown = lambda: app.state.service.events.close()
    serving = asyncio.create_task(server.serve(), name="api:server")
    log.info("API and board on http://%s:%d/", config.api.host, config.api.port)
    stopped = asyncio.create_task(stop.wait(), name="api:stop")
    await asyncio.wait({serving, stopped}, return_when=asyncio.FIRST_COMPLETED)
    server.should_exit = True
    await serving
    stopped.cancel()
    if not server.started:
        raise RuntimeError(f"the API could not start on {config.api.host}:{config.api.port}")

"""Wiring of the control part: the components that decide, started and stopped together.

`Service` is the control part (see `ehswatch.parts` and docs/deploy.md): intake,
evaluator, interlocks with their PLC links and heartbeat, alarm states, storage. It
shares no event loop with anything a person looks at: it publishes its state once per
tick into the shared state file (`ControlState`) and takes commands (acknowledge,
shelve, reset, bypass) over the command channel (`CommandServer`), both in its run
directory; the desk part (`ehswatch.desk`) serves the API, the board, tickets and
notifications from those.

`Service` is an async context manager: entering starts `parts()` in their order (one
table: storage, alarms and interlocks, the evaluator stage, then the collectors that the
config calls for); leaving stops them in reverse.

Every part that decides by time (the evaluator's ticks and staleness, interlocks, alarms,
hazards, notifications, the stamps on readings that carry none) runs on the one
`ServiceClock` of the service (`service.clock`), so that a step of the wall clock changes
none of their decisions; `ClockWatch` logs when the wall clock moves away from it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from ehswatch.alarms.events import EventStream
from ehswatch.alarms.manager import AlarmManager
from ehswatch.alarms.relay import AlarmRelay
from ehswatch.analytics.predict import LivePredictor
from ehswatch.clock import WALL_OFFSET_TOLERANCE_S, ServiceClock, wall_offset_problem
from ehswatch.commands import control_handlers
from ehswatch.component import Component, Job, enter_all
from ehswatch.config import PlantConfig, SensorNames
from ehswatch.control_channel import CommandServer, Wake
from ehswatch.control_state import ControlState, control_status
from ehswatch.db import Database
from ehswatch.governance.shift_figures import LiveShiftFigures
from ehswatch.history import SensorHistory
from ehswatch.ingest.influx import InfluxSink
from ehswatch.ingest.modbus import ModbusCollector
from ehswatch.ingest.mqtt import MqttCollector
from ehswatch.ingest.queue import ReadingQueue
from ehswatch.interlock.controller import InterlockController
from ehswatch.publisher import RetainedPublisher
from ehswatch.run_dir import COMMAND_SOCKET, STATE_FILE, new_run_dir
from ehswatch.shared_state import StateLayout, StateWriter
from ehswatch.thresholds.evaluator import Evaluator
from ehswatch.thresholds.stage import EvaluatorStage
from ehswatch.thresholds.table import ThresholdTable

log = logging.getLogger(__name__)


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
        self,
        config: PlantConfig,
        *,
        tick_s: float = 1.0,
        clock: ServiceClock | None = None,
        run_dir: Path | None = None,
        own_run_dir: bool | None = None,
        fence: Callable[[], bool] | None = None,
    ) -> None:
        """`fence()`: asked before every PLC write (an active instance's control lease,
        `ehswatch.standby`): False, and nothing is written."""
        self.config = config
        # Removed at the end by whoever made it: the service for its own (None: if it
        # made it), `parts` for the one it execs into.
        self._own_run_dir = run_dir is None if own_run_dir is None else own_run_dir
        self.run_dir = run_dir if run_dir is not None else new_run_dir()
        # The one clock of every decision; see `ehswatch.clock`.
        self.clock = clock if clock is not None else ServiceClock()
        self.clock_watch = ClockWatch(self.clock)
        self._stack = AsyncExitStack()
        self.table = table = ThresholdTable.from_config(config)
        self.queue = ReadingQueue()
        # Built in the order data flows: sensor → queue → evaluator → {interlock, alarms,
        # storage, the shared state}; each part is handed what it feeds in its
        # constructor, and nothing is wired after.
        evaluator = Evaluator(table, start_ts=self.clock())
        self.sink = (
            InfluxSink.from_config(config, table.sensor_ids, clock=self.clock)
            if config.influxdb is not None
            else None
        )
        self.db = Database(config.database.url)
        self.publisher = (
            RetainedPublisher(config.mqtt, config.site.id) if config.mqtt is not None else None
        )
        # Events for the desk part's screens and wake-ups for its jobs, sent over the
        # command channel.
        self.events = EventStream()
        self.relay = AlarmRelay(
            config=config,
            db=self.db,
            stream=self.events,
            publisher=self.publisher,
            sink=self.sink,
            clock=self.clock,
            notify_wake=Wake(self.events, "notifier"),
        )
        self.alarms = AlarmManager(
            config=config,
            evaluator=evaluator,
            db=self.db,
            clock=self.clock,
            on_commit=(self.relay.wake, Wake(self.events, "hazards")),
        )
        self.interlock = (
            InterlockController(
                config=config,
                evaluator=evaluator,
                db=self.db,
                alarms=self.alarms,
                publisher=self.publisher,
                sink=self.sink,
                stream=self.events,
                clock=self.clock,
                fence=fence,
            )
            if any(z.interlock is not None for z in config.zones)
            else None
        )
        self.started_at = self.clock()
        # Set by `parts.run`: the desk process's pid, starts and last exit, for /health.
        self.desk_status: Callable[[], dict[str, object]] | None = None
        api = config.api
        self.state_writer = StateWriter(
            self.run_dir / STATE_FILE,
            StateLayout(sensors=table.size, points=api.history_points),
            api.history_step_s,
        )
        self.state = ControlState(
            evaluator=evaluator,
            writer=self.state_writer,
            history=SensorHistory(table.size, api.history_step_s),
            status=lambda: control_status(self),
            clock=self.clock,
        )
        # The interlock hears of an evaluation first: it commands a trip within the
        # evaluator's turn, before storage, alarms and tickets start their work.
        self.shift_figures = LiveShiftFigures(config, evaluator=evaluator, clock=self.clock)
        self.predictions = LivePredictor(
            config, evaluator=evaluator, clock=self.clock, step_s=tick_s
        )
        listeners = [
            *([self.interlock.on_evaluation] if self.interlock is not None else []),
            *([self.sink.submit] if self.sink is not None else []),
            self.alarms.on_evaluation,
            self.shift_figures.on_evaluation,  # before the state: a tick's figures go out
            self.predictions.on_evaluation,
            self.state.on_evaluation,
        ]
        self.stage = EvaluatorStage(
            table=table,
            queue=self.queue,
            names=SensorNames(config),
            timezone=config.site.timezone,
            tick_s=tick_s,
            clock=self.clock,
            evaluator=evaluator,
            listeners=listeners,
            # Acknowledge after durable: the stage tells the sink what each drained batch
            # covered; MQTT PUBACKs wait for the sink's watermark (docs/ingest.md).
            covered=[self.sink.mark] if self.sink is not None else [],
        )
        self.commands = CommandServer(
            self.run_dir / COMMAND_SOCKET, control_handlers(self), self.events
        )
        self.modbus = (
            ModbusCollector.from_config(
                config,
                table,
                self.queue,
                clock=self.clock,
                # A device that stops answering: one alarm, not one per sensor.
                on_status=[self.alarms.on_device_status],
            )
            if config.modbus_devices
            else None
        )
        self.mqtt = (
            MqttCollector.from_config(config, table, self.queue, clock=self.clock)
            if config.mqtt is not None
            else None
        )
        if self.sink is not None and self.mqtt is not None:
            # The one way back: the sink's watermark releases the collector's PUBACKs.
            self.mqtt.ack_after_durable(self.sink.on_durable)

    def parts(self) -> Iterable[AbstractAsyncContextManager[Any]]:
        """What runs, in the order it starts; it stops in reverse (the collectors first,
        so nothing is left half-handed to the evaluator; the sink after the stage, so it
        spools whatever it still holds)."""
        yield self.clock_watch
        yield self.db
        if self.publisher is not None:
            yield self.publisher
        if self.sink is not None:  # storage before the stage: it takes what the stage hands
            yield self.sink
        yield self.relay  # alarms and interlocks before the evaluator feeds them
        yield self.alarms
        if self.interlock is not None:
            yield self.interlock
        yield self.stage
        yield self._first_state()  # the desk part has a state to read from the start
        yield self.commands
        if self.modbus is not None:
            yield self.modbus
        if self.mqtt is not None:
            yield self.mqtt

    @contextlib.asynccontextmanager
    async def _first_state(self) -> AsyncIterator[None]:
        self.state.publish()
        yield

    async def __aenter__(self) -> Self:
        await enter_all(self._stack, self.parts())
        log.info("ehswatch running: %s", self.config.summary())
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            await self._stack.__aexit__(et, e, tb)
        finally:
            self.events.close()
            self.state_writer.close()
            if self._own_run_dir:
                shutil.rmtree(self.run_dir, ignore_errors=True)
        log.info("ehswatch stopped")

    def components(self) -> list[Component]:
        parts: list[Component | None] = [
            self.publisher,
            self.sink,
            self.relay,
            self.alarms,
            self.interlock,
            *(self.interlock.links.values() if self.interlock is not None else ()),
            self.stage,
            self.modbus,
            self.mqtt,
            self.commands,
            self.clock_watch,
        ]
        return [c for c in parts if c is not None]

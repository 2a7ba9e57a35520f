"""`ControlParts`: what the control part's status, metrics, health and command handlers
read of it — the parts `Service` builds, as a protocol, so that those modules need
nothing of how the service is wired (and `service` may import them)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from ehswatch.alarms.manager import AlarmManager
from ehswatch.analytics.predict import LivePredictor
from ehswatch.clock import ServiceClock
from ehswatch.component import Component
from ehswatch.governance.shift_figures import ShiftFigures
from ehswatch.ingest.influx import InfluxSink
from ehswatch.ingest.modbus import ModbusCollector
from ehswatch.ingest.mqtt import MqttCollector
from ehswatch.interlock.controller import InterlockController
from ehswatch.thresholds.stage import EvaluatorStage


class ControlParts(Protocol):
    @property
    def clock(self) -> ServiceClock: ...
    @property
    def stage(self) -> EvaluatorStage: ...
    @property
    def alarms(self) -> AlarmManager: ...
    @property
    def interlock(self) -> InterlockController | None: ...
    @property
    def sink(self) -> InfluxSink | None: ...
    @property
    def mqtt(self) -> MqttCollector | None: ...
    @property
    def modbus(self) -> ModbusCollector | None: ...
    @property
    def shift_figures(self) -> ShiftFigures: ...
    @property
    def predictions(self) -> LivePredictor: ...
    @property
    def started_at(self) -> float: ...
    @property
    def desk_status(self) -> Callable[[], dict[str, object]] | None: ...
    def components(self) -> list[Component]: ...

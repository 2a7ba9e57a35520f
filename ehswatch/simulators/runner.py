"""`Simulation`: every simulator a plant config and a scenario call for, started together.

- a `DustMonitorSim` for each Modbus device that has sensors,
- a `PlcSim` for each PLC,
- a `GasDetectorSim` for the scripted MQTT sensors (those with a topic, or none: they
  publish on ``{prefix}/telemetry/{id}``), when the config has an `mqtt` section.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Self
from urllib.parse import urlsplit

from ehswatch.component import enter_all
from ehswatch.config import PlantConfig
from ehswatch.simulators.dust_monitor import DustMonitorSim
from ehswatch.simulators.gas_detector import GasDetectorSim
from ehswatch.simulators.plc import PlcSim
from ehswatch.simulators.scenario import Scenario, compile_scripts


class Simulation:
    def __init__(
        self, config: PlantConfig, scenario: Scenario, *, clock: Callable[[], float] = time.time
    ) -> None:
        unknown = sorted(set(scenario.sensors) - {s.id for s in config.sensors})
        if unknown:
            raise ValueError(
                f"scenario {scenario.name!r} scripts sensors the plant lacks: {unknown}"
            )
        self.start = clock()
        scripts = compile_scripts(scenario)
        self.dust_monitors = [
            DustMonitorSim(
                d,
                [
                    (s.id, s.modbus)
                    for s in config.sensors
                    if s.modbus is not None and s.modbus.device == d.id
                ],
                scripts,
                start=self.start,
                clock=clock,
            )
            for d in config.modbus_devices
            if any(s.modbus is not None and s.modbus.device == d.id for s in config.sensors)
        ]
        self.plcs = {p.id: PlcSim(p, clock=clock) for p in config.plcs}
        self.gas_detectors: GasDetectorSim | None = None
        if config.mqtt is not None:
            prefix = config.mqtt.topic_prefix
            mqtt_sensors = [
                (s.id, s.mqtt.topic if s.mqtt else f"{prefix}/telemetry/{s.id}")
                for s in config.sensors
                if s.modbus is None
            ]
            url = urlsplit(config.mqtt.url)
            self.gas_detectors = GasDetectorSim(
                host=url.hostname or "127.0.0.1",
                port=url.port or 1883,
                sensors=mqtt_sensors,
                scripts=scripts,
                rate_hz=scenario.rate_hz,
                mode=scenario.publish,
                prefix=prefix,
                start=self.start,
                clock=clock,
            )
        self._stack = AsyncExitStack()

    def describe(self) -> list[str]:
        lines = [f"dust monitor {m.host}:{m.port} unit {m.unit}" for m in self.dust_monitors]
        lines += [f"PLC {p.plc.id} {p.host}:{p.port} unit {p.unit}" for p in self.plcs.values()]
        if self.gas_detectors is not None:
            lines.append(
                f"gas detectors publishing to {self.gas_detectors.host}:{self.gas_detectors.port}"
            )
        return lines

    async def __aenter__(self) -> Self:
        gas = [self.gas_detectors] if self.gas_detectors is not None else []
        await enter_all(self._stack, [*self.dust_monitors, *self.plcs.values(), *gas])
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stack.__aexit__(et, e, tb)

"""PLC simulator: a Modbus server that records every coil and register write.

It stands in for the PLC that ehswatch trips: tests read `writes` (every write in order,
with its time), `coils` and `holding` (current output state) and `heartbeats` (values
written to the heartbeat register). `silent = True` makes it stop answering (a PLC that
does not confirm); leaving and re-entering the context is a PLC restart, outputs reset.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from pymodbus.constants import ExcCodes

from ehswatch.config import Plc
from ehswatch.simulators.modbus_server import (
    WRITE_COIL,
    WRITE_COILS,
    WRITE_REGISTER,
    WRITE_REGISTERS,
    ModbusServerSim,
)


@dataclass(frozen=True, slots=True)
class PlcWrite:
    ts: float
    table: str  # "coil" or "register"
    address: int
    values: tuple[int, ...]


class PlcSim(ModbusServerSim):
    def __init__(
        self,
        plc: Plc,
        *,
        size: int = 256,
        clock: Callable[[], float] = time.time,
        on_write: Callable[[PlcWrite], None] | None = None,
    ) -> None:
        super().__init__(
            host=plc.host,
            port=plc.port,
            unit=plc.unit,
            registers=size,
            bits=size,
            on_request=self._answer,
        )
        self.plc = plc
        self._clock = clock
        self.writes: list[PlcWrite] = []
        self.coils: dict[int, bool] = {}
        self.holding: dict[int, int] = {}
        self.silent = False
        self._on_write = on_write  # called with every write as it arrives

    async def start(self) -> None:
        self.coils, self.holding = {}, {}  # a restarted PLC comes up with outputs off
        await super().start()

    @property
    def heartbeats(self) -> list[int]:
        if self.plc.heartbeat is None:
            return []
        reg = self.plc.heartbeat.address
        return [w.values[0] for w in self.writes if w.table == "register" and w.address == reg]

    async def _answer(
        self,
        fc: int,
        start: int,
        address: int,
        count: int,
        registers: list[int],
        values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        if self.silent:
            return await self.no_answer()
        if values is None:
            return None
        now = self._clock()
        if fc in (WRITE_COIL, WRITE_COILS):
            write = PlcWrite(now, "coil", address, tuple(int(bool(v)) for v in values))
            for k, v in enumerate(values):
                self.coils[address + k] = bool(v)
        elif fc in (WRITE_REGISTER, WRITE_REGISTERS):
            write = PlcWrite(now, "register", address, tuple(int(v) for v in values))
            for k, v in enumerate(values):
                self.holding[address + k] = int(v)
        else:
            return None
        self.writes.append(write)
        if self._on_write is not None:
            self._on_write(write)
        return None

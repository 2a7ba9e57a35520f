"""Dust monitor simulator: a Modbus server whose registers follow a scenario.

One server per configured Modbus device, answering for every sensor the plant config
reads from that device, with the sensor's register, kind, dtype, word and byte order,
scale and offset. Values are computed from the scenario at the moment a request arrives.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from pymodbus.constants import ExcCodes

from ehswatch.config import ModbusDevice, ModbusPoint
from ehswatch.ingest.registers import WORDS, encode
from ehswatch.simulators.modbus_server import (
    READ_COILS,
    READ_DISCRETE,
    READ_HOLDING,
    READ_INPUT,
    ModbusServerSim,
    pack_bits,
)
from ehswatch.simulators.scenario import Sample, Script

KIND_OF_FC = {
    READ_HOLDING: "holding",
    READ_INPUT: "input",
    READ_COILS: "coil",
    READ_DISCRETE: "discrete",
}


class DustMonitorSim(ModbusServerSim):
    def __init__(
        self,
        device: ModbusDevice,
        points: Sequence[tuple[str, ModbusPoint]],
        scripts: dict[str, Script],
        *,
        start: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        regs = max((p.address + WORDS[p.dtype] for _, p in points if p.dtype != "bool"), default=1)
        bits = max((p.address + 1 for _, p in points if p.dtype == "bool"), default=16)
        super().__init__(
            host=device.host,
            port=device.port,
            unit=device.unit,
            registers=regs,
            bits=bits,
            on_request=self._answer,
            rtu=device.framer == "rtu",
        )
        self._points = list(points)
        self._scripts = scripts
        self._clock = clock
        self.t0 = clock() if start is None else start
        self.requests = 0

    def samples(self) -> dict[str, Sample]:
        t = self._clock() - self.t0
        return {
            sid: self._scripts[sid].sample(t) if sid in self._scripts else Sample(0.0)
            for sid, _ in self._points
        }

    async def _answer(
        self,
        fc: int,
        start: int,
        address: int,
        count: int,
        registers: list[int],
        values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        self.requests += 1
        kind = KIND_OF_FC.get(fc)
        if kind is None or values is not None:
            return ExcCodes.ILLEGAL_FUNCTION  # a monitor is read-only
        samples = self.samples()
        if any(s.value is None for s in samples.values()):
            return await self.no_answer()
        if any(s.garbage for sid, s in samples.items()):
            return ExcCodes.DEVICE_FAILURE
        mine = [(sid, p) for sid, p in self._points if p.kind == kind]
        if kind in ("coil", "discrete"):
            bits = [False] * (len(registers) * 16)
            for sid, p in mine:
                bits[p.address] = bool(samples[sid].value)
            registers[:] = pack_bits(bits, len(registers))
        else:
            for sid, p in mine:
                v = samples[sid].value
                assert v is not None
                words = encode(v, p)
                registers[p.address - start : p.address - start + len(words)] = words
        return None

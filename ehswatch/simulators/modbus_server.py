"""A pymodbus TCP server with the four Modbus tables, for the device simulators.

Each table is one block starting at address 0; coils and discrete inputs are addressed
by bit (16 to a register inside pymodbus). `on_request` sees every request before
pymodbus answers it and may fill the registers (reads), record the values (writes), hold
the answer back, or return an exception code.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, Self

from pymodbus.constants import ExcCodes
from pymodbus.framer import FramerType
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

# (function code, block start, request address, count, block registers, written values)
RequestHook = Callable[
    [int, int, int, int, list[int], list[int] | list[bool] | None],
    Coroutine[Any, Any, ExcCodes | None],
]
READ_COILS, READ_DISCRETE, READ_HOLDING, READ_INPUT = 1, 2, 3, 4
WRITE_COIL, WRITE_REGISTER, WRITE_COILS, WRITE_REGISTERS = 5, 6, 15, 16


class ModbusServerSim:
    """Async context manager: serves while inside, stops (and releases the port) on exit."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        unit: int,
        registers: int,
        bits: int,
        on_request: RequestHook,
        rtu: bool = False,
    ) -> None:
        self.host, self.port, self.unit = host, port, unit
        self._registers, self._bits = max(registers, 1), max(bits, 16)
        self._on_request = on_request
        self._rtu = rtu
        self._server: ModbusTcpServer | None = None
        self.released = asyncio.Event()  # set on stop: held-back answers give up

    async def start(self) -> None:
        bit_regs = (self._bits + 15) // 16
        device = SimDevice(
            id=self.unit,
            simdata=(
                [SimData(0, count=bit_regs, values=0, datatype=DataType.BITS)],
                [SimData(0, count=bit_regs, values=0, datatype=DataType.BITS)],
                [SimData(0, count=self._registers, values=0, datatype=DataType.REGISTERS)],
                [SimData(0, count=self._registers, values=0, datatype=DataType.REGISTERS)],
            ),
            action=self._on_request,
        )
        self.released.clear()
        self._server = ModbusTcpServer(
            device,
            address=(self.host, self.port),
            framer=FramerType.RTU if self._rtu else FramerType.SOCKET,
        )
        await self._server.serve_forever(background=True)

    async def no_answer(self) -> ExcCodes:
        """Hold a request back until the server stops: the client times out, as with a
        device that has gone silent."""
        await self.released.wait()
        return ExcCodes.GATEWAY_NO_RESPONSE

    async def stop(self) -> None:
        self.released.set()
        if self._server is not None:
            await self._server.shutdown()  # type: ignore[no-untyped-call]
            self._server = None
        # Let held-back request handlers see `released` and finish.
        await asyncio.sleep(0)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()


def pack_bits(bits: list[bool], registers: int) -> list[int]:
    """Bits (address order) packed as pymodbus keeps them: bit k of register k // 16."""
    out = [0] * registers
    for k, b in enumerate(bits):
        if b:
            out[k // 16] |= 1 << (k % 16)
    return out

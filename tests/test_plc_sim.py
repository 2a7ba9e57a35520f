"""The PLC simulator records what ehswatch writes, over real Modbus TCP."""

from __future__ import annotations

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from ehswatch.config import Plc
from ehswatch.simulators.plc import PlcSim
from tests.aio import run
from tests.servers import free_port


def plc() -> Plc:
    return Plc.model_validate(
        {
            "id": "plc-1",
            "host": "127.0.0.1",
            "port": free_port(),
            "heartbeat": {"register": 100, "period_s": 1.0},
        }
    )


def test_every_coil_and_register_write_is_recorded_with_its_time() -> None:
    async def main() -> None:
        now = iter(range(100, 200))
        sim = PlcSim(plc(), clock=lambda: float(next(now)))
        async with sim:
            client = AsyncModbusTcpClient("127.0.0.1", port=sim.port, timeout=1, retries=0)
            await client.connect()
            await client.write_coil(0, True, device_id=1)
            await client.write_register(10, 1, device_id=1)
            await client.write_register(100, 7, device_id=1)
            await client.write_register(100, 8, device_id=1)
            readback = await client.read_coils(0, count=1, device_id=1)
            client.close()
        assert [(w.ts, w.table, w.address, w.values) for w in sim.writes] == [
            (100.0, "coil", 0, (1,)),
            (101.0, "register", 10, (1,)),
            (102.0, "register", 100, (7,)),
            (103.0, "register", 100, (8,)),
        ]
        assert sim.coils == {0: True} and sim.holding == {10: 1, 100: 8}
        assert sim.heartbeats == [7, 8]
        assert readback.bits[0] is True

    run(main())


def test_a_silent_plc_does_not_confirm() -> None:
    async def main() -> None:
        sim = PlcSim(plc())
        async with sim:
            sim.silent = True
            client = AsyncModbusTcpClient("127.0.0.1", port=sim.port, timeout=0.2, retries=0)
            await client.connect()
            try:
                await client.write_coil(0, True, device_id=1)
                confirmed = True
            except ModbusException:
                confirmed = False
            client.close()
        assert not confirmed

    run(main())


def test_a_restarted_plc_comes_up_with_outputs_off() -> None:
    async def main() -> None:
        sim = PlcSim(plc())
        async with sim:
            client = AsyncModbusTcpClient("127.0.0.1", port=sim.port, timeout=1, retries=0)
            await client.connect()
            await client.write_coil(3, True, device_id=1)
            client.close()
        assert sim.coils == {3: True}
        async with sim:
            client = AsyncModbusTcpClient("127.0.0.1", port=sim.port, timeout=1, retries=0)
            await client.connect()
            coil = await client.read_coils(3, count=1, device_id=1)
            client.close()
        assert sim.coils == {} and coil.bits[0] is False

    run(main())

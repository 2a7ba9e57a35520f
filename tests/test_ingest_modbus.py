"""The Modbus collector against pymodbus servers over real Modbus TCP (and RTU over TCP)."""

from __future__ import annotations

import asyncio
import math

import numpy as np
import pytest

from ehswatch.config import ModbusDevice, ModbusPoint
from ehswatch.ingest.modbus import ModbusCollector
from ehswatch.ingest.queue import ReadingQueue
from ehswatch.ingest.registers import RegisterPlan
from ehswatch.readings import Quality, ReadingBatch
from ehswatch.simulators.dust_monitor import DustMonitorSim
from ehswatch.simulators.scenario import Scenario, compile_scripts
from tests.aio import eventually, run
from tests.servers import free_port

LAYOUTS = [("big", "big"), ("little", "big"), ("big", "little"), ("little", "little")]


def device(dev_id: str, framer: str = "tcp", **kw: object) -> ModbusDevice:
    params = {
        "id": dev_id,
        "host": "127.0.0.1",
        "port": free_port(),
        "framer": framer,
        "poll_interval_s": 0.1,
        "timeout_s": 0.2,
        "retries": 0,
        **kw,
    }
    return ModbusDevice.model_validate(params)


def scenario(values: dict[str, float], **events: list[dict[str, float]]) -> Scenario:
    return Scenario.model_validate(
        {
            "name": "test",
            "sensors": {
                sid: {"baseline": v, "events": events.get(sid, [])} for sid, v in values.items()
            },
        }
    )


class Collected:
    """Drains a queue in the background into per-sensor lists."""

    def __init__(self, queue: ReadingQueue) -> None:
        self.queue = queue
        self.batches: list[ReadingBatch] = []

    def pull(self) -> None:
        b = self.queue.drain_nowait()
        if len(b):
            self.batches.append(b)

    def of(self, sensor: int) -> list[tuple[float, int]]:
        self.pull()
        return [
            (float(v), int(q))
            for b in self.batches
            for s, v, q in zip(b.sensor, b.value, b.quality, strict=True)
            if s == sensor
        ]


@pytest.mark.parametrize("framer", ["tcp", "rtu"])
def test_every_dtype_and_byte_order_round_trips_over_modbus(framer: str) -> None:
    dev = device("dm", framer)
    points: list[tuple[str, ModbusPoint]] = []
    expected: dict[str, float] = {}
    register = 0
    cases = [
        ("int16", -1234.0, 1.0),
        ("uint16", 60000.0, 1.0),
        ("int32", -2_000_000.0, 1.0),
        ("uint32", 4_000_000_000.0, 1.0),
        ("float32", 12.5, 1.0),
        ("float64", 1234567.891, 1.0),
        ("int16", 23.4, 0.1),
    ]
    for dtype, value, scale in cases:
        for word, byte in LAYOUTS:
            sid = f"{dtype}-{word}-{byte}-{scale}"
            p = ModbusPoint(
                device="dm",
                register=register,
                kind="holding",
                dtype=dtype,
                word_order=word,
                byte_order=byte,
                scale=scale,
            )
            register += {"int16": 1, "uint16": 1, "float64": 4}.get(dtype, 2)
            points.append((sid, p))
            expected[sid] = value
    points.append(("in-reg", ModbusPoint(device="dm", register=3, kind="input", dtype="float32")))
    expected["in-reg"] = -7.25
    points.append(("coil", ModbusPoint(device="dm", register=9, kind="coil", dtype="bool")))
    expected["coil"] = 1.0
    points.append(("di", ModbusPoint(device="dm", register=4, kind="discrete", dtype="bool")))
    expected["di"] = 0.0

    async def main() -> None:
        plan = RegisterPlan.build([(i, p) for i, (_, p) in enumerate(points)])
        queue = ReadingQueue()
        async with (
            DustMonitorSim(dev, points, compile_scripts(scenario(expected))) as sim,
            ModbusCollector(devices=[(dev, plan)], queue=queue) as collector,
        ):
            await eventually(lambda: len(queue) > 0, what="a poll")
            batch = queue.drain_nowait()
        assert collector.stats["dm"].errors == 0
        assert batch.quality.tolist() == [0] * len(points)
        got = dict(zip([points[i][0] for i in batch.sensor], batch.value.tolist(), strict=True))
        for sid, value in expected.items():
            assert math.isclose(got[sid], value, rel_tol=1e-6), (sid, got[sid], value)
        # One request per table (holding registers are all adjacent): 4 spans.
        assert len(plan.spans) == 4
        assert sim.requests >= 4

    run(main())


def test_silent_device_faults_its_sensors_within_its_timeout_while_others_keep_flowing() -> None:
    quiet_dev, busy_dev = device("quiet"), device("busy")
    pq = [("Q", ModbusPoint(device="quiet", register=0))]
    pb = [("B", ModbusPoint(device="busy", register=0))]
    sc = scenario({"Q": 3.0, "B": 4.0}, Q=[{"at": 0.5, "dropout": 30}])

    async def main() -> None:
        queue = ReadingQueue()
        col = Collected(queue)
        devices = [
            (quiet_dev, RegisterPlan.build([(0, pq[0][1])])),
            (busy_dev, RegisterPlan.build([(1, pb[0][1])])),
        ]
        scripts = compile_scripts(sc)
        async with (
            DustMonitorSim(quiet_dev, pq, scripts),
            DustMonitorSim(busy_dev, pb, scripts),
            ModbusCollector(devices=devices, queue=queue) as collector,
        ):
            loop = asyncio.get_running_loop()
            await eventually(
                lambda: any(q == Quality.COMM_LOST for _, q in col.of(0)),
                timeout=5,
                what="the silent device's sensor marked lost",
            )
            lost_at = loop.time()
            busy_before = len(col.of(1))
            await eventually(
                lambda: len(col.of(1)) >= busy_before + 5,
                timeout=3,
                what="the other device to keep flowing",
            )
        first_lost = next(k for k, (_, q) in enumerate(col.of(0)) if q == Quality.COMM_LOST)
        assert first_lost >= 1  # it was read fine before it went silent
        assert all(math.isnan(v) for v, q in col.of(0) if q == Quality.COMM_LOST)
        assert all(q == Quality.GOOD and v == 4.0 for v, q in col.of(1))
        assert collector.stats["quiet"].errors >= 1
        assert collector.stats["busy"].errors == 0
        assert lost_at > 0

    run(main())


def test_silent_device_is_marked_lost_within_timeout_times_retries() -> None:
    dev = device("d", timeout_s=0.3, retries=1, poll_interval_s=0.1)
    pts = [("D", ModbusPoint(device="d", register=0))]
    sc = scenario({"D": 3.0}, D=[{"at": 0.0, "dropout": 30}])

    async def main() -> float:
        queue = ReadingQueue()
        async with DustMonitorSim(dev, pts, compile_scripts(sc)):
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            async with ModbusCollector(
                devices=[(dev, RegisterPlan.build([(0, pts[0][1])]))], queue=queue
            ):
                await eventually(lambda: len(queue) > 0, timeout=5, what="the lost reading")
                elapsed = loop.time() - t0
                batch = queue.drain_nowait()
        assert batch.quality.tolist() == [Quality.COMM_LOST]
        return elapsed

    elapsed = run(main())
    # The contract is timeout × (retries + 1) = 0.6 s; allow 1 s for connecting and a
    # loaded machine's scheduling. A collector that waited for staleness would take 10 s.
    assert elapsed < 0.6 + 1.0, elapsed


def test_exception_response_marks_only_its_span_bad() -> None:
    dev = device("d")
    pts = [
        ("A", ModbusPoint(device="d", register=0)),
        ("C", ModbusPoint(device="d", register=0, kind="coil", dtype="bool")),
    ]
    sc = scenario({"A": 3.0, "C": 1.0}, A=[{"at": 0.0, "garbage": 30}])

    async def main() -> None:
        queue = ReadingQueue()
        plan = RegisterPlan.build([(0, pts[0][1]), (1, pts[1][1])])
        async with (
            DustMonitorSim(dev, pts, compile_scripts(sc)),
            ModbusCollector(devices=[(dev, plan)], queue=queue) as collector,
        ):
            await eventually(lambda: len(queue) > 0, what="a poll")
            batch = queue.drain_nowait()
        # The garbage window makes the simulated device answer every read with an
        # exception (DEVICE_FAILURE), coils included; both spans are reported bad, the
        # device stays connected and counted as exceptions, not as lost.
        assert batch.quality.tolist() == [Quality.BAD, Quality.BAD]
        assert collector.stats["d"].exceptions >= 2
        assert collector.stats["d"].errors == 0

    run(main())


def test_device_that_comes_back_is_read_again() -> None:
    dev = device("d", poll_interval_s=0.05)
    pts = [("D", ModbusPoint(device="d", register=0))]
    sc = scenario({"D": 6.5}, D=[{"at": 0.3, "dropout": 0.8}])

    async def main() -> None:
        queue = ReadingQueue()
        col = Collected(queue)
        async with (
            DustMonitorSim(dev, pts, compile_scripts(sc)),
            ModbusCollector(devices=[(dev, RegisterPlan.build([(0, pts[0][1])]))], queue=queue),
        ):
            await eventually(
                lambda: any(q == Quality.COMM_LOST for _, q in col.of(0)),
                timeout=5,
                what="lost",
            )
            await eventually(lambda: col.of(0)[-1] == (6.5, Quality.GOOD), timeout=10, what="back")

    run(main())


def test_unreachable_device_is_reported_lost_and_retried_not_crashed() -> None:
    dev = device("gone")  # nothing listens on its port
    pts = [(0, ModbusPoint(device="gone", register=0))]

    async def main() -> None:
        queue = ReadingQueue()
        async with ModbusCollector(
            devices=[(dev, RegisterPlan.build(pts))], queue=queue
        ) as collector:
            await eventually(lambda: collector.stats["gone"].errors >= 2, timeout=5, what="retries")
        batch = queue.drain_nowait()
        assert set(batch.quality.tolist()) == {Quality.COMM_LOST}
        assert np.isnan(batch.value).all()
        assert "cannot connect" in collector.stats["gone"].last_error

    run(main())

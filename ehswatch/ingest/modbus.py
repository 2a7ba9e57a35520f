"""`ModbusCollector`: dust monitors and other Modbus devices into the `ReadingQueue`.

One polling task per device, at its `poll_interval_s`, reading each `RegisterPlan` span
with one request. Failures are translated here, at the boundary, into quality codes the
evaluator understands — never into a 0 that looks like clean air:

- no answer (timeout after `retries`), or a lost connection: every sensor of the device
  gets a COMM_LOST reading at once, and the device is reconnected with backoff (from the
  poll interval, doubling, at most 5 s) in its own task, so other devices keep flowing;
- a Modbus exception response (the device answered "illegal address", "device
  failure"…): the sensors of that span get a BAD reading; the rest of the device is read.

**Device status.** Each device is up (it answered, exception responses included) or down
(it did not). `status` holds the last known `DeviceStatus` of each device, and every
change — the first poll's outcome, then each flip — is handed to the `on_status`
listeners (plain functions: they must not block). A change is handed over *before* the
readings that follow from it are queued, so whoever listens learns that a device is down
before its sensors' COMM_LOST readings reach the evaluator (the alarm manager groups
those faults under one device alarm). The collector never waits on a listener.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Self

import numpy as np
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException
from pymodbus.framer import FramerType

from ehswatch.component import Component, Job
from ehswatch.config import ModbusDevice, PlantConfig
from ehswatch.ingest.queue import ReadingQueue
from ehswatch.ingest.registers import RegisterPlan, Span
from ehswatch.readings import Quality, ReadingBatch
from ehswatch.thresholds.table import ThresholdTable

log = logging.getLogger(__name__)
MAX_BACKOFF_S = 5.0


@dataclass
class DeviceStats:
    polls: int = 0
    errors: int = 0  # polls that lost the device (timeout, connection)
    exceptions: int = 0  # Modbus exception responses
    connected: bool = False
    last_success: float | None = None
    last_error: str = ""


@dataclass(frozen=True, slots=True)
class DeviceStatus:
    """A device answers (`up`) or does not, since `at` (seconds, the collector's clock —
    the stamp of the readings that follow)."""

    device: str
    up: bool
    at: float
    reason: str = ""  # why it is down (the last error), empty when up


StatusListener = Callable[[DeviceStatus], None]


class DeviceLost(Exception):
    """The device did not answer or the connection broke."""


class ModbusCollector(Component):
    component_name = "modbus-collector"

    """Async context manager owning one polling task per device."""

    def __init__(
        self,
        *,
        devices: Sequence[tuple[ModbusDevice, RegisterPlan]],
        queue: ReadingQueue,
        clock: Callable[[], float] = time.time,
        on_status: Sequence[StatusListener] = (),
    ) -> None:
        """`on_status` listeners are told of every device status change, never awaited."""
        self._devices = list(devices)
        self.queue = queue
        self.stats = {d.id: DeviceStats() for d, _ in self._devices}
        self._clock = clock
        self.status: dict[str, DeviceStatus] = {}  # the last known status of each device
        self.on_status = tuple(on_status)

    @classmethod
    def from_config(
        cls,
        config: PlantConfig,
        table: ThresholdTable,
        queue: ReadingQueue,
        *,
        clock: Callable[[], float] = time.time,
        on_status: Sequence[StatusListener] = (),
    ) -> Self:
        """`clock` stamps the readings (the service passes its `ServiceClock`)."""
        devices = []
        for d in config.modbus_devices:
            points = [
                (table.index[s.id], s.modbus)
                for s in config.sensors
                if s.modbus is not None and s.modbus.device == d.id
            ]
            if points:
                devices.append((d, RegisterPlan.build(points)))
        return cls(devices=devices, queue=queue, clock=clock, on_status=on_status)

    def jobs(self) -> Iterable[tuple[str, Job]]:
        for device, plan in self._devices:
            yield device.id, functools.partial(self._poll_device, device, plan)

    async def _poll_device(self, device: ModbusDevice, plan: RegisterPlan) -> None:
        stats = self.stats[device.id]
        loop = asyncio.get_running_loop()
        backoff = device.poll_interval_s
        while True:
            client = AsyncModbusTcpClient(
                device.host,
                port=device.port,
                framer=FramerType.RTU if device.framer == "rtu" else FramerType.SOCKET,
                timeout=device.timeout_s,
                retries=device.retries,
                reconnect_delay=0,  # we reconnect ourselves, with our own backoff
                name=f"modbus:{device.id}",
            )
            try:
                if not await client.connect():
                    raise DeviceLost(f"cannot connect to {device.host}:{device.port}")
                stats.connected = True
                backoff = device.poll_interval_s
                next_poll = loop.time()
                while True:
                    await self._poll_once(device, plan, client, stats)
                    next_poll = max(next_poll + device.poll_interval_s, loop.time())
                    await asyncio.sleep(next_poll - loop.time())
            except (DeviceLost, ModbusException, OSError, TimeoutError) as exc:
                stats.errors += 1
                stats.connected = False
                stats.last_error = str(exc) or type(exc).__name__
                log.warning(
                    "Modbus %s: %s; sensors marked lost, retry in %.1f s",
                    device.id,
                    stats.last_error,
                    backoff,
                )
                at = self._clock()
                self._set_status(device.id, up=False, at=at, reason=stats.last_error)
                await self.queue.put(self._lost(plan, at))
            finally:
                client.close()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_S)

    async def _poll_once(
        self,
        device: ModbusDevice,
        plan: RegisterPlan,
        client: AsyncModbusTcpClient,
        stats: DeviceStats,
    ) -> None:
        registers: list[list[int] | None] = []
        bits: list[list[bool] | None] = []
        for span in plan.spans:
            answer = await _read(client, span, device.unit)
            if answer.isError():
                stats.exceptions += 1
                stats.last_error = (
                    f"exception response to {span.kind} {span.start}+{span.count}: {answer}"
                )
                (bits if span.is_bits else registers).append(None)
            elif span.is_bits:
                bits.append(list(answer.bits[: span.count]))
            else:
                registers.append(list(answer.registers))
        now = self._clock()
        values, ok = plan.decode(registers, bits)
        quality = np.where(ok, Quality.GOOD, Quality.BAD).astype(np.uint8)
        stats.polls += 1
        stats.last_success = now
        self._set_status(device.id, up=True, at=now)
        await self.queue.put(
            ReadingBatch.of(plan.sensor, values, np.full(values.size, now), quality)
        )

    def _set_status(self, device: str, *, up: bool, at: float, reason: str = "") -> None:
        """Record the device's status; on a change, tell the listeners (before the
        readings that follow are queued)."""
        current = self.status.get(device)
        if current is not None and current.up == up:
            return
        status = DeviceStatus(device=device, up=up, at=at, reason="" if up else reason)
        self.status[device] = status
        if up and current is not None:
            log.warning("Modbus %s answers again", device)
        for listener in self.on_status:
            try:
                listener(status)
            except Exception:
                log.exception("Modbus %s: a status listener failed", device)

    def _lost(self, plan: RegisterPlan, at: float) -> ReadingBatch:
        n = plan.sensor.size
        return ReadingBatch.of(
            plan.sensor,
            np.full(n, np.nan),
            np.full(n, at),
            np.full(n, Quality.COMM_LOST),
        )


async def _read(client: AsyncModbusTcpClient, span: Span, unit: int) -> Any:
    """One read request; a missing answer raises `DeviceLost`."""
    read = {
        "holding": client.read_holding_registers,
        "input": client.read_input_registers,
        "coil": client.read_coils,
        "discrete": client.read_discrete_inputs,
    }[span.kind]
    try:
        return await read(span.start, count=span.count, device_id=unit)
    except ModbusException as exc:
        # pymodbus raises ModbusIOException / ConnectionException when nothing came back.
        raise DeviceLost(f"no answer to {span.kind} {span.start}+{span.count}: {exc}") from exc

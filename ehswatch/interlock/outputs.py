"""`PlcLink`: one task per PLC that owns its Modbus connection and writes the outputs.

- **Commands** (a trip, or a reset's normal value), each identified by the zone's command
  sequence number: written at once, then read back; retried with backoff (20 ms
  doubling, at most 0.5 s) until the readback matches. Every command has its own
  confirmation record: if *that* command has not been read back within the PLC's
  `confirm_timeout_s`, it is reported unconfirmed (the zone's output fault); the link
  keeps trying, and reports the confirmation, with the command's sequence number, when
  it comes. A newer command of the zone replaces the record of an older one.
- **Re-assert**: after every (re)connection, and every `reconcile_s`, the link reads back
  every output that should be tripped and writes the trip again where the PLC lost it (a
  PLC restart comes up with its outputs off). It never writes an output back to normal on
  its own: only an authorised reset does that.
- **Heartbeat**: a counter (1…65535, wrapping) written to the PLC's heartbeat register
  every `period_s`, so the PLC's watchdog can stop the line when ehswatch dies — and only
  while the interlock control loop is alive (`alive(max_age_s)`: its last turn is at most
  2 × `period_s` old and did not fail). Otherwise the beat is held back (counted in
  `heartbeats_held`, logged once per episode): a control loop that is stuck must look
  dead to the PLC, not healthy.
- With `seq_register` set, a command's sequence number is written there after the output,
  so the PLC (and its logs) can tell commands apart.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from ehswatch.component import LOOP_TICKER, Backoff, Component, Job, Ticker, still_wanted
from ehswatch.config import InterlockSettings, Plc

log = logging.getLogger(__name__)
RECONNECT = Backoff(first=0.2, longest=2.0)  # a PLC that does not answer: tried again


@dataclass(frozen=True, kw_only=True, slots=True)
class OutputPoint:
    zone: str
    table: str  # "coil" or "register"
    address: int
    trip_value: int
    normal_value: int
    seq_register: int | None = None

    @classmethod
    def of(cls, zone: str, il: InterlockSettings) -> OutputPoint:
        if il.coil is not None:
            trip = int(bool(il.trip_value))
            return cls(
                zone=zone,
                table="coil",
                address=il.coil,
                trip_value=trip,
                normal_value=1 - trip,
                seq_register=il.seq_register,
            )
        assert il.address is not None
        return cls(
            zone=zone,
            table="register",
            address=il.address,
            trip_value=int(il.trip_value),
            normal_value=il.normal_value,
            seq_register=il.seq_register,
        )


# zone → (should the output be tripped, command sequence number)
Desired = Callable[[str], tuple[bool, int]]
# (zone, command sequence number, confirmed, detail)
Report = Callable[[str, int, bool, str], None]
# max age (s) → is the control loop alive
Alive = Callable[[float], bool]


class LinkDown(Exception):
    pass


class Refused(ModbusException):
    """The PLC answered a request with an exception response (or the value cannot be
    sent): that one request failed, the connection is fine."""


class Fenced(Refused):
    """Not sent: this instance no longer holds its control lease (`ehswatch.standby`)."""


@dataclass
class _Command:
    """The confirmation record of one command (one sequence number) of a zone."""

    seq: int
    given: float  # the link's time (its ticker) the command was given
    next_try: float
    backoff: float = 0.02
    reported: bool = False  # an unconfirmed report went out for it


class PlcLink(Component):
    component_name = "plc-link"

    def __init__(
        self,
        plc: Plc,
        outputs: Iterable[OutputPoint],
        desired: Desired,
        report: Report,
        *,
        reconcile_s: float = 1.0,
        alive: Alive | None = None,
        found_tripped: Callable[[str], None] | None = None,
        ticker: Ticker = LOOP_TICKER,
        fence: Callable[[], bool] | None = None,
    ) -> None:
        """`ticker` keeps the link's time: heartbeat, re-assert, confirmation deadlines,
        reconnect backoff (the event loop's; tests move a hand-held one)."""
        self.plc = plc
        self._ticker = ticker
        self._fence = fence
        self.fenced = 0  # writes not made: the instance had lost its control lease
        self._found_tripped = found_tripped
        self._surveyed = False
        self.outputs = {o.zone: o for o in outputs}
        self._desired = desired
        self._report = report
        self._reconcile_s = reconcile_s
        self._commands: dict[str, _Command] = {}
        self._wake = asyncio.Event()
        self._client: AsyncModbusTcpClient | None = None
        self._alive = alive
        self._held_back = False
        self.heartbeat = 0
        self.heartbeats_held = 0  # beats not written: the control loop was not alive
        self.connected = False
        self.writes = 0
        self.refusals = 0  # requests the PLC answered with an exception response
        self.last_error = ""

    def command(self, zone: str, seq: int) -> None:
        """Write the zone's desired output (command `seq`) now, and confirm it by reading
        it back. A new `seq` gets its own confirmation record; the same `seq` again is
        tried again at once."""
        now = self._ticker.now()
        cmd = self._commands.get(zone)
        if cmd is None or cmd.seq != seq:
            self._commands[zone] = _Command(seq=seq, given=now, next_try=now)
        else:
            cmd.next_try = now
        self._wake.set()

    @property
    def heartbeat_held_back(self) -> bool:
        """Whether heartbeats are being held back (the control loop is not alive)."""
        return self._held_back

    def pending(self, zone: str) -> int | None:
        """The sequence number of the zone's command waiting for its readback, if any."""
        cmd = self._commands.get(zone)
        return None if cmd is None else cmd.seq

    def jobs(self) -> Iterable[tuple[str, Job]]:
        yield self.plc.id, self._run

    async def _run(self) -> None:
        retry = RECONNECT.retrying()
        while True:
            still_wanted()
            client = AsyncModbusTcpClient(
                self.plc.host,
                port=self.plc.port,
                timeout=min(0.5, self.plc.confirm_timeout_s / 3),
                retries=0,
                reconnect_delay=0,
                name=f"plc:{self.plc.id}",
            )
            self._client = client
            try:
                if not await client.connect():
                    raise LinkDown(f"cannot connect to {self.plc.host}:{self.plc.port}")
                self.connected = True
                retry.succeeded()
                log.info("PLC %s: connected", self.plc.id)
                await self._serve()
            except (LinkDown, ModbusException, OSError, TimeoutError) as exc:
                self.last_error = str(exc) or type(exc).__name__
                if self.connected:
                    log.warning("PLC %s: %s; reconnecting", self.plc.id, self.last_error)
                self.connected = False
            finally:
                client.close()
            self._report_overdue(
                self._ticker.now(), f"PLC {self.plc.id} unreachable: {self.last_error}"
            )
            await self._sleep(retry.failed())

    async def _survey(self) -> None:
        """Once, on the first connection: outputs found at their trip value for a zone
        that is not latched (a trip written just before a crash, never stored) are
        reported, so the zone is latched again rather than shown normal over a tripped
        output. Nothing is ever written back to normal here."""
        self._surveyed = True
        if self._found_tripped is None:
            return
        quiet = [(o, 0) for z, o in self.outputs.items() if not self._desired(z)[0]]
        for table in ("coil", "register"):
            points = sorted((o for o in quiet if o[0].table == table), key=lambda o: o[0].address)
            for span in _spans(points, READ_SPAN[table]):
                start = span[0][0].address
                values = await self._read_span(table, start, span[-1][0].address - start + 1)
                for out, _ in span:
                    if values[out.address - start] == out.trip_value:
                        log.warning(
                            "PLC %s: the %s output (%s %d) is tripped at start although the "
                            "zone is not latched; latching it",
                            self.plc.id,
                            out.zone,
                            out.table,
                            out.address,
                        )
                        self._found_tripped(out.zone)

    async def _serve(self) -> None:
        hb = self.plc.heartbeat
        if not self._surveyed:
            try:
                await self._survey()
            except Refused as exc:
                self.last_error = str(exc)
                log.error("PLC %s: survey of outputs at start: %s", self.plc.id, exc)
        next_beat = self._ticker.now()
        next_reconcile = next_beat  # re-assert at once after (re)connecting
        while True:
            still_wanted()
            now = self._ticker.now()
            # Oldest first; a command the PLC refuses backs off on its own record, so it
            # never keeps another zone's command from being written.
            due = sorted((c.next_try, z) for z, c in self._commands.items() if c.next_try <= now)
            for _, zone in due:
                try:
                    await self._attempt(zone)
                except Fenced:
                    # Not a PLC's refusal: no fault to report (another instance drives
                    # the PLC now, and this one is stopping).
                    self._commands[zone].next_try = self._ticker.now() + 0.5
                except Refused as exc:
                    self._refused(zone, self._ticker.now(), str(exc))
            if hb is not None and now >= next_beat:
                if self._alive is None or self._alive(2 * hb.period_s):
                    if self._held_back:
                        self._held_back = False
                        log.warning(
                            "PLC %s: the control loop runs again; heartbeat resumes", self.plc.id
                        )
                    self.heartbeat = self.heartbeat % 65535 + 1
                    try:
                        await self._write("register", hb.address, self.heartbeat)
                    except Fenced:
                        pass  # said once: another instance beats now
                    except Refused as exc:
                        # The PLC's watchdog sees no beat: it stops the line, as it must.
                        self.last_error = str(exc)
                        self.refusals += 1
                        log.error("PLC %s: heartbeat %s", self.plc.id, exc)
                else:
                    self.heartbeats_held += 1
                    if not self._held_back:
                        self._held_back = True
                        log.error(
                            "PLC %s: heartbeat held back: the interlock control loop has not "
                            "run for over %g s (or its last turn failed); the PLC watchdog "
                            "should stop the line",
                            self.plc.id,
                            2 * hb.period_s,
                        )
                next_beat = max(next_beat + hb.period_s, now)
            try:
                if now >= next_reconcile and await self._reassert():
                    next_reconcile = now + self._reconcile_s
            except Fenced:
                next_reconcile = now + self._reconcile_s
            except Refused as exc:
                self.last_error = str(exc)
                self.refusals += 1
                log.error("PLC %s: re-assert: %s", self.plc.id, exc)
                next_reconcile = now + self._reconcile_s
            wake_at = min(
                [next_reconcile, *[c.next_try for c in self._commands.values()]]
                + ([next_beat] if hb is not None else [])
            )
            await self._sleep(max(0.0, wake_at - self._ticker.now()))

    async def _sleep(self, seconds: float) -> None:
        """Sleep, but wake for a new command. (`asyncio.timeout`, not `wait_for`: on 3.11
        `wait_for` can swallow a cancellation that meets a wake-up, and the link would then
        outlive its component.)"""
        await self._ticker.wait(self._wake, seconds)

    async def _attempt(self, zone: str) -> None:
        """One write-and-read-back of a zone's output. `Refused` (the PLC refused this
        request) is this command's failure; other errors propagate: reconnect."""
        cmd = self._commands[zone]
        out = self.outputs[zone]
        tripped, seq = self._desired(zone)
        if seq != cmd.seq:
            # The state moved on without a command (should not happen): its own record.
            cmd = self._commands[zone] = _Command(seq=seq, given=self._ticker.now(), next_try=0.0)
        value = out.trip_value if tripped else out.normal_value
        await self._write(out.table, out.address, value)
        if out.seq_register is not None:
            await self._write("register", out.seq_register, seq % 65536)
        now = self._ticker.now()
        if await self._read(out.table, out.address) == value:
            if self._commands.get(zone) is cmd:
                del self._commands[zone]
            self._report(zone, seq, True, f"{out.table} {out.address} = {value} (seq {seq})")
            return
        cmd.next_try = now + cmd.backoff
        cmd.backoff = min(cmd.backoff * 2, 0.5)
        self._report_overdue(now, f"{out.table} {out.address} reads back other than {value}")

    def _refused(self, zone: str, now: float, why: str) -> None:
        cmd = self._commands.get(zone)
        self.last_error = why
        self.refusals += 1
        log.error("PLC %s: %s", self.plc.id, why)
        if cmd is not None:
            cmd.next_try = now + cmd.backoff
            cmd.backoff = min(cmd.backoff * 2, 0.5)
        self._report_overdue(now, why)

    def _report_overdue(self, now: float, why: str) -> None:
        for zone, cmd in self._commands.items():
            if not cmd.reported and now - cmd.given > self.plc.confirm_timeout_s:
                cmd.reported = True
                self._report(
                    zone,
                    cmd.seq,
                    False,
                    f"command seq {cmd.seq} not confirmed within "
                    f"{self.plc.confirm_timeout_s:g} s: {why}",
                )

    async def _reassert(self) -> bool:
        """Read back every output that should be tripped, a span of addresses per
        request, and command the trip again where the PLC lost it. Stops early (False)
        when a command is due: a new trip never waits behind a re-assert pass."""
        wanted = []
        for zone, out in self.outputs.items():
            tripped, seq = self._desired(zone)
            if tripped and zone not in self._commands:
                wanted.append((out, seq))
        for table in ("coil", "register"):
            points = sorted((o for o in wanted if o[0].table == table), key=lambda o: o[0].address)
            for span in _spans(points, READ_SPAN[table]):
                if self._command_due():
                    return False
                start = span[0][0].address
                values = await self._read_span(table, start, span[-1][0].address - start + 1)
                for out, seq in span:
                    if values[out.address - start] != out.trip_value:
                        log.warning(
                            "PLC %s: the %s output (%s %d) lost its trip; re-asserting",
                            self.plc.id,
                            out.zone,
                            out.table,
                            out.address,
                        )
                        self.command(out.zone, seq)
        return True

    def _command_due(self) -> bool:
        now = self._ticker.now()
        return any(c.next_try <= now for c in self._commands.values())

    async def _read_span(self, table: str, start: int, count: int) -> list[int]:
        assert self._client is not None
        unit = self.plc.unit
        if table == "coil":
            rr = await self._client.read_coils(start, count=count, device_id=unit)
            if rr.isError():
                raise Refused(f"PLC {self.plc.id} refused reading coils {start}+{count}")
            return [int(bool(b)) for b in rr.bits[:count]]
        rr = await self._client.read_holding_registers(start, count=count, device_id=unit)
        if rr.isError():
            raise Refused(f"PLC {self.plc.id} refused reading registers {start}+{count}")
        return [int(r) for r in rr.registers[:count]]

    async def _write(self, table: str, address: int, value: int) -> None:
        assert self._client is not None
        if self._fence is not None and not self._fence():
            # Another instance may hold the lease now and drive this PLC: never two.
            self.fenced += 1
            if self.fenced == 1:
                log.critical("PLC %s: this instance lost its control lease: no writes", self.plc.id)
            raise Fenced(f"PLC {self.plc.id}: not written, the control lease is lost")
        unit = self.plc.unit
        try:
            if table == "coil":
                rr = await self._client.write_coil(address, bool(value), device_id=unit)
            else:
                rr = await self._client.write_register(address, value, device_id=unit)
        except (ValueError, struct.error) as exc:  # a value the request cannot carry
            raise Refused(
                f"PLC {self.plc.id}: cannot write {table} {address} = {value}: {exc}"
            ) from exc
        self.writes += 1
        if rr.isError():
            raise Refused(f"PLC {self.plc.id} refused {table} {address} = {value}: {rr}")

    async def _read(self, table: str, address: int) -> int:
        assert self._client is not None
        unit = self.plc.unit
        if table == "coil":
            rr = await self._client.read_coils(address, count=1, device_id=unit)
            if rr.isError():
                raise Refused(f"PLC {self.plc.id} refused reading coil {address}: {rr}")
            return int(bool(rr.bits[0]))
        rr = await self._client.read_holding_registers(address, count=1, device_id=unit)
        if rr.isError():
            raise Refused(f"PLC {self.plc.id} refused reading register {address}: {rr}")
        return int(rr.registers[0])


# The most one read request may cover (Modbus: 2000 coils, 125 registers), and the widest
# gap between two outputs that is still read in one request rather than two.
READ_SPAN = {"coil": 2000, "register": 125}
SPAN_GAP = 32

_Wanted = tuple[OutputPoint, int]


def _spans(points: list[_Wanted], most: int) -> list[list[_Wanted]]:
    """Outputs sorted by address, cut into spans one read request can cover."""
    spans: list[list[_Wanted]] = []
    for p in points:
        if spans:
            first, last = spans[-1][0][0].address, spans[-1][-1][0].address
            a = p[0].address
            if a - last <= SPAN_GAP and a - first < most:
                spans[-1].append(p)
                continue
        spans.append([p])
    return spans

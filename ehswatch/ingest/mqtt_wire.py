"""A minimal MQTT 3.1.1 subscriber connection, built for bulk intake.

Why not aiomqtt here: aiomqtt (over paho) reads each packet with several `recv` calls
and hands each message through an asyncio queue as a `Message` object; on this machine
that tops out near 20 000 messages/s, a tenth of what mosquitto delivers. This protocol
parses every PUBLISH packet that one `data_received` chunk holds, in one loop, into plain
lists, and lets the collector acknowledge QoS 1 messages *after* it has handed their
readings on (paho's auto-ack acknowledges on arrival, before anything is safe).

It speaks only what a subscriber needs: CONNECT (clean session or persistent,
username/password, TLS through the transport), SUBSCRIBE, PUBLISH in (QoS 0 and 1; we
subscribe at QoS 1, so the broker never sends QoS 2), PUBACK, PINGREQ, DISCONNECT.
Publishing (alarms, status) uses aiomqtt, where per-message cost does not matter.
"""

from __future__ import annotations

import asyncio
import ssl
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from ehswatch.names import listed

CONNACK_CODES = {
    1: "unacceptable protocol version",
    2: "client identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorised",
}


class MqttWireError(Exception):
    """The broker refused us or broke the protocol."""


@dataclass(frozen=True, kw_only=True)
class SessionOptions:
    host: str
    port: int
    client_id: str
    username: str | None = None
    password: str | None = None
    keepalive_s: int = 30
    clean_session: bool = False
    ssl_context: ssl.SSLContext | None = None
    connect_timeout_s: float = 5.0


def _utf8(s: str | bytes) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("!H", len(b)) + b


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _packet(header: int, body: bytes) -> bytes:
    return bytes([header]) + _remaining_length(len(body)) + body


def connect_packet(o: SessionOptions) -> bytes:
    flags = 0x02 if o.clean_session else 0
    payload = _utf8(o.client_id)
    if o.username is not None:
        flags |= 0x80
        payload += _utf8(o.username)
        if o.password is not None:
            flags |= 0x40
            payload += _utf8(o.password)
    variable = _utf8("MQTT") + bytes([4, flags]) + struct.pack("!H", o.keepalive_s)
    return _packet(0x10, variable + payload)


def subscribe_packet(packet_id: int, filters: Sequence[str], qos: int = 1) -> bytes:
    body = struct.pack("!H", packet_id) + b"".join(_utf8(f) + bytes([qos]) for f in filters)
    return _packet(0x82, body)


PINGREQ = b"\xc0\x00"
DISCONNECT = b"\xe0\x00"


def puback_packets(packet_ids: Sequence[int]) -> bytes:
    return b"".join(b"\x40\x02" + struct.pack("!H", pid) for pid in packet_ids)


class SubscriberProtocol(asyncio.Protocol):
    """Collects PUBLISH packets into `topics`, `payloads`, `packet_ids` (0 for QoS 0)."""

    def __init__(self, max_pending: int = 200_000) -> None:
        self._buf = bytearray()
        self.topics: list[bytes] = []
        self.payloads: list[bytes] = []
        self.packet_ids: list[int] = []
        self.arrived = asyncio.Event()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.connack: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.suback: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self._max_pending = max_pending
        self._paused = False
        self.last_rx = asyncio.get_running_loop().time()  # for the keepalive watchdog

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        for fut in (self.connack, self.suback):
            if not fut.done():
                fut.set_exception(ConnectionError("connection closed by the broker"))
        if not self.closed.done():
            self.closed.set_result(None)
        self.arrived.set()

    def data_received(self, data: bytes) -> None:
        self.last_rx = asyncio.get_running_loop().time()
        buf = self._buf
        buf += data
        n = len(buf)
        pos = 0
        topics, payloads, pids = self.topics, self.payloads, self.packet_ids
        while n - pos >= 2:
            header = buf[pos]
            # Remaining length: 1 to 4 bytes, 7 bits each, least significant first.
            i = pos + 1
            length = shift = 0
            complete = False
            while i < n:
                b = buf[i]
                i += 1
                length |= (b & 0x7F) << shift
                if b < 0x80:
                    complete = True
                    break
                shift += 7
                if shift > 21:
                    self._fail("malformed remaining length")
                    return
            if not complete:
                break
            end = i + length
            if end > n:
                break
            kind = header >> 4
            if kind == 3:  # PUBLISH
                tlen = (buf[i] << 8) | buf[i + 1]
                tend = i + 2 + tlen
                if header & 0x06:
                    pids.append((buf[tend] << 8) | buf[tend + 1])
                    payloads.append(bytes(buf[tend + 2 : end]))
                else:
                    pids.append(0)
                    payloads.append(bytes(buf[tend:end]))
                topics.append(bytes(buf[i + 2 : tend]))
            elif kind == 2:  # CONNACK
                code = buf[i + 1] if length >= 2 else 255
                if not self.connack.done():
                    if code == 0:
                        self.connack.set_result(bool(buf[i] & 1))
                    else:
                        reason = CONNACK_CODES.get(code, f"code {code}")
                        self.connack.set_exception(MqttWireError(f"broker refused: {reason}"))
            elif kind == 9 and not self.suback.done():  # SUBACK
                self.suback.set_result(bytes(buf[i + 2 : end]))
            # PINGRESP (13) and anything else a subscriber does not need: skipped.
            pos = end
        if pos:
            del buf[:pos]
        if topics:
            self.arrived.set()
            if len(topics) >= self._max_pending and not self._paused and self.transport:
                self.transport.pause_reading()
                self._paused = True

    # -- for the collector

    def take(self) -> tuple[list[bytes], list[bytes], list[int]]:
        """Everything received so far; reading resumes if it was paused."""
        out = (self.topics, self.payloads, self.packet_ids)
        self.topics, self.payloads, self.packet_ids = [], [], []
        self.arrived.clear()
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        return out

    def send(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _fail(self, why: str) -> None:
        if self.transport is not None:
            self.transport.close()
        if not self.connack.done():
            self.connack.set_exception(MqttWireError(why))


async def open_subscriber(options: SessionOptions, filters: Sequence[str]) -> SubscriberProtocol:
    """Connect, start a session and subscribe at QoS 1; raise `MqttWireError`/`OSError`."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(options.connect_timeout_s):
        _, protocol = await loop.create_connection(
            SubscriberProtocol, options.host, options.port, ssl=options.ssl_context
        )
        try:
            protocol.send(connect_packet(options))
            await protocol.connack
            protocol.send(subscribe_packet(1, filters))
            granted = await protocol.suback
        except BaseException:
            if protocol.transport is not None:
                protocol.transport.close()
            raise
    if any(code == 0x80 for code in granted):
        if protocol.transport is not None:
            protocol.transport.close()
        refused = [f for f, c in zip(filters, granted, strict=False) if c == 0x80]
        raise MqttWireError(f"broker refused the subscription to {listed(refused)}")
    return protocol

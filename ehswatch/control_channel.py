"""The command channel between the desk part and the control part: a Unix socket.

Only what needs the control part's authority goes this way: acknowledging and shelving
alarms, resetting and bypassing interlocks — small requests, rare, each answered with
a small JSON. Reads never do (the desk part reads the shared state and the database).
The other direction carries the events people's screens follow (alarm and interlock
changes for `/api/events`) and wake-ups for the desk part's jobs (a committed alarm:
the hazard desk and the notifier have work).

Wire: one JSON object per line, UTF-8.
- request  ``{"id": 7, "op": "alarm.ack", "actor": {"name": …, "role": …}, "args": {…}}``
- answer   ``{"id": 7, "ok": true, "body": {…}}`` or
           ``{"id": 7, "ok": false, "status": 409, "detail": "…"}``
- event    ``{"event": {…}}`` (after the desk part sent ``{"op": "subscribe"}``)

The socket lives in the control part's run directory (mode 0700); the desk part has
already authenticated the person, and the actor it sends is who acts. Refusals keep their
meaning across the boundary: 403 `Forbidden`, 404 `NotFound`, 409 `Refused`. A control
part that does not answer is `ControlUnavailable` (HTTP 503), never a hang: every call
has a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from ehswatch.alarms.events import EventStream
from ehswatch.component import Backoff, Component, Job
from ehswatch.roles import RANK, Actor, Forbidden, NotFound, Refused

log = logging.getLogger(__name__)

Handler = Callable[[Actor, dict[str, Any]], Awaitable[dict[str, Any]]]
LINE_LIMIT = 1 << 20
MAX_REQUESTS_IN_FLIGHT = 16


class ControlUnavailable(Exception):
    """The control part did not answer (not running, restarting, or too slow)."""


class RemoteError(Exception):
    """The control part refused with an HTTP status other than 403/404/409."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status


class Wake:
    """Something with `set()` (like `asyncio.Event`) that wakes a job of the desk part."""

    def __init__(self, events: EventStream, what: str) -> None:
        self._events = events
        self.what = what

    def set(self) -> None:
        self._events.publish({"type": "wake", "what": self.what})


def _failure(exc: BaseException) -> tuple[int, str]:
    if isinstance(exc, Forbidden):
        return 403, str(exc)
    if isinstance(exc, NotFound):
        return 404, str(exc)
    if isinstance(exc, Refused):
        return 409, str(exc)
    return 500, f"{type(exc).__name__}: {exc}"


class CommandServer(Component):
    """The control part's end: runs each request's handler as a task of its own and
    forwards `events` to every subscribed connection (a slow one loses its oldest)."""

    component_name = "command-channel"

    def __init__(self, path: Path, handlers: Mapping[str, Handler], events: EventStream) -> None:
        self.path = path
        self.handlers = dict(handlers)
        self.events = events
        self.requests = 0
        self.connections = 0

    def jobs(self) -> Iterable[tuple[str, Job]]:
        yield "listen", self._listen

    async def _listen(self) -> None:
        self.path.unlink(missing_ok=True)
        server = await asyncio.start_unix_server(self._connection, self.path, limit=LINE_LIMIT)
        self.path.chmod(0o600)
        async with server:
            await server.serve_forever()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        lock = asyncio.Lock()
        # At most this many requests of one peer at a time: a peer that sends more waits
        # (its socket is not read), and the control part's loop never holds a pile of them.
        slots = asyncio.Semaphore(MAX_REQUESTS_IN_FLIGHT)

        async def send(obj: dict[str, Any]) -> None:
            data = json.dumps(obj, ensure_ascii=False, default=str).encode() + b"\n"
            async with lock:
                writer.write(data)
                await writer.drain()

        async with asyncio.TaskGroup() as tg:
            try:
                while line := await reader.readline():
                    try:
                        req = json.loads(line)
                    except ValueError:
                        continue
                    if not isinstance(req, dict):
                        continue  # not a request: nothing to answer
                    if req.get("op") == "subscribe":
                        tg.create_task(self._forward(send), name="command-channel:events")
                        continue
                    await slots.acquire()
                    tg.create_task(
                        self._answer(req, send, slots.release), name="command-channel:request"
                    )
            except (ConnectionError, asyncio.LimitOverrunError, ValueError):
                pass
            finally:
                for task in tg._tasks:  # the peer is gone: so is its work
                    task.cancel()
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()
                self.connections -= 1

    async def _forward(self, send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        async with self.events.subscribe() as queue:
            while True:
                event = await queue.get()
                if event["type"] == "end":
                    return
                await send({"event": event})

    async def _answer(
        self,
        req: dict[str, Any],
        send: Callable[[dict[str, Any]], Awaitable[None]],
        done: Callable[[], None],
    ) -> None:
        try:
            await self._handle(req, send)
        finally:
            done()

    async def _handle(
        self, req: dict[str, Any], send: Callable[[dict[str, Any]], Awaitable[None]]
    ) -> None:
        self.requests += 1
        rid = req.get("id")
        handler = self.handlers.get(str(req.get("op")))
        try:
            if handler is None:
                raise RemoteError(400, f"unknown operation {req.get('op')!r}")
            a = req.get("actor")
            if not isinstance(a, dict) or a.get("role") not in RANK or not a.get("name"):
                raise RemoteError(400, "a request names its actor: name and a known role")
            actor = Actor(name=str(a["name"]), role=a["role"])
            args = req.get("args")
            body = await handler(actor, dict(args) if isinstance(args, dict) else {})
        except RemoteError as exc:
            answer: dict[str, Any] = {"id": rid, "ok": False, "status": exc.status}
            answer["detail"] = str(exc)
        except Exception as exc:
            status, detail = _failure(exc)
            if status == 500:
                log.exception("command %s failed", req.get("op"))
            answer = {"id": rid, "ok": False, "status": status, "detail": detail}
        else:
            answer = {"id": rid, "ok": True, "body": body}
        with contextlib.suppress(ConnectionError):
            await send(answer)


class ControlClient(Component):
    """The desk part's end: keeps one connection to the control part (reconnecting),
    hands events to `on_event`, and makes `call()`s with a deadline."""

    component_name = "control-link"

    def __init__(
        self,
        path: Path,
        on_event: Callable[[dict[str, Any]], None],
        *,
        on_answer: Callable[[], None] | None = None,
        timeout_s: float = 10.0,
        backoff_s: tuple[float, float] = (0.1, 2.0),
    ) -> None:
        """`on_answer()` runs whenever the control part has answered a call: what the
        call changed is stored by then, before its event comes."""
        self.path = path
        self.on_event = on_event
        self.on_answer = on_answer
        self.timeout_s = timeout_s
        self._backoff = backoff_s
        self._writer: asyncio.StreamWriter | None = None
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._next_id = 0
        self.connected = False
        self.last_error = ""
        self.connects = 0

    def jobs(self) -> Iterable[tuple[str, Job]]:
        yield "link", self._link

    async def _link(self) -> None:
        retry = Backoff(first=self._backoff[0], longest=self._backoff[1]).retrying()
        while True:
            try:
                reader, writer = await asyncio.open_unix_connection(self.path, limit=LINE_LIMIT)
            except OSError as exc:
                self.last_error = f"{type(exc).__name__}: {exc.strerror or exc}"
                await asyncio.sleep(retry.failed())
                continue
            retry.succeeded()
            self._writer = writer
            self.connected = True
            self.connects += 1
            try:
                writer.write(b'{"op": "subscribe"}\n')
                await self._read(reader)
                self.last_error = "the control part closed the channel"
            except (ConnectionError, asyncio.LimitOverrunError, ValueError) as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
            finally:
                self.connected = False
                self._writer = None
                for fut in self._pending.values():
                    if not fut.done():
                        fut.set_exception(ControlUnavailable(self.last_error))
                self._pending.clear()
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()

    async def _read(self, reader: asyncio.StreamReader) -> None:
        while line := await reader.readline():
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if not isinstance(msg, dict):
                continue
            if "event" in msg:
                self.on_event(msg["event"])
                continue
            fut = self._pending.pop(msg.get("id", -1), None)
            if fut is not None and not fut.done():
                fut.set_result(msg)

    async def call(self, op: str, actor: Actor, **args: Any) -> dict[str, Any]:
        """The control part's answer's body; its refusal as `Forbidden`, `NotFound`,
        `Refused` or `RemoteError`; `ControlUnavailable` if it does not answer in time."""
        writer = self._writer
        if writer is None:
            raise ControlUnavailable(f"the control part is not connected: {self.last_error}")
        self._next_id += 1
        rid = self._next_id
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        req = {"id": rid, "op": op, "actor": {"name": actor.name, "role": actor.role}}
        req["args"] = args
        try:
            writer.write(json.dumps(req, ensure_ascii=False).encode() + b"\n")
            async with asyncio.timeout(self.timeout_s):
                answer = await fut
        except TimeoutError:
            raise ControlUnavailable(
                f"the control part did not answer {op} within {self.timeout_s:g} s"
            ) from None
        finally:
            self._pending.pop(rid, None)
        if self.on_answer is not None:
            self.on_answer()
        if answer.get("ok"):
            body: dict[str, Any] = answer.get("body") or {}
            return body
        status, detail = int(answer.get("status", 500)), str(answer.get("detail", ""))
        if status == 403:
            raise Forbidden(detail)
        if status == 404:
            raise NotFound(detail)
        if status == 409:
            raise Refused(detail)
        raise RemoteError(status, detail)

"""Stand-ins for outside services that cannot run here (DingTalk, WeCom, a webhook
receiver, a mail server), each checking the real request format as the service would.

`RobotServer` answers like the robots do: DingTalk checks the ``timestamp``/``sign``
query (HMAC-SHA256 of ``"{timestamp}\\n{secret}"`` keyed with the secret, base64, within
an hour) and the markdown body, and answers ``{"errcode": 310000, …}`` when the signature
is wrong; WeCom checks the markdown body. `SmtpServer` is aiosmtpd, a real SMTP server.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from email.policy import default
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self

from aiosmtpd.controller import Controller

from tests.servers import free_port


@dataclass
class Request:
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    verdict: str  # "ok" or why the fake refused it


@dataclass
class RobotServer:
    dingtalk_secret: str = "SEC-test-secret"
    port: int = field(default_factory=free_port)
    down: bool = False  # answer 503 to everything
    requests: list[Request] = field(default_factory=list)
    #: called in the server's thread with each request's path, before it is answered
    on_request: Callable[[str], None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def delivered(self, path: str) -> list[Any]:
        return [r.body for r in self.requests if r.path == path and r.verdict == "ok"]

    def _check(
        self, path: str, query: dict[str, str], body: Any
    ) -> tuple[int, dict[str, Any], str]:
        if self.down:
            return 503, {"error": "down"}, "down"
        if path == "/dingtalk":
            ts, sign = query.get("timestamp", ""), query.get("sign", "")
            want = base64.b64encode(
                hmac.new(
                    self.dingtalk_secret.encode(),
                    f"{ts}\n{self.dingtalk_secret}".encode(),
                    hashlib.sha256,
                ).digest()
            ).decode()
            if not ts.isdigit() or abs(time.time() * 1000 - int(ts)) > 3600_000 or sign != want:
                return 200, {"errcode": 310000, "errmsg": "sign not match"}, "bad signature"
            kind = body.get("msgtype") if isinstance(body, dict) else None
            if kind == "actionCard":  # one button, "整体跳转"
                card = body.get("actionCard", {})
                url = str(card.get("singleURL", ""))
                fields = ("title", "text", "singleTitle", "singleURL")
                if not all(card.get(k) for k in fields) or not url.startswith(
                    ("http://", "https://")
                ):
                    return 200, {"errcode": 40035, "errmsg": "bad actionCard"}, "bad body"
                return 200, {"errcode": 0, "errmsg": "ok"}, "ok"
            md = body.get("markdown", {}) if isinstance(body, dict) else {}
            if kind != "markdown" or not md.get("title") or not md.get("text"):
                return 200, {"errcode": 40035, "errmsg": "bad markdown"}, "bad body"
            return 200, {"errcode": 0, "errmsg": "ok"}, "ok"
        if path == "/wecom":
            md = body.get("markdown", {}) if isinstance(body, dict) else {}
            if body.get("msgtype") != "markdown" or not md.get("content"):
                return 200, {"errcode": 40008, "errmsg": "invalid message type"}, "bad body"
            return 200, {"errcode": 0, "errmsg": "ok"}, "ok"
        if path == "/platform":  # an external hazard-management platform
            keys = {"site", "change", "by", "ts", "ticket"}
            if not isinstance(body, dict) or set(body) != keys:
                return 400, {"error": "unexpected body"}, "bad body"
            return 200, {"ok": True}, "ok"
        if path == "/hook":
            keys = {"site", "kind", "title", "text", "link", "alarms"}
            if not isinstance(body, dict) or set(body) != keys:
                return 400, {"error": "unexpected body"}, "bad body"
            return 204, {}, "ok"
        return 404, {}, "no such path"

    def __enter__(self) -> Self:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                parsed = urllib.parse.urlsplit(self.path)
                query = dict(urllib.parse.parse_qsl(parsed.query))
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = raw.decode("utf-8", "replace")
                if outer.on_request is not None:
                    outer.on_request(parsed.path)
                status, answer, verdict = outer._check(parsed.path, query, body)
                outer.requests.append(
                    Request(parsed.path, query, dict(self.headers), body, verdict)
                )
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data) if status != 204 else 0))
                self.end_headers()
                if status != 204:
                    self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


class _Inbox:
    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.messages.append(message_from_bytes(envelope.content, policy=default))
        return "250 OK"


class SmtpServer:
    def __init__(self) -> None:
        self.port = free_port()
        self.inbox = _Inbox()
        self._controller = Controller(self.inbox, hostname="127.0.0.1", port=self.port)

    @property
    def messages(self) -> list[Message]:
        return self.inbox.messages

    def __enter__(self) -> Self:
        self._controller.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._controller.stop()

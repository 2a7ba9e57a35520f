"""Notification channels: what a message says, and how each kind of channel is sent to.

Every message carries the link to its item on the workbench (`link`: an alarm's page, a
ticket's, or *My work* for a flood) when `api.public_url` is configured.

- `webhook`: HTTP POST of JSON ``{"site", "kind", "title", "text", "link", "alarms": […]}``
  (`link` null without a public URL); any 2xx is delivered.
- `dingtalk`: a DingTalk group robot. With a link, an action card whose one button opens
  it: ``{"msgtype": "actionCard", "actionCard": {"title", "text", "btnOrientation": "0",
  "singleTitle", "singleURL"}}``; without, markdown ``{"msgtype": "markdown", "markdown":
  {"title", "text"}}``. With a `secret`, the URL gets ``timestamp`` (ms) and ``sign`` =
  url-encoded base64 of HMAC-SHA256, keyed with the secret, of
  ``"{timestamp}\\n{secret}"`` — the robot's signing rule. Delivered when the answer's
  ``errcode`` is 0.
- `wecom`: a WeCom group robot: ``{"msgtype": "markdown", "markdown": {"content"}}``, the
  link as a markdown link at the end; delivered when ``errcode`` is 0.
- `email`: SMTP (optionally STARTTLS and login), plain-text UTF-8, the link on its own line.

A failure raises `SendFailed` with the reason; the notifier retries.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import smtplib
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from email.message import EmailMessage
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import httpx

from ehswatch.config import (
    DingTalkChannel,
    EmailChannel,
    PlantConfig,
    Sensor,
    WebhookChannel,
    WeComChannel,
)

TIER_LABEL = {0: "正常 normal", 1: "预警 warning", 2: "报警 alarm", 3: "联锁 interlock"}
TIMEOUT_S = 10.0


class SendFailed(Exception):
    pass


@dataclass(frozen=True, kw_only=True)
class Message:
    kind: str  # alarm | escalation | flood
    title: str
    text: str  # markdown
    alarms: list[dict[str, Any]] = field(default_factory=list)
    link: str | None = None  # the item's page on the workbench


OPEN = "打开处理 Open"


class Sender(Protocol):
    async def send(self, message: Message) -> None: ...


class Renderer:
    """Turns notification payloads into messages, with the plant's names and clock."""

    def __init__(self, config: PlantConfig) -> None:
        self.site = config.site
        self.tz = ZoneInfo(config.site.timezone)
        self.config = config
        self.zone_names = {z.id: z.name or z.id for z in config.zones}
        public = config.api.public_url
        self.base = public.rstrip("/") if public else None

    def _link(self, path: str) -> str | None:
        return f"{self.base}{path}" if self.base else None

    def _sensor(self, sensor_id: str) -> Sensor | None:
        # Through the config's one index: a dict of names and one of units per sensor
        # would cost this part 10 MB on a 100 000-sensor plant.
        k = self.config.sensor_index.get(sensor_id)
        return None if k is None else self.config.sensors[k]

    def _line(self, event: dict[str, Any]) -> str:
        a = event["alarm"]
        when = datetime.fromtimestamp(event["ts"], self.tz).strftime("%m-%d %H:%M:%S")
        zone = self.zone_names.get(a["zone"], a["zone"])
        known = self._sensor(a["sensor"])
        sensor = f"{a['sensor']} {known.name if known is not None else ''}".strip()
        if a["kind"] == "fault":
            what = "仪表故障 instrument FAULT"
        elif a["kind"] == "comm":
            what = "通讯中断 device not answering"
        else:
            what = TIER_LABEL.get(a["peak_tier"], str(a["peak_tier"]))
        unit = self.config.sensor_types[known.type].unit if known is not None else ""
        value = "" if a.get("value") is None else f" {a['value']:g} {unit}"
        limit = "" if a.get("threshold") is None else f" (setpoint {a['threshold']:g})"
        return f"{when} {zone} · {sensor} · {what}{value}{limit} · #{a['id']} {a['state']}"

    def single(self, kind: str, event: dict[str, Any]) -> Message:
        a = event["alarm"]
        if kind == "escalation":
            head = "升级 ESCALATION — unacknowledged"
        elif a["kind"] == "fault":
            head = "仪表故障 FAULT"
        elif a["kind"] == "comm":
            head = "通讯中断 COMM LOST"
        else:
            head = TIER_LABEL.get(a["peak_tier"], "alarm")
        zone = self.zone_names.get(a["zone"], a["zone"])
        title = f"[{self.site.name}] {head}: {a['sensor']} @ {zone}"
        text = f"### {title}\n\n- {self._line(event)}\n"
        if kind == "escalation":
            text += f"- escalation {a['escalations']}: nobody has acknowledged this alarm yet\n"
        return Message(
            kind=kind, title=title, text=text, alarms=[a], link=self._link(f"/app/alarms/{a['id']}")
        )

    def predicted(self, payload: dict[str, Any]) -> Message:
        """A predicted crossing: the sensor heading for its alarm or interlock setpoint."""
        zone = self.zone_names.get(payload["zone"], payload["zone"])
        when = datetime.fromtimestamp(payload["eta_at"], self.tz).strftime("%H:%M:%S")
        known = self._sensor(payload["sensor"])
        sensor = f"{payload['sensor']} {known.name if known is not None else ''}".strip()
        tier = TIER_LABEL.get(payload["tier"], str(payload["tier"]))
        title = f"[{self.site.name}] 预测 PREDICTED {tier} ~{when}: {sensor} @ {zone}"
        text = (
            f"### {title}\n\n- if the trend holds, {sensor} reaches its {tier} setpoint at "
            f"about {when}\n- a prediction trips nothing: look before it does\n"
        )
        return Message(kind="predicted", title=title, text=text, link=self._link("/app/"))

    def ticket(self, payload: dict[str, Any]) -> Message:
        """A hazard-ticket reminder, escalation, stop-work or chronic-hazard notice."""
        t, what, to = payload["ticket"], payload["what"], payload["to"]
        person = payload.get("person") or ""
        zone = self.zone_names.get(t["zone"], t["zone"])
        due = datetime.fromtimestamp(t["due_at"], self.tz).strftime("%m-%d %H:%M")
        heads = {
            "reminder": "整改提醒 rectification due soon",
            "stop_work": "重大事故隐患 MAJOR HAZARD: work stops",
            "chronic": "反复隐患 CHRONIC HAZARD",
            "assigned": "隐患派发 hazard assigned to you",
        }
        head = heads.get(what)
        if head is None and what.startswith("opened"):
            head = "新隐患 NEW HAZARD"
        elif head is None and what.startswith("stop-work-unconfirmed"):
            head = "停工未确认 STOP-WORK NOT CONFIRMED"
        elif head is None:
            head = f"隐患逾期 OVERDUE, escalated to {to}"
        title = f"[{self.site.name}] {head}: ticket #{t['id']} grade {t['grade']} @ {zone}"
        about = t.get("title") or f"sensor {t['sensor']}"
        text = (
            f"### {title}\n\n- {about}, state {t['state']}, owner "
            f"{t['owner'] or '(not registered)'}, due {due}\n"
            f"- for: {to}{f' {person}' if person else ''}\n"
        )
        if what == "chronic":
            text += f"- {t['recurrence']} tickets for this sensor within the recurrence window\n"
        return Message(
            kind="ticket", title=title, text=text, link=self._link(f"/app/hazards/{t['id']}")
        )

    def flood(self, zone: str, events: Sequence[dict[str, Any]]) -> Message:
        name = self.zone_names.get(zone, zone)
        title = f"[{self.site.name}] 报警泛滥 FLOOD: {len(events)} alarms in {name}"
        lines = "\n".join(f"- {self._line(e)}" for e in events)
        return Message(
            kind="flood",
            title=title,
            text=f"### {title}\n\n{lines}\n",
            alarms=[e["alarm"] for e in events],
            link=self._link("/app/"),
        )


class WebhookSender:
    def __init__(self, channel: WebhookChannel, site: str, client: httpx.AsyncClient) -> None:
        self.url, self.site, self.client = channel.url, site, client

    async def send(self, message: Message) -> None:
        body = {
            "site": self.site,
            "kind": message.kind,
            "title": message.title,
            "text": message.text,
            "link": message.link,
            "alarms": message.alarms,
        }
        await _post(self.client, self.url, body, expect_errcode=False)


def dingtalk_sign(secret: str, timestamp_ms: int) -> str:
    """DingTalk robot signature: base64(HMAC-SHA256(secret, "ts\\nsecret")), url-encoded."""
    digest = hmac.new(
        secret.encode(), f"{timestamp_ms}\n{secret}".encode(), hashlib.sha256
    ).digest()
    return urllib.parse.quote_plus(base64.b64encode(digest).decode())


class DingTalkSender:
    def __init__(self, channel: DingTalkChannel, client: httpx.AsyncClient) -> None:
        self.url, self.secret, self.client = channel.url, channel.secret, client

    async def send(self, message: Message) -> None:
        url = self.url
        if self.secret:
            ts = int(time.time() * 1000)
            sep = "&" if "?" in url else "?"
            url = f"{url}{sep}timestamp={ts}&sign={dingtalk_sign(self.secret, ts)}"
        body: dict[str, Any]
        if message.link:
            card = {
                "title": message.title,
                "text": message.text,
                "btnOrientation": "0",
                "singleTitle": OPEN,
                "singleURL": message.link,
            }
            body = {"msgtype": "actionCard", "actionCard": card}
        else:
            body = {
                "msgtype": "markdown",
                "markdown": {"title": message.title, "text": message.text},
            }
        await _post(self.client, url, body, expect_errcode=True)


class WeComSender:
    def __init__(self, channel: WeComChannel, client: httpx.AsyncClient) -> None:
        self.url, self.client = channel.url, client

    async def send(self, message: Message) -> None:
        content = message.text
        if message.link:
            content += f"\n[{OPEN}]({message.link})\n"
        body = {"msgtype": "markdown", "markdown": {"content": content}}
        await _post(self.client, self.url, body, expect_errcode=True)


class EmailSender:
    def __init__(self, channel: EmailChannel) -> None:
        self.channel = channel

    async def send(self, message: Message) -> None:
        await asyncio.to_thread(self._send, message)

    def _send(self, message: Message) -> None:
        c = self.channel
        mail = EmailMessage()
        mail["Subject"] = message.title
        mail["From"] = c.sender
        mail["To"] = ", ".join(c.to)
        mail.set_content(message.text + (f"\n{OPEN}: {message.link}\n" if message.link else ""))
        try:
            with smtplib.SMTP(c.smtp.host, c.smtp.port, timeout=TIMEOUT_S) as smtp:
                if c.smtp.starttls:
                    smtp.starttls()
                if c.smtp.username:
                    smtp.login(c.smtp.username, c.smtp.password or "")
                smtp.send_message(mail)
        except (smtplib.SMTPException, OSError) as exc:
            raise SendFailed(f"SMTP {c.smtp.host}:{c.smtp.port}: {exc}") from None


async def _post(
    client: httpx.AsyncClient, url: str, body: dict[str, Any], *, expect_errcode: bool
) -> None:
    try:
        resp = await client.post(url, json=body, timeout=TIMEOUT_S)
    except httpx.HTTPError as exc:
        raise SendFailed(f"{type(exc).__name__}: {exc}") from None
    if not resp.is_success:
        raise SendFailed(f"HTTP {resp.status_code}: {resp.text[:200]}")
    if expect_errcode:
        try:
            answer = resp.json()
        except ValueError:
            raise SendFailed(f"not a robot answer: {resp.text[:200]}") from None
        if answer.get("errcode", -1) != 0:
            raise SendFailed(
                f"robot refused: errcode {answer.get('errcode')} {answer.get('errmsg', '')}"
            )


def senders(config: PlantConfig, client: httpx.AsyncClient) -> dict[str, Sender]:
    out: dict[str, Sender] = {}
    for c in config.notifications.channels:
        if isinstance(c, WebhookChannel):
            out[c.id] = WebhookSender(c, config.site.id, client)
        elif isinstance(c, DingTalkChannel):
            out[c.id] = DingTalkSender(c, client)
        elif isinstance(c, WeComChannel):
            out[c.id] = WeComSender(c, client)
        else:
            out[c.id] = EmailSender(c)
    return out

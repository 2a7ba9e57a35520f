"""A refusal is a value: who was refused what, on what, and why.

Every refusal is audited where it is decided, and only then raised (docs/audit.md): the
code that decides builds a `Refusal`, writes `Refusal.entry(ts)` to the audit log with
whatever else it commits (or alone, in a transaction of its own, when nothing else is
committed), and raises `Refusal.error()`: `Forbidden` (HTTP 403) when the role is too low,
else `Refused` (HTTP 409). No path raises either without its entry.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn

from ehswatch import audit
from ehswatch.audit import entry_row
from ehswatch.db import Database
from ehswatch.roles import Actor, Forbidden, Refused

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True, slots=True)
class Refusal:
    """`action` is what was asked ("reset", "ticket verify", "POST /api/…"), `subject`
    what it was asked of ("zone:mill-1", "ticket:7"); `why` is said to the person."""

    actor: Actor
    action: str
    subject: str
    why: str
    forbidden: bool = False  # the role is too low (403), not the state (409)
    detail: Mapping[str, Any] = field(default_factory=dict)
    comment: str = ""

    @property
    def audited_action(self) -> str:
        return f"{self.action} refused"

    @property
    def audited_detail(self) -> dict[str, Any]:
        return {**self.detail, "why": self.why}

    def entry(self, ts: float) -> dict[str, Any]:
        """The audit entry: action "<action> refused", the reason in its detail."""
        return entry_row(
            ts=ts,
            actor=self.actor,
            action=self.audited_action,
            subject=self.subject,
            detail=self.audited_detail,
            comment=self.comment,
        )

    def error(self) -> Forbidden | Refused:
        return Forbidden(self.why) if self.forbidden else Refused(self.why)

    @classmethod
    def of(
        cls, exc: Forbidden | Refused, *, actor: Actor, action: str, subject: str, **more: Any
    ) -> Refusal:
        """The refusal a pure rule raised (`model` functions raise; their shells audit)."""
        return cls(
            actor=actor,
            action=action,
            subject=subject,
            why=str(exc),
            forbidden=isinstance(exc, Forbidden),
            **more,
        )


async def refuse(
    db: Database, refusal: Refusal, ts: float, *, error: Exception | None = None
) -> NoReturn:
    """Audit the refusal in a transaction of its own (the refused change commits
    nothing), then raise `error` (the rule's own exception, e.g. an upload's 413) or
    `refusal.error()`. A database that cannot take the entry (locked, full, gone) is
    logged, and the refusal still stands: what is refused is never done, and a 403 or 409
    never becomes a 500."""
    try:
        async with db.new_session() as session, session.begin():
            await audit.append(session, [refusal.entry(ts)])
    except Exception as exc:
        log.error(
            "the refusal of %r by %s (%s) could not be audited: %s",
            refusal.action, refusal.actor.name, refusal.why, exc,
        )  # fmt: skip
    raise error if error is not None else refusal.error()

"""Request bodies shared by several routers, and what the API answers: one model per
kind of answer, documented in the OpenAPI description (`/docs`).

The answers are the domain's own records (`Alarm`, `HazardTicket`) where they exist;
`Interlock`, `AuditEntry` and `EvidenceAdded` mirror what `ZoneState.public`, the audit
log and the evidence store give (a test holds each to its source's fields). Refusals are
`Error`s: 401 (no or an unknown token), 403 (the role is too low), 404 (no such thing),
409 (refused in the current state, with the reason), each also in the audit log.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ehswatch.alarms.model import Alarm
from ehswatch.hazards.model import HazardTicket
from ehswatch.interlock.state import PendingBypass

__all__ = ["Alarm", "HazardTicket"]  # answers too, as they are


class Comment(BaseModel):
    """An optional comment, kept in the audit log with the action."""

    comment: str = Field("", max_length=2000)


class Error(BaseModel):
    detail: Any = Field(description="why, for the person: a sentence (or, on 422, the fields)")


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The `responses` of a route that may answer these refusals."""
    said = {
        401: "no bearer token or session, an unknown one, or a session that has ended",
        403: "the caller's role is too low for this, or a session's change came without its "
        "CSRF token (audited)",
        404: "no such alarm, ticket, zone or sensor",
        409: "refused in the current state; `detail` says why (audited)",
        413: "the file is too large",
        415: "the file is not a photo or a document",
        422: "the request is malformed; `detail` names the fields",
        429: "too many failed sign-ins: try again after `Retry-After` seconds (audited)",
        503: "the control part did not answer in time, or has published no state yet",
    }
    return {c: {"model": Error, "description": said[c]} for c in codes}


READ_ERRORS = errors(401, 403)
ACT_ERRORS = errors(401, 403, 404, 409, 503)


class SignedIn(BaseModel):
    """Who is signed in, the CSRF token their page sends back with each change (header
    `X-CSRF-Token`; also in the `ehs_csrf` cookie), and when the session ends at the latest."""

    model_config = ConfigDict(extra="forbid")
    name: str
    display_name: str
    role: str
    csrf_token: str | None = Field(description="None when the caller uses a bearer token")
    expires_at: float | None = Field(description="epoch seconds; None for a bearer token")


class Interlock(BaseModel):
    """An interlocked zone as the control part published it (at most one tick old)."""

    model_config = ConfigDict(extra="forbid")

    zone: str
    tripped: bool = Field(description="latched: stays until an authorised reset")
    seq: int = Field(description="output command number: +1 for every trip and reset")
    tripped_at: float | None
    trip_votes: int
    trip_cause: list[str] = Field(description="the sensors voting when it tripped")
    bypass_until: float | None
    bypass_reason: str
    bypass_measure: str
    bypass_by: list[str]
    pending: PendingBypass | None = Field(description="a bypass waiting for its second approver")
    output_fault: bool = Field(description="the PLC did not confirm a command in time")
    votes: int
    vote_holds: bool
    latch_durable: bool = Field(description="the latch is stored (a restart keeps it)")
    bypassed: bool


class AuditEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: int
    ts: float
    actor: str
    role: str
    action: str = Field(description='e.g. "trip", "reset", "ticket verified", "reset refused"')
    subject: str = Field(description='e.g. "zone:mill-1", "ticket:7", "api:/api/…"')
    detail: dict[str, Any]
    comment: str


class EvidenceAdded(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: int
    sha256: str = Field(description="of the file as stored")
    size: int
    content_type: str

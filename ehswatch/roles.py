"""Who may do what: the roles (docs/api.md), lowest to highest, and the acting person.

viewer < operator < supervisor < dept_head < safety_director < gm < admin
"""

from __future__ import annotations

from dataclasses import dataclass

from ehswatch.config import ROLES, Role

RANK: dict[str, int] = {role: k for k, role in enumerate(ROLES)}


@dataclass(frozen=True, kw_only=True, slots=True)
class Actor:
    """A named person acting with a role (from a bearer token, or a system job)."""

    name: str
    role: Role

    def at_least(self, role: Role) -> bool:
        return RANK[self.role] >= RANK[role]


SYSTEM = Actor(name="ehswatch", role="admin")  # the service itself (expiry, re-assert)


class Forbidden(Exception):
    """The actor's role is too low for the action (HTTP 403)."""


class Refused(Exception):
    """The action is not allowed in the current state (HTTP 409); the message says why."""


class NotFound(Exception):
    """The thing asked for does not exist: no such ticket, alarm, zone, sensor (HTTP 404).
    Its own class, not `KeyError`: a bug's `KeyError` is a bug (500, logged), never a
    "not found" that hides it."""

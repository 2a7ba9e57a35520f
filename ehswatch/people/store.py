"""The tables of people and their sessions.

A person's password is kept only as its argon2id hash; a session's token only as its
SHA-256 (a copy of the database gives no one a way in). A session carries its own CSRF
token, which a page sends back with every change it asks for.
"""

from __future__ import annotations

from collections.abc import Container

from sqlalchemy import Boolean, Float, Integer, String, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from ehswatch.tables import Base

NAME_MAX = 64


class PersonRow(Base):
    __tablename__ = "person"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(NAME_MAX), unique=True)  # what one signs in as
    display_name: Mapped[str] = mapped_column(String(NAME_MAX), default="")  # e.g. 张伟
    role: Mapped[str] = mapped_column(String(32))
    password_hash: Mapped[str] = mapped_column(String(255))
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[float] = mapped_column(Float)
    password_set_at: Mapped[float] = mapped_column(Float)


class SessionRow(Base):
    __tablename__ = "person_session"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    csrf: Mapped[str] = mapped_column(String(64))
    person: Mapped[str] = mapped_column(String(NAME_MAX), index=True)
    created_at: Mapped[float] = mapped_column(Float)
    last_seen: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float)


async def can_act(s: AsyncSession, name: str, machines: Container[str]) -> bool:
    """Whether `name` can act: one of the configured `machines` (users with tokens), or a
    person who may sign in (known, not disabled)."""
    if name in machines:
        return True
    q = select(func.count()).where(PersonRow.name == name, PersonRow.disabled.is_(False))
    return bool(await s.scalar(q))

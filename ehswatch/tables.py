"""`Base`: the declarative base of every table (`ehswatch.schema` gathers them all).

Its own module so that a module defining tables (`audit`, `*/store.py`) needs nothing of
the database's connection handling (`db`), and `db` nothing of them.
"""

from __future__ import annotations

from sqlalchemy.orm import DeclarativeBase


class Base(DeclarativeBase):
    pass

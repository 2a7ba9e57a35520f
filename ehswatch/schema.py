"""`all_tables()`: the metadata of every table of the project, for the migrations and
the check that they match the models. Imports each module that defines tables."""

from __future__ import annotations

from sqlalchemy import MetaData

from ehswatch import audit, standby
from ehswatch.alarms import store as alarm_store
from ehswatch.api import idempotency
from ehswatch.governance import store as governance_store
from ehswatch.hazards import store as hazard_store
from ehswatch.interlock import store as interlock_store
from ehswatch.people import store as people_store
from ehswatch.tables import Base

MODULES = (
    audit,
    alarm_store,
    hazard_store,
    interlock_store,
    people_store,
    idempotency,
    governance_store,
    standby,
)  # each defines tables


def all_tables() -> MetaData:
    return Base.metadata

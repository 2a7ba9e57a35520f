"""`Rooms`: what every room of the hazard desk is given, and `TicketRoom`, their base."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from ehswatch.component import Wakeable
from ehswatch.config import PlantConfig
from ehswatch.db import Database
from ehswatch.governance.responsibility import Responsibilities
from ehswatch.hazards.dispatch import Dispatch
from ehswatch.hazards.ledger import TicketLedger


@dataclass(frozen=True, kw_only=True, slots=True)
class Rooms:
    """What every room of the hazard desk is given: the plant, the database, the ledger,
    what to wake after a commit that changed tickets (the webhook's), where a new
    ticket goes (`dispatch`), the responsibility map, and the clock."""

    config: PlantConfig
    db: Database
    ledger: TicketLedger
    changed: Wakeable
    dispatch: Dispatch
    owners: Responsibilities
    clock: Callable[[], float] = time.time


class TicketRoom:
    """A room of the hazard desk (intake, workflow, deadlines), on what `Rooms` gives."""

    def __init__(self, rooms: Rooms) -> None:
        self.config = rooms.config
        self.settings = rooms.config.hazards
        self.db = rooms.db
        self.ledger = rooms.ledger
        self.dispatch = rooms.dispatch
        self.owners = rooms.owners
        self._changed = rooms.changed
        self._clock = rooms.clock

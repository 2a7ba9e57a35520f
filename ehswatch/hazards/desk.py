"""`HazardDesk`: the hazard-ticket rooms of the desk part, built and entered together.

Each room is a module of its own (docs/hazards.md):

- `intake` (`TicketIntake`): a ticket for every alarm episode, from the alarm outbox;
- `workflow` (`TicketWorkflow`): what people do, rules in `model`;
- `deadlines` (`TicketDeadlines`): reminders and escalation;
- `outbound` (`TicketWebhook`, with `hazards.webhook`): every change to the platform;
- `reports` (`ticket_report`): the plant manager's figures;
- `ledger` (`TicketLedger`): where every change is written, with its audit entry and its
  outbound message, and where ticket notices are queued.

Data flows one way: alarm events → intake → ledger → {webhook, notifier}; people →
workflow → ledger → the same. The desk's methods are the workflow's and the ledger's,
for the API.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any, Self
from zoneinfo import ZoneInfo

import httpx

from ehswatch.component import Backoff, Component, Wakeable, enter_all
from ehswatch.config import PlantConfig
from ehswatch.db import Database
from ehswatch.governance.desk import GovernanceDesk
from ehswatch.governance.influx import GovernanceExport
from ehswatch.governance.near_miss import NearMisses
from ehswatch.governance.responsibility import Responsibilities
from ehswatch.governance.watch import GovernanceWatch
from ehswatch.hazards.deadlines import TicketDeadlines
from ehswatch.hazards.dispatch import Dispatch
from ehswatch.hazards.evidence import EvidenceStore
from ehswatch.hazards.intake import TicketIntake
from ehswatch.hazards.ledger import TicketLedger
from ehswatch.hazards.outbound import RETRY, TicketWebhook
from ehswatch.hazards.reports import ticket_report
from ehswatch.hazards.rooms import Rooms
from ehswatch.hazards.workflow import RealityOf, TicketWorkflow


class HazardDesk:
    def __init__(
        self,
        *,
        config: PlantConfig,
        db: Database,
        clock: Callable[[], float] = time.time,
        notify_wake: Wakeable | None = None,
        client: httpx.AsyncClient | None = None,
        backoff: Backoff = RETRY,
        reality: RealityOf | None = None,
        published: Callable[[], dict[str, Any] | None] = lambda: None,
    ) -> None:
        """`notify_wake`: the notifier's wake-up, set when ticket notices are queued;
        `client` and `backoff`: the webhook's (tests pass their own); `published`: the
        control part's latest status document (its shift figures), or None."""
        settings = config.hazards
        self._clock = clock
        self.tz = ZoneInfo(config.site.timezone)
        self.evidence = EvidenceStore(
            settings.evidence_dir, int(settings.evidence_max_mb * 1024 * 1024)
        )
        self.ledger = TicketLedger(config=config, db=db, clock=clock, notify_wake=notify_wake)
        self.outbound = (
            TicketWebhook(config=config, db=db, clock=clock, client=client, backoff=backoff)
            if settings.webhook is not None
            else None
        )
        changed: Wakeable = self.outbound.wake if self.outbound else asyncio.Event()
        self.owners = Responsibilities(config=config, db=db, clock=clock)
        self.dispatch = Dispatch(config=config, ledger=self.ledger, owners=self.owners, clock=clock)
        rooms = Rooms(
            config=config,
            db=db,
            ledger=self.ledger,
            changed=changed,
            dispatch=self.dispatch,
            owners=self.owners,
            clock=clock,
        )
        self.rooms = rooms
        self.intake = TicketIntake(rooms)
        self.workflow = TicketWorkflow(rooms, evidence=self.evidence, reality=reality)
        self.deadlines = TicketDeadlines(rooms)
        # Dust governance: records people make, and the watch over what they missed.
        self.governance = GovernanceDesk(rooms, evidence=self.evidence, published=published)
        self.watch = GovernanceWatch(rooms, store_figures=self.governance.store_figures)
        self.near_misses = NearMisses(self.governance)
        self.run_watch = self.watch.run_watch
        self.governance_export = (
            GovernanceExport(self.governance, config.influxdb) if config.influxdb else None
        )
        # The workflow's and the ledger's, for the API and the tests.
        self.register = self.workflow.register
        self.start = self.workflow.start
        self.confirm_stop_work = self.workflow.confirm_stop_work
        self.accept_report = self.workflow.accept_report
        self.dismiss_report = self.workflow.dismiss_report
        self.assign = self.workflow.assign
        self.add_evidence = self.workflow.add_evidence
        self.evidence_of = self.workflow.evidence_of
        self.evidence_file = self.workflow.evidence_file
        self.submit = self.workflow.submit
        self.verify = self.workflow.verify
        self.approve = self.workflow.approve
        self.lower_grade = self.workflow.lower_grade
        self.get = self.ledger.get
        self.tickets = self.ledger.tickets
        self.intake_once = self.intake.intake_once
        self.run_schedule = self.deadlines.run_schedule
        self._stack = AsyncExitStack()

    @property
    def wake(self) -> asyncio.Event:
        """Set after each commit of alarm events (the intake's)."""
        return self.intake.wake

    async def deliver_outbound(self) -> int:
        assert self.outbound is not None, "no hazards.webhook configured"
        return await self.outbound.deliver_outbound()

    async def report(self) -> dict[str, Any]:
        return ticket_report(await self.ledger.tickets(), self._clock(), self.tz)

    def components(self) -> list[Component]:
        return [
            self.intake,
            self.deadlines,
            self.watch,
            *([self.outbound] if self.outbound else []),
            *([self.governance_export] if self.governance_export else []),
        ]

    async def __aenter__(self) -> Self:
        await enter_all(self._stack, self.components())
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stack.__aexit__(et, e, tb)

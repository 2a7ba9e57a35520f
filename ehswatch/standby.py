"""Active + standby: the control lease — which instance may drive the plant's outputs now.

Instances configured with the same `instance.lease` share one row of `control_lease` in
the shared database (PostgreSQL; SQLite works for instances on one machine). Whoever
holds the lease runs the control part; the others wait and write nothing.

- `Lease.try_take()` takes the row when it is free or expired, or renews it for its
  holder, in one UPDATE whose expiry is on the database's own clock: the instances'
  clocks are never compared. A take by another holder raises `epoch`.
- The fence, `Lease.holds()`, is local and costs no I/O (it is asked before every PLC
  write): true until `lease_s` − `MARGIN_S` after the *start* of the last successful
  renewal, on this process's monotonic clock. That is never later than the database's
  expiry, whatever the network did to the request.
- A new holder waits `lease_s` after taking the lease before it drives any output
  (`Standby.take_over`). By then the former holder's fence has closed, even if the
  database's clock jumped forward and expired the lease early: never two writers.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable

from sqlalchemy import Float, Integer, String, text
from sqlalchemy.orm import Mapped, mapped_column

from ehswatch.db import Database
from ehswatch.tables import Base

log = logging.getLogger(__name__)

MARGIN_S = 0.1  # the fence closes this long before the lease could have expired


class LeaseRecord(Base):
    __tablename__ = "control_lease"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(128))
    epoch: Mapped[int] = mapped_column(Integer)
    expires_at: Mapped[float] = mapped_column(Float)  # on the database's clock


def holder_name() -> str:
    """This process, as the lease names its holder: unique to this process's life (a
    host name and pid recur — every container's process is pid 1 — and a second holder
    of one name would renew the other's lease as its own)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"[:128]


def database_now(db: Database) -> str:
    """SQL for the database's clock, in seconds since the epoch."""
    if db.is_sqlite:
        return "((julianday('now') - 2440587.5) * 86400.0)"
    return "extract(epoch from clock_timestamp())"


class Lease:
    def __init__(
        self,
        db: Database,
        *,
        name: str,
        lease_s: float,
        holder: str | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.db = db
        self.name = name
        self.lease_s = lease_s
        self.holder = holder or holder_name()
        self._monotonic = monotonic
        self._valid_until = float("-inf")
        self.epoch: int | None = None

    async def try_take(self) -> bool:
        """Take the lease (free or expired) or renew it (held by this instance); whether
        this instance holds it now. A failure to reach the database is False."""
        started = self._monotonic()
        now = database_now(self.db)
        try:
            async with self.db.new_session() as s, s.begin():
                await s.execute(
                    self.db.insert(LeaseRecord)
                    .values(name=self.name, holder="", epoch=0, expires_at=0.0)
                    .on_conflict_do_nothing(index_elements=["name"])
                )
                if not self.db.is_sqlite:
                    # A holder whose host dies mid-transaction must not keep the row
                    # locked (and every standby waiting) for TCP's hours.
                    ms = max(1, int(self.lease_s * 1000))
                    await s.execute(text(f"SET LOCAL lock_timeout = {ms}"))
                    await s.execute(text(f"SET LOCAL idle_in_transaction_session_timeout = {ms}"))
                # Renewed only by this holder in this epoch; taken by anyone once expired.
                row = (
                    await s.execute(
                        text(
                            "UPDATE control_lease SET"
                            " epoch = CASE WHEN holder = :me AND epoch = :epoch"
                            " THEN epoch ELSE epoch + 1 END,"
                            f" holder = :me, expires_at = {now} + :ttl"
                            " WHERE name = :name"
                            f" AND ((holder = :me AND epoch = :epoch) OR expires_at < {now})"
                            " RETURNING epoch"
                        ),
                        {
                            "me": self.holder,
                            "epoch": -1 if self.epoch is None else self.epoch,
                            "ttl": self.lease_s,
                            "name": self.name,
                        },
                    )
                ).first()
        except Exception as exc:  # the database unreachable, locked, restarting
            log.warning("control lease %s: %s", self.name, exc)
            return False
        if row is None:
            return False
        if row[0] != self.epoch:
            log.info("control lease %s taken (epoch %d) by %s", self.name, row[0], self.holder)
        self.epoch = int(row[0])
        self._valid_until = started + self.lease_s - MARGIN_S
        return True

    def holds(self) -> bool:
        """The fence: whether this instance surely still holds the lease (no I/O)."""
        return self._monotonic() < self._valid_until

    async def release(self) -> None:
        """Give the lease up at once (a clean stop): the standby need not wait."""
        self._valid_until = float("-inf")
        try:
            async with self.db.new_session() as s, s.begin():
                await s.execute(
                    text(
                        "UPDATE control_lease SET expires_at = 0"
                        " WHERE name = :name AND holder = :me AND epoch = :epoch"
                    ),
                    {"name": self.name, "me": self.holder, "epoch": self.epoch or 0},
                )
        except Exception as exc:
            log.warning("control lease %s not released: %s", self.name, exc)


async def live_leases(db: Database) -> list[str]:
    """The control leases some instance holds now (unexpired on the database's clock)."""
    now = database_now(db)
    async with db.new_session() as s:
        rows = await s.execute(
            text(f"SELECT name FROM control_lease WHERE holder != '' AND expires_at > {now}")
        )
        return [str(r[0]) for r in rows]


class Standby:
    """The lease's two loops around the control part: `wait_for_lease()` until this
    instance holds it (then `lease_s` more, renewing, so the former holder's fence has
    closed), and `keep()` renewing it until it is lost, which it returns on (the control
    part must then stop: its fence has closed already). Loss is decided by the fence
    alone: a renewal that hangs (a database cut off the network) cannot hide it."""

    def __init__(self, lease: Lease, stop: asyncio.Event) -> None:
        self.lease = lease
        self.stop = stop
        self.period_s = lease.lease_s / 4

    async def _pause(self, seconds: float) -> bool:
        """Sleep `seconds`, or less if told to stop; whether to stop."""
        try:
            async with asyncio.timeout(seconds):
                await self.stop.wait()
        except TimeoutError:
            return False
        return True

    async def _renew(self) -> bool:
        try:  # a database cut off the network may not answer at all
            async with asyncio.timeout(self.period_s):
                return await self.lease.try_take()
        except TimeoutError:
            return False

    async def wait_for_lease(self) -> bool:
        """Wait for the lease, then for the former holder's fence; False: told to stop."""
        log.info("standby: waiting for the control lease %s", self.lease.name)
        while True:
            while not await self._renew():
                if await self._pause(self.period_s):
                    return False
            deadline = time.monotonic() + self.lease.lease_s
            while self.lease.holds() and time.monotonic() < deadline:
                if await self._pause(min(self.period_s, max(0.0, deadline - time.monotonic()))):
                    await self.lease.release()
                    return False
                await self._renew()
            if self.lease.holds():
                log.warning("control lease %s held (epoch %s): taking over", self.lease.name,
                            self.lease.epoch)  # fmt: skip
                return True
            log.warning("control lease %s lost while taking over", self.lease.name)

    async def keep(self) -> None:
        """Renew until the lease is lost (returns then) or the task is cancelled: at
        once, then every quarter of `lease_s`, soon again after a failed try. Each try
        runs as a task of its own that is never awaited past a quarter period: a try
        that hangs leaves the fence to decide."""
        trying: asyncio.Task[bool] | None = None
        try:
            while self.lease.holds():
                if trying is None:
                    trying = asyncio.create_task(self.lease.try_take(), name="standby:renew")
                done, _ = await asyncio.wait({trying}, timeout=self.period_s)
                if not done:
                    continue  # still trying: the fence says how long that may go on
                renewed, trying = trying.result(), None
                await asyncio.sleep(self.period_s if renewed else self.period_s / 4)
        finally:
            if trying is not None:
                trying.cancel()
        log.critical("control lease %s lost: the control part stops", self.lease.name)

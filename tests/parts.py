"""The control part and the desk part in this process, talking as in production."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from ehswatch.config import PlantConfig
from ehswatch.desk_part import DeskPart
from ehswatch.service import Service


@asynccontextmanager
async def both_parts(
    config: PlantConfig, **service: Any
) -> AsyncIterator[tuple[Service, DeskPart]]:
    """`Service` (the control part) and its `DeskPart` (tickets, notifications, the
    command channel), through the same run directory, socket and shared state."""
    control = Service(config, **service)
    async with control, DeskPart(config, control.run_dir, clock=control.clock) as desk:
        yield control, desk

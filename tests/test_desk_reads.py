"""What the desk part keeps between requests, and what makes it read anew."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import text

from ehswatch.alarms.events import EventStream
from ehswatch.control_channel import CommandServer
from ehswatch.desk_part import DeskPart
from ehswatch.roles import Actor
from ehswatch.run_dir import COMMAND_SOCKET
from tests.aio import eventually, run
from tests.test_api import plant


class Reads:
    """A list's `build()` that counts: each read from the database gives its number."""

    def __init__(self) -> None:
        self.count = 0

    async def __call__(self) -> int:
        self.count += 1
        return self.count


def test_a_list_is_kept_until_a_change_is_heard_of_or_made_or_it_is_a_second_old(
    tmp_path: Path,
) -> None:
    # Not entered: no job of the desk part commits on its own meanwhile.
    desk = DeskPart(plant(tmp_path), tmp_path)
    build = Reads()

    async def main() -> None:
        assert await desk.recent("alarms", build) == 1
        assert await desk.recent("alarms", build) == 1  # nothing changed: kept
        assert await desk.recent("tickets", build) == 2  # each key its own
        desk._on_event({"type": "wake", "what": "hazards"})
        assert await desk.recent("alarms", build) == 1  # a wake-up is no change
        desk._on_event({"type": "alarm", "id": 7})
        assert await desk.recent("alarms", build) == 3  # heard of: read anew
        async with desk.db.new_session() as s:
            await s.execute(text("SELECT 1"))
            await s.commit()
        assert await desk.recent("alarms", build) == 4  # made here: read anew
        assert await desk.recent("alarms", build, max_age_s=0.0) == 5  # too old
        await desk.db.engine.dispose()

    run(main())


def test_a_change_while_a_list_is_read_makes_that_read_stale(tmp_path: Path) -> None:
    desk = DeskPart(plant(tmp_path), tmp_path)
    reads = Reads()

    async def build() -> int:
        n = await reads()
        if n == 1:
            desk._on_event({"type": "interlock", "zone": "z1"})  # lands mid-read
        return n

    async def main() -> None:
        assert await desk.recent("alarms", build) == 1
        assert await desk.recent("alarms", build) == 2  # the first may predate the change
        assert await desk.recent("alarms", build) == 2
        await desk.db.engine.dispose()

    run(main())


def test_an_answer_of_the_control_part_makes_the_next_read_fresh(tmp_path: Path) -> None:
    # What a call changed is stored before the control part answers, and its event may
    # come later: the answer itself is the change heard of.
    desk = DeskPart(plant(tmp_path), tmp_path)
    build = Reads()

    async def shelve(actor: Actor, args: dict[str, Any]) -> dict[str, Any]:
        return {"shelved": args["alarm"]}

    async def main() -> None:
        server = CommandServer(tmp_path / COMMAND_SOCKET, {"shelve": shelve}, EventStream())
        async with server, desk.link:
            await eventually(lambda: desk.link.connected, what="connected")
            assert await desk.recent("alarms", build) == 1
            assert await desk.recent("alarms", build) == 1
            await desk.link.call("shelve", Actor(name="李主管", role="supervisor"), alarm=1)
            assert await desk.recent("alarms", build) == 2
        await desk.db.engine.dispose()

    run(main())

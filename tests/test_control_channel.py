"""The boundary between the desk part and the control part: the command channel (a real
Unix socket) and the shared state file (a real mapping), attacked as a peer would."""

from __future__ import annotations

import asyncio
import contextlib
import json
import struct
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ehswatch.alarms.events import EventStream
from ehswatch.control_channel import (
    CommandServer,
    ControlClient,
    ControlUnavailable,
    RemoteError,
    Wake,
)
from ehswatch.roles import Actor, Forbidden, NotFound, Refused
from ehswatch.shared_state import StateLayout, StateReader, StateUnavailable, StateWriter
from tests.aio import eventually, run

BOSS = Actor(name="李主管", role="supervisor")


async def handlers_server(tmp_path: Path, events: EventStream) -> CommandServer:
    async def echo(actor: Actor, args: dict[str, Any]) -> dict[str, Any]:
        return {"actor": actor.name, "role": actor.role, **args}

    async def refuse(actor: Actor, args: dict[str, Any]) -> dict[str, Any]:
        kind = args["kind"]
        if kind == "forbidden":
            raise Forbidden("too low")
        if kind == "missing":
            raise NotFound("no alarm 9")
        if kind == "refused":
            raise Refused("the vote still holds")
        raise RuntimeError("a bug")

    async def slow(actor: Actor, args: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(3600)
        return {}

    return CommandServer(
        tmp_path / "c.sock", {"echo": echo, "refuse": refuse, "slow": slow}, events
    )


def test_refusals_keep_their_meaning_across_the_channel(tmp_path: Path) -> None:
    async def main() -> None:
        events = EventStream()
        async with (
            await handlers_server(tmp_path, events),
            ControlClient(tmp_path / "c.sock", lambda e: None) as client,
        ):
            await eventually(lambda: client.connected, what="connected")
            body = await client.call("echo", BOSS, zone="罐区", hours=1.5)
            assert body == {"actor": "李主管", "role": "supervisor", "zone": "罐区", "hours": 1.5}
            with pytest.raises(Forbidden, match="too low"):
                await client.call("refuse", BOSS, kind="forbidden")
            with pytest.raises(NotFound, match="no alarm 9"):
                await client.call("refuse", BOSS, kind="missing")
            with pytest.raises(Refused, match="the vote still holds"):
                await client.call("refuse", BOSS, kind="refused")
            with pytest.raises(RemoteError) as bug:
                await client.call("refuse", BOSS, kind="bug")
            assert bug.value.status == 500  # the desk part answers 503 for it, never 500
            with pytest.raises(RemoteError) as unknown:
                await client.call("no.such.op", BOSS)
            assert unknown.value.status == 400

    run(main())


def test_a_control_part_that_does_not_answer_is_unavailable_within_the_deadline(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        events = EventStream()
        client = ControlClient(tmp_path / "c.sock", lambda e: None, timeout_s=0.3)
        async with client:
            with pytest.raises(ControlUnavailable, match="not connected"):
                await client.call("echo", BOSS)  # nobody listens yet
            async with await handlers_server(tmp_path, events):
                await eventually(lambda: client.connected, what="connected")
                loop = asyncio.get_running_loop()
                t0 = loop.time()
                with pytest.raises(ControlUnavailable, match="did not answer"):
                    await client.call("slow", BOSS)
                assert loop.time() - t0 < 1.0

    run(main())


def test_garbage_and_oversized_lines_from_a_peer_never_stop_the_server(tmp_path: Path) -> None:
    async def main() -> None:
        events = EventStream()
        async with (
            await handlers_server(tmp_path, events) as server,
            ControlClient(tmp_path / "c.sock", lambda e: None) as client,
        ):
            await eventually(lambda: client.connected, what="connected")
            reader, writer = await asyncio.open_unix_connection(tmp_path / "c.sock")
            writer.write(b'\xff\xfe not json\n{"op": 3}\n[1,2]\n"a"\n')
            writer.write(b'{"id": 5, "op": "echo", "actor": {"name": "x", "role": "god"}}\n')
            await writer.drain()
            # The unknown op and the unknown role are answered (400); the rest is skipped.
            answers = [json.loads(await asyncio.wait_for(reader.readline(), 5)) for _ in "ab"]
            assert [a["status"] for a in answers] == [400, 400]
            with contextlib.suppress(ConnectionError):
                writer.write(b"x" * (2 << 20) + b"\n")  # over the line limit: dropped
                await writer.drain()
            try:  # dropped: end of stream, or a reset for the bytes it did not read
                rest = await asyncio.wait_for(reader.read(), 5)
            except ConnectionError:
                rest = b""
            assert rest == b""
            writer.close()
            # The well-behaved peer still gets its answers.
            assert (await client.call("echo", BOSS, n=1))["n"] == 1
            assert server.connections >= 1

    run(main())


def test_events_reach_the_desk_part_and_wakes_are_routed_not_shown(tmp_path: Path) -> None:
    async def main() -> None:
        events = EventStream()
        got: list[dict[str, Any]] = []
        async with (
            await handlers_server(tmp_path, events),
            ControlClient(tmp_path / "c.sock", got.append) as client,
        ):
            await eventually(lambda: client.connected and events.subscribers == 1, what="sub")
            events.publish({"type": "alarm", "event_id": 7})
            Wake(events, "hazards").set()
            await eventually(lambda: len(got) == 2, what="both")
            assert got == [{"type": "alarm", "event_id": 7}, {"type": "wake", "what": "hazards"}]

    run(main())


# ------------------------------------------------------------------ the shared state


def arrays(n: int, k: float) -> dict[str, Any]:
    return {
        "tier": np.full(n, int(k) % 4, np.int8),
        "faulted": np.zeros(n, bool),
        "reason": np.zeros(n, np.int8),
        "value": np.full(n, k),
        "ts": np.full(n, k),
        "late": np.full(n, int(k), np.int64),
        "future": np.zeros(n, np.int64),
        "too_old": np.zeros(n, np.int64),
    }


def test_a_reader_never_sees_a_torn_state_while_the_writer_publishes(tmp_path: Path) -> None:
    n = 200_000
    writer = StateWriter(tmp_path / "state", StateLayout(sensors=n, points=4), 10.0)
    writer.publish(**arrays(n, 0.0), history_row=None, status={"k": 0})
    reader = StateReader(tmp_path / "state")
    stop = threading.Event()

    def write() -> None:
        k = 1.0
        while not stop.is_set():
            row = (np.full(n, k, np.float32), np.zeros(n, np.int8), k)
            writer.publish(**arrays(n, k), history_row=row, status={"k": k})
            k += 1

    thread = threading.Thread(target=write)
    thread.start()
    try:
        for _ in range(300):
            published, (value, late) = reader.read(
                lambda a, _: (a["value"].copy(), a["late"][:5].copy())
            )
            k = published.status["k"]
            # Every array and the status document are of the same publish.
            assert value.min() == value.max() == k
            assert (late == int(k)).all()
    finally:
        stop.set()
        thread.join()
        reader.close()
        writer.close()


def test_a_writer_killed_mid_write_leaves_the_state_unavailable_not_torn(tmp_path: Path) -> None:
    writer = StateWriter(tmp_path / "state", StateLayout(sensors=10, points=2), 10.0)
    reader = StateReader(tmp_path / "state", attempts=20)
    with pytest.raises(StateUnavailable, match="not published"):
        reader.read(lambda a, _: None)
    writer.publish(**arrays(10, 1.0), history_row=None, status={"k": 1})
    published, _ = reader.read(lambda a, _: None)
    assert published.status == {"k": 1}
    # As if the process died between "being written" and "consistent": the sequence is odd.
    with (tmp_path / "state").open("r+b") as f:
        f.seek(16)
        (seq,) = struct.unpack("<Q", f.read(8))
        f.seek(16)
        f.write(struct.pack("<Q", seq + 1))
    with pytest.raises(StateUnavailable, match="did not settle"):
        reader.read(lambda a, _: None)
    reader.close()
    writer.close()


def test_a_status_document_over_its_room_is_replaced_by_a_note_not_cut(tmp_path: Path) -> None:
    writer = StateWriter(tmp_path / "state", StateLayout(sensors=1, points=1, status_cap=200), 10.0)
    writer.publish(**arrays(1, 1.0), history_row=None, status={"big": "x" * 500})
    published, _ = StateReader(tmp_path / "state").read(lambda a, _: None)
    big = len(json.dumps({"big": "x" * 500}))
    assert published.status == {"truncated": True, "bytes": big, "cap": 200}
    assert writer.status_truncated == 1
    json.dumps(published.status)
    writer.close()


def test_reads_of_one_state_share_its_header_and_a_new_state_is_read_anew(
    tmp_path: Path,
) -> None:
    writer = StateWriter(tmp_path / "state", StateLayout(sensors=3, points=4), 10.0)
    reader = StateReader(tmp_path / "state")
    writer.publish(**arrays(3, 1.0), history_row=None, status={"k": 1})
    first, rows = reader.read(lambda a, n: n)
    again, _ = reader.read(lambda a, n: n)
    assert again is first and first.status == {"k": 1} and rows == 0
    row = (np.full(3, 2.0, np.float32), np.zeros(3, np.int8), 2.0)
    writer.publish(**arrays(3, 2.0), history_row=row, status={"k": 2})
    second, (rows, value) = reader.read(lambda a, n: (n, a["value"].copy()))
    assert second is not first
    assert second.status == {"k": 2} and second.history_rows == rows == 1
    assert value.tolist() == [2.0, 2.0, 2.0]
    reader.close()
    writer.close()


def test_a_writer_that_starts_over_on_the_same_file_is_read_anew(tmp_path: Path) -> None:
    # Its sequence counts from 0 again: a reader must not take the first run's header
    # (and status) for the second run's arrays.
    first = StateWriter(tmp_path / "state", StateLayout(sensors=3, points=4), 10.0)
    reader = StateReader(tmp_path / "state")
    for k in range(3):
        first.publish(**arrays(3, 1.0), history_row=None, status={"run": 1, "k": k})
    assert reader.read(lambda a, n: None)[0].status == {"run": 1, "k": 2}
    second = StateWriter(tmp_path / "state", StateLayout(sensors=3, points=4), 10.0)
    for k in range(3):
        second.publish(**arrays(3, 9.0), history_row=None, status={"run": 2, "k": k})
    published, value = reader.read(lambda a, n: a["value"].tolist())
    assert (published.status, value) == ({"run": 2, "k": 2}, [9.0, 9.0, 9.0])
    reader.close()
    second.close()

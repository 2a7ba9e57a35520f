"""`/api/events`: Server-Sent Events — alarm and interlock changes as they happen.

The control part sends them over the command channel; the desk part fans them out to
every open stream (a slow client loses its oldest, never slows anyone else).

Each event is ``event: <alarm|interlock>`` with its JSON as data (alarm events carry
their outbox id as the SSE id). A comment line every 15 s keeps proxies from closing the
connection. Browsers' EventSource cannot send headers: the token may be given as
``?access_token=``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from ehswatch.api.deps import DeskDep, Viewer

router = APIRouter(prefix="/api", tags=["events"])
KEEPALIVE_S = 15.0


@router.get("/events", response_class=StreamingResponse)
async def events(request: Request, desk: DeskDep, _: Viewer) -> StreamingResponse:
    """Server-Sent Events: `alarm` changes (the outbox id as the event id) and `interlock`
    changes, as they happen."""

    async def stream() -> AsyncIterator[str]:
        async with desk.events.subscribe() as queue:
            yield ": ehswatch events\n\n"
            quiet = 0.0
            while not desk.events.closed and not await request.is_disconnected():
                try:
                    # Wake every second to notice a client that went away.
                    event = await asyncio.wait_for(queue.get(), 1.0)
                except TimeoutError:
                    quiet += 1.0
                    if quiet >= KEEPALIVE_S:
                        quiet = 0.0
                        yield ": keepalive\n\n"
                    continue
                if event["type"] == "end":
                    return
                sse_id = f"id: {event['event_id']}\n" if "event_id" in event else ""
                data = json.dumps(event, ensure_ascii=False)
                yield f"{sse_id}event: {event['type']}\ndata: {data}\n\n"

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )

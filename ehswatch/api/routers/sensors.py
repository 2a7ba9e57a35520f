"""`/api/sensors` and `/api/zones`: live values, tiers, faults, setpoints, sparklines.

Reads that scale: every answer is built in the desk part from the control part's shared
state, in slices of `SLICE` sensors (each slice one consistent copy), streamed, so that a
full export of a 100 000-sensor plant costs the desk part time and never holds more than
a slice in memory, and costs the control part nothing. `/api/sensors` filters by zone and
pages (`offset`, `limit`; the total is in `X-Total-Count`); `/api/zones` gives each zone's
summary (sensors by tier, faulted, worst tier, interlock state) for the board to start
from, so that it asks for one zone's sensors only when it shows them.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import Response, StreamingResponse
from numpy.typing import NDArray
from pydantic import BaseModel

from ehswatch.api.deps import DeskDep, Viewer
from ehswatch.api.encoding import encode_json
from ehswatch.desk_part import DeskPart
from ehswatch.shared_state import StateUnavailable

router = APIRouter(prefix="/api", tags=["sensors"])
SLICE = 2000


class SensorRow(BaseModel):
    """One sensor, as `/api/sensors` lists it (documentation of the streamed answer)."""

    id: str
    name: str
    zone: str
    type: str
    unit: str
    setpoints: dict[str, float]
    value: float | None
    ts: float | None
    tier: int
    faulted: bool
    fault_reason: int
    history: list[float | None] | None = None
    history_tiers: list[int] | None = None
    history_step_s: float | None = None


def _numbers(a: NDArray[Any]) -> list[Any]:
    """Numbers rounded to 4 places, None where not finite (nested lists for 2-D)."""
    r = np.round(a.astype(np.float64), 4)
    out = r.astype(object)
    out[~np.isfinite(r)] = None
    values: list[Any] = out.tolist()
    return values


def _selection(desk: DeskPart, zone: str | None) -> NDArray[np.intp]:
    if zone is None:
        return np.arange(len(desk.config.sensors), dtype=np.intp)
    try:
        k = desk.zone_ids.index(zone)
    except ValueError:
        raise HTTPException(404, f"no zone {zone!r}") from None
    return np.flatnonzero(desk.sensor_zone == k)


@router.get(
    "/sensors",
    response_class=StreamingResponse,
    responses={200: {"model": list[SensorRow], "description": "the sensors, in config order"}},
)
async def sensors(
    desk: DeskDep,
    _: Viewer,
    zone: str | None = Query(None, description="only this zone's sensors"),
    offset: int = Query(0, ge=0, le=10_000_000),
    limit: int = Query(1000, ge=1, le=1_000_000),
    history: int = Query(0, ge=0, le=86_400, description="seconds of sparkline"),
) -> Response:
    """Live values, tiers and faults of the sensors (by zone, paged), with their sparklines on
    request."""
    chosen = _selection(desk, zone)
    total = len(chosen)
    page = chosen[offset : offset + limit]
    published, _status = desk.status()
    if published is None:
        raise HTTPException(503, "the control part has not published its state")
    step = published.step_s
    rows_wanted = min(math.ceil(history / step), published.history_rows, published.points)
    prefixes = desk.sensor_prefixes

    def take(part: NDArray[np.intp]) -> Any:
        def copy(a: dict[str, NDArray[Any]], written: int) -> tuple[Any, ...]:
            cur = tuple(a[k][part] for k in ("value", "ts", "tier", "faulted", "reason"))
            if not rows_wanted:
                return (*cur, None, None)
            rows = np.arange(written - min(rows_wanted, written), written) % published.points
            sub = np.ix_(rows, part)  # only these rows and sensors are copied
            return (*cur, a["hist_value"][sub], a["hist_tier"][sub])

        return copy

    def encode(part: NDArray[np.intp]) -> bytes | None:
        """One slice as JSON objects joined by commas; None if the state is gone."""
        try:
            _, (value, ts, tier, faulted, reason, hv, ht) = desk.read(take(part))
        except StateUnavailable:
            return None
        values, stamps = _numbers(value), _numbers(ts)
        tiers, faults, reasons = tier.tolist(), faulted.tolist(), reason.tolist()
        hist = _numbers(hv.T) if hv is not None else None
        hist_tiers = ht.T.tolist() if ht is not None else None
        chunks = []
        for j, i in enumerate(part.tolist()):
            row: dict[str, Any] = {
                "value": values[j],
                "ts": stamps[j],
                "tier": tiers[j],
                "faulted": faults[j],
                "fault_reason": reasons[j],
            }
            if hist is not None and hist_tiers is not None:
                row["history"] = hist[j]
                row["history_tiers"] = hist_tiers[j]
                row["history_step_s"] = step
            chunks.append(prefixes[i] + encode_json(row)[1:])
        return b",".join(chunks)

    headers = {"X-Total-Count": str(total)}
    if len(page) <= SLICE:  # what a board asks: built once per published state, shared
        key = ("sensors", zone, offset, limit, rows_wanted)
        data = desk.per_state(key, published, lambda: encode(page))
        if data is None:
            raise HTTPException(503, "the control part's state is not available")
        return Response(b"[" + data + b"]", media_type="application/json", headers=headers)

    async def body() -> AsyncIterator[bytes]:
        yield b"["
        for start in range(0, len(page), SLICE):
            data = encode(page[start : start + SLICE])
            if data is None:
                return  # the client sees a truncated answer, not a stale one
            yield (b"," if start else b"") + data
            await asyncio.sleep(0)  # other requests between slices
        yield b"]"

    return StreamingResponse(body(), media_type="application/json", headers=headers)


@router.get("/site")
async def site(desk: DeskDep, _: Viewer) -> dict[str, str]:
    """The site and its zones, as the board shows them."""
    s = desk.config.site
    return {"id": s.id, "name": s.name, "timezone": s.timezone}


@router.get("/zones", response_model=list[dict[str, Any]])
async def zones(desk: DeskDep, _: Viewer) -> Response:
    """Every zone with its summary: sensors by tier (0-3), faulted, worst tier, and the
    interlock's state (None without an interlock). Built once per published state."""
    published, status = desk.status()
    if published is None or status is None:
        return Response(encode_json(_zone_rows(desk, None, {})), media_type="application/json")
    states = {s["zone"]: s for s in status.get("interlocks") or []}
    body = desk.per_state(
        ("zones",),
        published,
        lambda: encode_json(_zone_rows(desk, desk.read(_summary(desk))[1], states)),
    )
    return Response(body, media_type="application/json")


_Summary = tuple[NDArray[Any], NDArray[Any], NDArray[Any]]


def _summary(desk: DeskPart) -> Any:
    nz = len(desk.zone_ids)
    where = desk.sensor_zone

    def take(a: dict[str, NDArray[Any]], _: int) -> _Summary:
        tier = a["tier"].astype(np.intp)
        by_tier = np.stack([np.bincount(where[tier == t], minlength=nz) for t in range(4)])
        faulted = np.bincount(where[a["faulted"]], minlength=nz)
        present = by_tier > 0  # (tier, zone): the worst tier present in each zone
        worst = np.where(present.any(axis=0), 3 - np.argmax(present[::-1], axis=0), -1)
        return by_tier, faulted, worst

    return take


def _zone_rows(
    desk: DeskPart, summary: _Summary | None, states: dict[str, Any]
) -> list[dict[str, Any]]:
    nz = len(desk.zone_ids)
    if summary is None:
        summary = (np.zeros((4, nz), dtype=np.intp), np.zeros(nz, np.intp), np.full(nz, -1))
    by_tier, faulted, worst = (a.tolist() for a in summary)
    out = []
    for k, z in enumerate(desk.config.zones):
        il = z.interlock
        counts = [by_tier[t][k] for t in range(4)]
        out.append(
            {
                "id": z.id,
                "name": z.name,
                "interlock": None
                if il is None
                else {
                    "voting": str(il.voting),
                    "sensor_types": il.sensor_types,
                    "fault_counts_as_trip": il.fault_counts_as_trip,
                },
                "sensors": sum(counts),
                "by_tier": counts,
                "faulted": faulted[k],
                "worst_tier": max(worst[k], 0),
                "state": states.get(z.id),
            }
        )
    return out

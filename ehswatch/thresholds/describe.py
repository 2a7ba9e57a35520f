"""Human-readable lines for an `Evaluation`: the log, the replay tool, the terminal."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from datetime import datetime
from zoneinfo import ZoneInfo

from ehswatch.thresholds.outcome import Evaluation, FaultChanges, TierTransitions
from ehswatch.thresholds.tier import FaultReason, Tier


def describe(
    ev: Evaluation,
    sensor_ids: Sequence[str],
    names: Mapping[str, str],
    tz: ZoneInfo,
    most: int | None = None,
) -> list[str]:
    """One line per transition or fault change, in time order, clock in the site's zone.
    With `most`, the first `most` transitions and fault changes only, and a last line
    counting the rest (a loud sensor must not flood the log or stall the service)."""
    rest = 0
    if most is not None and len(ev.transitions) + len(ev.faults) > most:
        rest = len(ev.transitions) + len(ev.faults) - most
        ev = _head(ev, most)

    def when(ts: float) -> str:
        return datetime.fromtimestamp(ts, tz).strftime("%H:%M:%S")

    lines: list[tuple[float, str]] = []
    for i, a, b, value, threshold, ts in ev.transitions.rows():
        sid = sensor_ids[i]
        lines.append(
            (
                ts,
                f"{when(ts)}  {sid:<8} {Tier(a).name:>9} → {Tier(b).name:<9}  "
                f"value {value:<8.4g} setpoint {threshold:<6g} {names.get(sid, '')}",
            )
        )
    for i, on, reason, _, ts in ev.faults.rows():
        sid = sensor_ids[i]
        state = f"{'FAULT' if on else 'fault cleared'} ({FaultReason(reason).name.lower()})"
        lines.append((ts, f"{when(ts)}  {sid:<8} {state:<37}{names.get(sid, '')}"))
    out = [line for _, line in sorted(lines, key=lambda x: x[0])]
    if rest:
        out.append(f"… and {rest} more transitions and fault changes in this evaluation")
    return out


def _head(ev: Evaluation, most: int) -> Evaluation:
    """The evaluation's first `most` transitions and fault changes (by row)."""
    t, f = ev.transitions, ev.faults
    kt = min(len(t), most)
    kf = min(len(f), most - kt)
    return dataclasses.replace(
        ev,
        transitions=TierTransitions(
            sensor=t.sensor[:kt],
            from_tier=t.from_tier[:kt],
            to_tier=t.to_tier[:kt],
            value=t.value[:kt],
            threshold=t.threshold[:kt],
            ts=t.ts[:kt],
        ),
        faults=FaultChanges(
            sensor=f.sensor[:kf],
            faulted=f.faulted[:kf],
            reason=f.reason[:kf],
            value=f.value[:kf],
            ts=f.ts[:kf],
        ),
    )

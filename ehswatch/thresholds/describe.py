"""Human-readable lines for an `Evaluation`: the log, the replay tool, the terminal."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from zoneinfo import ZoneInfo

from ehswatch.thresholds.outcome import Evaluation
from ehswatch.thresholds.tier import FaultReason, Tier


def describe(
    ev: Evaluation, sensor_ids: Sequence[str], names: Mapping[str, str], tz: ZoneInfo
) -> list[str]:
    """One line per transition or fault change, in time order, clock in the site's zone."""

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
    return [line for _, line in sorted(lines, key=lambda x: x[0])]

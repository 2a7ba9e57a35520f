"""`ehswatch backtest`: recorded readings replayed through the evaluator and the
predictor, to see how early predictions come and how often they come for nothing.

The CSV has a header and the columns `ts` (epoch seconds, or ISO 8601 with its offset),
`sensor` and `value`; rows in any order. They are replayed in time order, one evaluator
tick per `step_s` of recorded time, with the plant's own thresholds and prediction
settings (sensors whose type has prediction off are evaluated but not predicted). For
each sensor type it reports:

- `leads_s`: for each predicted event followed by its real crossing (the sensor reaching
  the predicted tier), how long before the crossing it came;
- `unfollowed`: predicted events that ended, or the replay ended, with no crossing;
- `unpredicted`: crossings of the alarm or interlock tier no prediction came before.
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from ehswatch.analytics.predict import LivePredictor
from ehswatch.config import PlantConfig
from ehswatch.readings import ReadingBatch
from ehswatch.thresholds.evaluator import Evaluator
from ehswatch.thresholds.table import ThresholdTable


class BadCsv(ValueError):
    """A row that cannot be read: its line and why."""


@dataclass
class TypeReport:
    leads_s: list[float] = field(default_factory=list)
    unfollowed: int = 0
    unpredicted: int = 0


def read_csv(path: Path) -> Iterator[tuple[float, str, float]]:
    with path.open(newline="", encoding="utf-8") as f:
        rows = csv.DictReader(f)
        missing = {"ts", "sensor", "value"} - set(rows.fieldnames or ())
        if missing:
            raise BadCsv(f"{path}: the header lacks {', '.join(sorted(missing))}")
        for n, row in enumerate(rows, start=2):
            try:
                ts_text = row["ts"].strip()
                try:
                    ts = float(ts_text)
                except ValueError:
                    stamp = datetime.fromisoformat(ts_text)
                    if stamp.tzinfo is None:
                        raise ValueError("an ISO time needs its offset") from None
                    ts = stamp.timestamp()
                value = float(row["value"])
            except (ValueError, TypeError, AttributeError) as exc:
                raise BadCsv(f"{path}:{n}: {exc}") from None
            if not math.isfinite(ts):
                raise BadCsv(f"{path}:{n}: the time is not a number")
            yield ts, row["sensor"].strip(), value


def backtest(
    config: PlantConfig, rows: Iterable[tuple[float, str, float]], step_s: float = 1.0
) -> dict[str, dict[str, Any]]:
    """Per sensor type: the lead times, unfollowed predictions and unpredicted crossings
    (see the module)."""
    index = config.sensor_index
    data = sorted((ts, index[s], v) for ts, s, v in rows if s in index)
    reports: dict[str, TypeReport] = defaultdict(TypeReport)
    if not data:
        return {}
    start = data[0][0]
    table = ThresholdTable.from_config(config)
    evaluator = Evaluator(table, start)
    now = [start]
    live = LivePredictor(config, evaluator=evaluator, clock=lambda: now[0], step_s=step_s)
    types = [config.sensors[k].type for k in range(len(config.sensors))]
    open_predictions: dict[str, tuple[int, float]] = {}  # sensor → (tier, first predicted at)
    tier_before = np.zeros(len(config.sensors), dtype=np.int8)
    empty = ReadingBatch.of([], [], [])
    k = 0
    t = start
    end = data[-1][0] + step_s
    seen_events = 0
    while t <= end:
        j = k
        while j < len(data) and data[j][0] <= t:
            j += 1
        if j > k:
            chunk = data[k:j]
            batch = ReadingBatch.of(
                [c[1] for c in chunk], [c[2] for c in chunk], [c[0] for c in chunk]
            )
            evaluator.process(batch)
            k = j
        now[0] = t
        evaluator.tick(t)
        live.on_evaluation(empty, None)  # type: ignore[arg-type]
        new_events = min(live.seq - seen_events, len(live.events))
        for e in live.events[len(live.events) - new_events :]:
            sensor = e["sensor"]
            if e["event"] == "predicted" and sensor not in open_predictions:
                open_predictions[sensor] = (e["tier"], e["at"])
            elif e["event"] == "cleared" and sensor in open_predictions:
                kind = types[index[sensor]]
                reports[kind].unfollowed += 1
                del open_predictions[sensor]
        seen_events = live.seq
        for i in np.flatnonzero((evaluator.tier >= 2) & (tier_before < 2)):
            sensor, kind = config.sensors[i].id, types[i]
            if sensor in open_predictions:
                reports[kind].leads_s.append(round(t - open_predictions.pop(sensor)[1], 1))
            else:
                reports[kind].unpredicted += 1
        tier_before = evaluator.tier.copy()
        t += step_s
    for sensor in open_predictions:
        reports[types[index[sensor]]].unfollowed += 1
    return {
        kind: {
            "leads_s": r.leads_s,
            "median_lead_s": float(np.median(r.leads_s)) if r.leads_s else None,
            "unfollowed": r.unfollowed,
            "unpredicted": r.unpredicted,
        }
        for kind, r in sorted(reports.items())
    }

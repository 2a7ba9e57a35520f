"""Replay readings through a plant's setpoints and print what the evaluator decides.

For tuning setpoints against recorded data, and as the offline demo of the evaluator:

    python -m ehswatch.thresholds.replay config/example.yaml --csv readings.csv
    python -m ehswatch.thresholds.replay config/example.yaml            # synthetic build-up

The CSV has a header and the columns sensor,ts,value[,quality] (ts in seconds since the
epoch, quality 0 good). Without --csv, the voting sensors of the first interlocked zone
(or --zone) ramp from a normal reading past their interlock setpoint and back over two
minutes at 1 Hz while every other sensor reads normal, and one sensor falls silent.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Sequence
from zoneinfo import ZoneInfo

import numpy as np

from ehswatch.config import ConfigError, PlantConfig, load_config
from ehswatch.readings import ReadingBatch
from ehswatch.thresholds.describe import describe
from ehswatch.thresholds.evaluator import Evaluator
from ehswatch.thresholds.table import ThresholdTable


def normal_value(setpoints: np.ndarray) -> float:
    """A reading comfortably inside the normal band of a sensor's six setpoints."""
    high, low = setpoints[:3], setpoints[3:]
    top = np.nanmax(low) if not np.isnan(low).all() else None
    bottom = np.nanmin(high) if not np.isnan(high).all() else None
    if top is not None and bottom is not None:
        return float((top + bottom) / 2)
    if bottom is not None:
        return float(bottom * 0.3 if bottom > 0 else bottom - 10)
    if top is not None:
        return float(top * 1.1 if top > 0 else top + 10)
    return 0.0


def build_up(
    config: PlantConfig, table: ThresholdTable, zone_id: str | None, start: float
) -> list[ReadingBatch]:
    zones = [z for z in config.zones if z.interlock is not None and zone_id in (None, z.id)]
    if not zones:
        raise ReplayError(f"no interlocked zone {zone_id or ''} in this config")
    zone = zones[0]
    assert zone.interlock is not None
    voters = [
        table.index[s.id]
        for s in config.sensors
        if s.zone == zone.id and s.type in zone.interlock.sensor_types
    ]
    silent = next((table.index[s.id] for s in config.sensors if s.zone != zone.id), None)
    normal = np.array([normal_value(table.setpoint[i]) for i in range(table.size)])
    peak = {i: float(np.nanmax(table.setpoint[i, :3])) * 1.25 for i in voters}
    batches = []
    for t in range(120):
        values = normal.copy()
        ramp = t / 60 if t < 60 else (120 - t) / 60
        for i in voters:
            values[i] = normal[i] + (peak[i] - normal[i]) * ramp
        sensors = np.arange(table.size)
        if silent is not None and t >= 20:
            sensors = sensors[sensors != silent]
        batches.append(ReadingBatch.of(sensors, values[sensors], np.full(sensors.size, start + t)))
    return batches


def from_csv(path: str, table: ThresholdTable) -> list[ReadingBatch]:
    """One batch of the file's readings; a malformed row stops the replay with its line."""
    sensors, values, stamps, quality = [], [], [], []
    with open(path, newline="", encoding="utf-8") as f:
        for line, row in enumerate(csv.DictReader(f), start=2):
            try:
                sensors.append(table.index[row["sensor"]])
                values.append(float(row["value"]))
                stamps.append(float(row["ts"]))
                quality.append(int(row.get("quality") or 0))
            except KeyError as exc:
                raise ReplayError(
                    f"{path}:{line}: unknown sensor or missing column {exc}"
                ) from None
            except (TypeError, ValueError) as exc:
                raise ReplayError(f"{path}:{line}: {exc}") from None
    return [ReadingBatch.of(sensors, values, stamps, quality)]


class ReplayError(Exception):
    """Input the replay cannot use; the message names the place."""


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m ehswatch.thresholds.replay",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("config")
    ap.add_argument("--csv", help="recorded readings: sensor,ts,value[,quality]")
    ap.add_argument("--zone", help="zone whose voting sensors build up (synthetic mode)")
    args = ap.parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print("\n".join(exc.errors), file=sys.stderr)
        return 2
    table = ThresholdTable.from_config(config)
    start = 1_764_000_000.0
    try:
        batches = (
            from_csv(args.csv, table) if args.csv else build_up(config, table, args.zone, start)
        )
    except (ReplayError, OSError) as exc:
        print(exc, file=sys.stderr)
        return 2
    first = min(float(b.ts.min()) for b in batches if len(b))
    names = {s.id: s.name for s in config.sensors}
    tz = ZoneInfo(config.site.timezone)
    evaluator = Evaluator(table, start_ts=first)
    for b in batches:
        for line in describe(evaluator.process(b), table.sensor_ids, names, tz):
            print(line)
        if len(b):
            for line in describe(
                evaluator.tick(float(b.ts.max()) + 1.0), table.sensor_ids, names, tz
            ):
                print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())

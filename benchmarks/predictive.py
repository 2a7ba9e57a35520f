"""How early predictions come, and how often for nothing. Prints one JSON object.

Two recordings, replayed through the evaluator and the predictor (`ehswatch backtest`'s
engine) with the demo plant's settings (config/demo.yaml; its dust type has prediction
on):
- the shipped dust build-up (`ehswatch/simulators/scenarios/demo.yaml`: D-101 and D-102
  ramp up past their setpoints), as its simulators produce it, `--repeat` times with
  other noise seeds;
- a noisy-normal day: D-101 and D-102 at their baselines with their noise for 24 hours.

`median_lead_s`: the median time from a predicted event to the real crossing it
predicted (goal ≥ 60). `false_per_sensor_day`: predicted events never followed by a
crossing, per sensor and day of the normal recording (goal ≤ 0.2).

Usage: python benchmarks/predictive.py [--repeat N] [--hours H]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ehswatch.analytics.backtest import backtest  # noqa: E402
from ehswatch.config import load_config  # noqa: E402
from ehswatch.simulators.scenario import Scenario, compile_scripts  # noqa: E402

T0 = 1_800_000_000.0
SENSORS = ("D-101", "D-102")


def recording(scenario: Scenario, seconds: int) -> list[tuple[float, str, float]]:
    scripts = compile_scripts(scenario)
    rows = []
    for k in range(seconds):
        for sensor in SENSORS:
            sample = scripts[sensor].sample(float(k))
            if sample.value is not None:
                rows.append((T0 + k, sensor, sample.value))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--hours", type=float, default=24.0)
    args = ap.parse_args()
    config = load_config(ROOT / "config" / "demo.yaml", env={})
    shipped = Scenario.load(ROOT / "ehswatch" / "simulators" / "scenarios" / "demo.yaml")
    leads: list[float] = []
    build_up_unfollowed = 0
    for seed in range(args.repeat):
        scenario = shipped.model_copy(update={"seed": shipped.seed + seed})
        report = backtest(config, recording(scenario, 240)).get("dust_al", {})
        leads += report.get("leads_s", [])
        build_up_unfollowed += report.get("unfollowed", 0)
    calm = Scenario.model_validate(
        {
            "name": "noisy normal",
            "seed": 1,
            "sensors": {
                s: {"baseline": shipped.sensors[s].baseline, "noise": shipped.sensors[s].noise}
                for s in SENSORS
            },
        }
    )
    seconds = int(args.hours * 3600)
    normal = backtest(config, recording(calm, seconds)).get("dust_al", {})
    false = normal.get("unfollowed", 0)
    print(
        json.dumps(
            {
                "build_ups": args.repeat * len(SENSORS),
                "predicted_crossings": len(leads),
                "median_lead_s": statistics.median(leads) if leads else None,
                "build_up_unfollowed": build_up_unfollowed,
                "normal_hours": args.hours,
                "false_predictions": false,
                "false_per_sensor_day": round(false / len(SENSORS) / (args.hours / 24), 3),
                "goals": {"median_lead_s": 60, "false_per_sensor_day": 0.2},
            }
        )
    )


if __name__ == "__main__":
    main()

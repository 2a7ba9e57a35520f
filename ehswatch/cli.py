"""The `ehswatch` command line (docs/api.md).

Exit codes: 0 success, 2 a configuration that must not be run (every problem is printed,
one per line, as ``path.to.key: message``), 1 anything else that went wrong.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from ehswatch import __version__
from ehswatch.config import ConfigError, PlantConfig, load_config

EXIT_CONFIG = 2


def _check_config(path: str) -> int:
    config = _load_or_report(path)
    if config is None:
        return EXIT_CONFIG
    print(f"ok: {config.summary()}")
    return 0


def _load_or_report(path: str) -> PlantConfig | None:
    try:
        config = load_config(path)
    except ConfigError as exc:
        print(f"{path}: {len(exc.errors)} error(s), refusing this configuration:", file=sys.stderr)
        for line in exc.errors:
            print(f"  {line}", file=sys.stderr)
        return None
    # Building the threshold table is part of validation: it must not fail later at start.
    from ehswatch.thresholds.table import ThresholdTable

    ThresholdTable.from_config(config)
    return config


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stdout,
    )
    # pymodbus narrates every connection at INFO; our collectors report what matters.
    logging.getLogger("pymodbus").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)


def _serve(main: Callable[[asyncio.Event], Coroutine[Any, Any, None]]) -> int:
    """Run until SIGINT or SIGTERM, then stop cleanly."""

    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await main(stop)

    try:
        asyncio.run(runner())
    except (OSError, RuntimeError) as exc:
        # A port in use, a database that cannot be opened, a directory not writable: the
        # operator needs the reason in one line, not a traceback.
        logging.getLogger("ehswatch").debug("start failed", exc_info=True)
        print(f"ehswatch: could not start: {exc}", file=sys.stderr)
        return 1
    return 0


def _run(path: str, verbose: bool) -> int:
    """Validate the config, then become the control part with a fresh heap: the YAML
    parser's peak (hundreds of MB on a 100 000-sensor plant) is not kept for the
    process's life. Same process id (`exec`), for supervisors and `kill`."""
    config = _load_or_report(path)
    if config is None:
        return EXIT_CONFIG
    from ehswatch.run_dir import new_run_dir, write_config

    run_dir = new_run_dir()
    write_config(run_dir, config)
    args = [sys.executable, "-m", "ehswatch", "control", "--run-dir", str(run_dir)]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [*args, *(["-v"] if verbose else [])])
    raise AssertionError("not reached: execv replaces this process")


def _control(run_dir: str, verbose: bool) -> int:
    from ehswatch.parts import run
    from ehswatch.run_dir import read_config

    where = Path(run_dir)
    _setup_logging(verbose)
    try:
        config = read_config(where)
        return _serve(lambda stop: run(config, stop, verbose=verbose, run_dir=where))
    finally:
        shutil.rmtree(where, ignore_errors=True)


def _desk(run_dir: str, verbose: bool) -> int:
    _setup_logging(verbose)
    from ehswatch.desk_server import serve_desk

    return _serve(lambda stop: serve_desk(Path(run_dir), stop))


def _simulate(scenario_path: str, config_path: str | None, verbose: bool) -> int:
    from ehswatch.config import ConfigError
    from ehswatch.simulators.runner import Simulation
    from ehswatch.simulators.scenario import Scenario

    try:
        scenario = Scenario.load(scenario_path)
    except ConfigError as exc:
        print(f"{scenario_path}: {len(exc.errors)} error(s):", file=sys.stderr)
        for line in exc.errors:
            print(f"  {line}", file=sys.stderr)
        return EXIT_CONFIG
    config = _load_or_report(config_path or scenario.plant)
    if config is None:
        return EXIT_CONFIG
    try:
        sim = Simulation(config, scenario)
    except ValueError as exc:
        print(f"{scenario_path}: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    _setup_logging(verbose)
    log = logging.getLogger("ehswatch.simulate")

    async def main(stop: asyncio.Event) -> None:
        async with sim:
            log.info("scenario %r on plant %s", scenario.name, config.site.id)
            for line in sim.describe():
                log.info("  %s", line)
            try:
                await asyncio.wait_for(stop.wait(), scenario.duration_s)
            except TimeoutError:
                log.info("scenario finished after %g s", scenario.duration_s)

    return _serve(main)


def _demo(config_path: str, scenario_path: str | None, verbose: bool, keep: bool) -> int:
    from ehswatch.config import ConfigError
    from ehswatch.demo import demo
    from ehswatch.simulators.scenario import Scenario

    config = _load_or_report(config_path)
    if config is None:
        return EXIT_CONFIG
    path = scenario_path or str(Path(__file__).parent / "simulators" / "scenarios" / "demo.yaml")
    try:
        scenario = Scenario.load(path)
    except ConfigError as exc:
        print("\n".join(exc.errors), file=sys.stderr)
        return EXIT_CONFIG
    if config.mqtt is None:
        print(f"{config_path}: the demo needs an mqtt section", file=sys.stderr)
        return EXIT_CONFIG
    _setup_logging(verbose)
    return _serve(lambda stop: demo(config, scenario, stop, keep=keep))


def _users(args: argparse.Namespace) -> int:
    from ehswatch.people import commands

    config = _load_or_report(args.config)
    if config is None:
        return EXIT_CONFIG
    return commands.run(config, args)


def _backtest(config_path: str, csv_path: str, step_s: float) -> int:
    """Print, per sensor type, the predictions' lead times and misses (one JSON object)."""
    import json

    from ehswatch.analytics.backtest import BadCsv, backtest, read_csv

    config = _load_or_report(config_path)
    if config is None:
        return EXIT_CONFIG
    try:
        report = backtest(config, read_csv(Path(csv_path)), step_s=step_s)
    except (BadCsv, OSError) as exc:
        print(exc, file=sys.stderr)
        return 1
    print(json.dumps(report, ensure_ascii=False, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ehswatch",
        description="Telemetry, three-tier alarms and PLC interlocks for dust and gas sensors.",
    )
    parser.add_argument("--version", action="version", version=f"ehswatch {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    check = sub.add_parser("check-config", help="validate a plant config and exit (2 if invalid)")
    check.add_argument("file", help="the plant's YAML config")
    run = sub.add_parser("run", help="run the service: collectors and evaluator")
    run.add_argument("--config", required=True, help="the plant's YAML config")
    run.add_argument("-v", "--verbose", action="store_true")
    control = sub.add_parser("control", help="(started by `run`) the control part")
    control.add_argument("--run-dir", required=True, help="its run directory")
    control.add_argument("-v", "--verbose", action="store_true")
    desk = sub.add_parser(
        "desk", help="(started by `run`) the desk part: API, board, tickets, notifications"
    )
    desk.add_argument("--run-dir", required=True, help="the control part's run directory")
    desk.add_argument("-v", "--verbose", action="store_true")
    sim = sub.add_parser("simulate", help="serve simulated dust monitors, gas detectors, PLCs")
    sim.add_argument(
        "--scenario", required=True, help="scenario YAML (see ehswatch/simulators/scenarios)"
    )
    sim.add_argument("--config", help="plant config (default: the scenario's `plant`)")
    sim.add_argument("-v", "--verbose", action="store_true")
    dem = sub.add_parser("demo", help="broker, simulators, service and board in one process")
    dem.add_argument("--config", default="config/demo.yaml", help="default: config/demo.yaml")
    dem.add_argument("--scenario", help="default: the packaged demo scenario")
    dem.add_argument(
        "--keep",
        action="store_true",
        help="go on with the last demo's story (default: a fresh one)",
    )
    dem.add_argument("-v", "--verbose", action="store_true")
    back = sub.add_parser(
        "backtest", help="replay recorded readings through the evaluator and the predictor"
    )
    back.add_argument("--config", required=True, help="the plant's YAML config")
    back.add_argument("--csv", required=True, help="readings: columns ts, sensor, value")
    back.add_argument("--step", type=float, default=1.0, help="seconds per tick (1)")
    from ehswatch.people import commands as people_commands

    people_commands.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "check-config":
        return _check_config(args.file)
    if args.command == "run":
        return _run(args.config, args.verbose)
    if args.command == "control":
        return _control(args.run_dir, args.verbose)
    if args.command == "desk":
        return _desk(args.run_dir, args.verbose)
    if args.command == "simulate":
        return _simulate(args.scenario, args.config, args.verbose)
    if args.command == "demo":
        return _demo(args.config, args.scenario, args.verbose, args.keep)
    if args.command == "users":
        return _users(args)
    if args.command == "backtest":
        return _backtest(args.config, args.csv, args.step)
    raise AssertionError(f"unhandled command {args.command}")  # argparse rejects unknown ones


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""The `ehswatch` command line (SPEC §9).

Exit codes: 0 success, 2 a configuration that must not be run (every problem is printed,
one per line, as ``path.to.key: message``), 1 anything else that went wrong.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ehswatch",
        description="Telemetry, three-tier alarms and PLC interlocks for dust and gas sensors.",
    )
    parser.add_argument("--version", action="version", version=f"ehswatch {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    check = sub.add_parser("check-config", help="validate a plant config and exit (2 if invalid)")
    check.add_argument("file", help="the plant's YAML config")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "check-config":
        return _check_config(args.file)
    raise AssertionError(f"unhandled command {args.command}")  # argparse rejects unknown ones


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

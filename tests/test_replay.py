"""The replay tool: recorded or synthetic readings through a plant's setpoints."""

from __future__ import annotations

from pathlib import Path

import pytest

from ehswatch.thresholds.replay import main

EXAMPLE = str(Path(__file__).resolve().parent.parent / "config" / "example.yaml")


def test_build_up_walks_a_zone_through_every_tier_and_back(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main([EXAMPLE, "--zone", "polishing-1"]) == 0
    d101 = [line.split()[2:5] for line in capsys.readouterr().out.splitlines() if " D-101 " in line]
    assert d101 == [
        ["NORMAL", "→", "WARNING"],
        ["WARNING", "→", "ALARM"],
        ["ALARM", "→", "INTERLOCK"],
        ["INTERLOCK", "→", "ALARM"],
        ["ALARM", "→", "WARNING"],
        ["WARNING", "→", "NORMAL"],
    ]


def test_recorded_csv_is_replayed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rec = tmp_path / "rec.csv"
    rec.write_text(
        "sensor,ts,value,quality\nG-301,100,3,0\nG-301,101,60,0\nG-301,102,3,1\n", encoding="utf-8"
    )
    assert main([EXAMPLE, "--csv", str(rec)]) == 0
    out = capsys.readouterr().out
    assert "G-301       NORMAL → INTERLOCK" in out
    assert "G-301    FAULT (bad)" in out


def test_malformed_csv_row_is_named_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rec = tmp_path / "rec.csv"
    rec.write_text("sensor,ts,value\nG-301,100,3\nG-301,101,lots\n", encoding="utf-8")
    assert main([EXAMPLE, "--csv", str(rec)]) == 2
    assert f"{rec}:3: could not convert string to float: 'lots'" in capsys.readouterr().err

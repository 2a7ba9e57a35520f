"""`ehswatch demo` starts a fresh story each time unless asked to keep the last one."""

from __future__ import annotations

from pathlib import Path

import yaml

from ehswatch.config import parse_config
from ehswatch.demo import fresh_story
from tests.test_board import demo_plant


def test_a_new_demo_forgets_the_last_ones_database_and_evidence(tmp_path: Path) -> None:
    doc = demo_plant(tmp_path, 1883)
    config = parse_config(yaml.safe_dump(doc, allow_unicode=True), env={})
    db = tmp_path / "ehswatch.db"
    for path in (db, tmp_path / "ehswatch.db-wal", tmp_path / "evidence" / "7" / "a.jpg"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"the last story")
    keep = tmp_path / "notes.txt"  # anything else beside it stays
    keep.write_text("mine")
    removed = fresh_story(config)
    assert sorted(p.name for p in removed) == ["ehswatch.db", "ehswatch.db-wal", "evidence"]
    assert not db.exists() and not (tmp_path / "evidence").exists() and keep.exists()
    assert fresh_story(config) == []  # nothing left to forget


def test_a_database_that_is_not_a_local_file_is_never_touched(tmp_path: Path) -> None:
    doc = demo_plant(tmp_path, 1883)
    doc["database"]["url"] = "postgresql+asyncpg://ehs@127.0.0.1/ehswatch"
    doc["hazards"]["evidence_dir"] = str(tmp_path / "none-here")
    config = parse_config(yaml.safe_dump(doc, allow_unicode=True), env={})
    assert fresh_story(config) == []

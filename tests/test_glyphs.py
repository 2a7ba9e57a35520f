"""Every character the pages can show is drawn by a font that `make test`/`make demo`
install (the Makefile's Debian packages): no empty box on a plant's wall screen or phone.

Chromium on Linux draws with the fonts fontconfig knows; a character no installed font
covers comes out as a box. The pages' text is their templates and scripts, the messages
the service writes (refusals, labels), and the demo plant's names, so every character of
the package's sources and the shipped configs is checked.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.servers import find_binary

ROOT = Path(__file__).resolve().parent.parent
FONT_FILE = re.compile(r"\.(ttf|ttc|otf)$")


def installed_packages() -> list[str]:
    """The Debian packages the Makefile installs."""
    text = (ROOT / "Makefile").read_text("utf-8")
    found = re.search(r"^APT_PACKAGES\s*:=\s*(.+)$", text, re.MULTILINE)
    assert found, "the Makefile names its Debian packages in APT_PACKAGES"
    return found.group(1).split()


def font_files(packages: list[str]) -> list[str]:
    """The font files of `packages`, as dpkg lists them."""
    dpkg = find_binary("dpkg", "dpkg")
    files: list[str] = []
    for package in packages:
        listed = subprocess.run([dpkg, "-L", package], capture_output=True, text=True)
        files += [line for line in listed.stdout.splitlines() if FONT_FILE.search(line)]
    return files


def covered(files: list[str]) -> set[int]:
    """Code points some face of `files` draws (fontconfig's own charset, as Chromium sees it)."""
    query = find_binary("fc-query", "fontconfig")
    points: set[int] = set()
    for file in files:
        out = subprocess.run(
            [query, "--format", "%{charset}\n", file], capture_output=True, text=True, check=True
        ).stdout
        for span in out.split():
            first, _, last = span.partition("-")
            points.update(range(int(first, 16), int(last or first, 16) + 1))
    return points


def shown_text() -> dict[str, set[str]]:
    """Each character of the pages' sources, with the files it appears in."""
    sources = [
        p for p in (ROOT / "ehswatch").rglob("*") if p.suffix in {".py", ".html", ".js", ".css"}
    ]
    sources += sorted((ROOT / "config").glob("*.yaml"))
    seen: dict[str, set[str]] = {}
    for path in sources:
        for char in path.read_text("utf-8"):
            if char.isprintable():
                seen.setdefault(char, set()).add(str(path.relative_to(ROOT)))
    return seen


def test_every_character_the_pages_show_is_in_a_font_the_makefile_installs() -> None:
    files = font_files([p for p in installed_packages() if p.startswith("fonts-")])
    assert any("CJK" in f for f in files), files  # Chinese needs its own font
    points = covered(files)
    text = shown_text()
    assert "联" in text and "报" in text  # the sources were read
    missing = {c: sorted(where) for c, where in text.items() if ord(c) not in points}
    assert not missing, f"drawn as a box on the plant's screens: {missing}"


def test_a_character_no_installed_font_draws_is_found() -> None:
    """The check above can fail: ⏱ (U+23F1), once on the board's countdown, is in none."""
    files = font_files([p for p in installed_packages() if p.startswith("fonts-")])
    points = covered(files)
    assert ord("⏱") not in points
    assert ord("◷") in points and ord("联") in points

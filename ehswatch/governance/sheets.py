"""QR codes of the patrol checkpoints, and the printable A4 sheet of a zone's codes.

Each checkpoint's code holds the workbench address of its checklist
(`{api.public_url}/app/checkpoints/{id}`): a phone's camera opens it, the person signs in
if they have not, and the checklist is on the screen. The sheet (PDF, A4, six codes to a
page) is printed and posted at the checkpoints; each code has its checkpoint's name, zone
and id under it, in Chinese and English, with the Noto Sans CJK font `make demo` / `make
test` install (`fonts-noto-cjk`).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import segno

FONT_DIRS = (Path("/usr/share/fonts"), Path("/usr/local/share/fonts"), Path.home() / ".fonts")
FONT_FILE = "NotoSansCJK-Regular.ttc"
FONT_FACE_SC = 2  # in the collection: JP, KR, SC, TC, HK


class NoFont(RuntimeError):
    """The CJK font the sheet is set in is not installed."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Code:
    """One code of a sheet: what it opens and what is printed under it."""

    url: str
    title: str  # the checkpoint's name
    lines: tuple[str, ...]  # zone, id, round frequency


def checkpoint_url(public_url: str, checkpoint_id: str) -> str:
    return f"{public_url.rstrip('/')}/app/checkpoints/{checkpoint_id}"


def qr(url: str) -> segno.QRCode:
    # Medium error correction (raised where the size allows): a sheet in a dusty shop
    # gets dirty and scratched.
    return segno.make(url, error="m", micro=False)


def qr_svg(url: str) -> bytes:
    out = io.BytesIO()
    qr(url).save(out, kind="svg", scale=8, border=4, xmldecl=False)
    return out.getvalue()


def font_file() -> Path:
    for folder in FONT_DIRS:
        if folder.is_dir():
            found = next(folder.rglob(FONT_FILE), None)
            if found is not None:
                return found
    raise NoFont(
        f"the QR sheet is set in Noto Sans CJK ({FONT_FILE}); install the Debian package "
        "fonts-noto-cjk (`make demo` and `make test` do when run as root)"
    )


def sheet_pdf(title: str, codes: Sequence[Code]) -> bytes:
    """An A4 PDF: `title` on each page, six codes (2 × 3) to a page, each at 70 mm."""
    from fpdf import FPDF  # imported here: only a sheet needs it

    pdf = FPDF(format="A4", unit="mm")
    pdf.set_auto_page_break(auto=False)
    pdf.add_font("noto", fname=str(font_file()), collection_font_number=FONT_FACE_SC)
    pdf.set_title(title)
    size, cols, rows = 70.0, 2, 3
    x0, y0, dx, dy = 25.0, 28.0, 90.0, 88.0
    shown: list[Code | None] = [*codes] or [None]  # no code: the page with its title
    for n, code in enumerate(shown):
        if n % (cols * rows) == 0:
            pdf.add_page()
            pdf.set_font("noto", size=14)
            pdf.set_xy(15, 10)
            pdf.cell(180, 8, title, align="C")
        if code is None:
            break
        col, row = n % cols, (n // cols) % rows
        x, y = x0 + col * dx, y0 + row * dy
        matrix = qr(code.url).matrix
        cell = size / (len(matrix) + 8)  # with a quiet zone of four modules each side
        pdf.set_fill_color(0, 0, 0)
        for i, line in enumerate(matrix):
            for j, dark in enumerate(line):
                if dark:
                    pdf.rect(x + (j + 4) * cell, y + (i + 4) * cell, cell, cell, style="F")
        pdf.set_font("noto", size=11)
        pdf.set_xy(x, y + size)
        pdf.cell(size, 5, code.title, align="C")
        pdf.set_font("noto", size=8)
        for k, text in enumerate(code.lines):
            pdf.set_xy(x, y + size + 5 + 4 * k)
            pdf.cell(size, 4, text, align="C")
    return bytes(pdf.output())

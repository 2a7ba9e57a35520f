"""`kept_file`: a file the service keeps (a photo, a document), served as itself."""

from __future__ import annotations

from pathlib import Path

from fastapi.responses import FileResponse


def kept_file(path: Path, content_type: str) -> FileResponse:
    """A kept file as its sniffed type, never as what a browser would guess."""
    return FileResponse(
        path,
        media_type=content_type,
        headers={"Cache-Control": "private, max-age=86400", "X-Content-Type-Options": "nosniff"},
    )

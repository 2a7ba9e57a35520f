"""Rectification evidence (photos, documents) on disk, checked before it is kept.

A file is accepted when it is at most `evidence_max_mb`, and its *content* is a JPEG,
PNG, WebP or PDF (the first bytes decide, not the name or the declared type). It is
stored as ``{evidence_dir}/{ticket}/{sha256}{ext}`` (identical uploads are stored once)
and recorded with its checksum, size and uploader.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from ehswatch.roles import Refused

SIGNATURES: tuple[tuple[bytes, int, str, str], ...] = (
    # (magic bytes, offset, content type, extension)
    (b"\xff\xd8\xff", 0, "image/jpeg", ".jpg"),
    (b"\x89PNG\r\n\x1a\n", 0, "image/png", ".png"),
    (b"WEBP", 8, "image/webp", ".webp"),
    (b"%PDF-", 0, "application/pdf", ".pdf"),
)


THUMBNAIL_MAX_BYTES = 256 * 1024


def thumbnail_of(photo: Path, ext: str) -> Path:
    return photo.with_name(f"{photo.stem}.thumb{ext}")


def thumbnail_for(photo: Path) -> Path | None:
    """The thumbnail kept beside `photo`, if one was uploaded with it."""
    for ext in (".jpg", ".png", ".webp"):
        if (path := thumbnail_of(photo, ext)).exists():
            return path
    return None


class EvidenceRejected(Refused):
    """Too large, or not a kind of file we keep (HTTP 413 / 415 at the API)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, kw_only=True, slots=True)
class StoredEvidence:
    path: Path
    sha256: str
    size: int
    content_type: str


def sniff(content: bytes) -> tuple[str, str] | None:
    for magic, offset, ctype, ext in SIGNATURES:
        if content[offset : offset + len(magic)] == magic:
            if ctype == "image/webp" and content[:4] != b"RIFF":
                continue
            return ctype, ext
    return None


class EvidenceStore:
    def __init__(self, directory: str | Path, max_bytes: int) -> None:
        self.root = Path(directory)
        self.max_bytes = max_bytes

    def check(self, content: bytes) -> tuple[str, str]:
        if len(content) > self.max_bytes:
            raise EvidenceRejected(
                f"evidence is {len(content) / 1e6:.1f} MB; at most {self.max_bytes / 1e6:g} MB", 413
            )
        if not content:
            raise EvidenceRejected("evidence is empty", 415)
        kind = sniff(content)
        if kind is None:
            raise EvidenceRejected("evidence must be a JPEG, PNG or WebP photo or a PDF", 415)
        return kind

    def check_thumbnail(self, content: bytes) -> str:
        """A thumbnail is a small photo (at most `THUMBNAIL_MAX_BYTES`); its extension."""
        kind = sniff(content)
        if kind is None or not kind[0].startswith("image/"):
            raise EvidenceRejected("a thumbnail must be a JPEG, PNG or WebP photo", 415)
        if len(content) > THUMBNAIL_MAX_BYTES:
            raise EvidenceRejected(f"a thumbnail is at most {THUMBNAIL_MAX_BYTES // 1024} KB", 413)
        return kind[1]

    def store_thumbnail(self, photo: Path, content: bytes, ext: str) -> Path:
        """Keep `content` as the thumbnail of `photo` (beside it, `<photo>.thumb<ext>`)."""
        path = thumbnail_of(photo, ext)
        tmp = path.with_suffix(".part")
        tmp.write_bytes(content)
        tmp.replace(path)
        return path

    def store(self, folder_name: int | str, content: bytes) -> StoredEvidence:
        """Keep `content` under `folder_name` (a ticket's id, or e.g. "cleaning/z1")."""
        ctype, ext = self.check(content)
        digest = hashlib.sha256(content).hexdigest()
        folder = self.root / str(folder_name)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{digest}{ext}"
        if not path.exists():
            tmp = path.with_suffix(".part")
            tmp.write_bytes(content)
            tmp.replace(path)
        return StoredEvidence(path=path, sha256=digest, size=len(content), content_type=ctype)

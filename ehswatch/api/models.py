"""Request bodies shared by several routers."""

from __future__ import annotations

from pydantic import BaseModel, Field


class Comment(BaseModel):
    """An optional comment, kept in the audit log with the action."""

    comment: str = Field("", max_length=2000)

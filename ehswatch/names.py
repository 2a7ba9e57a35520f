"""Lists of names in messages, kept readable at plant scale."""

from __future__ import annotations

import itertools
from collections.abc import Iterable

LIMIT = 10


def listed(names: Iterable[str], limit: int = LIMIT, empty: str = "(none)") -> str:
    """The first `limit` names joined by ", ", then how many were left out and the total.

    ``listed(["a", "b"])`` is ``"a, b"``; with 1 000 names the result names ten of them and
    ends ``" and 990 more (1000 in all)"``. `empty` is returned when there are no names.
    The names are taken in the order given: sort them first where the order means nothing.
    """
    if limit < 1:
        raise ValueError(f"limit must be at least 1, not {limit}")
    it = iter(names)
    shown = list(itertools.islice(it, limit))
    if not shown:
        return empty
    rest = sum(1 for _ in it)
    text = ", ".join(shown)
    if rest:
        text += f" and {rest} more ({len(shown) + rest} in all)"
    return text

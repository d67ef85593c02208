"""Offset pages for list RPCs: ``page_size`` and an opaque-to-clients ``page_token``."""

from __future__ import annotations

from silolink import errors

MAX_PAGE_SIZE = 1000


def page_bounds(page_size: int, page_token: str, total: int) -> tuple[int, int, str]:
    """``(start, end, next_token)`` of the page; page_size 0 means everything at once."""
    start = 0
    if page_token:
        if not page_token.isdigit() or len(page_token) > 12:
            raise errors.InvalidArgument("the page token is not one this server gave out; start from the first page")
        start = int(page_token)
    if page_size == 0:
        return start, total, ""
    end = min(total, start + min(page_size, MAX_PAGE_SIZE))
    return start, end, str(end) if end < total else ""

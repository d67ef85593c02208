"""Offset pages for list RPCs: ``page_size`` and an opaque-to-clients ``page_token``."""

from __future__ import annotations

from silolink import errors

MAX_PAGE_SIZE = 1000


def page_start(page_token: str) -> int:
    """Where the page ``page_token`` starts (0: the first page)."""
    if not page_token:
        return 0
    if not page_token.isdigit() or len(page_token) > 12:
        raise errors.InvalidArgument("the page token is not one this server gave out; start from the first page")
    return int(page_token)


def page_limit(page_size: int) -> int:
    """How many items a page of ``page_size`` holds at most (0: everything)."""
    return min(page_size, MAX_PAGE_SIZE)


def next_page_token(start: int, returned: int, total: int, page_size: int) -> str:
    """The token of the page after one that started at ``start`` and held ``returned``."""
    end = start + returned
    return str(end) if page_size and end < total else ""


def page_bounds(page_size: int, page_token: str, total: int) -> tuple[int, int, str]:
    """``(start, end, next_token)`` of the page; page_size 0 means everything at once."""
    start = page_start(page_token)
    if page_size == 0:
        return start, total, ""
    end = min(total, start + page_limit(page_size))
    return start, end, str(end) if end < total else ""

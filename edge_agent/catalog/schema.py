"""A dataset column as the catalog records it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # INTEGER, REAL or TEXT

    @property
    def numeric(self) -> bool:
        return self.type in ("INTEGER", "REAL")

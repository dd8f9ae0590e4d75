"""A store over the ledger database whose clock tests may inject."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # cap_admin is imported by agents without psycopg
    from runledger.store._database import Database

__all__ = ["ClockedStore"]


class ClockedStore:
    """Base of the stores that read the current time.

    Args:
        db: the ledger database.
        clock: returns the current time (tests inject it); default: the database's clock.
    """

    def __init__(self, db: Database, *, clock: Callable[[], datetime] | None = None) -> None:
        self.db = db
        self.clock = clock

    def _now(self) -> datetime | None:
        """Return the injected clock's time, or None to use the database's."""
        return self.clock() if self.clock is not None else None

"""Fixtures for cost-control tests: a cap store, an injectable clock, an app using it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from _cost_support import Clock

from runledger.control import create_app
from runledger.cost.store import CapStore
from runledger.store import Database


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime.now(UTC).replace(microsecond=0))


@pytest.fixture
def store(db: Database) -> CapStore:
    """A cap store on the real database, using the database's clock."""
    return CapStore(db)


@pytest.fixture
def clocked_store(db: Database, clock: Clock) -> CapStore:
    """A cap store whose notion of now is the injected clock."""
    return CapStore(db, clock=clock)


@pytest.fixture
def clocked_client(db: Database, clock: Clock) -> Iterator[Any]:
    """A Flask test client of the control app with the injected clock."""
    app = create_app({"DATABASE": db, "TESTING": True, "CLOCK": clock})
    yield app.test_client()

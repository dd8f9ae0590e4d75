"""Fixtures for cost-control tests: lease and cap stores, an injectable clock, an app using it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from _cost_support import Clock

from runledger.control import create_app
from runledger.store import CapAdmin, Database, LeaseStore


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime.now(UTC).replace(microsecond=0))


@pytest.fixture
def leases(db: Database) -> LeaseStore:
    """A lease store on the real database, using the database's clock."""
    return LeaseStore(db)


@pytest.fixture
def clocked_leases(db: Database, clock: Clock) -> LeaseStore:
    """A lease store whose notion of now is the injected clock."""
    return LeaseStore(db, clock=clock)


@pytest.fixture
def cap_admin(db: Database) -> CapAdmin:
    """Cap administration on the real database, using the database's clock."""
    return CapAdmin(db)


@pytest.fixture
def clocked_client(db: Database, clock: Clock) -> Iterator[Any]:
    """A Flask test client of the control app with the injected clock."""
    app = create_app({"DATABASE": db, "TESTING": True, "CLOCK": clock})
    yield app.test_client()

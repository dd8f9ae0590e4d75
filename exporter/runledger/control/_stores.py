"""The control service's stores: one of each per app, made on first use."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from flask import current_app

from runledger.store._database import Database

__all__ = ["app_store"]

T = TypeVar("T")


def app_store(key: str, make: Callable[[Database], T]) -> T:
    """Return the app's store under extension ``key``, made from the ledger's database on the
    first call."""
    store: T | None = current_app.extensions.get(key)
    if store is None:
        store = make(current_app.extensions["runledger.db"])
        current_app.extensions[key] = store
    return store

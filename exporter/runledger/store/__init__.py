"""PostgreSQL ledger: connections, migrations, ingest, retention.

Names are imported on first use, so that an agent process can import what the SDK shares
with the store (``runledger.store.leases.LeaseState``) without the server's PostgreSQL
driver installed (``pip install runledger`` has no ``psycopg``; ``runledger[server]`` has).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runledger.store._database import (
        Database,
        DatabaseUnavailable,
        embedded_server,
        ensure_database,
        resolve_database_url,
        state_dir,
        stop_embedded,
    )
    from runledger.store.cap_admin import CapAdmin, CapChange, CapStatus
    from runledger.store.ingest import EventResult, IngestLimits, Ingestor
    from runledger.store.leases import LeaseState, LeaseStore
    from runledger.store.migrate import migrate

_WHERE = {
    "Database": "_database", "DatabaseUnavailable": "_database",
    "embedded_server": "_database", "ensure_database": "_database",
    "resolve_database_url": "_database", "state_dir": "_database", "stop_embedded": "_database",
    "CapAdmin": "cap_admin", "CapChange": "cap_admin", "CapStatus": "cap_admin",
    "EventResult": "ingest", "IngestLimits": "ingest", "Ingestor": "ingest",
    "LeaseState": "leases", "LeaseStore": "leases", "migrate": "migrate",
}  # fmt: skip

__all__ = [
    "CapAdmin",
    "CapChange",
    "CapStatus",
    "Database",
    "DatabaseUnavailable",
    "EventResult",
    "IngestLimits",
    "Ingestor",
    "LeaseState",
    "LeaseStore",
    "embedded_server",
    "ensure_database",
    "migrate",
    "resolve_database_url",
    "state_dir",
    "stop_embedded",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'runledger.store' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"runledger.store.{module}"), name)
    globals()[name] = value
    return value

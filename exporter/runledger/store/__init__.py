"""PostgreSQL ledger: connections, migrations, ingest, retention."""

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

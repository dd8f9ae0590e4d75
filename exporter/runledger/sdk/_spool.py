"""Durable local spool: SQLite in WAL mode, written by callers, drained by the sender.

Crash safety (docs/sdk.md says the same):

* ``append`` returns after its transaction is committed to the write-ahead log with
  ``synchronous=NORMAL``: the record survives the process being killed (SIGKILL, OOM,
  a crash) because the data already sits in the operating system's page cache.
* The sender thread makes the log durable against power loss and kernel crashes: every
  ``sync`` fsyncs the WAL file and checkpoints it (group commit). It runs at least every
  ``SYNC_INTERVAL`` seconds while there are new records, and before ``flush`` returns.
  The caller's thread never waits for an fsync.
* A record leaves ``outbox`` only when the ledger acknowledged it (accepted or
  duplicate), or moves to ``dead_letter`` when the ledger rejected it or failed on it alone
  while accepting others (``strikes`` counts those failures; the sender sends such a
  suspect alone). ``resend`` moves dead letters back to ``outbox``.
* A model call's usage, which a run reports on its next event, is appended to this process's
  usage journal (``<spool>.owners/<owner>.usage.<n>``, one ``write`` of one line, about
  1 µs against about 15 µs for a SQLite transaction) and survives a kill the same way. Each
  ``sync`` folds the latest usage of every run into ``open_runs`` (with the journal
  sequence it reached), starts a new journal, fsyncs the WAL and only then deletes the old
  journal. Recovery takes, per run, whichever is newer: ``open_runs`` or the dead owner's
  journals.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from runledger.sdk._services import Usage

__all__ = ["OpenRun", "Record", "Spool", "SpoolFullError"]

SYNC_INTERVAL = 0.1
"""Seconds between group syncs of the WAL while records arrive."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    kind      TEXT NOT NULL,
    body      BLOB NOT NULL,
    queued_at REAL NOT NULL,
    attempts  INTEGER NOT NULL DEFAULT 0,
    strikes   INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS dead_letter (
    id        INTEGER PRIMARY KEY,
    kind      TEXT NOT NULL,
    body      BLOB NOT NULL,
    queued_at REAL NOT NULL,
    failed_at REAL NOT NULL,
    errors    TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS open_runs (
    run_id     TEXT PRIMARY KEY,
    owner      TEXT NOT NULL,
    envelope   BLOB NOT NULL,
    tokens_in  INTEGER NOT NULL DEFAULT 0,
    tokens_out INTEGER NOT NULL DEFAULT 0,
    cost_usd   TEXT NOT NULL DEFAULT '0',
    model      TEXT,
    cached     INTEGER NOT NULL DEFAULT 0,
    lease_id   TEXT,
    usage_seq  INTEGER NOT NULL DEFAULT 0
);
"""


class SpoolFullError(RuntimeError):
    """The spool held its maximum number of records for longer than the full timeout."""


@dataclass(frozen=True)
class Record:
    """One spooled record waiting for the ledger."""

    id: int
    kind: str
    body: bytes


@dataclass(frozen=True)
class OpenRun:
    """A run that started but has not ended, with its not yet reported usage."""

    run_id: str
    owner: str
    envelope: bytes
    tokens_in: int
    tokens_out: int
    cost_usd: str
    model: str | None
    cached: bool
    lease_id: str | None = None
    """The budget lease the usage was settled through (tags the recovery event)."""


def describe_record(kind: str, body: bytes) -> dict[str, str]:
    """Return a spooled record's ``record_id`` (event or audit id) and ``type``."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        data = None
    if not isinstance(data, dict):
        data = {}
    return {
        "record_id": str(
            data.get("event_id") or data.get("audit_id") or data.get("snapshot_id") or ""
        ),
        "type": str(data.get("type") or kind),
    }


_ADDED_COLUMNS = (
    ("open_runs", "lease_id", "TEXT"),
    ("open_runs", "usage_seq", "INTEGER NOT NULL DEFAULT 0"),
    ("outbox", "strikes", "INTEGER NOT NULL DEFAULT 0"),
)
"""Columns added after the first release: (table, column, DDL)."""

_USAGE_FIELDS = 6
"""A journal line: [seq, run_id, tokens_in, tokens_out, cost_usd, model, cached, lease_id]."""

_OPEN_RUN_COLS = "run_id, owner, envelope, tokens_in, tokens_out, cost_usd, model, cached, lease_id"


def _open_run(r: Sequence[Any]) -> OpenRun:
    return OpenRun(str(r[0]), str(r[1]), bytes(r[2]), int(r[3]), int(r[4]), str(r[5]), r[6],
                   bool(r[7]), r[8])  # fmt: skip


class Spool:
    """The SQLite spool shared by the callers' threads and one sender thread.

    Args:
        path: the database file; its directory is created.
        owner: this process's id in ``open_runs``; a lock file proves it is alive.
        max_records: how many records ``append`` accepts before applying back-pressure.
        full_timeout: seconds ``append`` waits for room before raising SpoolFullError.
    """

    def __init__(
        self, path: Path, *, owner: str, max_records: int = 100_000, full_timeout: float = 10.0
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.owner = owner
        self.max_records = max_records
        self.full_timeout = full_timeout
        # One connection for every writer and reader of this process, serialised by a
        # Python lock: SQLite's own busy handler sleeps in milliseconds, the lock does not.
        self._conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=30.0
        )
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute("PRAGMA wal_autocheckpoint=0")  # checkpoints run in the sender
        self._conn.executescript(_SCHEMA)
        for table, column, ddl in _ADDED_COLUMNS:
            columns = {row[1] for row in self._conn.execute(f"PRAGMA table_info({table})")}
            if column not in columns:  # a spool written by an older SDK
                with contextlib.suppress(sqlite3.OperationalError):  # another process added it
                    self._conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {ddl}")
        self._conn.execute(
            "CREATE INDEX IF NOT EXISTS outbox_suspects ON outbox (id) WHERE strikes > 0"
        )
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)
        self._count = int(self._conn.execute("SELECT count(*) FROM outbox").fetchone()[0])
        self._dirty = True
        self._closed = False
        self._owners_dir = self.path.with_name(self.path.name + ".owners")
        self._owners_dir.mkdir(exist_ok=True)
        self._owner_fd = os.open(self._owners_dir / f"{owner}.lock", os.O_CREAT | os.O_RDWR, 0o600)
        fcntl.flock(self._owner_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        # The usage journal (module docstring): its sequence, generation and the latest
        # usage per run not yet folded into open_runs.
        self._usage_seq = 0
        self._usage_gen = 0
        self._usage_fd = self._open_journal()
        self._usage_latest: dict[str, tuple[int, tuple[Any, ...]]] = {}

    # -- writes from callers ----------------------------------------------------------------

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield self._conn
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")
        self._dirty = True

    def _wait_for_room(self) -> None:
        if self._count < self.max_records:
            return
        deadline = time.monotonic() + self.full_timeout
        while self._count >= self.max_records:
            left = deadline - time.monotonic()
            if left <= 0:
                raise SpoolFullError(
                    f"runledger spool {self.path} is full: it holds {self._count} records "
                    f"(limit {self.max_records}) and none was delivered in the last "
                    f"{self.full_timeout:g}s; the ledger is unreachable or rejecting requests. "
                    "Nothing was dropped: the event was not recorded, retry it later, or raise "
                    "RUNLEDGER_SPOOL_MAX_EVENTS"
                )
            self._room.wait(left)

    def append(
        self,
        kind: str,
        body: bytes,
        *,
        open_run: tuple[str, bytes] | None = None,
        reset_run: str | None = None,
        close_run: str | None = None,
    ) -> int:
        """Store one record (and update ``open_runs`` in the same transaction); return its id.

        Raises:
            SpoolFullError: the spool stayed full for ``full_timeout`` seconds.
        """
        with self._room:
            self._wait_for_room()
            with self._transaction() as conn:
                cur = conn.execute(
                    "INSERT INTO outbox (kind, body, queued_at) VALUES (?, ?, ?)",
                    (kind, body, time.time()),
                )
                # usage_seq: journal records of the run up to here are superseded.
                if open_run is not None:
                    conn.execute(
                        "INSERT OR REPLACE INTO open_runs (run_id, owner, envelope, usage_seq)"
                        " VALUES (?, ?, ?, ?)",
                        (open_run[0], self.owner, open_run[1], self._usage_seq),
                    )
                    self._usage_latest.pop(open_run[0], None)
                if reset_run is not None:
                    conn.execute(
                        "UPDATE open_runs SET tokens_in = 0, tokens_out = 0, cost_usd = '0',"
                        " cached = 0, lease_id = NULL, usage_seq = ? WHERE run_id = ?",
                        (self._usage_seq, reset_run),
                    )
                    self._usage_latest.pop(reset_run, None)
                if close_run is not None:
                    conn.execute("DELETE FROM open_runs WHERE run_id = ?", (close_run,))
                    self._usage_latest.pop(close_run, None)
            self._count += 1
            return int(cur.lastrowid or 0)

    def set_usage(self, run_id: str, usage: Usage) -> None:
        """Record the usage a run has not reported on an event yet (absolute values).

        One line appended to the usage journal; ``sync`` folds it into ``open_runs``.
        """
        u = usage
        values = (u.tokens_in, u.tokens_out, str(u.cost_usd), u.model, u.cached, u.lease_id)
        with self._lock:
            self._usage_seq += 1
            line = orjson.dumps(
                [self._usage_seq, run_id, *values], option=orjson.OPT_APPEND_NEWLINE
            )
            os.write(self._usage_fd, line)
            self._usage_latest[run_id] = (self._usage_seq, values)

    def _journal_path(self, owner: str, generation: int) -> Path:
        return self._owners_dir / f"{owner}.usage.{generation}"

    def _open_journal(self) -> int:
        path = self._journal_path(self.owner, self._usage_gen)
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_TRUNC, 0o600)

    def _fold_usage(self) -> Path | None:
        """Move the journal's latest usage per run into open_runs and start a new journal;
        return the old journal, to delete once the WAL is synced. Call with the lock held."""
        if not self._usage_latest:
            return None
        latest, self._usage_latest = self._usage_latest, {}
        with self._transaction() as conn:
            conn.executemany(
                "UPDATE open_runs SET tokens_in = ?, tokens_out = ?, cost_usd = ?, model = ?,"
                " cached = ?, lease_id = ?, usage_seq = ? WHERE run_id = ? AND usage_seq < ?",
                [(ti, to, c, m, int(ca), le, seq, run_id, seq)
                 for run_id, (seq, (ti, to, c, m, ca, le)) in latest.items()],
            )  # fmt: skip
        old = self._journal_path(self.owner, self._usage_gen)
        os.close(self._usage_fd)
        self._usage_gen += 1
        self._usage_fd = self._open_journal()
        return old

    @staticmethod
    def _read_journals(paths: Iterator[Path]) -> dict[str, tuple[int, tuple[Any, ...]]]:
        """Return the latest journalled usage per run (a torn last line is skipped)."""
        latest: dict[str, tuple[int, tuple[Any, ...]]] = {}
        for path in paths:
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                continue
            for line in data.splitlines():
                try:
                    seq, run_id, *values = orjson.loads(line)
                except (orjson.JSONDecodeError, ValueError, TypeError):
                    continue
                if len(values) != _USAGE_FIELDS:
                    continue
                if run_id not in latest or seq > latest[run_id][0]:
                    latest[run_id] = (seq, tuple(values))
        return latest

    # -- the sender's side ------------------------------------------------------------------

    def batch(self, limit: int, max_bytes: int) -> list[Record]:
        """Return the oldest records of one kind, at most ``limit`` and about ``max_bytes``.

        Suspects (records with strikes) are left out: the sender sends them alone.
        """
        with self._lock:
            rows = self._conn.execute(
                "SELECT id, kind, body FROM outbox WHERE strikes = 0 ORDER BY id LIMIT ?",
                (limit,),
            ).fetchall()
        out: list[Record] = []
        size = 0
        for row_id, kind, body in rows:
            if out and (kind != out[0].kind or size + len(body) > max_bytes):
                break
            out.append(Record(int(row_id), str(kind), bytes(body)))
            size += len(body)
        return out

    def ack(self, ids: Sequence[int]) -> None:
        """Remove acknowledged records."""
        if not ids:
            return
        with self._room:
            with self._transaction() as conn:
                conn.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in ids])
            self._count = max(0, self._count - len(ids))
            self._room.notify_all()

    def dead_letter(self, items: Sequence[tuple[int, str]]) -> None:
        """Move rejected records, with the ledger's reasons, to ``dead_letter``."""
        if not items:
            return
        now = time.time()
        with self._room:
            with self._transaction() as conn:
                for row_id, errors in items:
                    conn.execute(
                        "INSERT OR REPLACE INTO dead_letter (id, kind, body, queued_at,"
                        " failed_at, errors) SELECT id, kind, body, queued_at, ?, ?"
                        " FROM outbox WHERE id = ?",
                        (now, errors, row_id),
                    )
                    conn.execute("DELETE FROM outbox WHERE id = ?", (row_id,))
            self._count = max(0, self._count - len(items))
            self._room.notify_all()

    def suspects(self) -> list[tuple[Record, int]]:
        """Return the records the ledger failed on alone, oldest first, with their strikes."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT id, kind, body, strikes FROM outbox WHERE strikes > 0 ORDER BY id"
            ).fetchall()
        return [(Record(int(r[0]), str(r[1]), bytes(r[2])), int(r[3])) for r in rows]

    def strike(self, row_id: int) -> int:
        """Count one more failure of the ledger on record ``row_id`` alone; return the count."""
        with self._lock, self._transaction() as conn:
            row = conn.execute(
                "UPDATE outbox SET strikes = strikes + 1 WHERE id = ? RETURNING strikes",
                (row_id,),
            ).fetchone()
        return int(row[0]) if row else 0

    def note_attempt(self, ids: Sequence[int]) -> None:
        """Count a failed delivery attempt of ``ids``."""
        with self._lock:
            self._conn.executemany(
                "UPDATE outbox SET attempts = attempts + 1 WHERE id = ?", [(i,) for i in ids]
            )

    def sync(self, force: bool = False) -> None:
        """Make every committed record durable: fsync the WAL, then checkpoint it."""
        if not (self._dirty or self._usage_latest or force) or self._closed:
            return
        with self._lock:
            folded = self._fold_usage()
        self._dirty = False
        wal = self.path.with_name(self.path.name + "-wal")
        try:
            fd = os.open(wal, os.O_RDONLY)
        except FileNotFoundError:
            fd = -1
        if fd >= 0:
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        if folded is not None:
            folded.unlink(missing_ok=True)  # its usage is in the synced WAL now
        with self._lock:
            # PASSIVE never waits for writers; it syncs the WAL before copying pages back.
            self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)")

    # -- inspection and recovery ------------------------------------------------------------

    def pending(self, up_to: int | None = None) -> int:
        """Return how many records wait for the ledger (with ids <= ``up_to``)."""
        with self._lock:
            if up_to is None:
                row = self._conn.execute("SELECT count(*) FROM outbox").fetchone()
                self._count = int(row[0])
            else:
                row = self._conn.execute(
                    "SELECT count(*) FROM outbox WHERE id <= ?", (up_to,)
                ).fetchone()
        return int(row[0])

    def last_id(self) -> int:
        """Return the highest record id handed out so far."""
        with self._lock:
            row = self._conn.execute("SELECT max(id) FROM outbox").fetchone()
        return int(row[0] or 0)

    def dead_letters(self) -> list[dict[str, Any]]:
        """Return the dead-lettered records, oldest first.

        Each: ``id`` (in the spool), ``kind``, ``body``, ``failed_at`` (Unix time), ``errors``
        (JSON list of ``{"field", "message"}``, with ``"status"`` for a server error), and
        from the body ``record_id`` (the ``event_id``, a prompt record's ``audit_id``) and
        ``type`` (the event type; a prompt record's kind).
        """
        with self._lock:
            rows = self._conn.execute(
                "SELECT id, kind, body, failed_at, errors FROM dead_letter ORDER BY id"
            ).fetchall()
        return [
            {"id": r[0], "kind": r[1], "body": bytes(r[2]), "failed_at": r[3], "errors": r[4],
             **describe_record(str(r[1]), bytes(r[2]))}
            for r in rows
        ]  # fmt: skip

    def resend(self, ids: Sequence[int]) -> int:
        """Queue dead letters ``ids`` again (behind the records waiting); return how many."""
        moved = 0
        with self._room:
            with self._transaction() as conn:
                for row_id in ids:
                    cur = conn.execute(
                        "INSERT INTO outbox (kind, body, queued_at) SELECT kind, body, queued_at"
                        " FROM dead_letter WHERE id = ?",
                        (row_id,),
                    )
                    conn.execute("DELETE FROM dead_letter WHERE id = ?", (row_id,))
                    moved += cur.rowcount
            self._count += moved
        return moved

    def orphaned_runs(self) -> list[OpenRun]:
        """Return open runs whose owning process is gone, with their latest usage."""
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {_OPEN_RUN_COLS}, usage_seq FROM open_runs WHERE owner != ?",
                (self.owner,),
            ).fetchall()
        alive: dict[str, bool] = {}
        journals: dict[str, dict[str, tuple[int, tuple[Any, ...]]]] = {}
        out = []
        for row in rows:
            owner = str(row[1])
            if owner not in alive:
                alive[owner] = self._owner_alive(owner)
            if alive[owner]:
                continue
            if owner not in journals:
                journals[owner] = self._read_journals(self._owners_dir.glob(f"{owner}.usage.*"))
            seq, values = journals[owner].get(str(row[0]), (0, ()))
            out.append(_open_run(row[:3] + values if seq > row[-1] else row[:-1]))
        return out

    def adopt(self, run: OpenRun, kind: str, body: bytes) -> bool:
        """Replace an orphaned open run by a final record; False if another process did."""
        with self._room:
            self._wait_for_room()
            with self._transaction() as conn:
                cur = conn.execute(
                    "DELETE FROM open_runs WHERE run_id = ? AND owner = ?", (run.run_id, run.owner)
                )
                if cur.rowcount != 1:
                    return False
                conn.execute(
                    "INSERT INTO outbox (kind, body, queued_at) VALUES (?, ?, ?)",
                    (kind, body, time.time()),
                )
            self._count += 1
            return True

    def _owner_alive(self, owner: str) -> bool:
        path = self._owners_dir / f"{owner}.lock"
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return True
            raise
        finally:
            os.close(fd)
        return False

    def forget_owner(self, owner: str) -> None:
        """Remove a dead owner's lock file once none of its runs is left."""
        with self._lock:
            left = self._conn.execute(
                "SELECT 1 FROM open_runs WHERE owner = ? LIMIT 1", (owner,)
            ).fetchone()
        if left is None and not self._owner_alive(owner):
            for journal in self._owners_dir.glob(f"{owner}.usage.*"):
                journal.unlink(missing_ok=True)
            with contextlib.suppress(FileNotFoundError):
                (self._owners_dir / f"{owner}.lock").unlink()

    def close(self) -> None:
        """Sync, close the database and release the owner lock."""
        if self._closed:
            return
        self.sync(force=True)
        with self._lock:
            self._closed = True
            self._conn.close()
            os.close(self._usage_fd)
        # The sync folded every journalled usage into open_runs.
        self._journal_path(self.owner, self._usage_gen).unlink(missing_ok=True)
        with contextlib.suppress(FileNotFoundError):
            (self._owners_dir / f"{self.owner}.lock").unlink()
        os.close(self._owner_fd)

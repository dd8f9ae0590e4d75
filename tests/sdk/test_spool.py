"""The spool's usage journal: a model call's usage survives a killed process, and recovery
never reports usage that an event already carried."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

from runledger.sdk._services import Usage
from runledger.sdk._spool import Spool

ENVELOPE = b'{"run_id": "run-1"}'


def _die_after(spool: Path, body: str) -> None:
    """Run ``body`` against a Spool owned by a process that then dies without closing it."""
    script = (
        "import os\n"
        "from pathlib import Path\n"
        "from decimal import Decimal\n"
        "from runledger.sdk._services import Usage\n"
        "from runledger.sdk._spool import Spool\n"
        f"spool = Spool(Path({str(spool)!r}), owner='dead-1')\n"
        "spool.append('event', b'{}', open_run=('run-1', %r))\n"
        "%s\n"
        "os._exit(0)\n"
    ) % (ENVELOPE, body)
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)


def _recovered(spool: Path) -> list[tuple[int, int, str, str | None, bool, str | None]]:
    survivor = Spool(spool, owner="alive-1")
    try:
        return [
            (r.tokens_in, r.tokens_out, r.cost_usd, r.model, r.cached, r.lease_id)
            for r in survivor.orphaned_runs()
        ]
    finally:
        survivor.close()


def test_usage_written_only_to_the_journal_survives_the_process(tmp_path: Path) -> None:
    spool = tmp_path / "s.db"
    _die_after(
        spool,
        "spool.set_usage('run-1', Usage(10, 2, Decimal('0.01'), 'gpt-4.1', False))\n"
        "spool.set_usage('run-1', Usage(25, 5, Decimal('0.03'), 'gpt-4.1', True, 'lease-9'))",
    )
    with sqlite3.connect(spool) as conn:  # nothing of it reached SQLite
        assert conn.execute("SELECT tokens_in FROM open_runs").fetchall() == [(0,)]
    assert _recovered(spool) == [(25, 5, "0.03", "gpt-4.1", True, "lease-9")]


def test_usage_an_event_already_carried_is_not_recovered_again(tmp_path: Path) -> None:
    spool = tmp_path / "s.db"
    _die_after(
        spool,
        "spool.set_usage('run-1', Usage(10, 2, Decimal('0.01'), 'gpt-4.1', False))\n"
        "spool.append('event', b'{}', reset_run='run-1')",
    )
    assert _recovered(spool) == [(0, 0, "0", None, False, None)]


def test_folded_usage_then_newer_journal_lines_and_a_torn_line(tmp_path: Path) -> None:
    spool = tmp_path / "s.db"
    _die_after(
        spool,
        "spool.set_usage('run-1', Usage(10, 2, Decimal('0.01'), 'gpt-4.1', False))\n"
        "spool.sync()\n"  # folds into open_runs and starts a new journal
        "spool.set_usage('run-1', Usage(30, 6, Decimal('0.05'), 'gpt-4.1', False))\n"
        "journal = next(Path(str(spool.path) + '.owners').glob('dead-1.usage.*'))\n"
        # junk a power loss could leave: a number, a short record, a torn last line
        "journal.open('ab').write(b'7\\n[4, \"run-1\", 1]\\n[3, \"run-1\", 99')",
    )
    owners = Path(str(spool) + ".owners")
    assert [p.name for p in owners.glob("dead-1.usage.*")] == ["dead-1.usage.1"]
    with sqlite3.connect(spool) as conn:
        assert conn.execute("SELECT tokens_in, usage_seq FROM open_runs").fetchall() == [(10, 1)]
    assert _recovered(spool) == [(30, 6, "0.05", "gpt-4.1", False, None)]


def test_a_closed_spool_leaves_no_journal_and_its_usage_in_open_runs(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.db", owner="me")
    spool.append("event", b"{}", open_run=("run-1", ENVELOPE))
    spool.set_usage("run-1", Usage(4, 1, Decimal("0.002"), "gpt-4.1", False))
    spool.close()
    assert list((tmp_path / "s.db.owners").iterdir()) == []
    with sqlite3.connect(tmp_path / "s.db") as conn:
        assert conn.execute("SELECT tokens_in, cost_usd FROM open_runs").fetchall() == [
            (4, "0.002")
        ]


def test_a_spool_from_an_older_sdk_gains_the_journal_column(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TABLE open_runs (run_id TEXT PRIMARY KEY, owner TEXT NOT NULL,"
            " envelope BLOB NOT NULL, tokens_in INTEGER NOT NULL DEFAULT 0,"
            " tokens_out INTEGER NOT NULL DEFAULT 0, cost_usd TEXT NOT NULL DEFAULT '0',"
            " model TEXT, cached INTEGER NOT NULL DEFAULT 0)"
        )
    Spool(path, owner="me").close()
    with sqlite3.connect(path) as conn:
        columns = {row[1] for row in conn.execute("PRAGMA table_info(open_runs)")}
    assert {"lease_id", "usage_seq"} <= columns

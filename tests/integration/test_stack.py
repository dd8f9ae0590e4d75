"""`runledger up` (what `make up` runs): the stack starts, the demo drives it, it stops."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import requests

from _support import free_port, stop_process
from runledger.store import embedded_server


@pytest.fixture
def home() -> Iterator[Path]:
    """A state directory outside pytest's private tmp tree.

    PostgreSQL runs as its own user when the tests run as root, and pytest keeps its tmp
    tree private (mode 0700) to other users.
    """
    base = Path(tempfile.mkdtemp(prefix="rl-up-"))
    yield base / "home"
    shutil.rmtree(base, ignore_errors=True)


def test_up_starts_the_stack_and_the_demo_fills_the_ledger(home: Path) -> None:
    ports = {name: free_port() for name in ("control", "exporter", "prometheus", "alertmanager")}
    env = dict(os.environ, RUNLEDGER_HOME=str(home))
    env.pop("RUNLEDGER_DATABASE_URL", None)
    args = [sys.executable, "-m", "runledger.cli", "up", "--duration", "25"]
    for name, port in ports.items():
        args += [f"--{name}-port", str(port)]
    proc = subprocess.Popen(
        args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if "Stop with Ctrl-C" in line or len(lines) > 200:
                break
        banner = "".join(lines)
        assert "runledger is up:" in banner, banner
        assert f"http://127.0.0.1:{ports['control']}" in banner
        assert "quality jobs      proof sampling, drift and retention on a schedule" in banner
        # The console comes first, with the admin's login printed on the first run.
        after = banner.split("runledger is up:\n", 1)[1].splitlines()
        console = f"http://127.0.0.1:{ports['control']}/"
        assert after[0].split()[:2] == ["console", console], after
        token = after[1].split()[3]
        assert token == json.loads((home / "tokens.json").read_text())["admin"]
        form = requests.get(console + "login", timeout=5)
        csrf = form.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
        login = requests.post(
            console + "login", data={"token": token, "csrf_token": csrf}, timeout=5,
            allow_redirects=False,
            headers={"Cookie": form.headers["Set-Cookie"].split(";")[0]},
        )  # fmt: skip
        assert login.status_code == 303, login.text
        cookie = next(
            c.split(";")[0] for c in login.headers["Set-Cookie"].split(", ")
            if c.startswith("rl_session=")
        )  # fmt: skip
        page = requests.get(console + "admin", headers={"Cookie": cookie}, timeout=10)
        assert page.status_code == 200 and "Today at a glance" in page.text
        assert (
            requests.get(f"http://127.0.0.1:{ports['control']}/readyz", timeout=5).status_code
            == 200
        )
        # Alertmanager runs the shipped routes, wired to this control service's webhook with
        # the stack's secret; the control service mutes through that Alertmanager.
        control, am = (f"http://127.0.0.1:{ports[n]}" for n in ("control", "alertmanager"))
        status = requests.get(f"{am}/api/v2/status", timeout=5).json()
        assert f"{control}/v1/alerts/webhook" in status["config"]["original"]
        assert "TenantDailyCapNearlyReached" in status["config"]["original"]  # inhibition
        secret = (home / "alert-webhook-token").read_text()
        hook = requests.post(
            f"{control}/v1/alerts/webhook", headers={"Authorization": f"Bearer {secret}"},
            json={"version": "4", "status": "firing", "receiver": "admin", "alerts": []},
            timeout=5,
        )  # fmt: skip
        assert hook.status_code == 200, hook.text
        admin = json.loads((home / "tokens.json").read_text())["admin"]
        mute = requests.post(
            f"{control}/v1/alerts/silences", headers={"Authorization": f"Bearer {admin}"},
            json={"tenant": "acme", "duration_minutes": 5, "reason": "checking the stack"},
            timeout=5,
        )  # fmt: skip
        assert mute.status_code == 201, mute.text
        silence = requests.get(f"{am}/api/v2/silence/{mute.json()['silence_id']}", timeout=5)
        assert silence.json()["status"]["state"] == "active"
        # A second `up` on the same home refuses instead of fighting over ports and data.
        again = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60)
        assert again.returncode == 1
        assert "runledger is already up" in again.stderr
        rest, _ = proc.communicate(timeout=90)
    finally:
        stop_process(proc)
    assert proc.returncode == 0, rest
    assert "runledger stopped" in rest
    assert not (home / "up.pid").exists()
    scheduler_log = (home / "logs" / "quality-scheduler.log").read_text()
    assert "scheduled runledger sample: cron[month='*', day='*', day_of_week='*'," in (
        scheduler_log
    ), scheduler_log

    server = embedded_server(home / "pg", keep_running=False)
    try:
        with psycopg.connect(server.get_uri("runledger")) as conn:
            types = dict(conn.execute("SELECT type, count(*) FROM events GROUP BY 1").fetchall())
            tenants = {r[0] for r in conn.execute("SELECT DISTINCT tenant_id FROM runs")}
            costs = conn.execute("SELECT sum(spent_usd) FROM caps").fetchone()
            leases = conn.execute("SELECT count(*) FROM cap_leases").fetchone()
            # The demo draws on the tenant caps through leases; nothing is counted twice.
            mismatched = conn.execute(
                "SELECT u.tenant_id, u.spend_usd, e.c, c.settled_usd, c.spent_usd,"
                " c.leased_spent_usd, c.reserved_usd FROM cap_usage u"
                " JOIN (SELECT tenant_id, sum(cost_usd) AS c FROM events GROUP BY 1) e"
                " USING (tenant_id) JOIN caps c ON c.tenant_id = u.tenant_id AND c.date = u.date"
                " WHERE u.spend_usd <> e.c"
            ).fetchall()
            lease_rows = conn.execute(
                "SELECT tenant_id, status, spent_usd, ledger_spent_usd FROM cap_leases"
                " ORDER BY tenant_id, lease_id"
            ).fetchall()
    finally:
        server.cleanup()
    assert {"run_queued", "run_started", "run_finished", "phase_entered"} <= set(types), types
    assert types["run_started"] >= 5, types
    assert tenants <= {"acme", "globex", "initech"} and len(tenants) >= 2
    assert costs is not None and costs[0] > 0
    assert leases is not None and leases[0] > 0
    assert mismatched == [], (mismatched, lease_rows, rest[-3000:])


def test_down_without_up_says_so(tmp_path: Path) -> None:
    env = dict(os.environ, RUNLEDGER_HOME=str(tmp_path))
    out = subprocess.run(
        [sys.executable, "-m", "runledger.cli", "down"], env=env, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert out.returncode == 0
    assert "runledger is not up" in out.stdout


def test_a_port_held_by_something_else_is_swapped_for_a_free_one(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from runledger.demo.stack import Ports, _free_ports

    wanted = free_port()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", wanted))
        holder.listen()
        ports = _free_ports(Ports(control=wanted, exporter=free_port()))
    assert ports.control != wanted
    assert f"port {wanted} (control) is in use; using {ports.control} instead" in (
        capsys.readouterr().out
    )

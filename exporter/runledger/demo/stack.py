"""``runledger up``: the whole stack natively, driven by the demo pipeline.

Starts (in this order) the embedded PostgreSQL, migrations and demo tenants/tokens, then
every entry of ``SERVICES`` as a child process, waits until each answers, prints where to
look, and stops them all (by PID) on Ctrl-C, SIGTERM, ``runledger down`` or ``--duration``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import requests

from runledger import _env
from runledger._local import free_port, stop_process
from runledger.store import embedded_server, ensure_database, migrate, state_dir, stop_embedded
from runledger.store._database import DATABASE_NAME
from runledger.store.tenants import create_tenant
from runledger.store.tokens import create_token

__all__ = ["SERVICES", "Service", "down", "up"]

DEMO_TENANTS = {"acme": Decimal("25"), "globex": Decimal("10"), "initech": Decimal("2")}


@dataclass
class Ports:
    """Loopback ports of the stack (defaults match docs and prometheus.yml)."""

    control: int = 8480
    exporter: int = 9464
    prometheus: int = 9090
    alertmanager: int = 9093


@dataclass
class Context:
    """What services need to start: URLs, tokens, directories."""

    home: Path
    database_url: str
    ports: Ports
    tokens: dict[str, str]
    root: Path

    @property
    def control_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.control}"


@dataclass
class Service:
    """One child process of the stack."""

    name: str
    argv: Callable[[Context], list[str]]
    ready_url: Callable[[Context], str]
    shows: Callable[[Context], str]
    env: Callable[[Context], dict[str, str]] = field(default=lambda ctx: {})
    needs: Callable[[Context], str | None] = field(default=lambda ctx: None)


def _py(*args: str) -> list[str]:
    return [sys.executable, "-m", *args]


SERVICES: list[Service] = [
    Service(
        name="control",
        argv=lambda c: _py("runledger.cli", "control", "--bind", f"127.0.0.1:{c.ports.control}"),
        ready_url=lambda c: f"{c.control_url}/readyz",
        shows=lambda c: f"control service   {c.control_url}  (ingest API, /readyz)",
        # The console's tenant-enforcing PromQL proxy (/prom/api/v1/...) reads this Prometheus.
        env=lambda c: {
            _env.ALERT_WEBHOOK_TOKEN: _webhook_token(c),
            _env.ALERTMANAGER_URL: f"http://127.0.0.1:{c.ports.alertmanager}",
            _env.PROMETHEUS_URL: f"http://127.0.0.1:{c.ports.prometheus}",
        },
    ),
    Service(
        name="alertmanager",
        argv=lambda c: [
            "prometheus-alertmanager",
            f"--config.file={_alertmanager_config(c)}",
            f"--storage.path={c.home / 'alertmanager'}",
            f"--web.listen-address=127.0.0.1:{c.ports.alertmanager}",
            "--cluster.listen-address=",
        ],
        ready_url=lambda c: f"http://127.0.0.1:{c.ports.alertmanager}/-/ready",
        shows=lambda c: f"Alertmanager      http://127.0.0.1:{c.ports.alertmanager}",
        needs=lambda c: (
            _binary("prometheus-alertmanager") or _file(c, "alertmanager/alertmanager.yml")
        ),
    ),
    Service(
        name="exporter",
        argv=lambda c: _py("runledger.cli", "exporter", "--port", str(c.ports.exporter)),
        ready_url=lambda c: f"http://127.0.0.1:{c.ports.exporter}/metrics",
        shows=lambda c: f"exporter          http://127.0.0.1:{c.ports.exporter}/metrics",
    ),
    Service(
        name="prometheus",
        argv=lambda c: [
            "prometheus",
            f"--config.file={_prometheus_config(c)}",
            f"--storage.tsdb.path={c.home / 'prometheus'}",
            f"--web.listen-address=127.0.0.1:{c.ports.prometheus}",
            "--storage.tsdb.retention.time=30d",
            "--enable-feature=exemplar-storage",
        ],
        ready_url=lambda c: f"http://127.0.0.1:{c.ports.prometheus}/-/ready",
        shows=lambda c: f"Prometheus        http://127.0.0.1:{c.ports.prometheus}",
        needs=lambda c: _binary("prometheus") or _file(c, "prometheus/prometheus.yml"),
    ),
    Service(
        name="quality-scheduler",
        argv=lambda c: _py("runledger.cli", "quality", "scheduler"),
        ready_url=lambda c: "",
        shows=lambda c: (
            "quality jobs      proof sampling, drift and retention on a schedule (APScheduler)"
        ),
        env=lambda c: {
            _env.QUALITY_CONFIG: os.environ.get(_env.QUALITY_CONFIG)
            or str(Path(__file__).with_name("quality.yml"))
        },
    ),
    Service(
        name="demo-pipeline",
        argv=lambda c: _py("runledger.demo.pipeline", "--url", c.control_url),
        ready_url=lambda c: "",
        shows=lambda c: "demo pipeline     a Coordinator driving agents for 3 tenants",
        env=lambda c: {
            _env.TOKEN: c.tokens["admin"],
            # No trace backend runs natively (Tempo is the compose path); say so explicitly.
            "OTEL_SDK_DISABLED": os.environ.get("OTEL_SDK_DISABLED", "true"),
        },
    ),
]
"""The stack's processes, started in order. Other components append their entries."""


def _webhook_token(ctx: Context) -> str:
    from runledger.alertmanager_config import webhook_token

    return webhook_token(ctx.home / "alert-webhook-token")


def _alertmanager_config(ctx: Context) -> Path:
    """The shipped alertmanager.yml wired to this stack's control service.

    The admin email goes through RUNLEDGER_SMTP_HOST when it is set; without it the admin
    route keeps only the banner webhook (no relay to send through).
    """
    from runledger.alertmanager_config import local_alertmanager_config

    _webhook_token(ctx)
    host = os.environ.get(_env.SMTP_HOST)
    smtp = (host, int(os.environ.get(_env.SMTP_PORT) or 25)) if host else None
    return local_alertmanager_config(
        ctx.root, ctx.home / "alertmanager-config", control_url=ctx.control_url,
        token_file=ctx.home / "alert-webhook-token", smtp=smtp,
    )  # fmt: skip


def _prometheus_config(ctx: Context) -> Path:
    from runledger.exporter import native_prometheus_config

    p = ctx.ports
    return native_prometheus_config(
        ctx.root, ctx.home / "prometheus-config", control=p.control, exporter=p.exporter,
        alertmanager=p.alertmanager, prometheus=p.prometheus,
    )  # fmt: skip


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_ports(ports: Ports) -> Ports:
    """Keep each wanted port, or take a free one when something else holds it.

    Debian's prometheus packages start their own system services on 9090 and 9093 where
    systemd runs; the stack then moves aside instead of failing.
    """
    chosen = {}
    for name, port in vars(ports).items():
        if _port_free(port):
            chosen[name] = port
            continue
        chosen[name] = free_port()
        print(f"port {port} ({name}) is in use; using {chosen[name]} instead")
    return Ports(**chosen)


def _binary(name: str) -> str | None:
    """Return why ``name`` cannot run, or None when it is on PATH."""
    if shutil.which(name):
        return None
    return f"{name} not found (`make up` installs the Debian package)"


def _file(ctx: Context, relative: str) -> str | None:
    """Return why the config file ``relative`` is missing, or None."""
    if (ctx.root / relative).is_file():
        return None
    return f"{relative} not found: run from the repository root"


def seed_demo(url: str, home: Path) -> dict[str, str]:
    """Create the demo tenants and tokens once; return the tokens (kept in tokens.json)."""
    path = home / "tokens.json"
    if path.exists():
        tokens: dict[str, str] = json.loads(path.read_text())
        return tokens
    tokens = {}
    with psycopg.connect(url) as conn:
        for tenant, cap in DEMO_TENANTS.items():
            create_tenant(conn, tenant, daily_cap_usd=cap, display_name=tenant.title())
            tokens[f"agent:{tenant}"] = create_token(
                conn, role="agent", label=f"demo agent {tenant}", tenant_id=tenant
            )
            tokens[f"owner:{tenant}"] = create_token(
                conn, role="owner", label=f"demo owner {tenant}", tenant_id=tenant
            )
        tokens["admin"] = create_token(conn, role="admin", label="demo admin", tenant_id=None)
    path.write_text(json.dumps(tokens, indent=2))
    path.chmod(0o600)
    return tokens


def _wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with status {proc.returncode}")
        try:
            if requests.get(url, timeout=1).status_code < 500:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f}s")


def _stop(procs: list[tuple[Service, subprocess.Popen[bytes]]]) -> None:
    """Stop the processes one by one, last started first.

    One by one, so that each can still reach what it depends on while it shuts down: the
    demo pipeline settles its budget leases and delivers its last events to the control
    service, which must not be stopping at the same time.
    """
    for _, proc in reversed(procs):
        stop_process(proc, grace=15)


def up(duration: float | None = None, ports: Ports | None = None) -> int:
    """Start the stack and block until interrupted (or ``duration`` seconds passed)."""
    home = state_dir()
    home.mkdir(parents=True, exist_ok=True)
    (home / "logs").mkdir(exist_ok=True)
    pid_file = home / "up.pid"
    if pid_file.exists():
        other = int(pid_file.read_text().strip() or 0)
        if other and _alive(other):
            print(f"runledger is already up (pid {other}); `make down` stops it", file=sys.stderr)
            return 1
    pid_file.write_text(str(os.getpid()))
    ports = _free_ports(ports or Ports())
    url = os.environ.get(_env.DATABASE_URL)
    server = None
    if not url:
        server = embedded_server(home / "pg")
        ensure_database(server.get_uri("postgres"), DATABASE_NAME)
        url = str(server.get_uri(DATABASE_NAME))
    applied = migrate(url)
    print(f"PostgreSQL ready; {len(applied)} migration(s) applied")
    first_run = not (home / "tokens.json").exists()
    ctx = Context(home, url, ports, seed_demo(url, home), Path.cwd())
    procs: list[tuple[Service, subprocess.Popen[bytes]]] = []
    stopping = {"now": False}

    def on_signal(signum: int, _frame: Any) -> None:
        stopping["now"] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    env = dict(os.environ, **{_env.DATABASE_URL: url, _env.HOME: str(home)})
    try:
        for svc in SERVICES:
            missing = svc.needs(ctx)
            if missing:
                print(f"  skipped {svc.name}: {missing}")
                continue
            log = (home / "logs" / f"{svc.name}.log").open("ab")
            proc = subprocess.Popen(
                svc.argv(ctx), env={**env, **svc.env(ctx)}, stdout=log, stderr=log
            )
            procs.append((svc, proc))
            ready = svc.ready_url(ctx)
            if ready:
                try:
                    _wait_ready(ready, proc)
                except RuntimeError as exc:
                    print(f"{svc.name} failed to start: {exc}; see {log.name}", file=sys.stderr)
                    return 1
        print("\nrunledger is up:")
        print(f"  console           {ctx.control_url}/  (log in with the admin token)")
        if first_run:
            print(f"  admin login token {ctx.tokens['admin']}  (shown once; kept in tokens.json)")
        for svc, _ in procs:
            print(f"  {svc.shows(ctx)}")
        print(f"  tokens            {home / 'tokens.json'} (admin, agent and owner per tenant)")
        print(f"  logs              {home / 'logs'}/")
        print("Stop with Ctrl-C or `make down`.", flush=True)
        deadline = time.monotonic() + duration if duration else None
        while not stopping["now"]:
            if deadline and time.monotonic() > deadline:
                break
            for svc, proc in procs:
                if proc.poll() is not None:
                    print(f"{svc.name} exited with {proc.returncode}; stopping", file=sys.stderr)
                    return 1
            time.sleep(0.5)
        return 0
    finally:
        _stop(procs)
        if server is not None:
            stop_embedded(home / "pg")
        pid_file.unlink(missing_ok=True)
        print("runledger stopped")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def down() -> int:
    """Stop a running ``runledger up`` (by the PID it recorded)."""
    pid_file = state_dir() / "up.pid"
    if not pid_file.exists():
        print("runledger is not up")
        return 0
    pid = int(pid_file.read_text().strip() or 0)
    if not pid or not _alive(pid):
        pid_file.unlink(missing_ok=True)
        print("runledger is not up (stale pid file removed)")
        return 0
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    print("runledger stopped" if not _alive(pid) else f"pid {pid} did not stop within 30s")
    return 0 if not _alive(pid) else 1

"""The CSV export streams: 100k runs through a real control service in bounded memory."""

from __future__ import annotations

import csv
import io
import threading
import time
from typing import Any

import psutil
import requests

from _support import ControlService
from runledger.store.console import EXPORT_COLUMNS

ROWS = 100_000
MAX_GROWTH_MB = 30
"""Loading the 100k rows instead of streaming them takes well over 100 MB."""


def _seed(sql: Any, n: int) -> None:
    # Volume for the measurement: runs rows as ingest would leave them (ingest itself is
    # tested elsewhere; pushing 100k runs through it here would only slow this test down).
    sql(
        "INSERT INTO runs (run_id, tenant_id, project_id, phase, role, playbook, status,"
        " status_at, started_at, finished_at, tokens_in, tokens_out, cost_usd, model, trace_id,"
        " artifact_path, artifact_version)"
        " SELECT 'run-' || i, CASE WHEN i %% 2 = 0 THEN 'acme' ELSE 'other' END,"
        " 'proj-' || (i %% 500),"
        " 'build', 'implementer', 'landing', 'succeeded', now() - make_interval(secs => i),"
        " now() - make_interval(secs => i + 3), now() - make_interval(secs => i), 1000 + i, 200,"
        " (i %% 1000) / 1000.0, 'gpt-4.1', md5(i::text), 'site/page-' || i || '.html', 1"
        " FROM generate_series(1, %s) i",
        n,
    )


def _sample_peak(pids: list[int], stop: threading.Event, peak: dict[str, int]) -> None:
    procs = [psutil.Process(p) for p in pids]
    while not stop.is_set():
        for proc in procs:
            try:
                peak[str(proc.pid)] = max(peak.get(str(proc.pid), 0), proc.memory_info().rss)
            except psutil.NoSuchProcess:
                pass
        time.sleep(0.02)


def test_csv_export_of_100k_runs_streams_in_bounded_memory(
    control: ControlService, make_tenant: Any, make_token: Any, sql: Any
) -> None:
    make_tenant("acme")
    make_tenant("other")
    _seed(sql, ROWS)
    token = make_token("finance")
    assert control.proc is not None
    workers = [c.pid for c in psutil.Process(control.proc.pid).children(recursive=True)]
    # Warm every worker (imports, pool) so the baseline is the steady state.
    for _ in range(4):
        requests.get(f"{control.url}/v1/export/runs.csv?tenant=acme&from=2000-01-01&to=2000-01-02",
                     headers={"Authorization": f"Bearer {token}"}, timeout=30)  # fmt: skip
    base = {str(p): psutil.Process(p).memory_info().rss for p in workers}
    peak: dict[str, int] = {}
    stop = threading.Event()
    sampler = threading.Thread(target=_sample_peak, args=(workers, stop, peak), daemon=True)
    sampler.start()
    size = 0
    rows = 0
    first = None
    with requests.get(f"{control.url}/v1/export/runs.csv", stream=True, timeout=120,
                      headers={"Authorization": f"Bearer {token}"}) as resp:  # fmt: skip
        assert resp.status_code == 200 and resp.headers["Content-Type"].startswith("text/csv")
        assert "Content-Length" not in resp.headers  # streamed, not buffered
        tail = ""
        for chunk in resp.iter_content(chunk_size=1 << 16, decode_unicode=True):
            size += len(chunk)
            text = tail + chunk
            lines = text.split("\n")
            tail = lines.pop()
            if first is None and lines:
                first = lines[0]
            rows += len(lines)
    first = (first or "").rstrip("\r")
    stop.set()
    sampler.join()
    growth_mb = max(peak[p] - base[p] for p in peak) / 1e6
    assert first == ",".join(EXPORT_COLUMNS)
    assert rows == ROWS + 1  # the header and every run
    assert size > 15e6
    print(f"peak worker growth {growth_mb:.1f} MB for {size / 1e6:.1f} MB of CSV")
    assert growth_mb < MAX_GROWTH_MB, (
        f"a worker grew {growth_mb:.1f} MB while streaming {size / 1e6:.1f} MB of CSV"
    )


def test_export_filters_and_refusals(client: Any, make_tenant: Any, make_token: Any,
                                     sql: Any) -> None:  # fmt: skip
    make_tenant("acme")
    make_tenant("other")
    _seed(sql, 50)
    headers = {"Authorization": f"Bearer {make_token('admin')}"}
    text = client.get("/v1/export/runs.csv?tenant=acme&model=gpt-4.1&phase=build",
                      headers=headers).get_data(as_text=True)  # fmt: skip
    body = list(csv.DictReader(io.StringIO(text)))
    assert len(body) == 25 and {r["tenant_id"] for r in body} == {"acme"}
    assert (
        client.get("/v1/export/runs.csv?model=none", headers=headers)
        .get_data(as_text=True)
        .count("\n")
        == 1
    )
    bad = client.get("/v1/export/runs.csv?from=yesterday", headers=headers)
    assert bad.status_code == 400 and bad.get_json()["fields"][0]["field"] == "from"
    unknown = client.get("/v1/export/runs.csv?colour=red", headers=headers)
    assert unknown.status_code == 400 and unknown.get_json()["fields"][0]["field"] == "colour"
    backwards = client.get("/v1/export/runs.csv?from=2026-02-02&to=2026-01-01", headers=headers)
    assert (
        backwards.status_code == 400 and "from must be before to" in backwards.get_json()["error"]
    )
    finance = {"Authorization": f"Bearer {make_token('finance')}"}
    rows = list(
        csv.DictReader(
            io.StringIO(
                client.get("/v1/export/runs.csv?tenant=acme", headers=finance).get_data(
                    as_text=True
                )
            )
        )
    )
    assert len(rows) == 25 and rows[0]["cost_usd"] and rows[0]["tokens_in"]
    assert {(r["artifact_path"], r["artifact_version"]) for r in rows} == {("", "")}
    assert all(r["artifact_path"].startswith("site/") for r in body)  # others see artifacts
    agent = {"Authorization": f"Bearer {make_token('agent', 'acme')}"}
    assert client.get("/v1/export/runs.csv", headers=agent).status_code == 403

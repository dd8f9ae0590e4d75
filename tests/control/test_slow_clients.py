"""Slow clients cannot take the control service down, natively started or behind the
production proxy: clients that send a request a byte at a time hold no thread, so /healthz
and ingest keep answering."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from _support import event, free_port, local_nginx_config, stop_process, wait_http
from runledger._buffered_worker import request_end

TRICKLERS = 16
SECONDS = 14.0
PROBE_LIMIT = 3.0  # a starved server never answers: the tricklers hold it for all SECONDS


def _trickle(port: int, request: bytes, stop: threading.Event, sent: list[int]) -> None:
    """Send ``request`` one byte every second until ``stop``; reconnect when dropped."""
    while not stop.is_set():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                for byte in request:
                    if stop.wait(1.0):
                        return
                    sock.sendall(bytes([byte]))
                    sent.append(1)
        except OSError:
            stop.wait(0.2)


@pytest.fixture(params=["native", "nginx"])
def front(request: pytest.FixtureRequest, control_server: str, tmp_path: Path) -> Iterator[str]:
    """The control service's URL as clients reach it: directly, or through nginx.conf."""
    if request.param == "native":
        yield control_server
        return
    nginx = shutil.which("nginx")
    assert nginx, "nginx is missing: `make test` installs it (Debian package)"
    port = free_port()
    upstream = int(control_server.rsplit(":", 1)[1])
    conf = local_nginx_config(tmp_path, listen=port, upstream=upstream)
    proc = subprocess.Popen(
        [nginx, "-c", str(conf), "-e", "stderr", "-g", f"daemon off; pid {tmp_path}/nginx.pid;"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", proc=proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(proc)


@pytest.fixture
def tricklers(front: str) -> Iterator[Callable[[], list[int]]]:
    port = int(front.rsplit(":", 1)[1])
    body = b'{"events": []}' * 100
    requests_ = [
        b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body) + body,  # a slow head, then a slow body
        b"POST /v1/events HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"400\r\n" + b" " * 1024 + b"\r\n0\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"y" * 200 + b"\r\n\r\n",
    ]
    stop = threading.Event()
    sent: list[int] = []
    threads = [
        threading.Thread(
            target=_trickle, args=(port, requests_[i % len(requests_)], stop, sent), daemon=True
        )
        for i in range(TRICKLERS)
    ]
    for t in threads:
        t.start()
    yield lambda: sent
    stop.set()
    for t in threads:
        t.join(5)


def test_health_and_ingest_answer_promptly_while_clients_trickle_bytes(
    front: str,
    tricklers: Callable[[], list[int]],
    make_tenant: Callable[..., str],
    make_token: Callable[..., str],
) -> None:
    make_tenant("acme")
    token = make_token("agent", "acme")
    time.sleep(2.5)  # every trickler has sent its first bytes: gunicorn committed its threads
    probes: list[float] = []
    failures: list[str] = []
    deadline = time.monotonic() + SECONDS
    while time.monotonic() < deadline:
        started = time.monotonic()
        try:
            health = requests.get(front + "/healthz", timeout=PROBE_LIMIT)
            ingest = requests.post(
                front + "/v1/events",
                json={"events": [event("run_queued", run_id=f"run-{len(probes)}")]},
                headers={"Authorization": f"Bearer {token}"},
                timeout=PROBE_LIMIT,
            )
            assert (health.status_code, ingest.status_code) == (200, 200), ingest.text
        except requests.RequestException as exc:
            failures.append(f"{time.monotonic() - deadline + SECONDS:.1f}s: {exc}")
        probes.append(time.monotonic() - started)
        time.sleep(0.25)
    assert len(tricklers()) >= TRICKLERS * 8  # the slow clients kept sending throughout
    assert failures == []
    assert max(probes) < 2 * PROBE_LIMIT


@pytest.mark.parametrize(
    ("data", "end"),
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\n", None),
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 27),
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /next", 27),  # pipelined: the first one
        (b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nabc", None),
        (b"POST / HTTP/1.1\r\ncontent-length: 5\r\n\r\nabcdeX", 43),
        (b"POST / HTTP/1.1\r\nContent-Length: five\r\n\r\nab", -1),  # for the parser to refuse
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n", None),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", -1),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-T: 1\r\n", None),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-T: 1\r\n\r\n", -1),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", -1),
    ],
)
def test_a_request_is_whole_when_its_head_and_body_are_in(data: bytes, end: int | None) -> None:
    """``end`` -1: the whole buffer."""
    assert request_end(data) == (len(data) if end == -1 else end)

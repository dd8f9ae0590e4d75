"""gunicorn's threaded worker, serving a request on a thread only once it arrived whole.

gunicorn's ``gthread`` worker gives a connection a thread at its first byte and reads the
request with blocking reads and no deadline (it has no header or body read timeout), so a
few clients sending a byte at a time hold every thread and the service stops answering.
Here a connection's bytes are read without blocking as they arrive, the poller waiting in
between (no thread held), and a thread runs the request once its head and body are in.
A request that stalls for ``keepalive`` seconds or is not in whole within ``read_timeout``
seconds is dropped. In production a buffering reverse proxy does the same in front
(docs/operations.md).
"""

from __future__ import annotations

import time
from typing import Any

from gunicorn.workers import gthread

__all__ = ["SUPPORTED", "BufferedThreadWorker", "request_end"]

SUPPORTED = hasattr(gthread, "_DEFER")
"""Whether this gunicorn lets a thread hand a connection back to its poller (gunicorn 27 does)."""

READ_TIMEOUT = 30.0
"""Seconds a client has to send a whole request (head and body)."""
MAX_BUFFERED = 8 * 1024 * 1024 + 64 * 1024
"""Bytes held per connection: the control service's body limit and a head; a longer
request goes to a thread as it is, which answers 413 or 431 without reading it all."""


def request_end(buf: bytes | bytearray) -> int | None:
    """Return where the first HTTP/1 request in ``buf`` ends, or None while incomplete.

    A head that does not parse ends the request where the buffer ends: the thread's
    parser answers it.
    """
    head_end = buf.find(b"\r\n\r\n")
    if head_end < 0:
        return None
    body = head_end + 4
    length, chunked = 0, False
    for line in buf[:head_end].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            try:
                length = int(value.strip())
            except ValueError:
                return len(buf)
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
    if chunked:
        return _chunked_end(buf, body)
    return body + length if len(buf) >= body + length else None


def _chunked_end(buf: bytes | bytearray, pos: int) -> int | None:
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None
        try:
            size = int(buf[pos:eol].split(b";", 1)[0], 16)
        except ValueError:
            return len(buf)
        if size == 0:
            end = buf.find(b"\r\n\r\n", eol)  # after the trailers, if any
            return end + 4 if end >= 0 else None
        pos = eol + 2 + size + 2
        if pos > len(buf):
            return None


class BufferedThreadWorker(gthread.ThreadWorker):
    """A ``gthread`` worker whose threads serve only requests that have arrived whole."""

    read_timeout = READ_TIMEOUT
    max_buffered = MAX_BUFFERED

    def handle(self, conn: Any) -> Any:
        if self.cfg.is_ssl or getattr(conn, "is_http2", False):
            return super().handle(conn)
        buffered: bytearray | None = getattr(conn, "runledger_buffer", None)
        if buffered is None:
            buffered = bytearray()
            if conn.parser is not None:  # a kept-alive connection: what was read ahead
                buffered += conn.parser.unreader.take_buffered()
            conn.runledger_buffer = buffered
            conn.runledger_deadline = time.monotonic() + self.read_timeout
        conn.sock.setblocking(False)
        try:
            while len(buffered) <= self.max_buffered:
                chunk = conn.sock.recv(65536)
                if not chunk:
                    return False  # the client went away
                buffered += chunk
        except BlockingIOError:
            pass
        except OSError:
            return False
        if request_end(buffered) is None and len(buffered) <= self.max_buffered:
            if time.monotonic() > conn.runledger_deadline:
                self.log.info("dropped a request from %s: not in whole after %gs",
                              conn.client, self.read_timeout)  # fmt: skip
                return False
            conn.data_ready = False
            return gthread._DEFER  # the poller waits for more; no thread is held
        conn.runledger_buffer = None
        conn.sock.setblocking(True)
        conn.init()
        conn.parser.unreader.unread(bytes(buffered))
        conn.data_ready = True
        return super().handle(conn)

"""The background sender: spooled records to the ledger, in batches, with backoff."""

from __future__ import annotations

import logging
import re
import threading
from typing import Any

import orjson
import requests
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    wait_exponential_jitter,
)

from runledger.sdk._spool import SYNC_INTERVAL, Record, Spool

__all__ = ["Sender"]

log = logging.getLogger("runledger.sdk")

ENDPOINTS = {"event": ("/v1/events", b"events"), "prompt_audit": ("/v1/prompt-audit", b"records")}
MAX_BATCH = 500
MAX_BATCH_BYTES = 4 * 1024 * 1024  # half the control service's request limit
_INDEXED = re.compile(r"^(?:events|records)\[(\d+)\]")


class _Transient(Exception):
    """Delivery failed in a way that a later attempt may fix."""


class _Stopped(Exception):
    """The sender was asked to stop while waiting to retry."""


class Sender(threading.Thread):
    """Drain the spool into the control service; never drop, never resend forever.

    Args:
        spool: the spool to drain.
        url: base URL of the control service; None keeps everything in the spool.
        token: bearer token.
        session: an HTTP session (tests inject one).
        request_timeout: (connect, read) seconds for one request.
    """

    def __init__(
        self,
        spool: Spool,
        url: str | None,
        token: str | None,
        *,
        session: requests.Session | None = None,
        request_timeout: tuple[float, float] = (3.05, 30.0),
        max_backoff: float = 30.0,
    ) -> None:
        super().__init__(name="runledger-sender", daemon=True)
        self.spool = spool
        self.url = url.rstrip("/") if url else None
        self.session = session or requests.Session()
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"
        self.request_timeout = request_timeout
        self.max_backoff = max_backoff
        self.batch_limit = MAX_BATCH
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._progress = threading.Condition()
        self.last_error: str | None = None
        self._retrying = Retrying(
            wait=wait_exponential_jitter(multiplier=0.2, max=max_backoff, jitter=0.5),
            retry=retry_if_exception_type(_Transient),
            sleep=self._sleep,
            before_sleep=self._before_sleep,
            reraise=True,
        )

    # -- control from other threads -----------------------------------------------------------

    def wake(self) -> None:
        """Deliver now: cut short any wait, including a backoff."""
        self._wake.set()

    def stop(self, timeout: float | None = None) -> None:
        """Stop after the current request; spooled records stay for the next process."""
        self._stopping.set()
        self._wake.set()
        if self.is_alive():
            self.join(timeout)

    def wait_progress(self, timeout: float) -> None:
        """Block until a batch was handled or ``timeout`` passed."""
        with self._progress:
            self._progress.wait(timeout)

    # -- the thread -------------------------------------------------------------------------

    def run(self) -> None:
        if self.url is None:
            log.warning(
                "RUNLEDGER_URL is not set: runledger events stay in the spool %s until a "
                "process with RUNLEDGER_URL opens it",
                self.spool.path,
            )
        while not self._stopping.is_set():
            self._wake.wait(SYNC_INTERVAL)
            self._wake.clear()
            try:
                self.spool.sync()
                if self.url is not None:
                    self._drain()
            except _Stopped:
                break
            except Exception:  # the sender must outlive any bug in one batch
                log.exception("runledger sender: unexpected error; retrying")
                self._sleep(1.0)
        try:
            self.spool.sync()
        except Exception:
            log.exception("runledger sender: final spool sync failed")

    def _drain(self) -> None:
        while not self._stopping.is_set():
            batch: list[Record] = []
            for attempt in self._retrying:
                with attempt:
                    batch = self.spool.batch(self.batch_limit, MAX_BATCH_BYTES)
                    if batch:
                        self._deliver(batch)
            if not batch:
                return
            with self._progress:
                self._progress.notify_all()

    def _sleep(self, seconds: float) -> None:
        self._wake.wait(seconds)
        if self._stopping.is_set():
            raise _Stopped
        self._wake.clear()

    def _before_sleep(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        self.last_error = str(exc)
        wait = state.next_action.sleep if state.next_action else 0.0
        log.warning(
            "runledger: delivery failed (%s); %d records wait in the spool, retry %d in %.1fs",
            exc,
            self.spool.pending(),
            state.attempt_number,
            wait,
        )
        with self._progress:
            self._progress.notify_all()

    # -- one request ------------------------------------------------------------------------

    def _deliver(self, batch: list[Record]) -> None:
        path, key = ENDPOINTS[batch[0].kind]
        body = b'{"' + key + b'":[' + b",".join(r.body for r in batch) + b"]}"
        try:
            resp = self.session.post(
                self.url + path,  # type: ignore[operator]
                data=body,
                headers={"Content-Type": "application/json"},
                timeout=self.request_timeout,
            )
        except requests.RequestException as exc:
            self.spool.note_attempt([r.id for r in batch])
            raise _Transient(f"{type(exc).__name__}: {exc}") from exc
        if resp.status_code == 200:
            self._settle(batch, resp.json())
            return
        message = _error_message(resp)
        if resp.status_code in (408, 425, 429) or resp.status_code >= 500:
            self.spool.note_attempt([r.id for r in batch])
            raise _Transient(f"HTTP {resp.status_code}: {message}")
        if resp.status_code == 401:
            log.error(
                "runledger: the ledger refused the token (%s); check RUNLEDGER_TOKEN", message
            )
            raise _Transient(f"HTTP 401: {message}")
        match = _INDEXED.match(message)
        if match and int(match.group(1)) < len(batch):
            # One event made the ledger refuse the whole batch: it is the poison, not the rest.
            bad = batch[int(match.group(1))]
            self._poison([(bad, [{"field": "(request)", "message": message}])])
            return
        if resp.status_code == 413 and len(batch) > 1:
            self.batch_limit = max(1, len(batch) // 2)
            raise _Transient(f"HTTP 413: {message}; retrying with {self.batch_limit} per batch")
        if len(batch) > 1:
            self.batch_limit = 1  # find the record the ledger objects to
            raise _Transient(f"HTTP {resp.status_code}: {message}; retrying one by one")
        if resp.status_code == 403:
            log.error("runledger: the ledger refused the request: %s", message)
            raise _Transient(f"HTTP 403: {message}")
        self._poison([(batch[0], [{"field": "(request)", "message": message}])])

    def _settle(self, batch: list[Record], answer: dict[str, Any]) -> None:
        results = answer.get("results") or []
        if len(results) != len(batch):
            raise _Transient(f"the ledger answered {len(results)} results for {len(batch)}")
        done, poison = [], []
        for record, result in zip(batch, results, strict=True):
            status = result.get("status")
            if status in ("accepted", "duplicate"):
                done.append(record.id)
            else:
                poison.append((record, result.get("errors") or [{"message": str(result)}]))
        self.spool.ack(done)
        self._poison(poison)
        self.batch_limit = MAX_BATCH
        self.last_error = None

    def _poison(self, items: list[tuple[Record, list[Any]]]) -> None:
        if not items:
            return
        for record, errors in items:
            log.error(
                "runledger: the ledger rejected a %s for good; moved to the spool's dead_letter "
                "table (id %d): %s",
                record.kind,
                record.id,
                "; ".join(f"{e.get('field', '')}: {e.get('message', '')}" for e in errors),
            )
        self.spool.dead_letter([(r.id, orjson.dumps(e).decode()) for r, e in items])


def _error_message(resp: requests.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return resp.text[:200] or resp.reason
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return str(body["error"])
    return str(body)[:200]

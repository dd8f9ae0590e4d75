"""The background sender: spooled records to the ledger, in batches, with backoff.

A batch the ledger fails on (a 5xx other than 502, 503 and 504, which say the service or
the way to it is down) or refuses without naming a record is split in halves until the
record that makes it fail is alone: about ``2 * log2(n)`` requests for a batch of ``n``. That
record becomes a *suspect*: it is sent alone, apart from the others, which are delivered.
A suspect is dead-lettered with the ledger's answer when the ledger failed on it alone
``STRIKES`` times in a row, each time after accepting other records since the one before,
so a failing service (which fails on everything and accepts nothing) never dead-letters
anything: it is retried with backoff like a refused connection.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from typing import Any

import orjson
import requests
from opentelemetry import metrics
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    wait_exponential,
    wait_random,
)

from runledger.redact import Redactor, default_redactor
from runledger.sdk._spool import SYNC_INTERVAL, Record, Spool, describe_record

__all__ = ["Sender"]

log = logging.getLogger("runledger.sdk")

ENDPOINTS = {
    "event": ("/v1/events", b"events"),
    "prompt_audit": ("/v1/prompt-audit", b"records"),
    "artifact": ("/v1/artifacts", b"records"),
}
MAX_BATCH = 500
MAX_BATCH_BYTES = 4 * 1024 * 1024  # half the control service's request limit
STRIKES = 3
"""Failures of the ledger on one record alone, with others accepted in between, before
the record is dead-lettered."""
ANSWER_LIMIT = 2000
"""Characters of the ledger's (redacted) answer kept with a dead letter."""
MESSAGE_LIMIT = 500
"""Characters of the ledger's (redacted) error message kept in logs and 4xx dead letters."""
_INDEXED = re.compile(r"^(?:events|records)\[(\d+)\]")
_DOWN = frozenset((408, 425, 429, 502, 503, 504))
"""Answers about the service or the way to it, not about the records: retried as they are."""


class _Transient(Exception):
    """Delivery failed in a way that a later attempt may fix."""

    def __init__(self, message: str, retry_after: float = 0.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


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
        max_backoff: the longest wait between two attempts, in seconds.
        redactor: redacts the ledger's answers kept with dead letters and logged.
        meter_provider: where the dead-letter counter goes (default: the global one).
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
        redactor: Redactor | None = None,
        meter_provider: metrics.MeterProvider | None = None,
    ) -> None:
        super().__init__(name="runledger-sender", daemon=True)
        self.spool = spool
        self.url = url.rstrip("/") if url else None
        self.session = session or requests.Session()
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"
        self.request_timeout = request_timeout
        self.max_backoff = max_backoff
        self.redactor = redactor or default_redactor()
        self.batch_limit = MAX_BATCH
        self._dead_letter_counter = metrics.get_meter(
            "runledger.sdk", meter_provider=meter_provider
        ).create_counter(
            "runledger.sdk.dead_letters",
            unit="{record}",
            description="Records the SDK moved to its spool's dead-letter table.",
        )
        # Splitting: the last record id of the batch being split, None when not splitting.
        self._split_until: int | None = None
        # Records acknowledged so far: the evidence that the ledger works.
        self._accepted = 0
        # Per suspect: self._accepted at its last failure alone.
        self._marks: dict[int, int] = {}
        # self._accepted when the latest suspect was found: one per sign of a working ledger.
        self._isolated_at: int | None = None
        self._idle_retry_at = 0.0
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._progress = threading.Condition()
        self.last_error: str | None = None
        # Exponential from 0.2 s plus up to 0.5 s of jitter, capped: built from waits every
        # tenacity since 8.2 has (wait_exponential_jitter's arguments changed in 9.2).
        exponential = wait_exponential(multiplier=0.2, max=max_backoff)
        jitter = wait_random(0, 0.5)

        def backoff(state: RetryCallState) -> float:
            return float(min(exponential(state) + jitter(state), max_backoff))

        self._retrying = Retrying(
            wait=lambda state: max(backoff(state), _retry_after(state, max_backoff)),
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
            sent = False
            for attempt in self._retrying:
                with attempt:
                    sent = self._step()
            if not sent:
                return
            with self._progress:
                self._progress.notify_all()

    def _step(self) -> bool:
        """Send one request: a due suspect alone, else the next batch; False if none."""
        suspects = self.spool.suspects()
        for record, _strikes in suspects:
            if self._accepted > self._marks.get(record.id, 0):
                self._deliver([record])  # the ledger accepted others since it failed on it
                return True
        batch = self.spool.batch(self.batch_limit, MAX_BATCH_BYTES)
        if batch:
            self._deliver(batch)
            return True
        if suspects and time.monotonic() >= self._idle_retry_at:
            # Only suspects wait: try the oldest now and then (the ledger may be fixed),
            # without the backoff that would hold back the next records.
            self._idle_retry_at = time.monotonic() + self.max_backoff
            try:
                self._deliver([suspects[0][0]])
            except _Transient as exc:
                self.last_error = str(exc)
                return False
            return True
        return False

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
        message = self.redactor.text(_error_message(resp), limit=MESSAGE_LIMIT)
        status = resp.status_code
        if status in _DOWN:
            self.spool.note_attempt([r.id for r in batch])
            raise _Transient(f"HTTP {status}: {message}", _seconds(resp.headers.get("Retry-After")))
        if status == 401:
            log.error(
                "runledger: the ledger refused the token (%s); check RUNLEDGER_TOKEN", message
            )
            raise _Transient(f"HTTP 401: {message}")
        match = _INDEXED.match(message)
        if status < 500 and match and int(match.group(1)) < len(batch):
            # One event made the ledger refuse the whole batch: it is the poison, not the rest.
            bad = batch[int(match.group(1))]
            self._poison(bad, [{"field": "(request)", "message": message}])
            return
        if len(batch) > 1:
            self.spool.note_attempt([r.id for r in batch])
            self._split(batch)
            raise _Transient(
                f"HTTP {status}: {message}; retrying in batches of {self.batch_limit} to find "
                "the record it fails on"
            )
        if status == 403:
            log.error("runledger: the ledger refused the request: %s", message)
            raise _Transient(f"HTTP 403: {message}")
        if status < 500:
            self._poison(batch[0], [{"field": "(request)", "message": message}])
            return
        self._failed_alone(batch[0], status, resp.text)

    def _split(self, batch: list[Record]) -> None:
        """Send the first half of a failed batch next, then the rest in halves again."""
        self.batch_limit = max(1, len(batch) // 2)
        if self._split_until is None:
            self._split_until = batch[-1].id

    def _stop_splitting(self) -> None:
        self.batch_limit = MAX_BATCH
        self._split_until = None

    def _failed_alone(self, record: Record, status: int, text: str) -> None:
        """Count a 5xx for one record sent alone; dead-letter it at ``STRIKES``."""
        answer = self.redactor.text(text or "(empty body)", limit=ANSWER_LIMIT)
        what = _describe(record)
        self.spool.note_attempt([record.id])
        self._stop_splitting()
        current = {r.id: n for r, n in self.spool.suspects()}.get(record.id, 0)
        if current == 0:
            if self._isolated_at == self._accepted:
                # Nothing was accepted since the last suspect was found: the ledger may be
                # failing on everything. Retry; do not blame this record yet.
                raise _Transient(f"HTTP {status} for {what}: {answer}")
            self._isolated_at = self._accepted
            strikes = self.spool.strike(record.id)
        elif self._accepted > self._marks.get(record.id, 0):
            strikes = self.spool.strike(record.id)  # others were accepted since its last failure
        else:
            strikes = current
        self._marks[record.id] = self._accepted
        if strikes < STRIKES:
            raise _Transient(
                f"HTTP {status} for {what} sent alone ({strikes} of {STRIKES} with other "
                f"records accepted in between): {answer}"
            )
        self._poison(
            record,
            [{"field": "(response)", "status": status, "message": answer}],
            why=f"the ledger answered HTTP {status} for it {STRIKES} times in a row while it "
            "accepted other records",
        )

    def _settle(self, batch: list[Record], answer: dict[str, Any]) -> None:
        results = answer.get("results") or []
        if len(results) != len(batch):
            raise _Transient(f"the ledger answered {len(results)} results for {len(batch)}")
        done = []
        for record, result in zip(batch, results, strict=True):
            status = result.get("status")
            if status in ("accepted", "duplicate"):
                done.append(record.id)
            else:
                self._poison(record, result.get("errors") or [{"message": str(result)}])
        self.spool.ack(done)
        for row_id in done:
            self._marks.pop(row_id, None)
        self._accepted += len(done)
        if self._split_until is None or batch[-1].id >= self._split_until:
            self._stop_splitting()
        self.last_error = None

    def _poison(self, record: Record, errors: list[Any], why: str | None = None) -> None:
        """Move ``record`` to the dead-letter table with the ledger's answer, count and log it."""
        detail = "; ".join(
            f"{e.get('field', '')}: {e.get('message', '')}" for e in errors if isinstance(e, dict)
        )
        if why is None:
            log.error(
                "runledger: the ledger rejected %s for good; moved to the spool's dead_letter "
                "table (id %d): %s",
                _describe(record), record.id, detail,
            )  # fmt: skip
        else:
            log.warning(
                "runledger: dead-lettered %s (spool id %d): %s; answer: %s. Resend it with "
                "`runledger spool resend %s` once the ledger is fixed",
                _describe(record), record.id, why, detail,
                describe_record(record.kind, record.body)["record_id"] or "--all",
            )  # fmt: skip
        self.spool.dead_letter([(record.id, orjson.dumps(errors).decode())])
        self._marks.pop(record.id, None)
        self._dead_letter_counter.add(1, {"kind": record.kind})


def _describe(record: Record) -> str:
    info = describe_record(record.kind, record.body)
    return f"{info['type']} {info['record_id'] or '(no id)'}"


def _seconds(value: str | None) -> float:
    """Return a Retry-After header's delay in seconds (0 for a date or nothing)."""
    try:
        return max(0.0, float(value)) if value else 0.0
    except ValueError:
        return 0.0


def _retry_after(state: RetryCallState, cap: float) -> float:
    exc = state.outcome.exception() if state.outcome else None
    return min(cap, exc.retry_after) if isinstance(exc, _Transient) else 0.0


def _error_message(resp: requests.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return resp.text or resp.reason
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return str(body["error"])
    return str(body)

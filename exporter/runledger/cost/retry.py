"""Retries for model calls: classify errors, back off exponentially with jitter, and stop
calling a failing model through a circuit breaker per model.

Retryable: timeouts, connection errors, rate limits (429), 408 and 5xx answers.
Not retryable: authentication and permission errors, invalid requests (4xx), and caps.
Backoff uses tenacity; the breakers are pybreaker's (thread-safe, listeners, and shared
storage available if a fleet must share breaker state).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pybreaker
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_random_exponential,
)

__all__ = [
    "BreakerBoard",
    "CircuitOpen",
    "ErrorClass",
    "RetryPolicy",
    "call_with_retries",
    "classify",
]

T = TypeVar("T")

_RETRYABLE_NAMES = frozenset({
    "timeout", "timeouterror", "readtimeout", "connecttimeout", "apitimeouterror",
    "connectionerror", "apiconnectionerror", "remotedisconnected", "ratelimiterror",
    "ratelimitexceeded", "toomanyrequests", "internalservererror", "serviceunavailableerror",
    "serviceunavailable", "overloadederror", "apistatuserror5xx", "badgateway",
    "gatewaytimeout", "resourceexhausted", "deadlineexceeded", "unavailable",
})  # fmt: skip
_FATAL_NAMES = frozenset({
    "authenticationerror", "permissiondeniederror", "permissiondenied", "unauthenticated",
    "badrequesterror", "invalidrequesterror", "notfounderror", "unprocessableentityerror",
    "invalidargument", "conflicterror", "contentfiltererror",
})  # fmt: skip


@dataclass(frozen=True)
class ErrorClass:
    """Whether an error is worth retrying, and a short reason for logs and events."""

    retryable: bool
    reason: str


def _status_of(exc: BaseException) -> int | None:
    for obj in (exc, getattr(exc, "response", None)):
        if obj is None:
            continue
        for attr in ("status_code", "status", "http_status", "code"):
            value = getattr(obj, attr, None)
            if isinstance(value, int) and 100 <= value <= 599:
                return value
    return None


def classify(exc: BaseException) -> ErrorClass:
    """Classify a model-call error as retryable or not."""
    from runledger.cost.lease import BudgetError
    from runledger.cost.policy import RunCapHit
    from runledger.cost.pricing import PricingError

    if isinstance(exc, BudgetError | RunCapHit | PricingError | CircuitOpen):
        return ErrorClass(False, f"{type(exc).__name__}: spending or routing refused")
    status = _status_of(exc)
    if status is not None:
        if status == 429:
            return ErrorClass(True, "rate limited (429)")
        if status == 408:
            return ErrorClass(True, "request timeout (408)")
        if status >= 500:
            return ErrorClass(True, f"server error ({status})")
        if status in (401, 403):
            return ErrorClass(False, f"authentication or permission error ({status})")
        if 400 <= status < 500:
            return ErrorClass(False, f"invalid request ({status})")
    if isinstance(exc, TimeoutError | socket.timeout):
        return ErrorClass(True, "timeout")
    if isinstance(exc, ConnectionError):
        return ErrorClass(True, "connection error")
    name = type(exc).__name__.lower()
    if name in _FATAL_NAMES or "auth" in name:
        return ErrorClass(False, f"not retryable: {type(exc).__name__}")
    if name in _RETRYABLE_NAMES or "timeout" in name or "ratelimit" in name:
        return ErrorClass(True, f"transient: {type(exc).__name__}")
    return ErrorClass(False, f"unclassified error: {type(exc).__name__}")


class CircuitOpen(RuntimeError):
    """The model's circuit breaker is open: it failed repeatedly; route elsewhere."""

    def __init__(self, model: str, reset_s: float) -> None:
        self.model = model
        super().__init__(
            f"circuit open for model {model!r}: too many consecutive transient failures; "
            f"calls resume after {reset_s:g}s (route to the next model in the role's chain)"
        )


class BreakerBoard:
    """One circuit breaker per model.

    Only retryable (transient) errors count against a model: an invalid request or a bad
    key says nothing about the model's health.

    Args:
        fail_max: consecutive transient failures that open a model's circuit.
        reset_s: seconds before a half-open trial call is let through.
    """

    def __init__(self, *, fail_max: int = 5, reset_s: float = 30.0) -> None:
        self.fail_max = fail_max
        self.reset_s = reset_s
        self._breakers: dict[str, pybreaker.CircuitBreaker] = {}
        self._lock = threading.Lock()

    def breaker(self, model: str) -> pybreaker.CircuitBreaker:
        """Return the breaker of ``model``, creating it closed."""
        with self._lock:
            b = self._breakers.get(model)
            if b is None:
                b = pybreaker.CircuitBreaker(
                    fail_max=self.fail_max,
                    reset_timeout=self.reset_s,
                    exclude=[lambda e: not classify(e).retryable],
                    name=model,
                    throw_new_error_on_trip=False,
                )
                self._breakers[model] = b
            return b

    def is_open(self, model: str) -> bool:
        """Return True while ``model``'s circuit refuses calls."""
        with self._lock:
            b = self._breakers.get(model)
        return b is not None and b.current_state == pybreaker.STATE_OPEN and not _half_open_due(b)

    def state(self, model: str) -> str:
        """Return ``closed``, ``open`` or ``half-open``."""
        return str(self.breaker(model).current_state)

    def call(self, model: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Call ``fn`` through ``model``'s breaker; raise CircuitOpen while it is open."""
        try:
            return self.breaker(model).call(fn, *args, **kwargs)
        except pybreaker.CircuitBreakerError:
            raise CircuitOpen(model, self.reset_s) from None


def _half_open_due(b: pybreaker.CircuitBreaker) -> bool:
    # pybreaker moves to half-open lazily on the next call; report it as due already.
    opened = b._state_storage.opened_at
    if opened is None:
        return False
    return datetime.now(UTC) >= opened + timedelta(seconds=b.reset_timeout)


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to retry one model call."""

    max_attempts: int = 4
    max_delay_s: float = 120.0
    initial_s: float = 0.5
    max_backoff_s: float = 20.0

    def retrying(self, *, before_sleep: Callable[[RetryCallState], None] | None = None) -> Retrying:
        """Return a tenacity ``Retrying`` for retryable errors with full-jitter backoff."""
        return Retrying(
            retry=retry_if_exception(lambda e: classify(e).retryable),
            wait=wait_random_exponential(multiplier=self.initial_s, max=self.max_backoff_s),
            stop=stop_after_attempt(self.max_attempts) | stop_after_delay(self.max_delay_s),
            before_sleep=before_sleep,
            reraise=True,
        )


def call_with_retries(
    fn: Callable[[int], T],
    *,
    policy: RetryPolicy | None = None,
    on_retry: Callable[[int, BaseException, ErrorClass], None] | None = None,
) -> T:
    """Call ``fn(attempt)`` until it succeeds, retrying only retryable errors.

    ``attempt`` starts at 1, so ``fn`` can route a retry to a cheaper model.
    """
    policy = policy or RetryPolicy()

    def before_sleep(state: RetryCallState) -> None:
        if on_retry is not None and state.outcome is not None:
            exc = state.outcome.exception()
            if exc is not None:
                on_retry(state.attempt_number, exc, classify(exc))

    for attempt in policy.retrying(before_sleep=before_sleep):
        with attempt:
            return fn(attempt.retry_state.attempt_number)
    raise AssertionError("unreachable: tenacity reraises the last error")

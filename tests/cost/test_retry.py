"""Retry classification, exponential backoff with jitter, and circuit breakers per model."""

from __future__ import annotations

import time
from decimal import Decimal

import pytest

from runledger.cost.lease import TenantCapReached
from runledger.cost.retry import (
    BreakerBoard,
    CircuitOpen,
    RetryPolicy,
    call_with_retries,
    classify,
)


class HTTPError(Exception):
    """Stands in for a provider SDK error carrying an HTTP status."""

    def __init__(self, status_code: int) -> None:
        super().__init__(f"HTTP {status_code}")
        self.status_code = status_code


class RateLimitError(Exception):
    pass


class AuthenticationError(Exception):
    pass


@pytest.mark.parametrize(
    ("exc", "retryable"),
    [
        (TimeoutError("read timed out"), True),
        (ConnectionResetError("reset by peer"), True),
        (HTTPError(429), True),
        (HTTPError(500), True),
        (HTTPError(503), True),
        (HTTPError(408), True),
        (RateLimitError("slow down"), True),
        (HTTPError(401), False),
        (HTTPError(403), False),
        (HTTPError(400), False),
        (HTTPError(422), False),
        (AuthenticationError("bad key"), False),
        (ValueError("bad prompt"), False),
        (TenantCapReached("t", cap_usd=Decimal(1), spend_usd=Decimal(1), needed_usd=Decimal(1)),
         False),
    ],
)  # fmt: skip
def test_classification(exc: BaseException, retryable: bool) -> None:
    assert classify(exc).retryable is retryable


FAST = RetryPolicy(max_attempts=4, initial_s=0.001, max_backoff_s=0.01)


def test_transient_errors_are_retried_until_success() -> None:
    attempts: list[int] = []
    retries: list[str] = []

    def call(attempt: int) -> str:
        attempts.append(attempt)
        if attempt < 3:
            raise HTTPError(503)
        return "ok"

    result = call_with_retries(call, policy=FAST, on_retry=lambda n, e, c: retries.append(c.reason))
    assert result == "ok"
    assert attempts == [1, 2, 3]
    assert retries == ["server error (503)", "server error (503)"]


def test_non_retryable_errors_fail_at_once() -> None:
    attempts: list[int] = []

    def call(attempt: int) -> None:
        attempts.append(attempt)
        raise HTTPError(401)

    with pytest.raises(HTTPError):
        call_with_retries(call, policy=FAST)
    assert attempts == [1]


def test_retries_stop_after_max_attempts_with_the_last_error() -> None:
    attempts: list[int] = []

    def call(attempt: int) -> None:
        attempts.append(attempt)
        raise TimeoutError(f"attempt {attempt} timed out")

    with pytest.raises(TimeoutError, match="attempt 4 timed out"):
        call_with_retries(call, policy=FAST)
    assert attempts == [1, 2, 3, 4]


def test_backoff_is_exponential_with_jitter() -> None:
    policy = RetryPolicy(max_attempts=6, initial_s=1.0, max_backoff_s=8.0)
    wait = policy.retrying().wait
    samples = {}
    for n in (1, 3, 5):

        class State:
            attempt_number = n

        samples[n] = [wait(State()) for _ in range(200)]  # type: ignore[arg-type]
    # Full jitter: random between 0 and min(8, 2**n), so later attempts may wait longer.
    assert max(samples[1]) <= 2.0 and max(samples[3]) <= 8.0 and max(samples[5]) <= 8.0
    assert max(samples[3]) > 2.0
    assert len(set(samples[3])) > 100


def test_breaker_opens_after_consecutive_transient_failures_and_recovers() -> None:
    board = BreakerBoard(fail_max=3, reset_s=0.2)
    calls: list[str] = []

    def failing() -> None:
        calls.append("x")
        raise HTTPError(503)

    for _ in range(3):
        with pytest.raises(HTTPError):
            board.call("gpt-4o", failing)
    assert board.is_open("gpt-4o")
    with pytest.raises(CircuitOpen, match="circuit open for model 'gpt-4o'"):
        board.call("gpt-4o", failing)
    assert len(calls) == 3  # the open circuit did not call the model
    assert not board.is_open("claude-sonnet-4-5")  # one breaker per model
    time.sleep(0.25)
    assert not board.is_open("gpt-4o")  # half-open: a trial call goes through
    assert board.call("gpt-4o", lambda: "ok") == "ok"
    assert board.state("gpt-4o") == "closed"


def test_invalid_requests_do_not_open_the_breaker() -> None:
    board = BreakerBoard(fail_max=2, reset_s=60)

    def bad() -> None:
        raise HTTPError(400)

    for _ in range(5):
        with pytest.raises(HTTPError):
            board.call("gpt-4o", bad)
    assert not board.is_open("gpt-4o")

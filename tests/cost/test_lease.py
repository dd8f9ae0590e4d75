"""The client side of a budget lease: background top-ups, asks that grow for fast runs, and
a lease taken as the run starts; on the real database."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest

from _support import caps_row
from runledger.cost.lease import (
    LeaseSize,
    LedgerUnavailable,
    PgLeaseTransport,
    TenantBudget,
    TenantCapReached,
)
from runledger.store import LeaseStore
from runledger.store.leases import LeaseState

Sql = Callable[..., list[tuple[Any, ...]]]
D = Decimal


class GatedSync:
    """Lease calls to the database; each sync waits until the test lets it through."""

    def __init__(self, inner: PgLeaseTransport, *, fail: bool = False) -> None:
        self.inner = inner
        self.fail = fail
        self.started = threading.Event()
        self.release = threading.Event()
        self.wants: list[Decimal] = []

    def open(self, tenant_id: str, **kwargs: Any) -> LeaseState:
        return self.inner.open(tenant_id, **kwargs)

    def sync(self, lease_id: str, **kwargs: Any) -> LeaseState:
        self.wants.append(kwargs["want_usd"])
        self.started.set()
        if self.fail:
            raise LedgerUnavailable("ledger database unavailable: test")
        assert self.release.wait(10)
        return self.inner.sync(lease_id, **kwargs)

    def close(self, lease_id: str, **kwargs: Any) -> LeaseState:
        return self.inner.close(lease_id, **kwargs)


def test_calls_go_on_while_the_lease_is_topped_up_in_the_background(
    leases: LeaseStore, make_tenant: Callable[..., str], sql: Sql
) -> None:
    make_tenant("acme", "100")
    gate = GatedSync(PgLeaseTransport(leases))
    budget = TenantBudget(gate, "acme", holder="run-1", chunk_usd=D("0.5"))
    for _ in range(30):
        budget.reserve(D("0.01")).settle(D("0.01"))
    time.sleep(0.1)
    assert not gate.started.is_set()  # $0.20 is left for new calls: no round trip yet
    budget.reserve(D("0.01")).settle(D("0.01"))  # below 40% of the $0.50 asked: top up
    assert gate.started.wait(5)
    spent = D("0.31")
    for _ in range(15):  # the top-up waits for the ledger; the calls do not
        budget.reserve(D("0.01")).settle(D("0.01"))
        spent += D("0.01")
    assert budget.round_trips == 2  # the opening and the top-up in flight
    gate.release.set()
    deadline = time.monotonic() + 10
    while budget.available_usd < D("1"):
        assert time.monotonic() < deadline, "the top-up never landed"
        time.sleep(0.01)
    # Within a second of the opening: the run spends fast, so it asked for twice the chunk.
    assert gate.wants == [D("1.0")]
    assert budget.available_usd == D("1.5") - spent
    budget.close()
    row = caps_row(sql, "acme")
    assert (row["settled"], row["reserved"]) == (spent, 0)


def test_a_failed_top_up_loses_no_room_and_the_empty_lease_reports_the_ledger_down(
    leases: LeaseStore, make_tenant: Callable[..., str]
) -> None:
    make_tenant("acme", "100")
    gate = GatedSync(PgLeaseTransport(leases), fail=True)
    budget = TenantBudget(gate, "acme", holder="run-1", chunk_usd=D("0.5"))
    calls = 0
    with pytest.raises(LedgerUnavailable, match="ledger database unavailable: test"):
        while True:
            budget.reserve(D("0.01")).settle(D("0.01"))
            calls += 1
    assert calls == 50  # every cent of the lease was usable
    assert len(gate.wants) == 2  # one background top-up, then the call that found it empty


def test_asks_double_for_fast_runs_within_the_free_room_and_fall_back_for_slow_ones() -> None:
    size = LeaseSize(D("0.5"))
    assert [size.next(fast=True) for _ in range(6)] == [D(1), D(2), D(4), D(8), D(8), D(8)]
    assert size.next(fast=False) == D("0.5")
    assert size.next(fast=True, free=D("16")) == D("1")  # at most 1/16 of the free room
    assert size.next(fast=True, free=D("8")) == D("0.5")  # but never below the chunk
    assert LeaseSize(D("0.5"), max_usd=D("1.5")).next(fast=True) == D("1.0")


def test_a_run_takes_its_lease_as_it_starts_unless_the_cap_refused_the_last_call(
    leases: LeaseStore, make_tenant: Callable[..., str], sql: Sql
) -> None:
    make_tenant("acme", "4")
    first = TenantBudget(PgLeaseTransport(leases), "acme", holder="run-1", chunk_usd=D("0.5"))
    first.prepare()
    assert (first.round_trips, caps_row(sql, "acme")["reserved"]) == (1, D("0.5"))
    with pytest.raises(TenantCapReached):
        while True:
            first.reserve(D("0.3")).settle(D("0.3"))
    first.close()
    second = TenantBudget(PgLeaseTransport(leases), "acme", holder="run-2", size=first.size)
    second.prepare()  # the cap refused the last call: wait for a call to ask
    assert second.round_trips == 0 and second.lease_id is None
    with pytest.raises(TenantCapReached):
        second.reserve(D("0.3"))
    assert caps_row(sql, "acme")["blocked"]

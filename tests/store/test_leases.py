"""Budget leases against the tenant daily cap, on the real database."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from _support import caps_row, event, free_port
from _support.clock import Clock
from runledger.cost.lease import (
    BudgetBusy,
    HttpLeaseTransport,
    LedgerUnavailable,
    PgLeaseTransport,
    TenantBudget,
    TenantCapReached,
    TenantPaused,
)
from runledger.events import validate_batch
from runledger.exporter import ExporterConfig, LedgerCollector
from runledger.store import CapAdmin, Database, Ingestor, LeaseStore
from runledger.store.cap_admin import blocked_message
from runledger.store.console_actions import Actor, ConsoleActions

Sql = Callable[..., list[tuple[Any, ...]]]
D = Decimal


def ingest(db: Database, *raw: dict[str, Any]) -> None:
    models = validate_batch(list(raw))
    assert all(not isinstance(m, list) for m in models), models
    results = Ingestor(db).ingest(models)
    assert [r.status for r in results] == ["accepted"] * len(raw)


def cost_event(tenant: str, cost: str, lease_id: str | None, **fields: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {"service": "model.simulated", "summary": "one model call"}
    if lease_id:
        payload["lease_id"] = lease_id
    return event("external_call", tenant_id=tenant, cost_usd=cost, payload=payload, **fields)


def closed_lease(leases: LeaseStore, tenant: str, held: str, spent: str) -> str:
    """Open a lease holding ``held`` dollars, close it having spent ``spent``; return its id."""
    lease = leases.open_lease(tenant, want_usd=D(held), min_usd=D(held), holder="r")
    assert lease.lease_id, lease
    leases.close_lease(lease.lease_id, spent_usd=D(spent))
    return lease.lease_id


def test_calls_draw_from_the_lease_without_round_trips(
    leases: LeaseStore, make_tenant: Callable[..., str], sql: Sql
) -> None:
    make_tenant("acme", "100")
    budget = TenantBudget(PgLeaseTransport(leases), "acme", holder="run-1", chunk_usd=D("1.00"))
    for _ in range(50):
        with budget.spend(D("0.012")) as call:
            call.settle(D("0.01"))
    assert budget.round_trips == 1  # the first lease covered all 50 calls
    row = caps_row(sql, "acme")
    assert row["reserved"] == D("1") and row["settled"] == 0  # held until settled
    budget.close()
    row = caps_row(sql, "acme")
    assert (row["settled"], row["reserved"], row["spend"]) == (D("0.5"), 0, D("0.5"))


def test_failed_call_releases_its_reservation(
    leases: LeaseStore, make_tenant: Callable[..., str], sql: Sql
) -> None:
    make_tenant("acme", "1")
    budget = TenantBudget(PgLeaseTransport(leases), "acme", holder="run-1", chunk_usd=D("0.5"))
    with pytest.raises(TimeoutError), budget.spend(D("0.1")):
        raise TimeoutError("model timed out")
    assert budget.available_usd == budget.last_state.lease_reserved_usd  # type: ignore[union-attr]
    budget.close()
    assert caps_row(sql, "acme")["settled"] == 0


def test_cap_blocks_with_a_message_naming_cap_spend_and_how_to_raise(
    leases: LeaseStore, make_tenant: Callable[..., str], sql: Sql
) -> None:
    make_tenant("acme", "1")
    budget = TenantBudget(PgLeaseTransport(leases), "acme", holder="run-1", chunk_usd=D("0.3"))
    spent = D(0)
    with pytest.raises(TenantCapReached) as hit:
        while True:
            with budget.spend(D("0.1")) as call:
                call.settle(D("0.1"))
                spent += D("0.1")
    assert spent == D("1.0")  # every cent of the cap was usable
    message = str(hit.value)
    assert "tenant 'acme' daily cap reached: spent $1.0000 of its $1.00 daily cap today" in message
    assert "this call needs $0.1000" in message
    assert "POST /v1/caps/acme/raises" in message and "runledger cost raise acme" in message
    assert "one-click 72-hour raise" in message
    assert (hit.value.cap_usd, hit.value.spend_usd) == (D("1"), D("1"))
    row = caps_row(sql, "acme")
    assert row["settled"] == D("1") and row["at_80"] and row["at_100"] and row["blocked"]


def test_80_percent_is_visible_as_data(
    leases: LeaseStore, cap_admin: CapAdmin, make_tenant: Callable[..., str], sql: Sql
) -> None:
    make_tenant("acme", "10")
    closed_lease(leases, "acme", "1", "7.9")  # an overrun is settled as is
    assert not caps_row(sql, "acme")["at_80"]
    status = cap_admin.status("acme")
    assert status is not None and not status.at_80
    lease = leases.open_lease("acme", want_usd=D("1"), min_usd=D("0.1"), holder="r")
    assert lease.lease_id
    leases.close_lease(lease.lease_id, spent_usd=D("0.1"))
    assert caps_row(sql, "acme")["at_80"] and not caps_row(sql, "acme")["at_100"]
    assert sql("SELECT warned_at IS NOT NULL FROM caps WHERE tenant_id = 'acme'") == [(True,)]


def test_grants_shrink_as_the_cap_nears_and_the_last_cents_are_usable(
    leases: LeaseStore, make_tenant: Callable[..., str]
) -> None:
    make_tenant("acme", "8")
    first = leases.open_lease("acme", want_usd=D("4"), min_usd=D("0.01"), holder="a")
    assert first.granted_usd == D("1")  # 1/8 of the free $8
    assert first.lease_id
    leases.close_lease(first.lease_id, spent_usd=D("7.6"))
    small = leases.open_lease("acme", want_usd=D("4"), min_usd=D("0.01"), holder="b")
    assert small.granted_usd == D("0.05")  # 1/8 of the free $0.40
    last = leases.open_lease("acme", want_usd=D("4"), min_usd=D("0.35"), holder="c")
    assert (last.status, last.granted_usd) == ("granted", D("0.35"))  # exactly what is left
    nothing = leases.open_lease("acme", want_usd=D("1"), min_usd=D("0.000000001"), holder="d")
    assert nothing.status == "contended"  # b still holds 5 cents: not a refusal
    assert small.lease_id and last.lease_id
    leases.close_lease(small.lease_id, spent_usd=D("0.05"))
    leases.close_lease(last.lease_id, spent_usd=D("0.35"))
    done = leases.open_lease("acme", want_usd=D("1"), min_usd=D("0.000000001"), holder="d")
    assert done.status == "blocked" and done.spend_usd == D("8")


def test_room_held_by_other_leases_is_contended_not_refused(
    leases: LeaseStore, make_tenant: Callable[..., str]
) -> None:
    make_tenant("acme", "1")
    hog = leases.open_lease("acme", want_usd=D("1"), min_usd=D("0.9"), holder="hog")
    assert hog.status == "granted" and hog.lease_id
    budget = TenantBudget(
        PgLeaseTransport(leases), "acme", holder="late", chunk_usd=D("0.5"), contention_wait_s=0.3
    )
    with pytest.raises(BudgetBusy, match=r"is left under the daily cap but other runs held it"):
        budget.reserve(D("0.5"))
    leases.close_lease(hog.lease_id, spent_usd=D("0.2"))
    res = budget.reserve(D("0.5"))
    assert res.lease_id is not None


def test_settled_spend_and_its_events_are_counted_once(
    db: Database, leases: LeaseStore, make_tenant: Callable[..., str], sql: Sql
) -> None:
    make_tenant("acme", "10")
    budget = TenantBudget(PgLeaseTransport(leases), "acme", holder="run-1", chunk_usd=D("1"))
    res = budget.reserve(D("0.3"))
    lease_id = res.settle(D("0.25"))
    budget.close()
    ingest(db, cost_event("acme", "0.25", lease_id))
    row = caps_row(sql, "acme")
    assert row["spent"] == D("0.25")  # the ledger record has the event
    assert row["spend"] == D("0.25")  # and the cap counts it once
    ingest(db, cost_event("acme", "0.1", None))  # spend outside any lease counts directly
    assert caps_row(sql, "acme")["spend"] == D("0.35")
    ingest(db, cost_event("acme", "0.5", "not-a-lease"))  # a bogus tag cannot hide spend
    assert caps_row(sql, "acme")["spend"] == D("0.85")


def test_events_of_a_closed_lease_net_out_at_most_what_it_settled(
    db: Database, leases: LeaseStore, make_tenant: Callable[..., str], sql: Sql
) -> None:
    make_tenant("acme", "5")
    lease_id = closed_lease(leases, "acme", "1", "0.5")
    # $50 of events name the closed lease: only the $0.50 it settled was counted already.
    ingest(db, *[cost_event("acme", "5", lease_id) for _ in range(10)])
    row = caps_row(sql, "acme")
    assert (row["spent"], row["spend"]) == (D("50"), D("50"))
    assert row["at_100"] and row["blocked"]
    refused = leases.open_lease("acme", want_usd=D("4"), min_usd=D("4"), holder="r2")
    assert (refused.status, refused.granted_usd) == ("blocked", 0)


def test_events_of_an_open_lease_net_out_at_most_what_it_holds_until_it_reports(
    db: Database, leases: LeaseStore, make_tenant: Callable[..., str], sql: Sql
) -> None:
    make_tenant("acme", "10")
    lease = leases.open_lease("acme", want_usd=D("1"), min_usd=D("1"), holder="r")
    assert lease.lease_id
    # An overrun: the events show $1.50 before the holder reports it; its $1 covers $1 of it.
    ingest(db, cost_event("acme", "1.5", lease.lease_id))
    row = caps_row(sql, "acme")
    assert (row["reserved"], row["spend"]) == (D("1"), D("0.5"))
    # The report settles it: counted once, not twice.
    synced = leases.sync_lease(lease.lease_id, spent_usd=D("1.5"))
    assert synced.status == "settled"
    row = caps_row(sql, "acme")
    assert (row["reserved"], row["settled"], row["spend"]) == (0, D("1.5"), D("1.5"))
    leases.close_lease(lease.lease_id, spent_usd=D("1.5"))
    ingest(db, cost_event("acme", "0.25", lease.lease_id))  # beyond its report: counts
    assert caps_row(sql, "acme")["spend"] == D("1.75")


def _blocked_views(db: Database, client: Any, token: str, tenant: str) -> tuple[bool, bool, Any]:
    """Return blocked as the exporter's metric and the caps API say, and the API's notice."""
    registry = CollectorRegistry()
    LedgerCollector(db, config=ExporterConfig(), registry=registry).refresh()
    metric = registry.get_sample_value("runledger_tenant_blocked", {"tenant": tenant})
    resp = client.get(f"/v1/caps/{tenant}", headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 200, resp.get_json()
    status = resp.get_json()
    return metric == 1.0, status["blocked"], status


def test_blocked_stays_until_enough_is_freed_and_metric_api_and_notice_agree(
    db: Database, leases: LeaseStore, cap_admin: CapAdmin, client: Any,
    make_tenant: Callable[..., str], make_token: Callable[..., str],
) -> None:  # fmt: skip
    make_tenant("acme", "1")
    owner = make_token("owner", "acme")

    def check(expected: bool, need: str | None = None) -> None:
        metric, api, status = _blocked_views(db, client, owner, "acme")
        assert (metric, api) == (expected, expected)
        if not expected:
            assert status["notice"] is None and status["blocked_need_usd"] is None
            return
        assert D(status["blocked_need_usd"]) == D(need or 0)
        assert status["notice"] == blocked_message(
            "acme", cap_usd=D(status["cap_usd"]), spend_usd=D(status["spend_usd"]),
            needed_usd=D(need or 0),
        )  # fmt: skip
        assert f"this call needs ${D(need or 0):.4f}" in status["notice"]

    small = leases.open_lease("acme", want_usd=D("0.05"), min_usd=D("0.05"), holder="small")
    big = leases.open_lease("acme", want_usd=D("0.9"), min_usd=D("0.9"), holder="big")
    assert (small.granted_usd, big.granted_usd) == (D("0.05"), D("0.9"))
    assert small.lease_id and big.lease_id
    check(False)
    # big spent 5 cents and needs 20 more: its 85 cents and the 5 free do not make room.
    refused = leases.sync_lease(big.lease_id, spent_usd=D("0.05"), want_usd=D("0.2"),
                                min_usd=D("0.2"))  # fmt: skip
    assert refused.status == "blocked"
    check(True, "0.2")
    # small gives back its 5 cents: 10 cents free, still too little for the call refused.
    leases.close_lease(small.lease_id, spent_usd=D("0"))
    check(True, "0.2")
    # big gives back its 85 cents: the refused call fits again.
    leases.close_lease(big.lease_id, spent_usd=D("0.05"))
    check(False)
    # Spend 90 cents more: 5 cents left, a 10-cent call is refused; a raise frees enough.
    closed_lease(leases, "acme", "0.9", "0.9")
    check(False)
    assert leases.open_lease("acme", want_usd=D("0.1"), min_usd=D("0.1"), holder="x").status == (
        "blocked"
    )
    check(True, "0.1")
    cap_admin.change_cap("acme", new_cap_usd=D("1.04"), reason="test", author="a",
                         author_role="admin")  # fmt: skip
    check(True, "0.1")  # 9 cents free: still too little
    cap_admin.change_cap("acme", new_cap_usd=D("1.05"), reason="test", author="a",
                         author_role="admin")  # fmt: skip
    check(False)


def test_expired_lease_of_a_dead_worker_is_reclaimed_with_its_recorded_spend(
    db: Database, clocked_leases: LeaseStore, clock: Clock, make_tenant: Callable[..., str],
    sql: Sql,
) -> None:  # fmt: skip
    make_tenant("acme", "10")
    lease = clocked_leases.open_lease(
        "acme", want_usd=D("1"), min_usd=D("1"), holder="dead", ttl_s=30
    )
    assert lease.lease_id
    # The worker spent 0.4 (its events reached the ledger) and died before reporting it.
    ingest(db, cost_event("acme", "0.4", lease.lease_id, occurred_at=clock.now.isoformat()))
    row = caps_row(sql, "acme")
    assert (row["reserved"], row["spend"]) == (D("1"), 0)  # the lease covers it meanwhile
    assert clocked_leases.reclaim_expired() == 0  # not expired yet
    clock.advance(seconds=31)
    assert clocked_leases.reclaim_expired() == 1  # expired: its late reports are refused
    assert sql("SELECT status FROM cap_leases") == [("expired",)]
    row = caps_row(sql, "acme")
    assert (row["reserved"], row["spend"]) == (D("1"), 0)  # held through the grace
    assert clocked_leases.reclaim_expired() == 0
    clock.advance(seconds=30)  # one more lifetime: the grace is over
    assert clocked_leases.reclaim_expired() == 1
    row = caps_row(sql, "acme")
    assert (row["reserved"], row["spend"], row["settled"]) == (0, D("0.4"), D("0.4"))
    # A late event of the expired lease counts through the ledger, once.
    ingest(db, cost_event("acme", "0.1", lease.lease_id, occurred_at=clock.now.isoformat()))
    assert caps_row(sql, "acme")["spend"] == D("0.5")
    late = clocked_leases.sync_lease(lease.lease_id, spent_usd=D("0.5"))
    assert late.status == "expired"  # its late report is not counted again


def test_utc_day_boundary_resets_the_cap(
    clocked_leases: LeaseStore, clock: Clock, make_tenant: Callable[..., str], sql: Sql
) -> None:
    make_tenant("acme", "1")
    clock.now = clock.now.replace(hour=23, minute=59, second=0)
    budget = TenantBudget(
        PgLeaseTransport(clocked_leases), "acme", holder="run-1", chunk_usd=D("0.5"),
        utc_now=clock,
    )  # fmt: skip
    with pytest.raises(TenantCapReached):
        while True:
            budget.reserve(D("0.25")).settle(D("0.25"))
    day1 = clock.now.date()
    clock.advance(minutes=2)  # 00:01 UTC the next day
    res = budget.reserve(D("0.25"))
    res.settle(D("0.25"))
    budget.close()
    rows = sql("SELECT date, settled_usd, reserved_usd, blocked FROM caps ORDER BY date")
    assert rows == [(day1, D("1"), 0, True), (clock.now.date(), D("0.25"), 0, False)]


def test_paused_tenant_gets_no_lease(
    db: Database, leases: LeaseStore, make_tenant: Callable[..., str]
) -> None:
    """The lease functions refuse a tenant an admin paused (the console's pause action, the
    writer behind ``POST /v1/tenants/<id>/pause``), and lease again once it is resumed."""
    make_tenant("acme", "10")
    actions, admin = ConsoleActions(db), Actor("test-admin", "admin")
    actions.set_paused("acme", paused=True, reason="invoice overdue", actor=admin)
    budget = TenantBudget(PgLeaseTransport(leases), "acme", holder="r")
    with pytest.raises(TenantPaused, match="tenant 'acme' is paused by an admin"):
        budget.reserve(D("0.01"))
    actions.set_paused("acme", paused=False, reason="paid", actor=admin)
    budget.reserve(D("0.01")).settle(D("0.01"))
    budget.close()


def test_unknown_tenant_is_named(leases: LeaseStore) -> None:
    budget = TenantBudget(PgLeaseTransport(leases), "ghost", holder="r")
    with pytest.raises(Exception, match="unknown tenant 'ghost'"):
        budget.reserve(D("0.01"))


def test_publisher_fails_closed_when_the_ledger_is_down() -> None:
    down = HttpLeaseTransport(f"http://127.0.0.1:{free_port()}", "rl_x", timeout=0.5)
    publisher = TenantBudget(down, "acme", holder="pub", role="publisher")
    with pytest.raises(LedgerUnavailable, match="cannot reach the ledger"):
        publisher.reserve(D("0.01"))
    with pytest.raises(ValueError, match="the Publisher always fails closed"):
        TenantBudget(down, "acme", holder="pub", role="publisher", on_ledger_down="fail_open")


def test_other_roles_may_fail_open_within_an_allowance() -> None:
    down = HttpLeaseTransport(f"http://127.0.0.1:{free_port()}", "rl_x", timeout=0.5)
    worker = TenantBudget(
        down, "acme", holder="impl", role="implementer", on_ledger_down="fail_open",
        offline_allowance_usd=D("0.05"),
    )  # fmt: skip
    first = worker.reserve(D("0.03"))
    assert first.offline and first.settle(D("0.02")) is None  # no lease: events carry no tag
    worker.reserve(D("0.03"))  # 0.02 spent + 0.03 reserved = the allowance
    with pytest.raises(LedgerUnavailable):
        worker.reserve(D("0.01"))

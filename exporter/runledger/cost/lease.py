"""Client side of the tenant daily cap: a run draws from a budget lease locally.

A ``TenantBudget`` holds one lease, a chunk of the tenant's daily cap reserved atomically
in PostgreSQL. Each model call reserves its estimated cost from the lease in memory (no
round trip) and settles the actual cost after the call, or releases it when the call
failed. Only when the lease runs low, nears its expiry, or the UTC day ends does the
budget talk to the ledger: it reports what was spent and asks for more, in one call.

Usage::

    budget = TenantBudget(HttpLeaseTransport(url, token), "acme", holder=run_id)
    with budget.spend(estimate_usd) as call:      # raises TenantCapReached when over
        response = model(...)
        call.settle(actual_usd)                   # or leave it: released as unused
    budget.close()                                # settles and returns the unused part
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, Literal, Protocol

import requests
from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_random_exponential

from runledger.money import parse_usd, round_usd
from runledger.redact import default_redactor
from runledger.store.cap_admin import blocked_message
from runledger.store.leases import DEFAULT_LEASE_TTL_S, LeaseState, LeaseStore

__all__ = [
    "BudgetBusy",
    "BudgetError",
    "HttpLeaseTransport",
    "LeaseSize",
    "LeaseTransport",
    "LedgerNotConfigured",
    "LedgerUnavailable",
    "PgLeaseTransport",
    "Reservation",
    "TenantBudget",
    "TenantCapReached",
    "TenantPaused",
]

OnLedgerDown = Literal["fail_closed", "fail_open"]

log = logging.getLogger("runledger.cost")


class BudgetError(RuntimeError):
    """The tenant budget refused or could not decide on a model call."""


class TenantCapReached(BudgetError):
    """The tenant's daily $ cap leaves no room for this call."""

    def __init__(
        self, tenant_id: str, *, cap_usd: Decimal, spend_usd: Decimal, needed_usd: Decimal,
        message: str | None = None,
    ) -> None:  # fmt: skip
        self.tenant_id = tenant_id
        self.cap_usd = cap_usd
        self.spend_usd = spend_usd
        self.needed_usd = needed_usd
        super().__init__(
            message
            or blocked_message(
                tenant_id, cap_usd=cap_usd, spend_usd=spend_usd, needed_usd=needed_usd
            )
        )


class BudgetBusy(BudgetError):
    """Room is left under the cap but other leases held it for longer than we waited."""


class TenantPaused(BudgetError):
    """The tenant is paused by an admin: no new spend."""


class LedgerUnavailable(BudgetError):
    """The ledger (control service or database) cannot be reached."""


class LedgerNotConfigured(BudgetError):
    """The tenant cap is enforced but there is no ledger to draw budget leases from."""


class LeaseTransport(Protocol):
    """How a budget talks to the ledger: the three lease calls."""

    def open(
        self, tenant_id: str, *, want_usd: Decimal, min_usd: Decimal, holder: str,
        role: str | None, ttl_s: float,
    ) -> LeaseState: ...  # fmt: skip

    def sync(
        self, lease_id: str, *, spent_usd: Decimal, want_usd: Decimal, min_usd: Decimal,
        ttl_s: float, keep_usd: Decimal | None = None,
    ) -> LeaseState: ...  # fmt: skip

    def close(self, lease_id: str, *, spent_usd: Decimal) -> LeaseState: ...


@contextmanager
def _ledger_errors() -> Iterator[None]:
    """Report the ledger database being unreachable as the budget's LedgerUnavailable."""
    from runledger.store import DatabaseUnavailable  # in-process (server) transports only

    try:
        yield
    except DatabaseUnavailable as exc:
        raise LedgerUnavailable(f"ledger database unavailable: {exc}") from exc


class PgLeaseTransport:
    """Lease calls straight to PostgreSQL (in-process: services, jobs, benchmarks)."""

    def __init__(self, store: LeaseStore) -> None:
        self.store = store

    def open(
        self, tenant_id: str, *, want_usd: Decimal, min_usd: Decimal, holder: str,
        role: str | None, ttl_s: float,
    ) -> LeaseState:  # fmt: skip
        with _ledger_errors():
            return self.store.open_lease(
                tenant_id, want_usd=want_usd, min_usd=min_usd, holder=holder, role=role,
                ttl_s=ttl_s,
            )  # fmt: skip

    def sync(
        self, lease_id: str, *, spent_usd: Decimal, want_usd: Decimal, min_usd: Decimal,
        ttl_s: float, keep_usd: Decimal | None = None,
    ) -> LeaseState:  # fmt: skip
        with _ledger_errors():
            return self.store.sync_lease(
                lease_id, spent_usd=spent_usd, want_usd=want_usd, min_usd=min_usd, ttl_s=ttl_s,
                keep_usd=keep_usd,
            )  # fmt: skip

    def close(self, lease_id: str, *, spent_usd: Decimal) -> LeaseState:
        with _ledger_errors():
            return self.store.close_lease(lease_id, spent_usd=spent_usd)


class HttpLeaseTransport:
    """Lease calls to the control service (``/v1/caps/leases``) with an agent token."""

    def __init__(
        self, base_url: str, token: str, *, timeout: float = 5.0,
        session: requests.Session | None = None,
    ) -> None:  # fmt: skip
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.session = session or requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"

    def _post(self, path: str, body: dict[str, Any]) -> LeaseState:
        url = f"{self.base_url}/v1/caps/leases{path}"
        try:
            resp = self.session.post(url, json=body, timeout=self.timeout)
        except requests.RequestException as exc:
            raise LedgerUnavailable(f"cannot reach the ledger at {self.base_url}: {exc}") from exc
        if resp.status_code >= 500:
            raise LedgerUnavailable(
                f"the ledger at {self.base_url} answered {resp.status_code}: {_error(resp)}"
            )
        try:
            data = resp.json()
        except ValueError:
            data = None
        if not isinstance(data, dict) or "status" not in data:
            raise BudgetError(f"lease request refused ({resp.status_code}): {_error(resp)}")
        try:
            return _state_from_json(data)
        except ValueError as exc:
            raise BudgetError(f"the ledger's lease answer is malformed: {exc}") from None

    def open(
        self, tenant_id: str, *, want_usd: Decimal, min_usd: Decimal, holder: str,
        role: str | None, ttl_s: float,
    ) -> LeaseState:  # fmt: skip
        return self._post(
            "",
            {"tenant_id": tenant_id, "want_usd": str(want_usd), "min_usd": str(min_usd),
             "holder": holder, "role": role, "ttl_s": ttl_s},
        )  # fmt: skip

    def sync(
        self, lease_id: str, *, spent_usd: Decimal, want_usd: Decimal, min_usd: Decimal,
        ttl_s: float, keep_usd: Decimal | None = None,
    ) -> LeaseState:  # fmt: skip
        body: dict[str, Any] = {
            "spent_usd": str(spent_usd), "want_usd": str(want_usd), "min_usd": str(min_usd),
            "ttl_s": ttl_s,
        }  # fmt: skip
        if keep_usd is not None:
            body["keep_usd"] = str(keep_usd)
        return self._post(f"/{lease_id}/sync", body)

    def close(self, lease_id: str, *, spent_usd: Decimal) -> LeaseState:
        return self._post(f"/{lease_id}/close", {"spent_usd": str(spent_usd)})


def _error(resp: requests.Response) -> str:
    """Return the server's error sentence, redacted first and then cut (never the reverse)."""
    try:
        data = resp.json()
        if isinstance(data, dict) and "error" in data:
            return default_redactor().text(str(data["error"]), limit=500)
    except ValueError:
        pass
    return default_redactor().text(resp.text, limit=200)


def _state_from_json(data: dict[str, Any]) -> LeaseState:
    def dec(key: str) -> Decimal | None:
        value = data.get(key)
        return None if value is None else parse_usd(value, name=key)

    day = data.get("day")
    expires = data.get("expires_at")
    return LeaseState(
        status=str(data["status"]),
        lease_id=data.get("lease_id"),
        tenant_id=data.get("tenant_id"),
        day=date.fromisoformat(day) if day else None,
        granted_usd=dec("granted_usd") or Decimal(0),
        lease_reserved_usd=dec("lease_reserved_usd") or Decimal(0),
        expires_at=datetime.fromisoformat(expires) if expires else None,
        cap_usd=dec("cap_usd"),
        spend_usd=dec("spend_usd"),
        reserved_usd=dec("reserved_usd"),
    )


@dataclass(slots=True)
class Reservation:
    """The estimated cost of one model call, held until the call settles or fails."""

    estimate_usd: Decimal
    lease_id: str | None
    offline: bool = False
    done: bool = False
    actual_usd: Decimal | None = None
    _budget: TenantBudget | None = field(default=None, repr=False)

    def settle(self, actual_usd: Decimal) -> str | None:
        """Record the call's actual cost; return the lease id to put in its events."""
        assert self._budget is not None
        return self._budget.settle(self, actual_usd)

    def release(self) -> None:
        """Give the reservation back: the call failed or was never made."""
        assert self._budget is not None
        self._budget.release(self)


class _Contended(Exception):
    def __init__(self, state: LeaseState) -> None:
        self.state = state


_FAST_REFILL_S = 1.0
"""A run that needs more within this many seconds of its last refill asks for twice as much."""

_APPLIED = frozenset({"granted", "settled", "blocked", "contended", "rollover"})
"""Sync answers in which the ledger settled the reported spend and renewed the lease."""

log = logging.getLogger(__name__)


class LeaseSize:
    """How much a tenant's budgets ask for at a time, shared by the runs of one process.

    It starts at ``chunk_usd``, doubles (up to ``max_usd``) each time a budget refills
    within ``_FAST_REFILL_S`` of its previous refill, and returns to ``chunk_usd`` when a
    refill comes later: a run that spends fast makes few round trips, and the next run of
    the tenant starts at the size the last one reached. The ledger bounds every grant by
    the free room (``free / 8`` near the cap), so a big ask never takes the last dollars.
    """

    def __init__(
        self, chunk_usd: Decimal = Decimal("0.50"), max_usd: Decimal | None = None
    ) -> None:
        self.chunk_usd = round_usd(chunk_usd)
        self.max_usd = self.chunk_usd * 16 if max_usd is None else round_usd(max_usd)
        self.usd = self.chunk_usd
        """The current ask."""
        self.refused = False
        """The tenant's cap refused the last call that needed room: take no lease ahead."""

    def next(self, fast: bool, free: Decimal | None = None) -> Decimal:
        """Return the ask of a refill that came ``fast`` after the previous one (or not).

        ``free`` is the room the tenant had at the last answer: a grown ask stays within
        1/16 of it, so the tenant's other runs find room too.
        """
        usd = min(self.usd * 2, self.max_usd) if fast else self.chunk_usd
        if free is not None:
            usd = max(self.chunk_usd, min(usd, round_usd(free / 16)))
        self.usd = usd
        return usd


class TenantBudget:
    """Draw a run's model calls from a tenant budget lease, locally.

    When what the lease holds falls below 40% of the last ask, one background round trip
    reports the spend and tops the lease up while calls go on drawing from what is left;
    a call waits for the ledger only when the lease is empty (or stale, or the day ended).

    Args:
        transport: ``HttpLeaseTransport`` (agents) or ``PgLeaseTransport`` (in-process).
        tenant_id: the tenant whose daily cap pays.
        holder: who holds the lease (run id), for the ledger and for debugging.
        role: the agent role; the Publisher always fails closed when the ledger is down.
        chunk_usd: how much to reserve at a time; bigger means fewer round trips.
        ttl_s: lease lifetime without renewal. A background heartbeat renews the lease every
            ``heartbeat_s`` (default a third of it), also while a long model call runs.
        on_ledger_down: ``fail_closed`` (refuse spend) or ``fail_open`` (spend up to
            ``offline_allowance_usd`` without a lease, reported later by the events).
        contention_wait_s: how long to wait for room that other leases hold (a dead
            holder's lease returns what it never drew within two lifetimes).
        heartbeat_s: how often the heartbeat renews the lease (None: ``ttl_s / 3``).
        monotonic: clock for lease expiry (tests inject it).
        utc_now: clock for the UTC day (tests inject it).
        size: the ask shared with other budgets of the tenant (default: this budget's own,
            starting at ``chunk_usd``).
    """

    def __init__(
        self,
        transport: LeaseTransport,
        tenant_id: str,
        *,
        holder: str,
        role: str | None = None,
        chunk_usd: Decimal = Decimal("0.50"),
        ttl_s: float = DEFAULT_LEASE_TTL_S,
        on_ledger_down: OnLedgerDown = "fail_closed",
        offline_allowance_usd: Decimal = Decimal(0),
        contention_wait_s: float = 45.0,
        heartbeat_s: float | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        utc_now: Callable[[], datetime] = lambda: datetime.now(UTC),
        size: LeaseSize | None = None,
    ) -> None:
        if on_ledger_down not in ("fail_closed", "fail_open"):
            raise ValueError("on_ledger_down must be 'fail_closed' or 'fail_open'")
        if role == "publisher" and on_ledger_down != "fail_closed":
            raise ValueError("the Publisher always fails closed when the ledger is down")
        self.transport = transport
        self.tenant_id = tenant_id
        self.holder = holder
        self.role = role
        self.size = size or LeaseSize(chunk_usd)
        self.chunk_usd = self.size.chunk_usd
        self.ttl_s = ttl_s
        self.on_ledger_down = on_ledger_down
        self.offline_allowance_usd = round_usd(offline_allowance_usd)
        self.contention_wait_s = contention_wait_s
        self._monotonic = monotonic
        self._utc_now = utc_now
        # Lock order: _io (one round trip at a time, in order) before _lock (the counters).
        self._io = threading.Lock()
        self._lock = threading.RLock()
        self._lease_id: str | None = None
        self._day: date | None = None
        self._renew_at = 0.0
        self._held = Decimal(0)
        self._spent = Decimal(0)
        self._reported = Decimal(0)
        self._outstanding = Decimal(0)
        self._offline_used = Decimal(0)
        self._closed = False
        self._low = Decimal(0)
        self._topping_up = False
        self._last_refill = -_FAST_REFILL_S
        self.round_trips = 0
        self.last_state: LeaseState | None = None
        self.heartbeat_s = ttl_s / 3 if heartbeat_s is None else heartbeat_s
        self._stop_heartbeat: threading.Event | None = None

    # -- public -------------------------------------------------------------------------------

    @property
    def lease_id(self) -> str | None:
        """Return the current lease id (put it in events' ``payload.lease_id``)."""
        return self._lease_id

    @property
    def available_usd(self) -> Decimal:
        """Return what the lease still holds for new calls, without asking the ledger."""
        with self._lock:
            return self._available()

    def reserve(self, estimate_usd: Decimal) -> Reservation:
        """Reserve a call's estimated cost (an upper bound, e.g. priced at max_tokens).

        Raises:
            TenantCapReached: the daily cap leaves no room for it.
            BudgetBusy: room exists but other leases kept holding it.
            TenantPaused: the tenant is paused.
            LedgerUnavailable: the ledger is down and the budget fails closed.
        """
        est = round_usd(estimate_usd)
        if est < 0:
            raise ValueError("estimate_usd must be zero or more dollars")
        with self._lock:
            taken = self._take(est)
        if taken is not None:
            return taken
        with self._io, self._lock:
            taken = self._take(est)
            if taken is not None:
                return taken
            try:
                self._refill(est)
            except LedgerUnavailable:
                if self.on_ledger_down == "fail_open" and (
                    self._offline_used + est <= self.offline_allowance_usd
                ):
                    self._offline_used += est
                    return Reservation(est, None, offline=True, _budget=self)
                raise
            self._outstanding += est
            return Reservation(est, self._lease_id, _budget=self)

    def prepare(self) -> None:
        """Open the lease now, so that the first call finds it ready.

        Only a paused tenant is refused here (``TenantPaused``): when the ledger cannot grant
        a lease otherwise (the cap is reached, the ledger is down or missing), the first call
        that needs one asks again and raises.
        After the cap refused a call, runs of the tenant wait for their first call instead.
        """
        if self.size.refused:
            return
        try:
            self.reserve(Decimal(0)).release()
        except TenantPaused:
            # A paused tenant starts no new run: its runs in flight keep their leases and
            # finish, but a run that has none is refused before it begins.
            self.close()
            raise
        except BudgetError as exc:
            log.debug("lease of %s not opened ahead of its first call: %s", self.holder, exc)

    def settle(self, reservation: Reservation, actual_usd: Decimal) -> str | None:
        """Record a call's actual cost; return the lease id its events should name."""
        actual = round_usd(actual_usd)
        if actual < 0:
            raise ValueError("actual_usd must be zero or more dollars")
        with self._lock:
            self._finish(reservation)
            reservation.actual_usd = actual
            if reservation.offline:
                self._offline_used += actual - reservation.estimate_usd
                return None
            # Spend lands on the current lease, which also took over any in-flight estimate.
            self._spent += actual
            return self._lease_id

    def release(self, reservation: Reservation) -> None:
        """Give back a reservation whose call failed or was not made."""
        with self._lock:
            self._finish(reservation)
            if reservation.offline:
                self._offline_used -= reservation.estimate_usd

    @contextmanager
    def spend(self, estimate_usd: Decimal) -> Iterator[Reservation]:
        """Reserve for one call; release it unless the block settled it."""
        res = self.reserve(estimate_usd)
        try:
            yield res
        finally:
            if not res.done:
                self.release(res)

    def flush(self) -> None:
        """Report spend so far to the ledger and renew the lease (one round trip)."""
        with self._io, self._lock:
            if self._lease_id is not None:
                self._sync(Decimal(0), Decimal(0))

    def close(self) -> None:
        """Settle everything and give the unused part of the lease back."""
        with self._io, self._lock:
            if self._closed:
                return
            self._closed = True
            if self._stop_heartbeat is not None:
                self._stop_heartbeat.set()
            if self._lease_id is not None:
                self._close_current()

    def __enter__(self) -> TenantBudget:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ----------------------------------------------------------------------------

    def _available(self) -> Decimal:
        return self._held - (self._spent - self._reported) - self._outstanding

    def _fresh(self) -> bool:
        # Renew at half-life so a live run never loses its lease to reclaim.
        if self._monotonic() > self._renew_at:
            return False
        return self._day == self._utc_now().date()

    def _take(self, est: Decimal) -> Reservation | None:
        """Reserve ``est`` from the lease in memory; None when that needs the ledger."""
        if self._closed:
            raise BudgetError("this budget is closed; open a new TenantBudget")
        if self._lease_id is None or not self._fresh():
            return None
        left = self._available() - est
        if left < 0:
            return None
        self._outstanding += est
        if left < self._low and not self._topping_up:
            self._topping_up = True
            threading.Thread(target=self._top_up, name="runledger-lease", daemon=True).start()
        return Reservation(est, self._lease_id, _budget=self)

    def _top_up(self) -> None:
        """Report spend and ask for more in the background (a failure only stops top-ups:
        the call that finds the lease empty refills it and raises what the ledger says)."""
        try:
            with self._io:
                with self._lock:
                    if self._closed or self._lease_id is None or self._available() >= self._low:
                        return
                    lease, spent, sent = self._lease_id, self._spent, self._monotonic()
                    keep = self._outstanding
                    want = self._ask(sent)
                    self.round_trips += 1
                state = self.transport.sync(
                    lease, spent_usd=spent, want_usd=want, min_usd=Decimal(0), ttl_s=self.ttl_s,
                    keep_usd=keep,
                )  # fmt: skip
                with self._lock:
                    self.last_state = state
                    if state.status in _APPLIED:
                        self._applied(state, spent, sent)
                    else:
                        self._renew_at = 0.0  # expired or gone: the next call asks the ledger
                    if state.status != "granted" or not state.granted_usd:
                        self._low = Decimal(0)  # no more top-ups until a call refills
        except Exception as exc:
            log.debug("background top-up of lease %s failed: %s", self._lease_id, exc)
            with self._lock:
                self._low = Decimal(0)
        finally:
            with self._lock:
                self._topping_up = False

    def _ask(self, now: float) -> Decimal:
        fast = now - self._last_refill < _FAST_REFILL_S
        self._last_refill = now
        last, free = self.last_state, None
        if last and last.cap_usd is not None and last.spend_usd is not None:
            free = last.cap_usd - last.spend_usd - (last.reserved_usd or 0)
        want = self.size.next(fast, free)
        self._low = want * 2 / 5
        return want

    def _applied(self, state: LeaseState, spent: Decimal, sent: float) -> None:
        # Spend after ``spent`` was reported stays unreported; the lease holds the rest.
        self._reported = spent
        self._held = state.lease_reserved_usd
        self._renew_at = sent + self.ttl_s / 2

    def _finish(self, reservation: Reservation) -> None:
        if reservation.done:
            raise BudgetError("this reservation was already settled or released")
        reservation.done = True
        if not reservation.offline:
            self._outstanding -= reservation.estimate_usd

    def _refill(self, est: Decimal) -> None:
        retrying = Retrying(
            retry=retry_if_exception_type(_Contended),
            wait=wait_random_exponential(multiplier=0.005, max=0.25),
            stop=stop_after_delay(self.contention_wait_s),
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    self._refill_once(est)
        except _Contended as exc:
            raise BudgetBusy(
                f"tenant {self.tenant_id!r}: ${est:.4f} is left under the daily cap but other "
                f"runs held it for {self.contention_wait_s:.0f}s; retry shortly "
                f"(spent ${exc.state.spend_usd or 0:.4f} of ${exc.state.cap_usd or 0:.2f}, "
                f"${exc.state.reserved_usd or 0:.4f} held by other leases)"
            ) from None

    def _refill_once(self, est: Decimal) -> None:
        if self._lease_id is not None:
            after_settle = self._held - (self._spent - self._reported)
            need = max(self._outstanding + est - max(after_settle, Decimal(0)), Decimal(0))
            if self._day == self._utc_now().date():
                want = max(self._ask(self._monotonic()), need) if need else Decimal(0)
                state = self._sync(want, need)
                if state.status in ("granted", "settled"):
                    if need:
                        self.size.refused = False
                    return
                if state.status not in ("rollover", "expired", "unknown", "closed"):
                    self._raise_for(state, need)
                if state.status == "rollover":
                    self._close_current()
                else:
                    # Expired and reclaimed: the ledger's events account for its spend.
                    self._lease_id = None
            else:
                # Our UTC day ended: settle this lease against its day and open another.
                self._close_current()
        need = self._outstanding + est
        self.round_trips += 1
        sent = self._monotonic()
        want = max(self.size.usd, need)
        state = self.transport.open(
            self.tenant_id, want_usd=want, min_usd=need, holder=self.holder, role=self.role,
            ttl_s=self.ttl_s,
        )  # fmt: skip
        self.last_state = state
        if state.status != "granted":
            self._raise_for(state, need)
        self._lease_id = state.lease_id
        self._day = state.day
        self._held = state.lease_reserved_usd
        self._spent = Decimal(0)
        self._reported = Decimal(0)
        self._renew_at = sent + self.ttl_s / 2
        self._last_refill = sent
        self._low = want * 2 / 5
        if need:
            self.size.refused = False
        self._start_heartbeat()

    def _close_current(self) -> None:
        assert self._lease_id is not None
        lease, self._lease_id = self._lease_id, None
        self.round_trips += 1
        self.last_state = self.transport.close(lease, spent_usd=self._spent)

    def _sync(self, want: Decimal, need: Decimal) -> LeaseState:
        assert self._lease_id is not None
        self.round_trips += 1
        sent = self._monotonic()
        state = self.transport.sync(
            self._lease_id, spent_usd=self._spent, want_usd=want, min_usd=need, ttl_s=self.ttl_s,
            keep_usd=self._outstanding,
        )  # fmt: skip
        self.last_state = state
        if state.status in _APPLIED:
            self._applied(state, self._spent, sent)
        return state

    # -- heartbeat: renew the lease while the holder lives (docs/caps.md, dead holders) -------

    def _start_heartbeat(self) -> None:
        if self._stop_heartbeat is not None or self.heartbeat_s <= 0:
            return
        self._stop_heartbeat = threading.Event()
        threading.Thread(
            target=_heartbeat, args=(weakref.ref(self), self._stop_heartbeat, self.heartbeat_s),
            name=f"runledger-lease-{self.holder}", daemon=True,
        ).start()  # fmt: skip

    def _beat(self) -> None:
        """Renew the lease and report spend and calls in flight, unless a sync just did."""
        with self._io, self._lock:
            last_sync = self._renew_at - self.ttl_s / 2
            if self._closed or self._lease_id is None:
                return
            if self._monotonic() < last_sync + self.heartbeat_s * 0.9:
                return
            state = self._sync(Decimal(0), Decimal(0))
            if state.status in ("expired", "unknown", "closed"):
                # Reclaimed: the next call opens a new lease; the events name this one.
                self._lease_id = None

    def _raise_for(self, state: LeaseState, need: Decimal) -> None:
        if state.status == "contended":
            raise _Contended(state)
        if state.status == "blocked":
            self.size.refused = True
            raise TenantCapReached(
                self.tenant_id, cap_usd=state.cap_usd or Decimal(0),
                spend_usd=state.spend_usd or Decimal(0), needed_usd=need,
            )  # fmt: skip
        if state.status == "paused":
            raise TenantPaused(
                f"tenant {self.tenant_id!r} is paused by an admin: no new runs or new leases "
                "until an admin resumes it (runs already in flight finish)"
            )
        if state.status == "unknown":
            raise BudgetError(f"unknown tenant {self.tenant_id!r}: the ledger has no such tenant")
        raise BudgetError(f"unexpected lease answer {state.status!r} for {self.tenant_id!r}")


def _heartbeat(ref: weakref.ref[TenantBudget], stop: threading.Event, every_s: float) -> None:
    """Renew a budget's lease every ``every_s`` until it closes or is garbage-collected."""
    while not stop.wait(every_s):
        budget = ref()
        if budget is None:
            return
        try:
            budget._beat()
        except Exception as exc:  # the ledger may be down: the next beat tries again
            log.debug("runledger: lease heartbeat of %s failed: %s", budget.holder, exc)
        del budget

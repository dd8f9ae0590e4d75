"""Budget leases on a tenant's daily cap: open, sync, close and reclaim, in PostgreSQL.

Every lease operation is one call of a SQL function (migrations 0001 and 0002) holding the tenant's
``caps`` row lock, so concurrent agents can never reserve more than the cap in force.
docs/caps.md describes the design.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from runledger.money import round_usd
from runledger.store._json import json_ready

if TYPE_CHECKING:
    from runledger.store._database import Database

__all__ = [
    "DEFAULT_LEASE_TTL_S",
    "DEFAULT_SHARE_DIVISOR",
    "LeaseState",
    "LeaseStore",
    "SpendOverflow",
]

DEFAULT_LEASE_TTL_S = 15.0
"""Lease lifetime without renewal. Holders renew by heartbeat (``TenantBudget`` every third of
it), so a dead holder's lease expires after this long and its holding returns after as long
again (the grace for its spooled events)."""

DEFAULT_SHARE_DIVISOR = 8
"""Near the cap a grant is at most 1/8 of the free room, so late dollars stay shareable."""


@dataclass(frozen=True)
class LeaseState:
    """The answer to a lease operation.

    ``status`` is one of granted, settled, closed (success); blocked (the cap leaves no
    room even if every other lease gave back all it holds); contended (room exists but
    other leases hold it: retry shortly); rollover (the lease's UTC day is over: open a new
    one); expired; unknown; paused (the tenant is paused); invalid (spend went backwards).
    """

    status: str
    lease_id: str | None
    tenant_id: str | None
    day: date | None
    granted_usd: Decimal
    lease_reserved_usd: Decimal
    expires_at: datetime | None
    cap_usd: Decimal | None
    spend_usd: Decimal | None
    reserved_usd: Decimal | None

    def as_dict(self) -> dict[str, Any]:
        """Return a JSON-ready mapping (decimals as strings, times in ISO 8601)."""
        return json_ready(asdict(self))


class LeaseStore:
    """Open, settle, close and reclaim budget leases on tenants' daily $ caps.

    Args:
        db: the ledger database.
        divisor: near the cap a grant is at most ``free / divisor``.
        clock: returns the current time (tests inject it); default: the database's clock.
    """

    def __init__(
        self,
        db: Database,
        *,
        divisor: int = DEFAULT_SHARE_DIVISOR,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.db = db
        self.divisor = divisor
        self.clock = clock

    def _now(self) -> datetime | None:
        return self.clock() if self.clock is not None else None

    def open_lease(
        self,
        tenant_id: str,
        *,
        want_usd: Decimal,
        min_usd: Decimal,
        holder: str,
        role: str | None = None,
        ttl_s: float = DEFAULT_LEASE_TTL_S,
    ) -> LeaseState:
        """Reserve a chunk of today's cap: up to ``want_usd``, at least ``min_usd``."""
        want, least = _amounts(want_usd, min_usd)
        state = self._open(tenant_id, want, least, holder, role, ttl_s)
        if state.status == "contended" and self.reclaim_expired(tenant_id):
            state = self._open(tenant_id, want, least, holder, role, ttl_s)
        return state

    def _open(
        self, tenant_id: str, want: Decimal, least: Decimal, holder: str, role: str | None,
        ttl_s: float,
    ) -> LeaseState:  # fmt: skip
        with self.db.connection() as conn:
            row = conn.execute(
                "SELECT * FROM cap_lease_open(%s, %s, %s, %s, %s, %s, %s, %s)",
                (tenant_id, want, least, holder, role, ttl_s, self.divisor, self._now()),
            ).fetchone()
        return _state(row)

    def sync_lease(
        self,
        lease_id: str,
        *,
        spent_usd: Decimal,
        want_usd: Decimal = Decimal(0),
        min_usd: Decimal = Decimal(0),
        ttl_s: float = DEFAULT_LEASE_TTL_S,
        tenant_id: str | None = None,
        keep_usd: Decimal | None = None,
    ) -> LeaseState:
        """Settle a lease's cumulative spend, renew it, and top it up by up to ``want_usd``.

        ``tenant_id``, when given, must own the lease (else the answer is ``unknown``).
        ``keep_usd`` is the estimate of the holder's calls in flight: kept counted if the holder
        dies (docs/caps.md), and, when the top-up fails, at most what the lease keeps (None:
        all it holds).
        """
        keep = None if keep_usd is None else round_usd(keep_usd)
        want, least = _amounts(want_usd, min_usd) if want_usd else (Decimal(0), Decimal(0))
        spent = round_usd(spent_usd)
        state = self._sync(lease_id, tenant_id, spent, want, least, ttl_s, False, keep)
        if state.status == "contended" and state.tenant_id:
            if self.reclaim_expired(state.tenant_id):
                state = self._sync(lease_id, tenant_id, spent, want, least, ttl_s, False, keep)
        return state

    def close_lease(
        self, lease_id: str, *, spent_usd: Decimal, tenant_id: str | None = None
    ) -> LeaseState:
        """Settle a lease's cumulative spend and give back everything it still holds."""
        return self._sync(
            lease_id, tenant_id, round_usd(spent_usd), Decimal(0), Decimal(0), 0.0, True, None
        )

    def _sync(
        self, lease_id: str, tenant_id: str | None, spent: Decimal, want: Decimal, least: Decimal,
        ttl_s: float, close: bool, keep: Decimal | None,
    ) -> LeaseState:  # fmt: skip
        import psycopg  # the server's driver: agents import this module for LeaseState only

        try:
            with self.db.connection() as conn:
                row = conn.execute(
                    "SELECT * FROM cap_lease_sync(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                    (lease_id, tenant_id, spent, want, least, ttl_s, self.divisor, close,
                     self._now(), keep),
                ).fetchone()  # fmt: skip
        except psycopg.errors.NumericValueOutOfRange:
            # The transaction rolled back: nothing of this report was stored.
            raise SpendOverflow(
                "would take the tenant's spend for the day past the ledger's maximum"
            ) from None
        return _state(row)

    def reclaim_expired(self, tenant_id: str | None = None) -> int:
        """Expire unrenewed leases and release those past their grace; return how many changed."""
        now = self._now()
        with self.db.connection() as conn:
            if tenant_id is None:
                tenants = [
                    r[0]
                    for r in conn.execute(
                        "SELECT DISTINCT tenant_id FROM cap_leases"
                        " WHERE expires_at <= COALESCE(%s, now()) AND (status = 'open'"
                        "  OR (status = 'expired' AND reserved_usd > 0))",
                        (now,),
                    )
                ]
            else:
                tenants = [tenant_id]
        total = 0
        for tenant in tenants:
            # One transaction per tenant keeps the lock order ingest uses (docs/caps.md).
            with self.db.connection() as conn:
                row = conn.execute("SELECT cap_leases_reclaim(%s, %s)", (tenant, now)).fetchone()
                total += int(row[0]) if row else 0
        return total


class SpendOverflow(ValueError):
    """A reported spend would take a stored total past ``numeric(20, 9)``; nothing stored."""


def _amounts(want_usd: Decimal, min_usd: Decimal) -> tuple[Decimal, Decimal]:
    least = round_usd(min_usd)
    want = max(round_usd(want_usd), least)
    if least < 0:
        raise ValueError("min_usd must be zero or more dollars")
    return want, least


def _state(row: Any) -> LeaseState:
    assert row is not None
    return LeaseState(
        status=row[0],
        lease_id=row[1],
        tenant_id=row[2],
        day=row[3],
        granted_usd=Decimal(row[4] or 0),
        lease_reserved_usd=Decimal(row[5] or 0),
        expires_at=row[6],
        cap_usd=row[7],
        spend_usd=row[8],
        reserved_usd=row[9],
    )

"""Cap administration: a tenant's cap status, audited raises and reverts, in PostgreSQL.

A temporary raise is a ``cap_raises`` row with an expiry: the cap in force is the larger of
the base cap and every unexpired raise, so it reverts by itself. docs/caps.md describes it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta
from decimal import ROUND_CEILING, Decimal
from typing import TYPE_CHECKING, Any

from runledger.money import CENT, parse_usd, round_usd
from runledger.store._clocked import ClockedStore
from runledger.store._json import json_ready
from runledger.store.audit import record_audit

if TYPE_CHECKING:  # an agent imports this module for blocked_message, without psycopg
    import psycopg


__all__ = [
    "TEMPORARY_RAISE_HOURS",
    "CapAdmin",
    "CapChange",
    "CapStatus",
    "blocked_message",
]

TEMPORARY_RAISE_HOURS = 72
"""The one-click temporary raise lasts this long, then the cap reverts by itself."""

ONE_CLICK_FACTOR = Decimal("1.5")
"""The one-click raise lifts the cap in force by half unless a new cap is given."""

_SYSTEM = "runledger"


@dataclass(frozen=True)
class CapChange:
    """One row of ``cap_raises``: who changed a cap, why, from what to what, until when."""

    raise_id: int
    tenant_id: str
    old_value_usd: Decimal
    new_value_usd: Decimal
    reason: str
    author: str
    created_at: datetime
    expires_at: datetime | None
    reverted_at: datetime | None

    def as_dict(self) -> dict[str, Any]:
        """Return a JSON-ready mapping (decimals as strings, times in ISO 8601)."""
        return json_ready(asdict(self))


@dataclass(frozen=True)
class CapStatus:
    """A tenant's daily cap today: the cap in force, spend, reservations, 80%/100% marks."""

    tenant_id: str
    day: date
    base_cap_usd: Decimal
    cap_usd: Decimal
    spend_usd: Decimal
    reserved_usd: Decimal
    ledger_spent_usd: Decimal
    open_leases: int
    at_80: bool
    at_100: bool
    blocked: bool
    blocked_need_usd: Decimal | None
    active_raises: list[CapChange]

    @property
    def notice(self) -> str | None:
        """Return the owner notice while blocked (the refusal's message), else None."""
        if not self.blocked:
            return None
        return blocked_message(
            self.tenant_id, cap_usd=self.cap_usd, spend_usd=self.spend_usd,
            needed_usd=self.blocked_need_usd,
        )  # fmt: skip

    @property
    def utilisation(self) -> Decimal | None:
        """Return spend as a fraction of the cap (None for a zero cap)."""
        return self.spend_usd / self.cap_usd if self.cap_usd else None

    def as_dict(self) -> dict[str, Any]:
        """Return a JSON-ready mapping."""
        util = self.utilisation
        need = self.blocked_need_usd
        return {
            "tenant_id": self.tenant_id,
            "date": self.day.isoformat(),
            "base_cap_usd": str(self.base_cap_usd),
            "cap_usd": str(self.cap_usd),
            "spend_usd": str(self.spend_usd),
            "reserved_usd": str(self.reserved_usd),
            "ledger_spent_usd": str(self.ledger_spent_usd),
            "open_leases": self.open_leases,
            "utilisation": None if util is None else float(util),
            "at_80": self.at_80,
            "at_100": self.at_100,
            "blocked": self.blocked,
            "blocked_need_usd": need if need is None else str(need),
            "notice": self.notice,
            "active_raises": [r.as_dict() for r in self.active_raises],
        }


def blocked_message(tenant_id: str, *, cap_usd: Any, spend_usd: Any, needed_usd: Any) -> str:
    """Explain a refusal: the cap, the spend, what the call needs, and how to raise the cap.

    ``needed_usd`` None (the spend reached the cap, no call refused yet) leaves the need out.
    """
    cap = Decimal(str(cap_usd or 0))
    spend = Decimal(str(spend_usd or 0))
    left = max(cap - spend, Decimal(0))
    need = "" if needed_usd is None else f", and this call needs ${Decimal(str(needed_usd)):.4f}"
    return (
        f"tenant {tenant_id!r} daily cap reached: spent ${spend:.4f} of its ${cap:.2f} daily cap "
        f"today (UTC), ${left:.4f} left{need}. "
        f"To raise it, an admin or finance user can POST /v1/caps/{tenant_id}/raises (or run "
        f"`runledger cost raise {tenant_id} --cap-usd N --reason ...`), or grant the one-click "
        f"{TEMPORARY_RAISE_HOURS}-hour raise: POST /v1/caps/{tenant_id}/raises/temporary. "
        "The cap resets at 00:00 UTC."
    )


_CHANGE_COLS = (
    "raise_id, tenant_id, old_value_usd, new_value_usd, reason, author, created_at,"
    " expires_at, reverted_at"
)


class CapAdmin(ClockedStore):
    """Show, raise, and revert a tenant's daily $ cap; every change audited.

    Args: as :class:`ClockedStore` (the ledger database; an optional injected clock).
    """

    def now(self) -> datetime:
        """Return the current time: the injected clock's, else the database's."""
        with self.db.connection() as conn:
            return _at(conn, self._now())

    def status(self, tenant_id: str) -> CapStatus | None:
        """Return the tenant's cap today (None for an unknown tenant)."""
        self.expire_raises()
        now = self._now()
        with self.db.connection() as conn:
            base = conn.execute(
                "SELECT daily_cap_usd FROM tenants WHERE tenant_id = %s", (tenant_id,)
            ).fetchone()
            if base is None:
                return None
            at = _at(conn, now)
            cap, day = _refresh_today(conn, tenant_id, at)
            usage = conn.execute(
                "SELECT u.spend_usd, u.reserved_usd, c.spent_usd, c.blocked, c.blocked_need_usd,"
                " (SELECT count(*) FROM cap_leases l WHERE l.tenant_id = u.tenant_id"
                "   AND l.date = u.date AND l.status = 'open')"
                " FROM cap_usage u JOIN caps c USING (tenant_id, date)"
                " WHERE u.tenant_id = %s AND u.date = %s",
                (tenant_id, day),
            ).fetchone()
            assert usage is not None
            active = [
                _change(r)
                for r in conn.execute(
                    f"SELECT {_CHANGE_COLS} FROM cap_raises WHERE tenant_id = %s"
                    " AND expires_at > %s AND reverted_at IS NULL ORDER BY created_at",
                    (tenant_id, at),
                )
            ]
        spend, reserved, ledger, blocked, need, leases = usage
        return CapStatus(
            tenant_id=tenant_id,
            day=day,
            base_cap_usd=base[0],
            cap_usd=cap,
            spend_usd=spend,
            reserved_usd=reserved,
            ledger_spent_usd=ledger,
            open_leases=int(leases),
            at_80=spend >= Decimal("0.8") * cap,
            at_100=spend >= cap,
            blocked=bool(blocked),
            blocked_need_usd=need,
            active_raises=active,
        )

    def changes(self, tenant_id: str, limit: int = 100) -> list[CapChange]:
        """Return the tenant's cap changes, newest first."""
        with self.db.connection() as conn:
            return [
                _change(r)
                for r in conn.execute(
                    f"SELECT {_CHANGE_COLS} FROM cap_raises WHERE tenant_id = %s"
                    " ORDER BY created_at DESC, raise_id DESC LIMIT %s",
                    (tenant_id, limit),
                )
            ]

    def change_cap(
        self,
        tenant_id: str,
        *,
        new_cap_usd: Decimal,
        reason: str,
        author: str,
        author_role: str,
        expires_at: datetime | None = None,
    ) -> CapChange:
        """Change a tenant's daily cap, permanently or until ``expires_at``; audit it.

        A change with an expiry is a temporary raise: the cap in force is the larger of the
        base cap and every unexpired raise, so it reverts by itself when the raise expires.
        """
        reason = (reason or "").strip()
        if not reason:
            raise ValueError("a reason is required: say why the cap changes")
        if not author:
            raise ValueError("an author is required")
        new = round_usd(parse_usd(new_cap_usd, name="the new cap"))
        with self.db.connection() as conn:
            at_now = _at(conn, self._now())
            row = conn.execute(
                "SELECT daily_cap_usd, cap_effective_usd(tenant_id, %s) FROM tenants"
                " WHERE tenant_id = %s FOR UPDATE",
                (at_now, tenant_id),
            ).fetchone()
            if row is None:
                raise LookupError(f"unknown tenant {tenant_id!r}")
            base, effective = row
            if expires_at is not None:
                if expires_at <= at_now:
                    raise ValueError("the expiry must be in the future")
                if new <= effective:
                    raise ValueError(
                        f"a temporary raise must be above the cap in force (${effective:.2f}); "
                        "lower a cap with a permanent change"
                    )
                old = effective
            else:
                if new == base:
                    raise ValueError(f"the cap is already ${base:.2f}")
                old = base
                conn.execute(
                    "UPDATE tenants SET daily_cap_usd = %s WHERE tenant_id = %s", (new, tenant_id)
                )
            change = _change(
                conn.execute(
                    "INSERT INTO cap_raises (tenant_id, old_value_usd, new_value_usd, reason,"
                    f" author, created_at, expires_at) VALUES (%s, %s, %s, %s, %s, %s, %s)"
                    f" RETURNING {_CHANGE_COLS}",
                    (tenant_id, old, new, reason, author, at_now, expires_at),
                ).fetchone()
            )
            _audit(
                conn,
                actor=author,
                role=author_role,
                action="cap_raise_temporary" if expires_at else "cap_change",
                tenant_id=tenant_id,
                details={
                    "raise_id": change.raise_id,
                    "old_value_usd": str(old),
                    "new_value_usd": str(new),
                    "reason": reason,
                    "expires_at": expires_at.isoformat() if expires_at else None,
                },
            )
            _refresh_today(conn, tenant_id, at_now)
        return change

    def temporary_raise(
        self,
        tenant_id: str,
        *,
        reason: str,
        author: str,
        author_role: str,
        new_cap_usd: Decimal | None = None,
        hours: int = TEMPORARY_RAISE_HOURS,
    ) -> CapChange:
        """Raise the cap for ``hours`` (one click: 72 h, x1.5 unless ``new_cap_usd``)."""
        now = self._now()
        with self.db.connection() as conn:
            row = conn.execute(
                "SELECT COALESCE(%s::timestamptz, now()),"
                " cap_effective_usd(%s, COALESCE(%s::timestamptz, now()))",
                (now, tenant_id, now),
            ).fetchone()
        assert row is not None
        at, effective = row
        if effective is None:
            raise LookupError(f"unknown tenant {tenant_id!r}")
        if new_cap_usd is None:
            new_cap_usd = (effective * ONE_CLICK_FACTOR).quantize(CENT, rounding=ROUND_CEILING)
            if new_cap_usd <= effective:
                new_cap_usd = effective + Decimal(1)
        return self.change_cap(
            tenant_id,
            new_cap_usd=new_cap_usd,
            reason=reason,
            author=author,
            author_role=author_role,
            expires_at=at + timedelta(hours=hours),
        )

    def revert_raise(self, raise_id: int, *, author: str, author_role: str, reason: str) -> bool:
        """End a temporary raise early; return False when it was not active."""
        if not (reason or "").strip():
            raise ValueError("a reason is required: say why the raise ends early")
        now = self._now()
        with self.db.connection() as conn:
            row = conn.execute(
                "UPDATE cap_raises SET reverted_at = COALESCE(%s::timestamptz, now())"
                " WHERE raise_id = %s AND reverted_at IS NULL AND expires_at IS NOT NULL"
                " RETURNING tenant_id, reverted_at, old_value_usd, new_value_usd",
                (now, raise_id),
            ).fetchone()
            if row is None:
                return False
            _audit(
                conn, actor=author, role=author_role, action="cap_raise_revoked",
                tenant_id=row[0],
                details={"raise_id": raise_id, "reason": reason.strip(),
                         "old_value_usd": str(row[2]), "new_value_usd": str(row[3])},
            )  # fmt: skip
            _refresh_today(conn, row[0], row[1])
        return True

    def expire_raises(self) -> list[CapChange]:
        """Mark temporary raises past their expiry as reverted and audit each one."""
        now = self._now()
        with self.db.connection() as conn:
            rows = conn.execute(
                "UPDATE cap_raises SET reverted_at = expires_at"
                " WHERE reverted_at IS NULL AND expires_at IS NOT NULL"
                " AND expires_at <= COALESCE(%s::timestamptz, now())"
                f" RETURNING {_CHANGE_COLS}",
                (now,),
            ).fetchall()
            expired = [_change(r) for r in rows]
            for change in expired:
                _audit(
                    conn, actor=_SYSTEM, role="system", action="cap_raise_expired",
                    tenant_id=change.tenant_id,
                    details={"raise_id": change.raise_id,
                             "old_value_usd": str(change.old_value_usd),
                             "new_value_usd": str(change.new_value_usd)},
                )  # fmt: skip
            for tenant in sorted({c.tenant_id for c in expired}):
                _refresh_today(conn, tenant, _at(conn, now))
        return expired


def _at(conn: psycopg.Connection, now: datetime | None) -> datetime:
    """Return ``now``, or the database's clock when no clock is injected."""
    row = conn.execute("SELECT COALESCE(%s::timestamptz, now())", (now,)).fetchone()
    assert row is not None
    at: datetime = row[0]
    return at


def _change(row: Any) -> CapChange:
    assert row is not None
    return CapChange(*row)


def _audit(
    conn: psycopg.Connection, *, actor: str, role: str, action: str, tenant_id: str,
    details: dict[str, Any],
) -> None:  # fmt: skip
    record_audit(
        conn, actor=actor, role=role, action=action, tenant_id=tenant_id,
        target="tenant_daily_cap", details=details,
    )  # fmt: skip


def _refresh_today(conn: psycopg.Connection, tenant_id: str, at: datetime) -> tuple[Decimal, date]:
    """Make today's caps row show the cap in force at ``at`` and whether it blocks under it.

    Returns the cap in force and the UTC day. A raise that frees the room a refused call
    needed clears ``blocked`` here, as a lease close would.
    """
    row = conn.execute(
        "SELECT cap_effective_usd(%s, %s), (%s::timestamptz AT TIME ZONE 'UTC')::date",
        (tenant_id, at, at),
    ).fetchone()
    assert row is not None
    cap, day = row
    conn.execute("SELECT _cap_row(%s, %s, %s)", (tenant_id, day, cap))
    conn.execute("SELECT _cap_marks(%s, %s, %s, %s, NULL)", (tenant_id, day, cap, at))
    return cap, day

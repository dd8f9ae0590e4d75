"""Store a batch of validated events and their effects in one transaction.

Effects: the ``runs`` row of each run, ``failures`` (deduplicated by run and reason), the
tenant's ``caps`` spend for each UTC day, ``projects`` (current phase, last advance) and
``proofs``. Either the whole batch (minus rejected events) is stored, or nothing is.
The SQL is the function ``ingest_batch`` (migrations): the batch is staged server-side and
PostgreSQL computes every effect set-wise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal
from uuid import UUID

import psycopg
from psycopg.types.json import Json

from runledger.events import events_array, events_to_json, has_submicrosecond_times
from runledger.money import MAX_USD
from runledger.store._database import Database
from runledger.store.partitions import PartitionCache
from runledger.validation import FieldError

__all__ = ["EventResult", "IngestLimits", "Ingestor"]

_FUTURE_SKEW = timedelta(minutes=5)
_RETRIES = 3
_FOREIGN_KEY = "23503"
_RETRY_SQLSTATES = frozenset({"RL001", "RL002", "40P01", "40001", _FOREIGN_KEY})
_NUMERIC_OVERFLOW = "22003"
_PAST_MAX = f"past ${MAX_USD:,}, the largest amount the ledger holds"
_REFUSED = {
    "tenant": ("tenant_id", "unknown tenant {tenant!r}"),
    "project": ("project_id", "project belongs to another tenant"),
    "run": ("run_id", "run belongs to another tenant"),
    "run_cost": ("cost_usd", "would take run {run!r}'s total cost " + _PAST_MAX),
    "day_cost": ("cost_usd", "would take tenant {tenant!r}'s spend on {day} " + _PAST_MAX),
    "lease_cost": ("cost_usd", "would take the spend of its lease (payload.lease_id) " + _PAST_MAX),
}
"""Why ``ingest_batch`` refused an event: the field it names and the message."""


@dataclass
class EventResult:
    """What happened to one event of a batch (serialised as is by orjson).

    Not a slots dataclass: orjson serialises a ``__dict__`` dataclass about four times
    faster, and an ingest answer holds one of these per event.
    """

    index: int
    status: Literal["accepted", "duplicate", "rejected"]
    event_id: UUID | str | None = None
    errors: list[FieldError] = field(default_factory=list)


@dataclass(frozen=True)
class IngestLimits:
    """Time bounds on ``occurred_at``: not older than the retention window, not future."""

    retention_days: int = 30

    def check(self, at: datetime, now: datetime) -> str | None:
        if at > now + _FUTURE_SKEW:
            return "is in the future (more than 5 minutes ahead of the server clock)"
        if at < now - timedelta(days=self.retention_days):
            return f"is older than the retention window ({self.retention_days} days)"
        return None


def _as_is(batch: bytes) -> bytes:
    """psycopg's JSON "dumps" for a batch that is JSON already."""
    return batch


def _reject(index: int, event_id: Any, field_name: str, message: str) -> EventResult:
    return EventResult(index, "rejected", event_id, [FieldError(field=field_name, message=message)])


class Ingestor:
    """Write validated events to the ledger.

    Args:
        db: the ledger database.
        limits: time bounds applied to ``occurred_at``.
    """

    def __init__(self, db: Database, limits: IngestLimits | None = None) -> None:
        self.db = db
        self.limits = limits or IngestLimits()
        self.partitions = PartitionCache()
        # Tenants seen to exist. Only an optimisation and for clear messages: the ingest
        # script checks tenants again under the lock.
        self._tenants: set[str] = set()

    def ingest(
        self,
        events: Sequence[Any],
        *,
        indexes: Sequence[int] | None = None,
        body: bytes | None = None,
    ) -> list[EventResult]:
        """Store ``events`` (validated models); return one result per event.

        ``body``, when given, is the request ``{"events": [...]}`` these events were
        validated from, all of them, in order: it is sent to PostgreSQL as is, which saves
        serialising the models again. Should PostgreSQL read a value of it differently from
        validation (it raises a data error), the batch is sent again from the models; a body
        with times finer than the microsecond, which PostgreSQL would round where validation
        truncated them, is never sent.

        An event whose id is already stored, with any ``occurred_at``, is a duplicate. An
        event whose cost would take its run's, its tenant's day's or its lease's sum past
        what the ledger holds is rejected (found by a second, checked attempt).

        Raises:
            DatabaseUnavailable: PostgreSQL could not be reached or failed mid-batch; nothing
                of the batch was stored and the whole batch may be re-sent.
        """
        indexes = list(indexes) if indexes is not None else list(range(len(events)))
        now = datetime.now(UTC)
        results: dict[int, EventResult] = {}
        candidates: list[tuple[int, Any]] = list(zip(indexes, events, strict=True))
        if not candidates:
            return []
        times = [ev.occurred_at for ev in events]
        # The common batch is wholly inside the window: two checks instead of one per event.
        if self.limits.check(min(times), now) or self.limits.check(max(times), now):
            kept = []
            for idx, ev in candidates:
                problem = self.limits.check(ev.occurred_at, now)
                if problem:
                    results[idx] = _reject(idx, ev.event_id, "occurred_at", problem)
                else:
                    kept.append((idx, ev))
            candidates = kept
            times = [ev.occurred_at for _, ev in candidates]
        if len(candidates) < len(events) or (body is not None and has_submicrosecond_times(body)):
            body = None  # the body no longer matches the batch, or PostgreSQL would round it
        if candidates:
            # Every day the batch may land on (computed once; retries reuse it).
            first, last = min(times).astimezone(UTC).date(), max(times).astimezone(UTC).date()
            days = {first + timedelta(days=d) for d in range((last - first).days + 1)}
            for attempt in range(_RETRIES + 1):
                try:
                    results.update(
                        self._store(candidates, days, check_stored=attempt > 0, body=body)
                    )
                    break
                except psycopg.errors.DataError as exc:
                    # PostgreSQL read the body differently from validation: send the models.
                    # A sum past numeric(20, 9): the checked retry rejects the events that
                    # cause it.
                    if attempt == _RETRIES or (body is None and exc.sqlstate != _NUMERIC_OVERFLOW):
                        raise
                    body = None
                except psycopg.errors.CheckViolation as exc:
                    # "no partition of relation events found for row": a partition this
                    # process believed in was dropped by retention; look again.
                    if attempt == _RETRIES or "partition" not in str(exc):
                        raise
                    self.partitions.forget()
                except psycopg.Error as exc:
                    # The batch was rolled back whole: some of its events are already
                    # stored (RL002), one of its projects or runs belongs to another tenant
                    # (RL001: a first attempt does not look for those; or another batch
                    # created it meanwhile), its tenant was deleted since this process saw
                    # it (23503), or PostgreSQL broke a lock cycle. The retry drops foreign
                    # and stored events first, so it answers rejections and duplicates.
                    if attempt == _RETRIES or exc.sqlstate not in _RETRY_SQLSTATES:
                        raise
                    if exc.sqlstate == _FOREIGN_KEY:
                        self._tenants.clear()
        return [results[i] for i in indexes]

    def _store(
        self,
        candidates: list[tuple[int, Any]],
        days: set[date],
        *,
        check_stored: bool = False,
        body: bytes | None = None,
    ) -> dict[int, EventResult]:
        results: dict[int, EventResult] = {}
        with self.db.connection() as conn:
            unknown = {ev.tenant_id for _, ev in candidates} - self._tenants
            if unknown:
                found = conn.execute(
                    "SELECT tenant_id FROM tenants WHERE tenant_id = ANY(%s)", (sorted(unknown),)
                ).fetchall()
                self._tenants.update(r[0] for r in found)
            staged = self._screen_batch(candidates, results, self._tenants)
            if not staged:
                return results
            self.partitions.ensure(conn, days)
            # The request body's events array itself when every event of it is staged, in
            # order: PostgreSQL then reads it once, as the json parameter.
            if body is not None and len(staged) == len(candidates):
                batch = events_array(body)
            else:
                batch = events_to_json([ev for _, ev in staged])
            outcomes = conn.execute(
                "SELECT ord, outcome FROM ingest_batch(%s, %s)",
                (Json(batch, dumps=_as_is), check_stored),
            ).fetchall()
        if not outcomes and not results:  # the common batch: every event accepted
            return {idx: EventResult(idx, "accepted", ev.event_id) for idx, ev in staged}
        for ord_, outcome in outcomes:
            idx, ev = staged[ord_]
            if outcome == "duplicate":
                results[idx] = EventResult(idx, "duplicate", ev.event_id)
            else:
                field_name, message = _REFUSED[outcome]
                day = ev.occurred_at.astimezone(UTC).date().isoformat()
                message = message.format(tenant=ev.tenant_id, run=ev.run_id, day=day)
                results[idx] = _reject(idx, ev.event_id, field_name, message)
        for idx, ev in staged:
            if idx not in results:
                results[idx] = EventResult(idx, "accepted", ev.event_id)
        return results

    @staticmethod
    def _all_clean(candidates: list[tuple[int, Any]], tenants: set[str]) -> bool:
        """Return True when no event of the batch needs dropping (the common batch).

        Set-wise, in C: known tenants, distinct ids (a UUID's int hashes in C, the UUID in
        Python code), and each project and run named with one tenant only.
        """
        events = [ev for _, ev in candidates]
        named = {ev.tenant_id for ev in events}
        if not named <= tenants or len({ev.event_id.int for ev in events}) < len(events):
            return False
        if len(named) == 1:
            return True
        projects = {(ev.project_id, ev.tenant_id) for ev in events}
        runs = {(ev.run_id, ev.tenant_id) for ev in events}
        return len(projects) == len({p for p, _ in projects}) and len(runs) == len(
            {r for r, _ in runs}
        )

    @staticmethod
    def _screen_batch(
        candidates: list[tuple[int, Any]], results: dict[int, EventResult], tenants: set[str]
    ) -> list[tuple[int, Any]]:
        """Drop unknown tenants, repeated event ids and cross-tenant projects or runs."""
        if Ingestor._all_clean(candidates, tenants):
            return candidates
        seen: set[int] = set()
        projects: dict[str, str] = {}
        runs: dict[str, str] = {}
        staged = []
        for idx, ev in candidates:
            eid, tenant = ev.event_id, ev.tenant_id
            key = eid.int  # a UUID hashes in Python code; its int in C
            if tenant not in tenants:
                field_name, message = _REFUSED["tenant"]
                results[idx] = _reject(idx, eid, field_name, message.format(tenant=tenant))
            elif key in seen:
                results[idx] = EventResult(idx, "duplicate", eid)
            elif projects.setdefault(ev.project_id, tenant) != tenant:
                results[idx] = _reject(idx, eid, *_REFUSED["project"])
            elif runs.setdefault(ev.run_id, tenant) != tenant:
                results[idx] = _reject(idx, eid, *_REFUSED["run"])
            else:
                seen.add(key)
                staged.append((idx, ev))
        return staged

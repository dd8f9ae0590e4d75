"""Cost controls of one run: per-run caps, the tenant's daily cap drawn from a budget lease,
and the partial result the agent builds when a cap stops the run.

The cost library (``runledger.cost``) is imported only when a run uses caps or leases, so
``import runledger.sdk`` stays light.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

from runledger.sdk._services import RunServices

if TYPE_CHECKING:
    from runledger.cost.lease import Reservation, TenantBudget
    from runledger.cost.policy import RunCaps, RunMeter

__all__ = [
    "CapStop",
    "CostGuard",
    "GuardedRun",
    "PartialResult",
    "PublisherFrozen",
    "RunCapReached",
    "Ticket",
    "refresh",
    "snapshot",
]

log = logging.getLogger("runledger.sdk")

_ZERO = Decimal(0)

_WHAT = {
    "tokens": "the run's token cap",
    "time": "the run's wall-time cap",
    "cost": "the run's model-spend cap",
    "external": "the run's external-charges cap",
    "tenant_daily": "the tenant's daily cap",
    "publish": "the Publisher freeze of the playbook",
}


@dataclass(frozen=True)
class CapStop:
    """Which cap refused a call: its limit, what was spent, what the call needed, and why."""

    cap: str | None = None
    limit: Decimal = _ZERO
    spent: Decimal = _ZERO
    needed: Decimal = _ZERO
    reason: str = ""


_NO_STOP = CapStop()


@dataclass(frozen=True)
class PartialResult:
    """What a run has when a cap stops it: which cap, and what was done and spent so far.

    ``cap`` is ``None`` when the agent ends a run as partial for its own reasons.
    """

    tenant_id: str
    playbook: str | None
    cap: str | None
    limit: Decimal
    spent: Decimal
    needed: Decimal
    reason: str
    model_calls: int
    tokens_in: int
    tokens_out: int
    model_usd: Decimal
    external_usd: Decimal
    elapsed_s: float

    @property
    def spend_usd(self) -> Decimal:
        """Return model plus external dollars spent by the run."""
        return self.model_usd + self.external_usd

    def stopped_by(self) -> str:
        """Return which cap stopped the run and how far it was, in words."""
        if self.cap is None:
            return "stopped early"
        if self.cap == "publish":
            return f"stopped: {self.reason}"
        what = _WHAT.get(self.cap, f"the {self.cap} cap")
        if self.cap == "tokens":
            detail = (
                f"{int(self.spent):,} of {int(self.limit):,} tokens used, the next call needed "
                f"up to {int(self.needed):,}"
            )
        elif self.cap == "time":
            detail = f"{float(self.spent):.1f}s of {float(self.limit):g}s elapsed"
        elif self.cap == "tenant_daily":
            detail = f"${self.spent:.4f} of ${self.limit:.2f} spent today (UTC)"
        else:
            detail = (
                f"${self.spent:.4f} of ${self.limit:.4f} spent, the next call needed up to "
                f"${self.needed:.4f}"
            )
        return f"stopped by {what} ({detail})"

    def how_to_continue(self) -> str:
        """Return what the owner can do to finish the work."""
        if self.cap == "tenant_daily":
            t = self.tenant_id
            return (
                f"raise tenant {t}'s daily cap (the one-click 72-hour raise, POST "
                f"/v1/caps/{t}/raises, or `runledger cost raise {t}`) or wait for it to reset at "
                "00:00 UTC, then run this step again"
            )
        if self.cap == "publish":
            pb = self.playbook or "?"
            return (
                f"run this step again once the Publisher of playbook {pb} is unfrozen (an admin: "
                f"`runledger quality unfreeze {pb} --reason ...` or POST "
                f"/v1/playbooks/{pb}/unfreeze, once its proofs pass strict validation again)"
            )
        if self.cap is not None:
            where = f" of playbook {self.playbook}" if self.playbook else ""
            what = _WHAT.get(self.cap, self.cap)
            return f"raise {what}{where} (RunCaps), then run this step again"
        return "run this step again to finish it"

    def summary(self, done: str | None = None, missing: str | None = None) -> str:
        """Return the one-line summary: what was done, what is missing, spend, which cap."""
        parts = [done.strip() if done and done.strip() else "partial result"]
        if missing:
            parts.append(f"missing: {missing.strip()}")
        parts.append(self.stopped_by())
        parts.append(
            f"spent ${self.spend_usd:.4f} (models ${self.model_usd:.4f}, external "
            f"${self.external_usd:.4f}) on {self.model_calls} model calls and "
            f"{self.tokens_in + self.tokens_out:,} tokens in {self.elapsed_s:.1f}s"
        )
        return "; ".join(parts)

    def instructions(self, missing: str | None = None) -> str:
        """Return the Publisher's instructions for completing a partial publish."""
        what = missing.strip() if missing and missing.strip() else "the rest of the release"
        cause = f" ({self.stopped_by()})" if self.cap else ""
        return f"Not published: {what}{cause}. To publish it, {self.how_to_continue()}."


class RunCapReached(RuntimeError):
    """A cap stopped the run before a call spent anything; no further model calls are made.

    Catch it, build what you can from the work done so far, and end the run with
    ``run.partial(artifact_path, version, summary)``. ``partial`` says which cap
    (``tokens``, ``time``, ``cost``, ``external`` or ``tenant_daily``) and what was spent.
    If it escapes ``with ledger.run(...)``, the run ends as ``partial`` without an artifact.
    """

    def __init__(self, partial: PartialResult) -> None:
        self.partial = partial
        self.cap = partial.cap
        super().__init__(partial.reason)


class PublisherFrozen(RunCapReached):
    """The Publisher may not ship: quality sampling froze its playbook (or the freeze state
    could not be checked: the Publisher fails closed).

    A ``RunCapReached`` with ``cap == "publish"``: catch it and publish partial instead,
    ``run.partial(path, version, missing=...)``, whose instructions say how to finish.
    ``freeze`` holds the freeze (reason, when, the sample's numbers), None when the ledger
    could not be asked.
    """

    def __init__(self, partial: PartialResult, freeze: dict[str, Any] | None) -> None:
        super().__init__(partial)
        self.freeze = freeze


class GuardedRun(Protocol):
    """What cost controls read of the run they guard (``Run`` implements it)."""

    @property
    def services(self) -> RunServices: ...

    @property
    def tenant_id(self) -> str: ...

    @property
    def run_id(self) -> str: ...

    @property
    def playbook(self) -> str | None: ...

    @property
    def model_calls(self) -> int: ...

    @property
    def tokens_in(self) -> int: ...

    @property
    def tokens_out(self) -> int: ...

    @property
    def cost_usd(self) -> Decimal: ...

    @property
    def external_usd(self) -> Decimal: ...

    def cap_hit(self, cap: str, *, limit: Decimal | float, spent: Decimal | float) -> str: ...

    def log(self, message: str, *, level: int = logging.INFO, **attributes: Any) -> None: ...


@dataclass(slots=True)
class Ticket:
    """One call's estimate, counted against the run's caps while the call is in flight."""

    reservation: Reservation | None
    tokens: int = 0
    usd: Decimal = _ZERO
    external_usd: Decimal = _ZERO


class CostGuard:
    """One run's cost controls, consulted before and after each model and external call.

    Args:
        run: the run.
        caps: the run's caps (``None``: no per-run limits, usage is still tracked).
        budget: the tenant budget lease the run draws from (``None``: not enforced).
    """

    def __init__(self, run: GuardedRun, caps: RunCaps | None, budget: TenantBudget | None) -> None:
        from runledger.cost.policy import RunCaps, RunMeter

        self.run = run
        self.meter: RunMeter = RunMeter(caps or RunCaps())
        self.budget = budget
        self.reached: PartialResult | None = None
        # Without a per-run limit there is nothing to check or meter: only the lease counts.
        self._limited = caps is not None and caps != RunCaps()
        self._lock = threading.Lock()
        # Estimates of calls in flight: concurrent calls of one run cannot cross a cap together.
        self._tokens = 0
        self._usd = _ZERO
        self._external_usd = _ZERO
        self._estimates: dict[tuple[str, int, int], Decimal] = {}

    # -- before a call ------------------------------------------------------------------------

    def before_model(
        self,
        model: str,
        *,
        prompt_tokens: int | None,
        max_tokens: int | None,
        cost_usd: Decimal | None,
        cached: bool,
    ) -> Ticket:
        """Check the caps for a model call and reserve its upper-bound cost from the lease."""
        if self.reached is not None:
            raise RunCapReached(self.reached)
        prompt, out = prompt_tokens or 0, max_tokens or 0
        if cost_usd is not None:
            estimate = cost_usd
        elif cached:
            estimate = _ZERO
        else:
            estimate = self._estimate(model, prompt, out)
        ticket = Ticket(None, tokens=prompt + out, usd=estimate)
        if self._limited:
            self._check(ticket)
        free = cached if cost_usd is None else cost_usd == 0
        if not free:  # a call known to cost nothing needs no room under the cap
            self._reserve(ticket, estimate)
        return ticket

    def _estimate(self, model: str, prompt: int, out: int) -> Decimal:
        # A run repeats a few (model, prompt, max_tokens) shapes: price each once.
        key = (model, prompt, out)
        cost = self._estimates.get(key)
        if cost is None:
            if len(self._estimates) >= 64:
                self._estimates.clear()
            cost = self._estimates[key] = self.run.services.pricing().cost(
                model, tokens_in=prompt, tokens_out=out, tenant_id=self.run.tenant_id
            )
        return cost

    def before_external(self, name: str, cost_usd: Decimal | None) -> Ticket:
        """Check the caps for an external call and reserve its announced charge."""
        if cost_usd is not None and cost_usd == 0:
            return Ticket(None)  # free calls go through even after a cap, e.g. to store results
        if self.reached is not None:
            raise RunCapReached(self.reached)
        estimate = cost_usd or _ZERO
        ticket = Ticket(None, external_usd=estimate)
        if self._limited:
            self._check(ticket)
        self._reserve(ticket, estimate)
        return ticket

    def _check(self, ticket: Ticket) -> None:
        from runledger.cost.policy import RunCapHit

        with self._lock:
            try:
                self.meter.check(
                    tokens=self._tokens + ticket.tokens, usd=self._usd + ticket.usd,
                    external_usd=self._external_usd + ticket.external_usd,
                )  # fmt: skip
            except RunCapHit as hit:
                refused: RunCapHit | None = hit
            else:
                refused = None
                self._tokens += ticket.tokens
                self._usd += ticket.usd
                self._external_usd += ticket.external_usd
        if refused is not None:
            stop = CapStop(refused.cap, refused.limit, refused.spent, refused.needed, str(refused))
            self._stop(stop, refused)

    def _landed(self, ticket: Ticket) -> None:
        if not self._limited:
            return
        with self._lock:
            self._tokens -= ticket.tokens
            self._usd -= ticket.usd
            self._external_usd -= ticket.external_usd
            ticket.tokens, ticket.usd, ticket.external_usd = 0, _ZERO, _ZERO

    def _reserve(self, ticket: Ticket, estimate: Decimal) -> None:
        if self.budget is None:
            return
        try:
            ticket.reservation = self.budget.reserve(estimate)
        except BaseException as exc:
            self._landed(ticket)
            from runledger.cost.lease import TenantCapReached  # only on a refusal: calls are hot

            if isinstance(exc, TenantCapReached):
                stop = CapStop("tenant_daily", exc.cap_usd, exc.spend_usd, exc.needed_usd, str(exc))
                self._stop(stop, exc)
            raise

    def _stop(self, stop: CapStop, cause: BaseException) -> NoReturn:
        run = self.run
        cap = stop.cap
        assert cap is not None
        self.reached = self.snapshot(stop)
        run.cap_hit(cap, limit=stop.limit, spent=stop.spent)
        run.log(
            f"cap reached, no further model calls: {self.reached.stopped_by()}",
            level=logging.WARNING, **{"runledger.cap": cap},
        )  # fmt: skip
        raise RunCapReached(self.reached) from cause

    # -- after a call ------------------------------------------------------------------------

    def after(
        self,
        ticket: Ticket,
        *,
        tokens: int = 0,
        usd: Decimal = _ZERO,
        external_usd: Decimal = _ZERO,
    ) -> str | None:
        """Record what a call used and settle it; return the lease id its event must name."""
        if self._limited:
            self._landed(ticket)
            self.meter.record(tokens=tokens, usd=usd, external_usd=external_usd)
        cost = usd + external_usd
        reservation = ticket.reservation
        if reservation is None:
            if self.budget is None or cost <= 0:
                return None
            # Charged without a reservation (its cost was unknown up front): settle it on the
            # lease anyway; if that fails, its event counts through the ledger's spent_usd.
            from runledger.cost.lease import BudgetError

            try:
                reservation = self.budget.reserve(_ZERO)
            except BudgetError as exc:
                log.warning("runledger: spend of run %s not settled on a lease: %s",
                            self.run.run_id, exc)  # fmt: skip
                return None
        if cost <= 0:
            reservation.release()
            return None
        return reservation.settle(cost)

    def release(self, ticket: Ticket) -> None:
        """Give back the estimate of a call that never started."""
        self._landed(ticket)
        if ticket.reservation is not None and not ticket.reservation.done:
            ticket.reservation.release()

    # -- the run's state ---------------------------------------------------------------------

    def remaining_fraction(self) -> float | None:
        """Return the smallest remaining share of the run's $ and token caps."""
        return self.meter.remaining_fraction()

    def snapshot(self, stop: CapStop = _NO_STOP) -> PartialResult:
        """Return the run's progress and spend now."""
        return snapshot(self.run, self.meter.elapsed_s, stop)

    def close(self) -> None:
        """Settle the lease and give its unused part back to the tenant."""
        if self.budget is None:
            return
        from runledger.cost.lease import BudgetError

        try:
            self.budget.close()
        except BudgetError as exc:
            # The lease expires by itself; the ledger's events account for its spend.
            log.warning("runledger: could not close the budget lease of run %s: %s",
                        self.run.run_id, exc)  # fmt: skip


def snapshot(run: GuardedRun, elapsed_s: float, stop: CapStop = _NO_STOP) -> PartialResult:
    """Return ``run``'s progress and spend now, and the cap that stopped it if any."""
    return PartialResult(
        tenant_id=run.tenant_id, playbook=run.playbook, cap=stop.cap, limit=stop.limit,
        spent=stop.spent, needed=stop.needed, reason=stop.reason, model_calls=run.model_calls,
        tokens_in=run.tokens_in, tokens_out=run.tokens_out,
        model_usd=run.cost_usd - run.external_usd, external_usd=run.external_usd,
        elapsed_s=round(elapsed_s, 3),
    )  # fmt: skip


def refresh(result: PartialResult, run: GuardedRun, elapsed_s: float) -> PartialResult:
    """Return ``result`` with the run's spend and progress as of now."""
    stop = CapStop(result.cap, result.limit, result.spent, result.needed, result.reason)
    return snapshot(run, elapsed_s, stop)

"""Per-run caps (tokens, wall time, model $, external $): stop a run gracefully, never mid-spend.

A ``RunMeter`` is checked before each model or external call with the call's estimate; when
the call would cross a cap it raises ``RunCapHit`` naming the cap, so the SDK can hand the
agent what it has so far (partial artifact + summary), emit ``cap_hit`` and end the run as
``partial``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

from runledger.money import parse_usd

__all__ = ["CapName", "RunCapHit", "RunCaps", "RunMeter"]

CapName = Literal["tokens", "time", "cost", "external"]
"""Names match the ``cap`` field of ``cap_hit`` events."""


@dataclass(frozen=True)
class RunCaps:
    """Limits for one run; ``None`` means no limit. Set per playbook or per run."""

    max_tokens: int | None = None
    max_wall_s: float | None = None
    max_usd: Decimal | None = None
    max_external_usd: Decimal | None = None

    def __post_init__(self) -> None:
        for name in ("max_tokens", "max_wall_s"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must be zero or more, got {value}")
        for name in ("max_usd", "max_external_usd"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, parse_usd(value, name=name))


class RunCapHit(RuntimeError):
    """A call would cross one of the run's caps; nothing was spent on it."""

    def __init__(self, cap: CapName, *, limit: Decimal, spent: Decimal, needed: Decimal) -> None:
        self.cap = cap
        self.limit = limit
        self.spent = spent
        self.needed = needed
        units = {"tokens": "tokens", "time": "seconds", "cost": "USD", "external": "USD"}[cap]
        what = {
            "tokens": "token cap",
            "time": "wall-time cap",
            "cost": "model-spend cap",
            "external": "external-charges cap",
        }[cap]
        super().__init__(
            f"run {what} reached: {spent} of {limit} {units} used and the next call needs "
            f"{needed} more; the run stops here with a partial result"
        )

    def payload(self) -> dict[str, Any]:
        """Return the ``cap_hit`` event payload for this hit."""
        cap = "time" if self.cap == "time" else self.cap
        return {"cap": cap, "limit": str(self.limit), "spent": str(self.spent)}


class RunMeter:
    """Track one run's tokens, wall time, model and external spend against its caps.

    Args:
        caps: the run's limits.
        clock: monotonic seconds (tests inject it).
    """

    def __init__(self, caps: RunCaps, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.caps = caps
        self._clock = clock
        self._started = clock()
        self._lock = threading.Lock()
        self.tokens = 0
        self.usd = Decimal(0)
        self.external_usd = Decimal(0)
        self.calls = 0

    @property
    def elapsed_s(self) -> float:
        """Return seconds since the run started."""
        return self._clock() - self._started

    def remaining_fraction(self) -> float | None:
        """Return the smallest remaining share of any $ or token cap (None without caps)."""
        shares = []
        if self.caps.max_usd:
            shares.append(float(1 - self.usd / self.caps.max_usd))
        if self.caps.max_tokens:
            shares.append(1 - self.tokens / self.caps.max_tokens)
        return max(0.0, min(shares)) if shares else None

    def check(
        self, *, tokens: int = 0, usd: Decimal = Decimal(0), external_usd: Decimal = Decimal(0)
    ) -> None:
        """Raise RunCapHit if a call of this estimated size would cross a cap."""
        c = self.caps
        with self._lock:
            elapsed = self.elapsed_s
            if c.max_wall_s is not None and elapsed >= c.max_wall_s:
                raise RunCapHit(
                    "time", limit=Decimal(str(c.max_wall_s)),
                    spent=Decimal(str(round(elapsed, 3))), needed=Decimal(0),
                )  # fmt: skip
            if c.max_tokens is not None and self.tokens + tokens > c.max_tokens:
                raise RunCapHit(
                    "tokens", limit=Decimal(c.max_tokens), spent=Decimal(self.tokens),
                    needed=Decimal(tokens),
                )  # fmt: skip
            if c.max_usd is not None and self.usd + usd > c.max_usd:
                raise RunCapHit("cost", limit=c.max_usd, spent=self.usd, needed=usd)
            if c.max_external_usd is not None and self.external_usd + external_usd > (
                c.max_external_usd
            ):
                raise RunCapHit(
                    "external", limit=c.max_external_usd, spent=self.external_usd,
                    needed=external_usd,
                )  # fmt: skip

    def record(
        self, *, tokens: int = 0, usd: Decimal = Decimal(0), external_usd: Decimal = Decimal(0)
    ) -> None:
        """Add what a finished call actually used."""
        with self._lock:
            self.tokens += tokens
            self.usd += usd
            self.external_usd += external_usd
            self.calls += 1

    def summary(self) -> dict[str, Any]:
        """Return what the run used so far, for the partial-result summary."""
        return {
            "calls": self.calls,
            "tokens": self.tokens,
            "usd": str(self.usd),
            "external_usd": str(self.external_usd),
            "elapsed_s": round(self.elapsed_s, 3),
        }

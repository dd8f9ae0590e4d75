"""Cost controls: pricing, projection, routing, retries, run caps and tenant budget leases."""

from runledger.cost.lease import (
    BudgetBusy,
    BudgetError,
    HttpLeaseTransport,
    LedgerUnavailable,
    PgLeaseTransport,
    Reservation,
    TenantBudget,
    TenantCapReached,
    TenantPaused,
)
from runledger.cost.policy import RunCapHit, RunCaps, RunMeter
from runledger.cost.pricing import (
    ModelPrice,
    PricingError,
    PricingTable,
    UnknownModelError,
    default_pricing,
)
from runledger.cost.projection import (
    BudgetBlocked,
    BudgetVerdict,
    Plan,
    PlanError,
    Projection,
    check_budget,
    load_plan,
    project,
)
from runledger.cost.retry import (
    BreakerBoard,
    CircuitOpen,
    ErrorClass,
    RetryPolicy,
    call_with_retries,
    classify,
)
from runledger.cost.routing import Route, RoutingError, RoutingTable

__all__ = [
    "BreakerBoard",
    "BudgetBlocked",
    "BudgetBusy",
    "BudgetError",
    "BudgetVerdict",
    "CircuitOpen",
    "ErrorClass",
    "HttpLeaseTransport",
    "LedgerUnavailable",
    "ModelPrice",
    "PgLeaseTransport",
    "Plan",
    "PlanError",
    "PricingError",
    "PricingTable",
    "Projection",
    "Reservation",
    "RetryPolicy",
    "Route",
    "RoutingError",
    "RoutingTable",
    "RunCapHit",
    "RunCaps",
    "RunMeter",
    "TenantBudget",
    "TenantCapReached",
    "TenantPaused",
    "UnknownModelError",
    "call_with_retries",
    "check_budget",
    "classify",
    "default_pricing",
    "load_plan",
    "project",
]

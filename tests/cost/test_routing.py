"""Model routing: downgrade chains on retry and on a shrinking budget; Validator never."""

from __future__ import annotations

from pathlib import Path

import pytest

from runledger.cost.pricing import default_pricing
from runledger.cost.retry import BreakerBoard
from runledger.cost.routing import RoutingError, RoutingTable

ROUTING = """
roles:
  implementer: [gpt-4.1, gpt-4.1-mini, gpt-4o-mini]
  coordinator: [gpt-4o, gpt-4o-mini]
  validator: [claude-sonnet-4-5]
default: [gpt-4o-mini]
budget_thresholds:
  - {below: 0.5, step: 1}
  - {below: 0.2, step: 2}
"""


@pytest.fixture
def table(tmp_path: Path) -> RoutingTable:
    path = tmp_path / "routing.yml"
    path.write_text(ROUTING)
    return RoutingTable.load(path, pricing=default_pricing())


def test_first_attempt_uses_preferred_model(table: RoutingTable) -> None:
    assert table.route("implementer").model == "gpt-4.1"
    assert table.route("publisher").model == "gpt-4o-mini"  # default chain


def test_retries_walk_down_the_chain_and_stop_at_the_cheapest(table: RoutingTable) -> None:
    models = [table.route("implementer", attempt=a).model for a in (1, 2, 3, 4, 9)]
    assert models == ["gpt-4.1", "gpt-4.1-mini", "gpt-4o-mini", "gpt-4o-mini", "gpt-4o-mini"]


def test_budget_thresholds_downgrade_before_the_cap(table: RoutingTable) -> None:
    assert table.route("implementer", remaining_fraction=0.9).model == "gpt-4.1"
    low = table.route("implementer", remaining_fraction=0.4)
    assert (low.model, low.reason) == ("gpt-4.1-mini", "budget below 50% of the run's cap")
    assert table.route("implementer", remaining_fraction=0.1).model == "gpt-4o-mini"


def test_validator_never_downgrades(table: RoutingTable) -> None:
    for attempt in (1, 2, 5):
        for remaining in (None, 0.4, 0.01):
            route = table.route("Validator", attempt=attempt, remaining_fraction=remaining)
            assert route.model == "claude-sonnet-4-5"
            assert route.reason == "the Validator never downgrades"
    # Not even when its model's circuit is open: it fails instead of validating cheaply.
    assert table.route("validator", is_open=lambda m: True).model == "claude-sonnet-4-5"


def test_routing_file_cannot_give_the_validator_a_chain() -> None:
    with pytest.raises(RoutingError, match=r"roles\.validator: the Validator never downgrades"):
        RoutingTable.from_mapping({"roles": {"validator": ["gpt-4o", "gpt-4o-mini"]}})


def test_open_circuit_skips_to_the_next_model(table: RoutingTable) -> None:
    route = table.route("implementer", is_open=lambda m: m == "gpt-4.1")
    assert route.model == "gpt-4.1-mini"
    assert "circuit open for gpt-4.1" in route.reason


def test_open_breaker_board_drives_routing(table: RoutingTable) -> None:
    board = BreakerBoard(fail_max=2, reset_s=60)

    def flaky() -> None:
        raise TimeoutError("model timed out")

    for _ in range(2):
        with pytest.raises(TimeoutError):
            board.call("gpt-4.1", flaky)
    assert table.route("implementer", is_open=board.is_open).model == "gpt-4.1-mini"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("roles:\n  implementer: [gpt-4o-mini, gpt-4o]\n",
         "roles.implementer[1]: 'gpt-4o' is not cheaper than 'gpt-4o-mini'"),
        ("roles:\n  implementer: [gpt-4o, nope-1]\n",
         "roles.implementer[1]: unknown model 'nope-1'"),
        ("roles:\n  implementer: []\n", "roles.implementer: list at least one model"),
        ("roles:\n  implementer: [gpt-4o]\nbudget_thresholds:\n  - {below: 1.5, step: 1}\n",
         "budget_thresholds[0].below: must be <= 1"),
        ("roles:\n  implementer: [gpt-4o]\nbudget_thresholds:\n  - {below: 0.5, step: 0}\n",
         "budget_thresholds[0].step: must be >= 1"),
        ("roles:\n  implementer: [gpt-4o]\nretry: yes\n", "retry: is not a known field"),
        ("roles:\n  implementer: gpt-4o\n", "roles.implementer: must be a list"),
        ("default: [gpt-4o]\n", "roles: is required"),
    ],
)  # fmt: skip
def test_malformed_routing_file_names_the_offending_key(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "routing.yml"
    path.write_text(text)
    with pytest.raises(RoutingError) as err:
        RoutingTable.load(path, pricing=default_pricing())
    assert message in str(err.value)


def test_role_without_route_is_named() -> None:
    table = RoutingTable.from_mapping({"roles": {"implementer": ["gpt-4o"]}})
    with pytest.raises(RoutingError, match="no route for role 'publisher'"):
        table.route("publisher")

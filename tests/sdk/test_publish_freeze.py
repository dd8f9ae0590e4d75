"""The SDK's publish and Publisher freezes: fails closed, only full publishes of Publishers,
and artifact contents bounded before anything is spooled."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from runledger._local import free_port
from runledger.events import MAX_SNAPSHOT_CHARS
from runledger.sdk import CostOptions, Ledger, PublisherFrozen, RunCapReached

NO_CAPS = CostOptions(enforce_tenant_cap=False)


def test_a_publisher_that_cannot_ask_the_ledger_fails_closed_and_ends_partial(
    make_ledger: Callable[..., Ledger],
) -> None:
    ledger = make_ledger(f"http://127.0.0.1:{free_port()}", "token", costs=NO_CAPS)
    run = ledger.run("acme", "p1", "publish", "publisher", playbook="landing")
    with pytest.raises(PublisherFrozen) as refused, run:
        run.publish_done("site/index.html", 2)
    assert isinstance(refused.value, RunCapReached)
    assert refused.value.freeze is None
    message = str(refused.value)
    assert message.startswith(
        "could not check whether the Publisher of playbook landing is frozen (ConnectionError"
    )
    assert message.endswith("the Publisher fails closed")
    assert run.status == "partial"  # the with block ended it as partial, not failed
    summary = run.partial_result().summary()
    assert "stopped: could not check whether the Publisher of playbook landing" in summary


def test_partial_publishes_and_other_roles_are_never_checked(
    make_ledger: Callable[..., Ledger],
) -> None:
    ledger = make_ledger(f"http://127.0.0.1:{free_port()}", "token", costs=NO_CAPS)
    with ledger.run("acme", "p1", "publish", "publisher", playbook="landing") as run:
        run.publish_done("site/index.html", 2, partial=True, instructions="finish later")
    with ledger.run("acme", "p1", "publish", "coordinator", playbook="landing") as run:
        run.publish_done("site/index.html", 2)  # not the Publisher's publish
    with ledger.run("acme", "p1", "publish", "publisher") as run:
        run.publish_done("site/index.html", 2)  # no playbook: no playbook freeze applies


def test_without_a_control_service_publishes_are_not_gated(
    make_ledger: Callable[..., Ledger],
) -> None:
    ledger = make_ledger(None, None, costs=NO_CAPS)
    with ledger.run("acme", "p1", "publish", "publisher", playbook="landing") as run:
        run.publish_done("site/index.html", 2)
    assert run.status == "succeeded"


def test_artifact_content_over_the_limit_is_refused_before_anything_is_spooled(
    make_ledger: Callable[..., Ledger],
) -> None:
    ledger = make_ledger(None, None, costs=NO_CAPS)
    with ledger.run("acme", "p1", "build", "implementer", playbook="landing") as run:
        before = ledger.pending()
        with pytest.raises(ValueError, match=f"the ledger stores at most {MAX_SNAPSHOT_CHARS}"):
            run.artifact_written("site/index.html", 1, content="x" * (MAX_SNAPSHOT_CHARS + 1))
        assert ledger.pending() == before
        run.artifact_written("site/index.html", 1, content="# ok\n\n## Hero\n")
        assert ledger.pending() == before + 2  # the event and the content record
        with pytest.raises(ValueError, match="expected one of text/html, text/markdown"):
            run.artifact_written("site/index.html", 2, content="x", media_type="image/png")
        with pytest.raises(TypeError, match="must be a str"):
            run.artifact_written("site/index.html", 2, content=b"bytes")  # type: ignore[arg-type]

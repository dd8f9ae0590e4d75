"""Redaction rules: every kind of secret and PII is replaced, ordinary text is not."""

from __future__ import annotations

import re

import pytest
from _sdk_corpus import ORDINARY, SECRETS

from runledger.redact import DEFAULT_RULES, Redactor, Rule, marker, nearest_city, redact


@pytest.mark.parametrize(("kind", "text", "secret"), SECRETS, ids=[s[0] for s in SECRETS])
def test_each_secret_is_replaced_by_a_marker_naming_its_kind(
    kind: str, text: str, secret: str
) -> None:
    out = redact(text)
    assert secret not in out
    assert f"[REDACTED:{kind}" in out


@pytest.mark.parametrize("text", ORDINARY)
def test_ordinary_text_is_left_intact(text: str) -> None:
    assert redact(text) == text


def test_all_secrets_in_one_text_are_replaced_and_the_prose_around_them_kept() -> None:
    text = " | ".join(t for _, t, _ in SECRETS) + " | " + ORDINARY[0]
    out = redact(text)
    for _, _, secret in SECRETS:
        assert secret not in out
    assert ORDINARY[0] in out


def test_card_numbers_must_pass_the_luhn_check() -> None:
    assert redact("order 4111111111111111") == f"order {marker('card_number')}"
    assert redact("order 4111111111111112") == "order 4111111111111112"


def test_coordinates_become_the_nearest_city_uber_mode() -> None:
    assert redact("driver at 40.712776, -74.005974") == (
        "driver at [REDACTED:coordinates city=New York]"
    )
    # Far from every city in the table: no place name is kept at all.
    assert redact("buoy at -48.876667, -123.393333") == "buoy at [REDACTED:coordinates]"
    city = nearest_city(48.8584, 2.2945)
    assert city is not None and city.name == "Paris"


def test_structured_values_are_redacted_by_key_and_by_content() -> None:
    value = {
        "password": "x",
        "pin_password": 1234,
        "api_key": "visible?",
        "tokens_in": 42,
        "lat": 37.77,
        "notes": ["mail bob@example.com", ("sk-ant-api03-AbCdEfGhIjKlMnOpQrSt",)],
        "count": 7,
    }
    assert redact(value) == {
        "password": "[REDACTED:password]",
        "pin_password": "[REDACTED:pin_password]",
        "api_key": "[REDACTED:api_key]",
        "tokens_in": 42,
        "lat": "[REDACTED:coordinates]",
        "notes": ["mail [REDACTED:email]", ("[REDACTED:anthropic_key]",)],
        "count": 7,
    }


def test_the_rule_list_is_extensible() -> None:
    ticket = Rule("ticket_secret", re.compile(r"\bTCK-[0-9A-F]{12}\b"), hints=("TCK-",))
    redactor = Redactor([*DEFAULT_RULES, ticket])
    assert redactor.text("see TCK-0123456789AB") == "see [REDACTED:ticket_secret]"
    assert Redactor().text("see TCK-0123456789AB") == "see TCK-0123456789AB"
    assert redactor.with_rules().rules == redactor.rules


def test_every_rule_is_documented() -> None:
    import runledger.redact as module

    for rule in DEFAULT_RULES:
        assert rule.description, rule.kind
        assert rule.kind in (module.__doc__ or ""), f"{rule.kind} missing from the rules table"


def test_every_rule_is_in_the_sdk_documentation() -> None:
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "sdk.md").read_text()
    for rule in DEFAULT_RULES:
        if rule.kind != "secret_assignment":
            assert f"| `{rule.kind}` |" in doc, f"{rule.kind} missing from docs/sdk.md"

"""Redaction rules: every kind of secret and PII is replaced, ordinary text is not."""

from __future__ import annotations

import dataclasses
import re

import pytest

from _support import ROOT
from _support.corpus import ORDINARY, SECRETS
from _support.redact_corpus import (
    BASE64_CREDENTIALS,
    BENIGN,
    CLOUD_SECRETS,
    KNOWN_CITIES,
    NATIONAL_PHONES,
    NON_ASCII_EMAILS,
    NOT_CITIES,
    SECRETS_AS_KEYS,
    TRUNCATED,
    URL_CREDENTIALS,
    WEBHOOKS,
    Case,
)
from runledger.redact import (
    DEFAULT_RULES,
    Redactor,
    Rule,
    known_city,
    marker,
    nearest_city,
    redact,
    safe_city,
    truncate,
)

CLASSES: dict[str, list[Case]] = {
    "cloud_secret": CLOUD_SECRETS,
    "url_credentials": URL_CREDENTIALS,
    "webhook": WEBHOOKS,
    "national_phone": NATIONAL_PHONES,
    "base64_basic": BASE64_CREDENTIALS,
    "non_ascii_email": NON_ASCII_EMAILS,
}
CASES = [(name, *case) for name, cases in CLASSES.items() for case in cases]
CASE_IDS = [f"{name}-{i}" for name, cases in CLASSES.items() for i in range(len(cases))]
ALL_TEXTS = [t for _, _, t, _ in CASES] + [t for _, t, _ in SECRETS] + ORDINARY + BENIGN


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


def test_every_rule_is_in_the_redaction_documentation() -> None:
    doc = (ROOT / "docs" / "redaction.md").read_text("utf-8")
    for rule in DEFAULT_RULES:
        if rule.kind != "secret_assignment":
            assert f"| `{rule.kind}` |" in doc, f"{rule.kind} missing from docs/redaction.md"


def test_each_class_has_at_least_five_fresh_examples() -> None:
    for name, cases in CLASSES.items():
        assert len(cases) >= 5, name
    assert len(SECRETS_AS_KEYS) >= 5 and len(TRUNCATED) >= 5 and len(NOT_CITIES) >= 5
    assert len(BENIGN) >= 30


@pytest.mark.parametrize(("cls", "kind", "text", "fragments"), CASES, ids=CASE_IDS)
def test_every_class_is_redacted_in_text_values_and_attributes(
    cls: str, kind: str, text: str, fragments: tuple[str, ...]
) -> None:
    r = Redactor()
    nested = r.value({"outer": {"notes": [text, (text,)], "detail": text}})
    attrs = r.attributes({"q": text, "seq": [text, "ok"]})
    for out in (r.text(text), repr(nested), repr(attrs)):
        assert f"[REDACTED:{kind}" in out, (cls, out)
        for fragment in fragments:
            assert fragment not in out, (cls, out)


@pytest.mark.parametrize(("value", "fragments"), SECRETS_AS_KEYS)
def test_a_secret_used_as_a_mapping_key_is_redacted(
    value: dict[str, object], fragments: tuple[str, ...]
) -> None:
    r = Redactor()
    for out in (r.value(value), r.attributes(value), redact([value])):
        shown = repr(out)
        assert "[REDACTED:" in shown
        for fragment in fragments:
            assert fragment not in shown


def test_camel_case_secret_names_as_keys_hide_their_values() -> None:
    value = {"SecretAccessKey": "abc", "apiKey": 7, "nested": {"sessionToken": "z"}}
    assert redact({**value, "inputTokens": 5}) == {
        "SecretAccessKey": "[REDACTED:secret_access_key]",
        "apiKey": "[REDACTED:api_key]",
        "nested": {"sessionToken": "[REDACTED:session_token]"},
        "inputTokens": 5,
    }


def test_a_secret_key_is_redacted_every_time_it_comes_back() -> None:
    r = Redactor()
    for _ in range(3):  # plain keys are remembered; a secret one must never be
        assert r.value({"model": 1, "ghp_zxvRtUI0hGB56FCnZIyFe5PMKDEOrMzZd5QW": 2}) == {
            "model": 1,
            "[REDACTED:github_token]": 2,
        }


def test_two_secret_keys_with_the_same_marker_keep_both_values() -> None:
    out = redact({"AKIAKTAI6P8PAT49CVJJ": "prod", "AKIAZ6NARWCRBSZZ0EZW": "staging", "n": 1})
    assert out == {
        "[REDACTED:aws_access_key]": "prod",
        "[REDACTED:aws_access_key]#2": "staging",
        "n": 1,
    }
    assert Redactor().attributes({"sk-live-Mn6Oo8FHzdMoL7yLZ1o8piG6": 1, "model": "gpt-4.1"}) == {
        "[REDACTED:openai_key]": 1,
        "model": "gpt-4.1",
    }


@pytest.mark.parametrize("text", BENIGN)
def test_benign_text_is_left_intact_everywhere(text: str) -> None:
    r = Redactor()
    assert r.text(text) == text
    assert r.value({"k": [text], text: 1}) == {"k": [text], text: 1}
    assert r.attributes({"note": text, "seq": (text,)}) == {"note": text, "seq": (text,)}


def test_phone_numbers_are_found_in_national_formats_and_benign_numbers_kept() -> None:
    assert redact("ring 020 7946 0958 or 030 901820") == "ring [REDACTED:phone] or [REDACTED:phone]"
    for kept in (
        "order 100200 of 1 048 576 bytes",
        "at 1733130456 and 1733130456123 ms",
        "ids 4005 3217 and 2024-06-30 12:45:00",
        "uuid 08700565-bfd1-4154-99d9-c3ab40cc482d",
        "client 172.16.254.1 value 3.14159265",
    ):
        assert redact(kept) == kept


def test_hashes_and_ids_are_not_taken_for_high_entropy_secrets() -> None:
    digest = "sha256:nThbg6kXUpJWGl7E1IGOCspRomTxdCARLviKw6E5SY8"
    assert redact(digest) == digest
    token = "kQ7vX2mR9pL4sT8wZ3nB6yC1dF5gH0jK"
    assert redact(f"token {token} used") == "token [REDACTED:high_entropy] used"
    hexed = "4bf92f3577b34da6a3ce929d0e0e4736" * 2
    assert redact(hexed) == hexed


@pytest.mark.parametrize(("text", "fragment"), TRUNCATED)
def test_text_is_redacted_before_it_is_cut(text: str, fragment: str) -> None:
    r = Redactor()
    limit = text.index(fragment) + len(fragment) + 1
    out = r.text(text, limit=limit)
    assert fragment not in out
    assert len(out) <= limit and out.endswith("…")
    assert out.count("[REDACTED:") == out.count("]")  # no marker is cut in half
    # Cutting first would have let the start of the secret through.
    assert r.text(text[: limit - 1]).endswith(fragment)


def test_truncate_never_cuts_a_marker_and_keeps_short_text() -> None:
    assert truncate("short", 10) == "short"
    assert truncate("ab [REDACTED:email] cd", 10) == "ab …"
    assert truncate("ab [REDACTED:email] cd", 20) == "ab [REDACTED:email]…"
    assert Redactor().text("x" * 600, limit=500) == "x" * 499 + "…"


@pytest.mark.parametrize(("given", "expected"), KNOWN_CITIES)
def test_a_known_city_is_kept_in_the_tables_spelling(given: str, expected: str) -> None:
    assert safe_city(given) == expected
    city = known_city(given)
    assert city is not None and city.name == expected
    assert redact({"demo_id": "d-1", "city": given}) == {"demo_id": "d-1", "city": expected}


@pytest.mark.parametrize("given", NOT_CITIES)
def test_an_address_or_unknown_place_never_passes_as_a_city(given: str) -> None:
    assert known_city(given) is None
    assert safe_city(given) == "[REDACTED:city]"
    assert redact({"city": given}) == {"city": "[REDACTED:city]"}
    assert Redactor().attributes({"demo.city": given}) == {"demo.city": "[REDACTED:city]"}


def test_the_fast_path_for_plain_text_changes_no_result() -> None:
    gated = Redactor()
    ungated = Redactor([dataclasses.replace(rule) for rule in DEFAULT_RULES])
    for text in ALL_TEXTS:
        assert gated.text(text) == ungated.text(text), text
    # A caller's rule that runs first can make text the built-in rules must see.
    unmask = Rule("unmask", re.compile("MASKED"), replace=lambda m: "bob@example.com")
    assert Redactor([unmask, *DEFAULT_RULES]).text("to MASKED now") == "to [REDACTED:email] now"


def test_redacting_twice_changes_nothing_more() -> None:
    for text in ALL_TEXTS:
        once = redact(text)
        assert redact(once) == once, text


def test_remembered_plain_texts_change_no_result() -> None:
    # A redactor remembers texts that held nothing (they repeat: paths, reasons); a text
    # with a secret must be redacted every time, and another redactor's rules still apply.
    r = Redactor()
    for _ in range(2):
        for text in ALL_TEXTS:
            assert r.text(text) == Redactor().text(text), text
    ticket = Rule("ticket_secret", re.compile(r"\bTCK-[0-9A-F]{12}\b"), hints=("TCK-",))
    assert r.text("see TCK-0123456789AB") == "see TCK-0123456789AB"
    assert r.with_rules(ticket).text("see TCK-0123456789AB") == "see [REDACTED:ticket_secret]"
    assert r.text("x" * 600, limit=10) == "x" * 9 + "…"


def test_remembered_flat_mappings_change_no_result() -> None:
    # A flat mapping whose keys and texts were all seen clean is copied without a look at
    # each item; a secret, a secret's key, a city or coordinates must still be redacted.
    mappings = [{"note": text, "bytes": 4096, "words": 400} for text in ALL_TEXTS] + [
        {"bytes": 4096, "words": 400, "ratio": 0.5, "ok": True, "gone": None},
        {"bytes": 4096, "password": 123456789},
        {"bytes": 4096, "lat": 38.72},
        {"bytes": 4096, "city": "12 Rua Augusta"},
        {"bytes": 4096, "AKIAAZM3TLY8HHE8UK89": 1},
    ]
    r = Redactor()
    for _ in range(3):
        for mapping in mappings:
            out = r.value(mapping)
            assert out == Redactor().value(mapping), mapping
            assert out is not mapping  # always a copy, as before
    assert r.value({"bytes": 4096, "words": 400, "secret": 1}) == {
        "bytes": 4096, "words": 400, "secret": "[REDACTED:secret]"
    }  # fmt: skip


def test_keys_after_an_escaped_newline_are_redacted() -> None:
    # str(KeyError(text)) and JSON strings escape newlines: "\\nAKIA..." has no word boundary.
    for key in ("AKIAAZM3TLY8HHE8UK89", "sk-proj-Qw3rTy9UiOp4AsDfGhJkL1ZxCvBnM0qW",
                "ghp_1A2b3C4d5E6f7G8h9I0j1K2l3M4n5O6p7Q8r"):  # fmt: skip
        out = redact(repr(f"keys\n{key}\tnext"))
        assert key not in out and "[REDACTED:" in out, out

"""Redaction of secrets and personal data before anything leaves an agent's process.

Every rule finds one kind of sensitive text and replaces it with a marker naming the kind,
``[REDACTED:<kind>]``. The rules, in the order they run:

=================  ==========================================================================
kind               what it finds
=================  ==========================================================================
private_key        PEM private key blocks (``-----BEGIN ... PRIVATE KEY-----`` to ``END``)
jwt                JSON Web Tokens (``eyJ<header>.eyJ<payload>.<signature>``)
bearer_token       ``Bearer <token>`` credentials (the word ``Bearer`` is kept)
anthropic_key      Anthropic API keys (``sk-ant-...``)
openai_key         OpenAI-style secret keys (``sk-...``, ``sk-proj-...``)
aws_access_key     AWS access key ids (``AKIA``/``ASIA`` + 16 characters)
github_token       GitHub tokens (``ghp_``, ``gho_``, ``ghu_``, ``ghs_``, ``ghr_``, ``github_pat_``)
slack_token        Slack tokens (``xoxb-``, ``xoxp-``, ``xoxa-``, ``xoxr-``, ``xoxs-``)
google_api_key     Google API keys (``AIza`` + 35 characters)
stripe_key         Stripe keys (``sk_live_``, ``rk_test_``, ...)
runledger_token    runledger bearer tokens (``rl_`` + 43 characters)
secret_assignment  ``password=...``, ``api_key: ...``, ``"secret": "..."`` and similar pairs
                   (the name is kept, the value replaced by ``[REDACTED:<name>]``)
email              e-mail addresses
card_number        payment card numbers (13-19 digits, plain or in groups of 4, Luhn-valid)
phone              phone numbers (``+`` international forms, ``(555) 123-4567``, ``555-123-4567``)
coordinates        precise coordinates (``37.7749, -122.4194``, ``lat=... lon=...``): Uber Mode
                   replaces them by the nearest city of a small offline table,
                   ``[REDACTED:coordinates city=San Francisco]``
=================  ==========================================================================

Mappings are redacted value by value; a value whose *key* names a secret (``password``,
``api_key``, ``authorization``, ...) is replaced whatever it looks like, and a value under a
coordinate key (``lat``, ``longitude``, ...) becomes ``[REDACTED:coordinates]``.

Ordinary text is left alone: numbers, dates, UUIDs, version strings and short decimals do not
match any rule. The list is extensible::

    from runledger.redact import DEFAULT_RULES, Redactor, Rule
    import re

    ticket = Rule("ticket_secret", re.compile(r"\\bTCK-[0-9A-F]{12}\\b"))
    redactor = Redactor([*DEFAULT_RULES, ticket])
"""

from __future__ import annotations

import csv
import functools
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

__all__ = [
    "DEFAULT_RULES",
    "City",
    "Redactor",
    "Rule",
    "default_redactor",
    "marker",
    "nearest_city",
    "redact",
]

MAX_CITY_DISTANCE_KM = 300.0
"""Coordinates farther than this from every city in the table keep no place name at all."""


def marker(kind: str) -> str:
    """Return the replacement text for a redacted value of ``kind``."""
    return f"[REDACTED:{kind}]"


@dataclass(frozen=True)
class Rule:
    """One kind of sensitive text.

    Args:
        kind: short name used in the marker, e.g. ``email``.
        pattern: what to find.
        replace: builds the replacement from the match; default: ``marker(kind)``.
            Return the match's own text to leave it alone (e.g. a failed checksum).
        description: one line for the documentation.
        hints: substrings of which at least one occurs in every match (lower-case when the
            pattern ignores case); text holding none of them skips the pattern.
        prefilter: a cheaper pattern every match also matches; text it does not match skips
            the rule. Both pre-checks only save time, never change the result.
    """

    kind: str
    pattern: re.Pattern[str]
    replace: Callable[[re.Match[str]], str] | None = None
    description: str = ""
    hints: tuple[str, ...] = ()
    prefilter: re.Pattern[str] | None = None


# --- helpers for the rules ---------------------------------------------------------------


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _card(match: re.Match[str]) -> str:
    digits = re.sub(r"[ -]", "", match.group(0))
    if 13 <= len(digits) <= 19 and _luhn_ok(digits):
        return marker("card_number")
    return match.group(0)


def _secret_pair(match: re.Match[str]) -> str:
    name = re.sub(r"[^a-z0-9]+", "_", match.group("name").lower()).strip("_")
    return f"{match.group('lead')}{marker(name)}{match.group('trail') or ''}"


def _bearer(match: re.Match[str]) -> str:
    return f"{match.group(1)} {marker('bearer_token')}"


@dataclass(frozen=True)
class City:
    """A row of the offline city table."""

    name: str
    country: str
    lat: float
    lon: float


@lru_cache(maxsize=1)
def _cities() -> tuple[City, ...]:
    text = resources.files("runledger").joinpath("data/cities.csv").read_text(encoding="utf-8")
    return tuple(
        City(row["city"], row["country"], float(row["lat"]), float(row["lon"]))
        for row in csv.DictReader(text.splitlines())
    )


def nearest_city(lat: float, lon: float) -> City | None:
    """Return the table's city nearest to ``lat``/``lon``, or None when none is close."""
    best, best_km = None, MAX_CITY_DISTANCE_KM
    p1, l1 = math.radians(lat), math.radians(lon)
    for city in _cities():
        p2, l2 = math.radians(city.lat), math.radians(city.lon)
        h = (
            math.sin((p2 - p1) / 2) ** 2
            + math.cos(p1) * math.cos(p2) * math.sin((l2 - l1) / 2) ** 2
        )
        km = 2 * 6371.0 * math.asin(min(1.0, math.sqrt(h)))
        if km <= best_km:
            best, best_km = city, km
    return best


def _coordinates(match: re.Match[str]) -> str:
    lat = float(match.group("lat") or match.group("lat2"))
    lon = float(match.group("lon") or match.group("lon2"))
    if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
        return match.group(0)
    city = nearest_city(lat, lon)
    return f"[REDACTED:coordinates city={city.name}]" if city else marker("coordinates")


_SECRET_NAMES = (
    r"password|passwd|pwd|passphrase|secret|client[_-]?secret|api[_-]?key|apikey|"
    r"access[_-]?key|secret[_-]?key|access[_-]?token|auth[_-]?token|refresh[_-]?token|"
    r"token|private[_-]?key|session[_-]?id|cookie"
)
_COORD = r"-?\d{1,3}\.\d{3,}"
_BARE_COORD = r"-?\d{1,3}\.\d{4,}"

DEFAULT_RULES: tuple[Rule, ...] = (
    Rule(
        "private_key",
        re.compile(
            r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----"
            r"(?:[\s\S]*?-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----|[\s\S]*)"
        ),
        description="PEM private key blocks",
        hints=("PRIVATE KEY",),
    ),
    Rule(
        "jwt",
        re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}"),
        description="JSON Web Tokens",
        hints=("eyJ",),
    ),
    Rule(
        "bearer_token",
        re.compile(r"\b([Bb]earer)\s+[A-Za-z0-9._~+/=-]{8,}"),
        replace=_bearer,
        description="Bearer credentials",
        hints=("earer",),
    ),
    Rule(
        "anthropic_key",
        re.compile(r"\bsk-ant-[A-Za-z0-9_-]{16,}"),
        description="Anthropic API keys",
        hints=("sk-ant-",),
    ),
    Rule(
        "openai_key",
        re.compile(r"\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}"),
        description="OpenAI-style secret keys",
        hints=("sk-",),
    ),
    Rule(
        "aws_access_key",
        re.compile(r"\b(?:AKIA|ASIA|ABIA|ACCA|AIDA|AROA)[A-Z0-9]{16}\b"),
        description="AWS access key ids",
        hints=("AKIA", "ASIA", "ABIA", "ACCA", "AIDA", "AROA"),
    ),
    Rule(
        "github_token",
        re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{22,})"),
        description="GitHub tokens",
        hints=("gh", "github_pat_"),
    ),
    Rule(
        "slack_token",
        re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}"),
        description="Slack tokens",
        hints=("xox",),
    ),
    Rule(
        "google_api_key",
        re.compile(r"\bAIza[0-9A-Za-z_-]{35}"),
        description="Google API keys",
        hints=("AIza",),
    ),
    Rule(
        "stripe_key",
        re.compile(r"\b(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{16,}"),
        description="Stripe secret keys",
        hints=("_live_", "_test_"),
    ),
    Rule(
        "runledger_token",
        re.compile(r"\brl_[A-Za-z0-9_-]{40,}"),
        description="runledger bearer tokens",
        hints=("rl_",),
    ),
    Rule(
        "secret_assignment",
        re.compile(
            rf"(?P<lead>(?<![A-Za-z0-9])[\"']?(?P<name>{_SECRET_NAMES})[\"']?\s*(?:=|:)\s*[\"']?)"
            r"(?P<value>(?!\[REDACTED:)[^\s\"',;&]+)(?P<trail>[\"']?)",
            re.IGNORECASE,
        ),
        replace=_secret_pair,
        description="password=..., api_key: ... and similar name/value pairs",
        hints=("pass", "pwd", "secret", "key", "token", "cookie", "session"),
    ),
    Rule(
        "email",
        re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"),
        description="e-mail addresses",
        hints=("@",),
    ),
    Rule(
        "card_number",
        re.compile(
            r"(?<![\w.-])(?:\d{4}[ -]\d{4}[ -]\d{4}[ -]\d{1,7}|\d{4}[ -]\d{6}[ -]\d{5}|\d{13,19})"
            r"(?![\w-]|\.\d)"
        ),
        replace=_card,
        description="payment card numbers (Luhn-valid)",
        prefilter=re.compile(r"\d{4}"),
    ),
    Rule(
        "coordinates",
        re.compile(
            rf"(?:[\"']?\blat(?:itude)?[\"']?\s*[=:]\s*(?P<lat>{_COORD})[\"']?\s*[,;]?\s*"
            rf"[\"']?\b(?:lon|lng|long|longitude)[\"']?\s*[=:]\s*(?P<lon>{_COORD}))"
            rf"|(?<![\w.])(?P<lat2>{_BARE_COORD})\s*,\s*(?P<lon2>{_BARE_COORD})(?![\w.])"
        ),
        replace=_coordinates,
        description="precise coordinates, replaced by the nearest city",
        prefilter=re.compile(r"\.\d{3}"),
    ),
    Rule(
        "phone",
        re.compile(
            r"(?<![\w+])\+\d{1,3}(?:[ .-]?\(?\d{1,4}\)?){2,5}(?![\w])"
            r"|(?<![\w(])(?:\(\d{3}\)\s?|\d{3}[.-])\d{3}[.-]\d{4}(?![\w.-])"
        ),
        description="phone numbers",
        prefilter=re.compile(r"[+(]\d|\d{3}[.-]\d{3}"),
    ),
)
"""The built-in rules, in the order they are applied."""


_SHORTEST_MATCH = 6  # "a@b.co"; nothing shorter can hold a secret the rules know
_SECRET_KEY_RE = re.compile(
    rf"^(?:.*[_-])?(?:{_SECRET_NAMES}|authorization|credentials?)(?:[_-].*)?$", re.IGNORECASE
)
_TOKEN_COUNT_KEY_RE = re.compile(r"tokens?[_.-]?(?:in|out|count|used)|input_tokens|output_tokens")
_COORD_KEYS = frozenset({"lat", "lon", "lng", "latitude", "longitude", "coordinates", "geo"})


class Redactor:
    """Apply an ordered list of rules to text and, recursively, to structured values.

    Args:
        rules: the rules, in order; default ``DEFAULT_RULES``.
    """

    def __init__(self, rules: Iterable[Rule] = DEFAULT_RULES) -> None:
        self.rules: tuple[Rule, ...] = tuple(rules)
        # Each rule pre-checked by its hints and prefilter: redaction runs on every log line.
        self._plan = tuple(
            (
                r.hints,
                bool(r.pattern.flags & re.IGNORECASE),
                r.prefilter,
                functools.partial(r.pattern.sub, r.replace or marker(r.kind)),
            )
            for r in self.rules
        )

    def with_rules(self, *extra: Rule) -> Redactor:
        """Return a redactor with ``extra`` rules appended to these."""
        return Redactor((*self.rules, *extra))

    def text(self, text: str) -> str:
        """Return ``text`` with every sensitive part replaced by its marker."""
        if len(text) < _SHORTEST_MATCH:
            return text
        lowered: str | None = None
        for hints, ignore_case, prefilter, sub in self._plan:
            if hints:
                if ignore_case:
                    if lowered is None:
                        lowered = text.lower()
                    probe = lowered
                else:
                    probe = text
                for hint in hints:
                    if hint in probe:
                        break
                else:
                    continue
            if prefilter is not None and prefilter.search(text) is None:
                continue
            new = sub(text)
            if new != text:
                text, lowered = new, None
        return text

    def value(self, value: Any, key: str | None = None) -> Any:
        """Redact strings inside ``value`` (mappings, lists, tuples), keeping its shape."""
        if key is not None:
            lowered = key.lower()
            if lowered in _COORD_KEYS and value is not None:
                return marker("coordinates")
            if (
                isinstance(value, (str, bytes, int, float))
                and not isinstance(value, bool)
                and _SECRET_KEY_RE.match(lowered)
                and not _TOKEN_COUNT_KEY_RE.search(lowered)
                and not (isinstance(value, str) and value.startswith("[REDACTED:"))
            ):
                return marker(re.sub(r"[^a-z0-9]+", "_", lowered).strip("_") or "secret")
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            return {k: self.value(v, str(k)) for k, v in value.items()}
        if isinstance(value, list):
            return [self.value(v) for v in value]
        if isinstance(value, tuple):
            return tuple(self.value(v) for v in value)
        return value

    def attributes(self, attrs: Mapping[str, Any]) -> dict[str, Any]:
        """Redact an OpenTelemetry attribute mapping (strings and sequences of strings)."""
        out: dict[str, Any] = {}
        for k, v in attrs.items():
            if isinstance(v, Sequence) and not isinstance(v, str):
                out[k] = tuple(self.value(item, k) for item in v)
            else:
                out[k] = self.value(v, k)
        return out


_DEFAULT = Redactor()


def default_redactor() -> Redactor:
    """Return the process-wide redactor built from ``DEFAULT_RULES``."""
    return _DEFAULT


def redact(value: Any) -> Any:
    """Redact ``value`` (a string or a structure of strings) with the default rules."""
    return _DEFAULT.value(value)

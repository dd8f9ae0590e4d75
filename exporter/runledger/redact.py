"""Redaction of secrets and personal data before anything leaves an agent's process.

Every rule finds one kind of sensitive text and replaces it with a marker naming the kind,
``[REDACTED:<kind>]``. The rules, in the order they run (docs/redaction.md has an example
of each):

==================  =========================================================================
kind                what it finds
==================  =========================================================================
private_key         PEM private key blocks (``-----BEGIN ... PRIVATE KEY-----`` to ``END``)
jwt                 JSON Web Tokens (``eyJ<header>.eyJ<payload>.<signature>``)
url_credentials     the user and password of a URL (``postgres://[REDACTED:...]@host/db``)
webhook_url         the secret path of a webhook URL (Slack, Discord, Teams, Zapier,
                    ``.../hooks/<token>``); scheme and host are kept
url_secret          secret query parameters (``?token=``, ``&key=``, ``&sig=``, ...)
bearer_token        ``Bearer <token>`` credentials (the word ``Bearer`` is kept)
basic_auth          ``Basic <base64>`` credentials (the word ``Basic`` is kept)
anthropic_key       Anthropic API keys (``sk-ant-...``)
openai_key          OpenAI-style secret keys (``sk-...``, ``sk-proj-...``)
aws_access_key      AWS access key ids (``AKIA``/``ASIA`` + 16 characters); a 40-character
                    secret access key right after one becomes ``aws_secret_key``
github_token        GitHub tokens (``ghp_``, ``gho_``, ``ghu_``, ``ghs_``, ``ghr_``,
                    ``github_pat_``)
gitlab_token        GitLab tokens (``glpat-``, ``gldt-``, ``glrt-``, ...)
slack_token         Slack tokens (``xoxb-``, ``xoxp-``, ``xoxa-``, ``xoxr-``, ``xoxs-``)
google_api_key      Google API keys (``AIza`` + 35 characters)
stripe_key          Stripe keys (``sk_live_``, ``rk_test_``, ...)
service_token       other providers' tokens with a fixed shape (SendGrid ``SG.``, npm
                    ``npm_``, PyPI ``pypi-``, Hugging Face ``hf_``, Telegram bot tokens,
                    Discord bot tokens, Twilio ``SK``, Mailchimp ``-us1``, Square ``sq0csp-``)
runledger_token     runledger bearer tokens (``rl_`` + 43 characters)
secret_assignment   ``password=...``, ``api_key: ...``, ``"secret": "..."`` and similar pairs
                    (the name is kept, the value replaced by ``[REDACTED:<name>]``)
base64_credentials  base64 blobs that decode to ``user:password`` or to a known secret
high_entropy        long random-looking tokens (mixed case and digits, entropy >= 4.2 bits
                    per character); hex strings (hashes, trace ids) and UUIDs are kept
email               e-mail addresses, including non-ASCII ones (``jürgen@beispiel.de``)
card_number         payment card numbers (13-19 digits, plain or in groups of 4, Luhn-valid)
coordinates         precise coordinates (``37.7749, -122.4194``, ``lat=... lon=...``): Uber Mode
                    replaces them by the nearest city of a small offline table,
                    ``[REDACTED:coordinates city=San Francisco]``
phone               phone numbers: ``+`` international forms, ``(555) 123-4567``,
                    ``555-123-4567``, and national forms (``020 7946 0958``,
                    ``06 12 34 56 78``) that ``phonenumbers`` finds valid in ``PHONE_REGIONS``
==================  =========================================================================

Mappings are redacted value by value and key by key (a key may itself be a secret); a value
whose *key* names a secret (``password``, ``api_key``, ``authorization``, ...) is replaced
whatever it looks like, a value under a coordinate key (``lat``, ``longitude``, ...) becomes
``[REDACTED:coordinates]``, and a value under a ``city`` key is kept only when it is a city of
the offline table (``known_city``), so an address can never pass as a city.

Texts that are cut to a length are redacted first and cut after (``Redactor.text(text,
limit=)``): a secret cut in half would no longer match its rule.

Ordinary text is left alone: numbers, dates, UUIDs, hashes, trace ids, version strings and
prices do not match any rule. The list is extensible::

    from runledger.redact import DEFAULT_RULES, Redactor, Rule
    import re

    ticket = Rule("ticket_secret", re.compile(r"\\bTCK-[0-9A-F]{12}\\b"))
    redactor = Redactor([*DEFAULT_RULES, ticket])
"""

from __future__ import annotations

import base64
import binascii
import csv
import functools
import math
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

import phonenumbers

__all__ = [
    "DEFAULT_RULES",
    "PHONE_REGIONS",
    "City",
    "Redactor",
    "Rule",
    "default_redactor",
    "known_city",
    "marker",
    "nearest_city",
    "redact",
    "safe_city",
    "truncate",
]

MAX_CITY_DISTANCE_KM = 300.0
"""Coordinates farther than this from every city in the table keep no place name at all."""

PHONE_REGIONS: tuple[str, ...] = (
    "US", "GB", "DE", "FR", "ES", "IT", "NL", "IN", "AU", "BR", "JP",
)  # fmt: skip
"""Regions whose national phone formats (no ``+``) are recognised, tried in this order."""

_NEVER_LEADING_ZERO = frozenset({"US", "CA", "ES"})  # their national numbers never start with 0

_ELLIPSIS = "…"
_MARKER_OPEN = "[REDACTED:"


def marker(kind: str) -> str:
    """Return the replacement text for a redacted value of ``kind``."""
    return f"{_MARKER_OPEN}{kind}]"


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
    # No card number starts with 0 or 1 (1 is airline-only UATP; 13 digits from 1: a ms time)
    if 13 <= len(digits) <= 19 and digits[0] not in "01" and _luhn_ok(digits):
        return marker("card_number")
    return match.group(0)


def _snake(name: str) -> str:
    """Return ``name`` in lower case with camelCase words apart: ``SecretAccessKey`` ->
    ``secret_access_key``."""
    lowered = name.lower()
    if lowered == name:
        return lowered
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


def _name_marker(name: str) -> str:
    return marker(re.sub(r"[^a-z0-9]+", "_", _snake(name)).strip("_") or "secret")


def _secret_pair(match: re.Match[str]) -> str:
    return f"{match.group('lead')}{_name_marker(match.group('name'))}{match.group('trail') or ''}"


def _keep_word(kind: str) -> Callable[[re.Match[str]], str]:
    def replace(match: re.Match[str]) -> str:
        return f"{match.group(1)} {marker(kind)}"

    return replace


def _keep_lead(kind: str) -> Callable[[re.Match[str]], str]:
    def replace(match: re.Match[str]) -> str:
        return f"{match.group('lead')}{marker(kind)}"

    return replace


def _aws_key(match: re.Match[str]) -> str:
    if match.group("secret") is None:
        return marker("aws_access_key")
    return f"{marker('aws_access_key')}{match.group('sep')}{marker('aws_secret_key')}"


_HEX_OR_UUID = re.compile(r"[0-9a-fA-F]+|[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}")
_DIGEST_PREFIX = re.compile(r"(?i)\bsha(?:1|224|256|384|512)[-:=]$")
_ENTROPY_BITS = 4.2
_HIGH_ENTROPY_MIN = 30


def _entropy(text: str) -> float:
    n = len(text)
    return -sum(c / n * math.log2(c / n) for c in Counter(text).values())


def _high_entropy(match: re.Match[str]) -> str:
    token = match.group(0)
    core = token.rstrip("=")
    if _HEX_OR_UUID.fullmatch(core):  # hashes, trace and span ids, UUIDs
        return token
    start = match.start()
    if _DIGEST_PREFIX.search(match.string, max(0, start - 8), start):  # sha256:<base64>
        return token
    upper = sum(c.isupper() for c in core)
    digits = sum(c.isdigit() for c in core)
    lower = len(core) - upper - digits
    if upper < 2 or digits < 2 or lower < 2 or _entropy(core) < _ENTROPY_BITS:
        return token
    return marker("high_entropy")


_USER_PASSWORD = re.compile(r"[^\s:]{1,64}:[^\s]{3,128}")
_PRINTABLE = re.compile(r"[\x20-\x7e]+")


def _base64_secret(match: re.Match[str]) -> str:
    token = match.group(0)
    core = token.rstrip("=")
    if len(core) % 4 == 1:
        return token
    try:
        decoded = base64.b64decode(core + "=" * (-len(core) % 4), validate=True).decode("ascii")
    except (binascii.Error, UnicodeDecodeError):
        return token
    if not _PRINTABLE.fullmatch(decoded):
        return token
    if _USER_PASSWORD.fullmatch(decoded) or any(p.search(decoded) for p in _KEY_PATTERNS):
        return marker("base64_credentials")
    return token


# Dates, IPv4 addresses and decimal numbers have a phone's digits but not its shape.
_NOT_PHONE = re.compile(
    r"\d{4}[-./]\d{1,2}[-./]\d{1,2}|\d{1,2}[-./]\d{1,2}[-./]\d{2,4}|\d{1,3}(?:\.\d{1,3}){3}|\d+\.\d+"
)
_GROUPS = re.compile(r"\d+")


def _national_phone(candidate: str) -> bool:
    groups = _GROUPS.findall(candidate)
    digits = sum(len(g) for g in groups)
    if not 8 <= digits <= 13 or _NOT_PHONE.fullmatch(candidate):
        return False
    trunk = candidate.startswith(("0", "(0"))
    if not trunk and (len(groups) == 1 or digits < 9):
        return False  # a bare run of digits, or two short groups: an id, a count, a time
    if not trunk and len(groups[0]) <= 3 and all(len(g) == 3 for g in groups[1:]):
        return False  # thousands separators: 1 048 576
    for region in PHONE_REGIONS:
        if trunk and region in _NEVER_LEADING_ZERO:
            continue
        matcher = phonenumbers.PhoneNumberMatcher(
            candidate, region, leniency=phonenumbers.Leniency.VALID
        )
        if matcher.has_next():
            return True
    return False


def _phone(match: re.Match[str]) -> str:
    if match.group("national") is None or _national_phone(match.group(0)):
        return marker("phone")
    return match.group(0)


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


def _fold(text: str) -> str:
    plain = unicodedata.normalize("NFKD", text)
    plain = "".join(c for c in plain if not unicodedata.combining(c))
    return " ".join(plain.replace("-", " ").split()).casefold()


@lru_cache(maxsize=1)
def _city_names() -> dict[str, City]:
    names = {}
    for city in _cities():
        names[_fold(city.name)] = city
        names[_fold(f"{city.name}, {city.country}")] = city
    return names


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


_COUNTRY = re.compile(r"[^\W\d_][^\W\d_ .'-]*(?:[ .'-]+[^\W\d_]+)*\.?")


def known_city(text: str) -> City | None:
    """Return the table's city named ``text``: any case or accents, ``"Lyon, FR"`` and
    ``"Lyon, France"`` too (after a comma, words without digits)."""
    if len(text) > 80:
        return None
    names = _city_names()
    exact = names.get(_fold(text))
    if exact is not None:
        return exact
    name, comma, country = text.partition(",")
    if comma and _COUNTRY.fullmatch(country.strip()):
        return names.get(_fold(name))
    return None


def safe_city(text: str) -> str:
    """Return the table's spelling of city ``text``, or ``[REDACTED:city]`` for anything else.

    An Uber Mode city is stored as given only when it is a city of ``data/cities.csv``;
    a street address, a venue or an unknown place never is.
    """
    city = known_city(text)
    return city.name if city is not None else marker("city")


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
# detect-secrets' keyword list and connection-string names, for text only: as mapping keys
# (``account_key``, ``db_pass``) they are too common to replace values wholesale.
_TEXT_SECRET_NAMES = (
    rf"{_SECRET_NAMES}|basic[_-]?auth|auth[_-]?key|service[_-]?key|account[_-]?key|"
    r"db[_-]?key|database[_-]?key|priv[_-]?key|client[_-]?key|db[_-]?pass|database[_-]?pass|"
    r"key[_-]?pass|shared[_-]?access[_-]?key|contraseña|contrasena"
)
_QUERY_SECRET_NAMES = (
    r"token|key|api[_-]?key|apikey|sig|signature|secret|client[_-]?secret|access[_-]?token|"
    r"auth|password|pass|pwd|code|x-amz-signature|x-amz-credential|x-amz-security-token|"
    r"x-goog-signature|x-goog-credential"
)
_WEBHOOK_HOSTS = (
    r"hooks\.slack\.com/(?:services|workflows|triggers)"
    r"|(?:[\w-]+\.)?discord(?:app)?\.com/api/webhooks"
    r"|[\w-]+\.webhook\.office\.com/webhookb2"
    r"|outlook\.office(?:365)?\.com/webhook"
    r"|hooks\.zapier\.com/hooks/catch"
    r"|[^\s/\"'<>]+/(?:[^\s/?#\"'<>]+/)*?(?:web)?hooks?(?=/[\w-]{16,})"
)
# Where a key may start: at a word boundary, or right after an escaped newline or tab
# (``...\\nAKIA...`` in a repr or a JSON string), where there is no word boundary.
_KEY_START = r"(?:\b|(?<=\\[nrt]))"
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
        re.compile(_KEY_START + r"eyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}"),
        description="JSON Web Tokens",
        hints=("eyJ",),
    ),
    Rule(
        "url_credentials",
        re.compile(r"(?P<lead>\b[A-Za-z][A-Za-z0-9+.-]{1,30}://)[^\s/?#@\"'<>]+(?=@[^\s@])"),
        replace=_keep_lead("url_credentials"),
        description="user and password inside URLs",
        hints=("://",),
        prefilter=re.compile(r"://[^\s/]*@"),
    ),
    Rule(
        "webhook_url",
        re.compile(rf"(?P<lead>\bhttps?://(?:{_WEBHOOK_HOSTS})/)[^\s\"'<>]+", re.IGNORECASE),
        replace=_keep_lead("webhook_url"),
        description="webhook URLs whose path is the secret",
        hints=("hook",),
    ),
    Rule(
        "url_secret",
        re.compile(
            rf"(?P<lead>[?&;#](?:{_QUERY_SECRET_NAMES})=)(?!\[REDACTED:)[^&\s#\"'<>]+",
            re.IGNORECASE,
        ),
        replace=_keep_lead("url_secret"),
        description="secret query parameters (token=, key=, sig=, ...)",
        prefilter=re.compile(r"[?&;#][\w-]+="),
    ),
    Rule(
        "bearer_token",
        re.compile(r"\b([Bb]earer)\s+[A-Za-z0-9._~+/=-]{8,}"),
        replace=_keep_word("bearer_token"),
        description="Bearer credentials",
        hints=("earer",),
    ),
    Rule(
        "basic_auth",
        re.compile(r"\b([Bb]asic)\s+[A-Za-z0-9+/]{6,}={0,2}(?![\w+/=])"),
        replace=_keep_word("basic_auth"),
        description="HTTP Basic credentials",
        hints=("asic",),
    ),
    Rule(
        "anthropic_key",
        re.compile(_KEY_START + r"sk-ant-[A-Za-z0-9_-]{16,}"),
        description="Anthropic API keys",
        hints=("sk-ant-",),
    ),
    Rule(
        "openai_key",
        re.compile(_KEY_START + r"sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}"),
        description="OpenAI-style secret keys",
        hints=("sk-",),
    ),
    Rule(
        "aws_access_key",
        re.compile(
            _KEY_START + r"(?:AKIA|ASIA|ABIA|ACCA|AIDA|AROA|A3T[A-Z0-9])[A-Z0-9]{16}\b"
            r"(?:(?P<sep>[\s,;:=|\"'/]{1,6}(?:[A-Za-z_]{1,40}[\s,;:=|\"']{1,6})?)"
            r"(?P<secret>[A-Za-z0-9/+]{40})(?![A-Za-z0-9/+=]))?"
        ),
        replace=_aws_key,
        description="AWS access key ids, and the secret access key next to one",
        hints=("AKIA", "ASIA", "ABIA", "ACCA", "AIDA", "AROA", "A3T"),
    ),
    Rule(
        "github_token",
        re.compile(_KEY_START + r"(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{22,})"),
        description="GitHub tokens",
        hints=("gh", "github_pat_"),
    ),
    Rule(
        "gitlab_token",
        re.compile(
            _KEY_START + r"(?:glpat|gldt|glft|glsoat|glrt|glcbt|glptt|gloas)-[A-Za-z0-9_-]{20,}"
        ),
        description="GitLab tokens",
        hints=("gl",),
    ),
    Rule(
        "slack_token",
        re.compile(_KEY_START + r"xox[abposr]-[A-Za-z0-9-]{10,}"),
        description="Slack tokens",
        hints=("xox",),
    ),
    Rule(
        "google_api_key",
        re.compile(_KEY_START + r"AIza[0-9A-Za-z_-]{35}"),
        description="Google API keys",
        hints=("AIza",),
    ),
    Rule(
        "stripe_key",
        re.compile(_KEY_START + r"(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{16,}"),
        description="Stripe secret keys",
        hints=("_live_", "_test_"),
    ),
    Rule(
        "service_token",
        re.compile(
            _KEY_START + r"(?:SG\.[\w-]{22}\.[\w-]{43}\b|npm_[A-Za-z0-9]{36}\b|pypi-AgE[\w-]{70,}"
            r"|hf_[A-Za-z0-9]{30,}\b|\d{8,10}:AA[\w-]{33}\b"
            r"|[MNO][\w-]{23,25}\.[\w-]{6}\.[\w-]{27,38}\b|SK[0-9a-f]{32}\b"
            r"|[0-9a-f]{32}-us\d{1,2}\b|sq0(?:csp|atp)-[\w-]{22,43}|GOCSPX-[\w-]{28})"
        ),
        description="other providers' tokens of a fixed shape",
        prefilter=re.compile(r"SG\.|npm_|pypi-|hf_|:AA|\.[\w-]{6}\.|SK[0-9a-f]|-us\d|sq0|GOCSPX"),
    ),
    Rule(
        "runledger_token",
        re.compile(_KEY_START + r"rl_[A-Za-z0-9_-]{40,}"),
        description="runledger bearer tokens",
        hints=("rl_",),
    ),
    Rule(
        "secret_assignment",
        re.compile(
            rf"(?P<lead>(?<![A-Za-z0-9])[\"']?(?P<name>{_TEXT_SECRET_NAMES})[\"']?\s*(?:=|:)\s*"
            r"[\"']?)(?P<value>(?!\[REDACTED:)[^\s\"',;&]+)(?P<trail>[\"']?)",
            re.IGNORECASE,
        ),
        replace=_secret_pair,
        description="password=..., api_key: ... and similar name/value pairs",
        hints=("pass", "pwd", "secret", "key", "token", "cookie", "session", "auth", "contras"),
        prefilter=re.compile(r"[=:]"),
    ),
    Rule(
        "base64_credentials",
        re.compile(
            r"(?<![\w+/-])(?=[A-Za-z0-9+/]+?[A-Z]|[A-Za-z0-9+/]{8,}=)(?=[A-Za-z0-9+/]*?[a-z])"
            r"[A-Za-z0-9+/]{8,}={0,2}(?![\w+/=-])"
        ),
        replace=_base64_secret,
        description="base64 (with an upper-case letter or padding) that decodes to user:password"
        " or to a known secret",
        prefilter=re.compile(r"[A-Za-z0-9+/]{8}"),
    ),
    Rule(
        "high_entropy",
        re.compile(
            rf"(?<![\w+/=-])(?![0-9a-fA-F-]+(?![\w+/=-]))"
            rf"[A-Za-z0-9+/_-]{{{_HIGH_ENTROPY_MIN},}}={{0,2}}(?![\w+/=-])"
        ),
        replace=_high_entropy,
        description="long random-looking tokens (not hex hashes, trace ids or UUIDs)",
        prefilter=re.compile(rf"[A-Za-z0-9+/_-]{{{_HIGH_ENTROPY_MIN}}}"),
    ),
    Rule(
        "email",
        re.compile(r"[\w.%+-]+@[\w-]+(?:\.[\w-]+)*\.(?:[^\W\d_]{2,}|xn--[\w-]+)\b"),
        description="e-mail addresses, non-ASCII ones included",
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
        prefilter=re.compile(r"\d{4}[ -]?\d{4}"),
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
        prefilter=re.compile(r"lat|\.\d{4,}\s*,"),
    ),
    Rule(
        "phone",
        # One leading character class lets the regex engine skip to candidates quickly.
        re.compile(
            r"[+(\d](?:"
            # international: +44 20 7946 0958
            r"(?<=\+)(?<![\w+]\+)\d{1,3}(?:[ .-]?\(?\d{1,4}\)?){2,8}(?!\w)"
            # North American: (415) 555-0199, 415-555-0199, 415.555.0199
            r"|(?<![\w(][(\d])(?:(?<=\()\d{3}\)\s?|(?<=\d)\d\d[.-])\d{3}[.-]\d{4}(?![\w.-])"
            # national forms, checked by phonenumbers: 020 7946 0958, 06 12 34 56 78
            r"|(?P<national>)(?<![\w.,:/+$€£#%-][(\d])(?:(?<=\()\d{1,5}\)\s?\d|(?<=\d))"
            r"\d*+(?:[ ./-]\d++){0,6}(?![\w%]|[.,:/-]\w))"
        ),
        replace=_phone,
        description="phone numbers, national formats validated by phonenumbers",
        prefilter=re.compile(r"\d\d"),
    ),
)
"""The built-in rules, in the order they are applied."""

# The key-shaped rules, also looked for in the text a base64 blob decodes to.
_KEY_PATTERNS = tuple(
    r.pattern
    for r in DEFAULT_RULES
    if r.kind.endswith(("_key", "_token")) or r.kind in ("private_key", "jwt")
)


_SHORTEST_MATCH = 6  # "a@b.co"; nothing shorter can hold a secret the rules know

# A text that passes none of these checks cannot match any rule of DEFAULT_RULES, so the
# built-in rules skip it at once (most event texts are such plain prose). Every built-in rule
# needs one of: "@", "=", "+" or "://" (e-mail, URLs, query strings, assignments, "+"
# phones); "bearer", "basic" or "private key"; ":" with a secret's name (``password: x``);
# seven digits apart only by punctuation or spaces, the first not glued to a word (cards,
# coordinates, national phones, telegram tokens; not the digits inside a hex id); a word of
# 8+ characters with an upper-case letter after its first (keys, base64, high-entropy
# tokens); or a word of 15+ characters holding a lower-case key prefix (``sk-``, ``ghp_``,
# ``xoxb-``, ..., every such key is that long). A test checks that this fast path changes no
# result.
_GATE_DIGITS = re.compile(r"\d(?<!\w\d)(?:[^\w:]*+\d){6}(?![A-Za-z_])")
_GATE_NAMES = re.compile(r"pass|pwd|secret|key|token|cookie|session|auth|contras")
_GATE_PREFIX = re.compile(
    r"(?:sk|rk|gh[pousr]|github_pat|gl[a-z]{2,5}|xox[a-z]|rl|npm|pypi|hf|sq0[a-z]{3}|gocspx)[-_]"
    r"|-us\d"
)


def _plain(text: str) -> bool:
    """Return True when no rule of DEFAULT_RULES can match ``text`` (see above)."""
    if "@" in text or "=" in text or "+" in text or "://" in text:
        return False
    lowered = text.lower()
    if "earer" in lowered or "asic" in lowered or "private key" in lowered:
        return False
    if (":" in text and _GATE_NAMES.search(lowered)) or _GATE_DIGITS.search(text):
        return False
    for word in text.split():
        n = len(word)
        if n >= 8 and (
            word[1:] != word[1:].lower() or (n >= 15 and _GATE_PREFIX.search(word.lower()))
        ):
            return False
    return True


_SECRET_KEY_RE = re.compile(
    rf"^(?:.*[_-])?(?:{_SECRET_NAMES}|authorization|credentials?)(?:[_-].*)?$", re.IGNORECASE
)
_TOKEN_COUNT_KEY_RE = re.compile(r"tokens?[_.-]?(?:in|out|count|used)|input_tokens|output_tokens")
_COORD_KEYS = frozenset({"lat", "lon", "lng", "latitude", "longitude", "coordinates", "geo"})
_MAX_CACHED_KEY = 64
_MAX_CACHED_KEYS = 4096
_MAX_CACHED_TEXT = 256
_CITY_KEY_RE = re.compile(r"^(?:.*[._-])?city$")


@dataclass(frozen=True, slots=True)
class _KeyKind:
    """What a mapping key says of its value."""

    coordinates: bool
    city: bool
    secret: bool


@functools.lru_cache(maxsize=_MAX_CACHED_KEYS)
def _key_kind(key: str) -> _KeyKind:
    lowered = _snake(key)
    return _KeyKind(
        coordinates=lowered in _COORD_KEYS,
        city=_CITY_KEY_RE.match(lowered) is not None,
        secret=_SECRET_KEY_RE.match(lowered) is not None
        and not _TOKEN_COUNT_KEY_RE.search(lowered),
    )


_PLAIN_KEY = _KeyKind(coordinates=False, city=False, secret=False)

_SCALARS = frozenset({int, float, bool})
_PLAIN_VALUES = frozenset({int, float, bool, type(None)})
_PLAIN_OR_TEXT = _PLAIN_VALUES | {str}


def truncate(text: str, limit: int) -> str:
    """Return ``text`` cut to ``limit`` characters (``…`` last), never inside a marker.

    Only for text that is already redacted: see ``Redactor.text(text, limit=)``.
    """
    if len(text) <= limit:
        return text
    if limit <= 0:
        return ""
    return _cut(text, limit - 1)


def _cut(text: str, end: int) -> str:
    """Return ``text[:end]`` and ``…``, cut before a marker that ``end`` would split."""
    opened = text.rfind(_MARKER_OPEN, 0, end + len(_MARKER_OPEN) - 1)
    if opened != -1 and opened < end and text.find("]", opened) >= end:
        end = opened
    return text[:end] + _ELLIPSIS


class Redactor:
    """Apply an ordered list of rules to text and, recursively, to structured values.

    Args:
        rules: the rules, in order; default ``DEFAULT_RULES``.
    """

    def __init__(self, rules: Iterable[Rule] = DEFAULT_RULES) -> None:
        self.rules: tuple[Rule, ...] = tuple(rules)
        self._clean_keys: set[str] = set()
        self._clean_texts: set[str] = set()
        # Clean keys that say nothing of their value (not a secret's, a city's or a
        # coordinate's name): a flat mapping of these, holding only numbers and texts
        # already seen clean, is copied as it is (see ``value``).
        self._plain_keys: set[str] = set()
        builtin = {id(r) for r in DEFAULT_RULES}
        # Each rule's pre-checks, unrolled into a plan: redaction runs on every log line.
        self._plan = tuple(
            (
                id(r) in builtin,
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

    def text(self, text: str, limit: int | None = None) -> str:
        """Return ``text`` with every sensitive part replaced by its marker.

        Args:
            text: the text.
            limit: cut the redacted text to this many characters (``…`` last). The cut
                comes after redaction, so a secret is never cut in half and missed.
        """
        if len(text) >= _SHORTEST_MATCH and text not in self._clean_texts:
            clean = self._redact(text)
            if clean == text:
                # Texts repeat (artifact paths, reasons, summaries); only texts that hold
                # nothing are remembered, so a remembered text is one the rules leave alone.
                if len(text) <= _MAX_CACHED_TEXT and len(self._clean_texts) < _MAX_CACHED_KEYS:
                    self._clean_texts.add(text)
            text = clean
        if limit is None or len(text) <= limit:
            return text
        cut = truncate(text, limit)
        while True:
            # The end of a cut text can read as a secret to a second pass (``secret='…``,
            # digits now followed by ``…``); cut before the word that would change, so that
            # redacting the result again (as the ledger does) changes nothing.
            again = self.text(cut)
            if again == cut:
                return cut
            changed = next(
                (i for i, (a, b) in enumerate(zip(cut, again, strict=False)) if a != b),
                len(cut) - 1,
            )
            cut = _cut(cut, max(cut.rfind(" ", 0, changed), 0))

    def _redact(self, text: str) -> str:
        lowered: str | None = None
        plain: bool | None = None
        for builtin, hints, ignore_case, prefilter, sub in self._plan:
            if builtin:
                if plain is None:
                    plain = _plain(text)
                if plain:
                    continue
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
                if plain:  # a rule of the caller's made text the built-in rules may match
                    plain = None
        return text

    def value(self, value: Any, key: str | None = None) -> Any:
        """Redact strings inside ``value`` (mappings, lists, tuples), keeping its shape.

        Mapping keys are redacted too: a secret used as a key becomes its marker.
        """
        if key is not None:
            kind = _key_kind(key) if len(key) <= _MAX_CACHED_KEY else _key_kind.__wrapped__(key)
            if kind.coordinates and value is not None:
                return marker("coordinates")
            if kind.city and isinstance(value, str):
                return safe_city(value)
            if (
                kind.secret
                and isinstance(value, (str, bytes, int, float))
                and not isinstance(value, bool)
                and not (isinstance(value, str) and value.startswith(_MARKER_OPEN))
            ):
                return _name_marker(key)
        if isinstance(value, str):
            return self.text(value)
        if value is None or type(value) in _SCALARS:
            return value
        if type(value) is dict and self._plain_keys.issuperset(value):
            # Payloads repeat their flat shape: answer those without a call per item.
            found = set(map(type, value.values()))
            if found <= _PLAIN_VALUES or (
                found <= _PLAIN_OR_TEXT
                and self._clean_texts.issuperset([v for v in value.values() if type(v) is str])
            ):
                return dict(value)
        if isinstance(value, Mapping):
            out: dict[Any, Any] = {}
            for k, v in value.items():
                out[self._key(k, out)] = self.value(v, str(k))
            self._learn_plain_keys(out)
            return out
        if isinstance(value, list):
            return [self.value(v) for v in value]
        if isinstance(value, tuple):
            return tuple(self.value(v) for v in value)
        return value

    def _learn_plain_keys(self, out: dict[Any, Any]) -> None:
        if len(self._plain_keys) >= _MAX_CACHED_KEYS:
            return
        for k in out:
            if (
                k not in self._plain_keys
                and k in self._clean_keys  # only str keys of up to _MAX_CACHED_KEY are there
                and _key_kind(k) == _PLAIN_KEY
            ):
                self._plain_keys.add(k)

    def attributes(self, attrs: Mapping[str, Any]) -> dict[str, Any]:
        """Redact an OpenTelemetry attribute mapping (strings and sequences of strings)."""
        out: dict[str, Any] = {}
        for k, v in attrs.items():
            if isinstance(v, Sequence) and not isinstance(v, str):
                out[self._key(k, out)] = tuple(self.value(item, k) for item in v)
            else:
                out[self._key(k, out)] = self.value(v, k)
        return out

    def _key(self, key: Any, taken: Mapping[Any, Any]) -> Any:
        if not isinstance(key, str) or key in self._clean_keys:
            return key
        clean = self.text(key)
        if clean == key:
            # Keys repeat (attribute and payload names); only keys that hold nothing are kept.
            if len(key) <= _MAX_CACHED_KEY and len(self._clean_keys) < _MAX_CACHED_KEYS:
                self._clean_keys.add(key)
            return key
        unique, n = clean, 1
        while unique in taken:  # two secrets as keys must not overwrite each other
            n += 1
            unique = f"{clean}#{n}"
        return unique


_DEFAULT = Redactor()


def default_redactor() -> Redactor:
    """Return the process-wide redactor built from ``DEFAULT_RULES``."""
    return _DEFAULT


def redact(value: Any) -> Any:
    """Redact ``value`` (a string or a structure of strings) with the default rules."""
    return _DEFAULT.value(value)

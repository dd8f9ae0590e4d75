"""Structure features of one output (length, headings, sections, JSON keys) for drift checks.

Computed once, when the control service stores an artifact's snapshot, from the redacted
text; the drift check compares their distributions day against baseline. docs/quality.md
defines each feature.
"""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from typing import Any, Literal

from runledger.events import SNAPSHOT_MEDIA_TYPES

__all__ = [
    "MAX_NAMES",
    "MEDIA_TYPES",
    "NUMERIC_FEATURES",
    "MediaType",
    "features",
    "sniff_media_type",
]

MediaType = Literal["text/html", "text/markdown", "application/json", "text/plain"]
MEDIA_TYPES: tuple[MediaType, ...] = SNAPSHOT_MEDIA_TYPES  # type: ignore[assignment]

NUMERIC_FEATURES = ("length", "headings", "sections", "json_keys")
"""Count features compared with the two-sample Kolmogorov-Smirnov test."""

MAX_NAMES = 50
"""Section names and JSON key paths kept per output (the first ones, in document order)."""

_NAME_CHARS = 64
_JSON_DEPTH = 3
_MD_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t#]*$", re.MULTILINE)
_HTML_HINT = re.compile(r"<(?:!doctype|html|body|h[1-6]|section|p|div|main|article)\b", re.I)
_SPACES = re.compile(r"\s+")


def _name(text: str) -> str:
    return _SPACES.sub(" ", text).strip().lower()[:_NAME_CHARS]


def sniff_media_type(content: str) -> MediaType:
    """Guess an output's type: JSON when it parses as an object or array, HTML by its tags,
    Markdown by ``#`` headings, else plain text."""
    stripped = content.lstrip()
    if stripped[:1] in ("{", "["):
        try:
            json.loads(content)
            return "application/json"
        except ValueError:
            pass
    if _HTML_HINT.search(content):
        return "text/html"
    if _MD_HEADING.search(content):
        return "text/markdown"
    return "text/plain"


class _Outline(HTMLParser):
    """Count headings and ``<section>`` elements; name sections by id or first heading."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.headings = 0
        self.sections = 0
        self.names: list[str] = []
        self._open_sections: list[bool] = []  # per open <section>: named yet?
        self._heading_text: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "section":
            self.sections += 1
            ident = dict(attrs).get("id")
            if ident:
                self.names.append(_name(ident))
            self._open_sections.append(bool(ident))
        elif re.fullmatch(r"h[1-6]", tag):
            self.headings += 1
            self._heading_text = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "section" and self._open_sections:
            self._open_sections.pop()
        elif re.fullmatch(r"h[1-6]", tag) and self._heading_text is not None:
            text = _name("".join(self._heading_text))
            if self._open_sections and not self._open_sections[-1] and text:
                self.names.append(text)
                self._open_sections[-1] = True
            self._heading_text = None

    def handle_data(self, data: str) -> None:
        if self._heading_text is not None:
            self._heading_text.append(data)


def _key_paths(value: Any, prefix: str, depth: int, out: list[str]) -> None:
    if depth > _JSON_DEPTH:
        return
    if isinstance(value, dict):
        for key, child in value.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            out.append(_name(path))
            _key_paths(child, path, depth + 1, out)
    elif isinstance(value, list):
        for child in value[:5]:  # the shape of an array shows in its first items
            _key_paths(child, f"{prefix}[]", depth, out)


def _unique(names: list[str]) -> list[str]:
    return list(dict.fromkeys(n for n in names if n))[:MAX_NAMES]


def features(content: str, media_type: MediaType | None = None) -> dict[str, Any]:
    """Return the structure features of one output.

    ``length`` (characters), ``headings``, ``sections``, ``json_keys`` (distinct key paths
    of a JSON output, else None), and the names behind them: ``section_names`` and
    ``key_names`` (first :data:`MAX_NAMES`, lower-cased, 64 characters at most).
    """
    kind = media_type or sniff_media_type(content)
    out: dict[str, Any] = {
        "media_type": kind,
        "length": len(content),
        "headings": 0,
        "sections": 0,
        "json_keys": None,
        "section_names": [],
        "key_names": [],
    }
    if kind == "application/json":
        try:
            data = json.loads(content)
        except ValueError:
            return out
        paths: list[str] = []
        _key_paths(data, "", 1, paths)
        keys = list(dict.fromkeys(paths))
        out["json_keys"] = len(keys)
        out["key_names"] = keys[:MAX_NAMES]
    elif kind == "text/html":
        outline = _Outline()
        outline.feed(content)
        outline.close()
        out["headings"] = outline.headings
        out["sections"] = outline.sections
        out["section_names"] = _unique(outline.names)
    elif kind == "text/markdown":
        found = _MD_HEADING.findall(content)
        out["headings"] = len(found)
        second = [_name(text) for hashes, text in found if len(hashes) == 2]
        out["sections"] = len(second)
        out["section_names"] = _unique(second)
    return out

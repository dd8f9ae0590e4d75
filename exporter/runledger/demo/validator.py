"""The demo's Validator: real structure checks of the one-page sites its Implementers build.

A runledger Validator plug-in (docs/quality.md): ``validate(artifact, *, strict)``. The demo
pipeline's review phase calls it with ``strict=False``; the daily proof sampling calls it
with ``strict=True``, which adds the checks a fast review skips. ``render_site`` builds the
pages the demo publishes (now and then with a flaw, as real Implementers do).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from html import escape
from html.parser import HTMLParser

from runledger.quality.validators import Artifact, Verdict

__all__ = ["REQUIRED_SECTIONS", "render_site", "validate"]

REQUIRED_SECTIONS = {
    "local-business": ("hero", "services", "reviews", "contact"),
    "saas-launch": ("hero", "features", "pricing", "faq"),
}
"""Section ids every page of a playbook must have (strict mode)."""

_MAX_TITLE = 60
_PLACEHOLDERS = ("lorem ipsum", "todo", "tbd", "{{")


@dataclass
class _Section:
    ident: str | None
    heading: bool = False
    text: int = 0
    cta: bool = False


class _Page(HTMLParser):
    """The parts of a page the checks read: title, h1 count, sections, images."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.title = ""
        self.h1 = 0
        self.sections: list[_Section] = []
        self.images_without_alt = 0
        self._stack: list[_Section] = []
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "title":
            self._in_title = True
        elif tag == "section":
            section = _Section(a.get("id"))
            self.sections.append(section)
            self._stack.append(section)
        elif tag in ("h1", "h2", "h3") and self._stack:
            self._stack[-1].heading = True
        if tag == "h1":
            self.h1 += 1
        elif tag == "img" and not (a.get("alt") or "").strip():
            self.images_without_alt += 1
        elif tag in ("a", "button") and "cta" in (a.get("class") or "").split() and self._stack:
            self._stack[-1].cta = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        elif tag == "section" and self._stack:
            self._stack.pop()

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data
        elif self._stack:
            self._stack[-1].text += len(data.strip())


def validate(artifact: Artifact, *, strict: bool) -> Verdict:
    """Check a demo site page; ``strict`` adds the checks the review phase skips."""
    if artifact.media_type != "text/html":
        return Verdict(False, f"expected an HTML page, got {artifact.media_type}")
    page = _Page()
    page.feed(artifact.content)
    page.close()
    by_id = {s.ident: s for s in page.sections if s.ident}
    hero = by_id.get("hero")
    if page.h1 != 1:
        return Verdict(False, f"the page has {page.h1} <h1> headings; it needs exactly one")
    if hero is None:
        return Verdict(False, "the page has no hero section")
    if not hero.cta:
        return Verdict(False, "hero section has no call to action")
    if not strict:
        return Verdict(True)
    missing = [s for s in REQUIRED_SECTIONS.get(artifact.playbook, ()) if s not in by_id]
    if missing:
        return Verdict(False, f"missing required section(s): {', '.join(missing)}")
    unnamed = sum(1 for s in page.sections if not s.ident)
    if unnamed:
        return Verdict(False, f"{unnamed} section(s) have no id")
    headless = [s.ident for s in page.sections if not s.heading]
    if headless:
        return Verdict(False, f"section(s) without a heading: {', '.join(map(str, headless))}")
    empty = [s.ident for s in page.sections if s.text < 20]
    if empty:
        return Verdict(False, f"section(s) with almost no text: {', '.join(map(str, empty))}")
    if not page.title.strip() or len(page.title.strip()) > _MAX_TITLE:
        return Verdict(False, f"the <title> must be 1-{_MAX_TITLE} characters")
    if page.images_without_alt:
        return Verdict(False, f"{page.images_without_alt} image(s) without alt text")
    lowered = artifact.content.lower()
    found = [p for p in _PLACEHOLDERS if p in lowered]
    if found:
        return Verdict(False, f"placeholder text left in the page: {', '.join(found)}")
    return Verdict(True)


_COPY = (
    "Friendly people, fair prices and work we are proud of, every single day.",
    "Book in a minute; we confirm by text and show up on time.",
    "Family owned since 1998 and trusted by thousands of neighbours.",
    "Everything you need to launch, measure and grow, in one place.",
    "Start free, upgrade when your team is ready, cancel any time.",
)


def render_site(
    playbook: str, business: str, rng: random.Random, *, flaw_rate: float = 0.06,
    length_factor: float = 1.0,
) -> str:  # fmt: skip
    """Return a one-page site for ``business``; with probability ``flaw_rate`` it has one
    flaw that only strict validation finds (a missing section, an image without alt text,
    placeholder text). ``length_factor`` scales the copy (the drift demo uses it)."""
    sections = list(REQUIRED_SECTIONS.get(playbook, ("hero", "about", "contact")))
    flaw = rng.choice(("missing", "alt", "placeholder")) if rng.random() < flaw_rate else None
    if flaw == "missing":
        sections.remove(rng.choice(sections[1:]))
    name = escape(business)
    parts = [f"<!doctype html><html><head><title>{name}</title></head><body>"]
    for ident in sections:
        paragraphs = max(1, round(rng.randint(1, 3) * length_factor))
        body = "".join(f"<p>{escape(rng.choice(_COPY))}</p>" for _ in range(paragraphs))
        if flaw == "placeholder" and ident == sections[-1]:
            body += "<p>Lorem ipsum dolor sit amet.</p>"
        heading = f"<h1>{name}</h1>" if ident == "hero" else f"<h2>{ident.title()}</h2>"
        extra = ""
        if ident == "hero":
            alt = "" if flaw == "alt" else f' alt="{name} storefront"'
            extra = f'<img src="hero.jpg"{alt}><a class="cta" href="#contact">Book now</a>'
        parts.append(f'<section id="{ident}">{heading}{body}{extra}</section>')
    parts.append("</body></html>")
    return "".join(parts)

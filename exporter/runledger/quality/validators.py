"""The Validator plug-in point: your code, called on stored artifacts in strict mode.

A Validator is a callable ``validate(artifact: Artifact, *, strict: bool)`` returning a
:class:`Verdict`, a bool, or a ``(passed, reason)`` pair. Name it in the quality
configuration as ``module:function``, or register it as an entry point of the group
``runledger.validators`` and name the entry point::

    # pyproject.toml of your package
    [project.entry-points."runledger.validators"]
    landing = "mypipeline.checks:validate_site"

The sampling job always calls it with ``strict=True``; your pipeline's own Validator agent
may call the same function with ``strict=False`` on its fast path.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Protocol

__all__ = [
    "ENTRY_POINT_GROUP",
    "Artifact",
    "Validator",
    "ValidatorError",
    "Verdict",
    "load_validator",
    "run_validator",
]

ENTRY_POINT_GROUP = "runledger.validators"
_REASON_CHARS = 500


@dataclass(frozen=True, slots=True)
class Artifact:
    """One stored artifact version, as the Validator sees it (content already redacted)."""

    tenant_id: str
    project_id: str
    playbook: str
    path: str
    version: int
    media_type: str
    content: str


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the Validator says of one artifact: passed or not, and why (one line)."""

    passed: bool
    reason: str = ""


class Validator(Protocol):
    """The plug-in's signature."""

    def __call__(self, artifact: Artifact, *, strict: bool) -> Verdict | bool | tuple[bool, str]:
        """Judge ``artifact``; ``strict`` asks for every check, not only the fast ones."""


class ValidatorError(ValueError):
    """A Validator spec names nothing loadable; the message says what was tried."""


def load_validator(spec: str) -> Callable[..., Any]:
    """Return the Validator named by ``spec``: ``module:function`` or an entry point name.

    Raises:
        ValidatorError: nothing callable by that name.
    """
    if ":" in spec:
        module_name, _, attr = spec.partition(":")
        try:
            target: Any = importlib.import_module(module_name)
        except ImportError as exc:
            raise ValidatorError(
                f"validator {spec!r}: cannot import {module_name}: {exc}"
            ) from None
        for part in attr.split("."):
            target = getattr(target, part, None)
            if target is None:
                raise ValidatorError(f"validator {spec!r}: {module_name} has no {attr}")
    else:
        found = entry_points(group=ENTRY_POINT_GROUP, name=spec)
        if not found:
            known = sorted(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))
            raise ValidatorError(
                f"validator {spec!r}: no entry point of that name in group "
                f"{ENTRY_POINT_GROUP!r} (installed: {', '.join(known) or 'none'}); or write "
                "it as module:function"
            )
        try:
            target = next(iter(found)).load()
        except Exception as exc:
            raise ValidatorError(
                f"validator {spec!r}: loading its entry point failed: {exc}"
            ) from None
    if not callable(target):
        raise ValidatorError(f"validator {spec!r} is not callable")
    return target


def run_validator(validator: Callable[..., Any], artifact: Artifact) -> tuple[str, str]:
    """Call ``validator`` in strict mode; return ``(status, reason)``.

    ``status`` is ``pass``, ``fail``, or ``error`` when the Validator raised or answered
    something that is not a verdict (the reason then says so).
    """
    try:
        answer = validator(artifact, strict=True)
    except Exception as exc:
        return "error", _line(f"the validator raised {type(exc).__name__}: {exc}")
    if isinstance(answer, Verdict):
        passed, reason = answer.passed, answer.reason
    elif isinstance(answer, bool):
        passed, reason = answer, ""
    elif (
        isinstance(answer, tuple)
        and len(answer) == 2
        and isinstance(answer[0], bool)
        and isinstance(answer[1], str)
    ):
        passed, reason = answer
    else:
        return "error", _line(
            f"the validator answered {type(answer).__name__}; expected a Verdict, a bool or "
            "(passed, reason)"
        )
    if passed:
        return "pass", _line(reason)
    return "fail", _line(reason or "failed strict validation (no reason given)")


def _line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= _REASON_CHARS else line[: _REASON_CHARS - 1] + "…"

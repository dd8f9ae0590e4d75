"""One way to turn a pydantic error into messages that name the field, and to load config.

Every JSON API answers a 4xx as ``{"error": "...", "fields": [{"field", "message"}]}``
(the control service's error handler builds that body); every configuration file is read
by :func:`load_config`. Both use :func:`field_errors`, so a problem reads the same wherever
it is found.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

__all__ = [
    "ConfigError",
    "FieldError",
    "describe",
    "field_errors",
    "load_config",
    "load_yaml",
]

M = TypeVar("M", bound=BaseModel)

_MESSAGES = {
    "greater_than_equal": "must be >= {ge}",
    "greater_than": "must be > {gt}",
    "less_than_equal": "must be <= {le}",
    "less_than": "must be < {lt}",
    "missing": "is required",
    "extra_forbidden": "is not a known field",
    "decimal_parsing": "must be a number",
    "float_parsing": "must be a number",
    "int_parsing": "must be an integer",
    "string_type": "must be a string",
    "dict_type": "must be a mapping",
    "list_type": "must be a list",
    "model_type": "must be a mapping",
    "model_attributes_type": "must be a mapping",
    "too_short": "must not be empty",
    "decimal_max_places": "must have at most {decimal_places} decimal places",
    "decimal_max_digits": "must have at most {max_digits} digits",
    "decimal_whole_digits": "has too many digits before the decimal point",
    "finite_number": "must be a finite number",
    "json_invalid": "is not valid JSON",
    "string_too_long": "must be at most {max_length} characters",
    "string_too_short": "must be at least {min_length} characters",
    "timezone_aware": "must be a time with a UTC offset",
    "datetime_parsing": "must be an ISO 8601 time with a UTC offset",
    "datetime_from_date_parsing": "must be an ISO 8601 time with a UTC offset",
    "datetime_type": "must be an ISO 8601 time with a UTC offset",
}


@dataclass(frozen=True, slots=True)
class FieldError:
    """One problem: the field it concerns (``a.b[2].c``) and what is wrong."""

    field: str
    message: str

    def as_dict(self) -> dict[str, str]:
        """Return the ``{"field", "message"}`` form every JSON error body uses."""
        return {"field": self.field, "message": self.message}


def _field_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int) or (isinstance(part, str) and part.isdigit()):
            out += f"[{part}]"
        elif part != "__root__":
            part = part or '""'  # an empty key is named, never an empty field
            out += f".{part}" if out else str(part)
    return out


def field_errors(
    exc: ValidationError,
    *,
    prefix: str = "",
    skip: Callable[[tuple[int | str, ...]], int] | None = None,
) -> list[FieldError]:
    """Return one FieldError per problem in ``exc``, fields written as ``a.b[2].c``.

    Args:
        exc: the pydantic error.
        prefix: prepended to every field (``events[3]``).
        skip: given a location, how many of its leading parts to drop (a union's tag).
    """
    out = []
    for err in exc.errors(include_url=False, include_input=False):
        loc = tuple(err["loc"])
        if skip is not None:
            loc = loc[skip(loc) :]
        template = _MESSAGES.get(err["type"])
        message = err["msg"]
        if template is not None:
            try:
                message = template.format(**(err.get("ctx") or {}))
            except (KeyError, IndexError):
                pass
        elif message.startswith("Value error, "):
            message = message[len("Value error, ") :]
        if err["type"] == "string_too_short" and (err.get("ctx") or {}).get("min_length") == 1:
            message = "must not be empty"
        field = _field_path(loc)
        if prefix:
            field = f"{prefix}.{field}" if field and not field.startswith("[") else prefix + field
        out.append(FieldError(field=field, message=message))
    return out


def describe(errors: ValidationError | Sequence[FieldError], *, prefix: str = "") -> str:
    """Render a pydantic error (or its field errors) as ``field: problem`` phrases joined by
    ``; ``."""
    if isinstance(errors, ValidationError):
        errors = field_errors(errors, prefix=prefix)
    return "; ".join(f"{e.field}: {e.message}" if e.field else e.message for e in errors)


class ConfigError(ValueError):
    """A configuration file is unreadable or invalid; the message names the offending key."""


def load_yaml(path: str | Path, *, what: str, error: type[ConfigError] = ConfigError) -> Any:
    """Read a YAML file, raising ``error`` naming the file on any problem."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise error(f"cannot read {what} file {p}: {exc.strerror or exc}") from exc
    try:
        # libyaml's loader when PyYAML has it: ten times faster on the pricing table.
        return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # noqa: S506
    except yaml.YAMLError as exc:
        raise error(f"{what} file {p} is not valid YAML: {exc}") from exc


def load_config(
    model: type[M],
    source: str | Path | Mapping[str, Any] | Any,
    *,
    what: str,
    defaults: Mapping[str, Any] | None = None,
    error: type[ConfigError] = ConfigError,
) -> M:
    """Load ``source`` (a YAML file's path or already-read data) as ``model``.

    ``defaults`` are overlaid by the file's top-level keys; a mapping under a key is merged
    key by key. Raises ``error`` (a ConfigError) naming the file and each offending key.
    """
    if isinstance(source, str | Path):
        data: Any = load_yaml(source, what=what, error=error)
        where = f"{what} file {source}"
    else:
        data, where = source, what
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise error(f"{where}: the top level must be a mapping")
    if defaults:
        data = {
            key: {**defaults[key], **value}
            if isinstance(value, Mapping) and isinstance(defaults.get(key), Mapping)
            else value
            for key, value in {**defaults, **data}.items()
        }
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise error(f"{where}: {describe(exc)}") from exc

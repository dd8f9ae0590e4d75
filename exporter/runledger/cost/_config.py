"""Load YAML configuration files into pydantic models with errors that name the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

__all__ = ["ConfigError", "format_validation_error", "load_yaml", "validate_config"]

M = TypeVar("M", bound=BaseModel)


class ConfigError(ValueError):
    """A configuration file is unreadable or invalid; the message names the offending key."""


_MESSAGES = {
    "greater_than_equal": "must be >= {ge}",
    "greater_than": "must be > {gt}",
    "less_than_equal": "must be <= {le}",
    "less_than": "must be < {lt}",
    "missing": "is required",
    "extra_forbidden": "is not a known key",
    "decimal_parsing": "must be a number",
    "float_parsing": "must be a number",
    "int_parsing": "must be an integer",
    "string_type": "must be a string",
    "dict_type": "must be a mapping",
    "list_type": "must be a list",
    "model_type": "must be a mapping",
    "too_short": "must not be empty",
}


def format_validation_error(err: ValidationError, *, prefix: str = "") -> str:
    """Render a pydantic error as ``key.path: problem`` lines, one per problem."""
    lines = []
    for item in err.errors():
        loc = ".".join(str(part) for part in item["loc"] if part != "__root__")
        template = _MESSAGES.get(item["type"])
        ctx = item.get("ctx") or {}
        if template is not None:
            try:
                message = template.format(**ctx)
            except KeyError:
                message = item["msg"]
        else:
            message = item["msg"]
            if message.startswith("Value error, "):
                message = message[len("Value error, ") :]
        lines.append(f"{prefix}{loc}: {message}" if loc else message)
    return "; ".join(lines)


def load_yaml(path: str | Path, *, what: str) -> Any:
    """Read a YAML file, raising ConfigError naming the file on any problem."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {what} file {p}: {exc.strerror or exc}") from exc
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} file {p} is not valid YAML: {exc}") from exc


def validate_config(model: type[M], data: Any, *, what: str, source: str) -> M:
    """Validate ``data`` as ``model``, raising ConfigError naming each offending key."""
    if not isinstance(data, dict):
        raise ConfigError(f"{what} {source}: the top level must be a mapping")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{what} {source}: {format_validation_error(exc)}") from exc

"""Token usage read from a provider's response (OpenAI- and Anthropic-style)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["usage_from_response"]


def _get(obj: Any, name: str) -> Any:
    if obj is None:
        return None
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


def usage_from_response(response: Any) -> dict[str, Any]:
    """Read tokens from an OpenAI- or Anthropic-style response object or dict.

    Returns the keys found among ``tokens_in`` (every input token, cached ones included),
    ``tokens_out``, ``cached_tokens_in`` and ``response_model``.
    """
    usage = _get(response, "usage")
    out: dict[str, Any] = {}
    if usage is not None:
        tin = _get(usage, "input_tokens")
        if tin is None:
            tin = _get(usage, "prompt_tokens")
        tout = _get(usage, "output_tokens")
        if tout is None:
            tout = _get(usage, "completion_tokens")
        cached = _get(usage, "cache_read_input_tokens")
        if cached is None:
            details = _get(usage, "prompt_tokens_details") or _get(usage, "input_tokens_details")
            cached = _get(details, "cached_tokens")
        extra_in = _get(usage, "cache_creation_input_tokens")
        if _get(usage, "cache_read_input_tokens") is not None:
            # Anthropic counts cache reads and writes outside input_tokens.
            tin = (tin or 0) + (cached or 0) + (extra_in or 0)
        if isinstance(tin, int):
            out["tokens_in"] = tin
        if isinstance(tout, int):
            out["tokens_out"] = tout
        if isinstance(cached, int):
            out["cached_tokens_in"] = cached
    model = _get(response, "model")
    if isinstance(model, str):
        out["response_model"] = model
    return out

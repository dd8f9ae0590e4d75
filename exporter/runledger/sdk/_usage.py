"""Token usage read from a provider's real response object (or its dict form).

Every provider counts differently; the result is always in runledger's terms (docs/sdk.md):
``tokens_in`` is every input token, cache reads and cache writes included; ``tokens_out`` is
every output token, reasoning ("thinking") tokens included; ``cached_tokens_in`` and
``cache_write_tokens_in`` are the parts of ``tokens_in`` read from and written to the
provider's prompt cache; ``reasoning_tokens`` is the part of ``tokens_out`` spent reasoning.

Read shapes:

- OpenAI Chat Completions (``ChatCompletion`` and the final ``ChatCompletionChunk`` of a
  stream with ``stream_options={"include_usage": True}``), and LiteLLM's ``ModelResponse``:
  ``usage.prompt_tokens`` (cache included), ``prompt_tokens_details.cached_tokens``,
  ``completion_tokens_details.reasoning_tokens``; LiteLLM's ``cache_creation_input_tokens``.
- OpenAI Responses (``Response``, or the stream's ``response.completed`` event):
  ``usage.input_tokens`` (cache included), ``input_tokens_details.cached_tokens``,
  ``output_tokens_details.reasoning_tokens``.
- Anthropic ``Message`` (or a stream's ``message_start``/``message_delta`` event, or
  ``get_final_message()``): ``usage.input_tokens`` *excludes* cache traffic, which comes as
  ``cache_read_input_tokens`` and ``cache_creation_input_tokens``.
- google-genai ``GenerateContentResponse`` (or the last chunk of a stream):
  ``usage_metadata.prompt_token_count`` (cached content and tool-use prompt included),
  ``cached_content_token_count``, ``candidates_token_count`` plus ``thoughts_token_count``
  (thinking is billed as output).
- Amazon Bedrock Converse (the boto3 dict, or a ConverseStream ``metadata`` event):
  ``usage.inputTokens`` excludes ``cacheReadInputTokens`` and ``cacheWriteInputTokens``.
"""

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


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _n(obj: Any, *path: str) -> int:
    for name in path:
        obj = _get(obj, name)
    return _int(obj) or 0


def _unwrap(response: Any) -> Any:
    """Return the object that carries usage: a stream event's message or response, if any."""
    for inner in ("response", "message", "metadata"):  # Responses, Anthropic, Bedrock events
        candidate = _get(response, inner)
        if candidate is not None and (
            _get(candidate, "usage") is not None or _get(candidate, "model") is not None
        ):
            return candidate
    return response


def usage_from_response(response: Any) -> dict[str, Any]:
    """Read token usage from a provider response object or dict (shapes in the module doc).

    Returns the keys found among ``tokens_in``, ``tokens_out``, ``cached_tokens_in``,
    ``cache_write_tokens_in``, ``reasoning_tokens`` and ``response_model``; an object that
    carries no usage (a stream chunk before the last) gives an empty dict.
    """
    response = _unwrap(response)
    out: dict[str, Any] = {}
    usage = _get(response, "usage")
    meta = _get(response, "usage_metadata")
    if usage is not None:
        out.update(_from_usage(usage))
    elif meta is not None:
        out.update(_from_gemini(meta))
    model = _get(response, "model")
    if not isinstance(model, str):
        model = _get(response, "model_version")  # google-genai
    if isinstance(model, str) and model:
        out["response_model"] = model
    return out


def _from_usage(usage: Any) -> dict[str, Any]:
    prompt = _int(_get(usage, "prompt_tokens"))
    if prompt is not None:  # OpenAI Chat Completions, LiteLLM: cache traffic inside
        cache_write = _n(usage, "cache_creation_input_tokens") or _n(
            usage, "prompt_tokens_details", "cache_creation_tokens"
        )
        return _found(
            prompt, _int(_get(usage, "completion_tokens")),
            _n(usage, "prompt_tokens_details", "cached_tokens"), cache_write,
            _n(usage, "completion_tokens_details", "reasoning_tokens"),
        )  # fmt: skip
    bedrock_in = _int(_get(usage, "inputTokens"))
    if bedrock_in is not None:  # Bedrock Converse: cache traffic beside inputTokens
        read, write = _n(usage, "cacheReadInputTokens"), _n(usage, "cacheWriteInputTokens")
        return _found(bedrock_in + read + write, _int(_get(usage, "outputTokens")), read, write, 0)
    tokens_in = _int(_get(usage, "input_tokens"))
    tokens_out = _int(_get(usage, "output_tokens"))
    anthropic_read = _int(_get(usage, "cache_read_input_tokens"))
    anthropic_write = _int(_get(usage, "cache_creation_input_tokens"))
    if anthropic_read is not None or anthropic_write is not None:
        # Anthropic counts cache reads and writes outside input_tokens.
        read, write = anthropic_read or 0, anthropic_write or 0
        total = None if tokens_in is None else tokens_in + read + write
        return _found(total, tokens_out, read, write, 0)
    # OpenAI Responses: cache reads inside input_tokens.
    return _found(
        tokens_in, tokens_out, _n(usage, "input_tokens_details", "cached_tokens"),
        _n(usage, "input_tokens_details", "cache_write_tokens"),
        _n(usage, "output_tokens_details", "reasoning_tokens"),
    )  # fmt: skip


def _from_gemini(meta: Any) -> dict[str, Any]:
    prompt = _int(_get(meta, "prompt_token_count"))
    tool_prompt = _n(meta, "tool_use_prompt_token_count")
    candidates = _int(_get(meta, "candidates_token_count"))
    thoughts = _n(meta, "thoughts_token_count")
    tokens_in = None if prompt is None else prompt + tool_prompt
    tokens_out = None if candidates is None and not thoughts else (candidates or 0) + thoughts
    return _found(tokens_in, tokens_out, _n(meta, "cached_content_token_count"), 0, thoughts)


def _found(
    tokens_in: int | None, tokens_out: int | None, cached: int, cache_write: int, reasoning: int
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if tokens_in is not None:
        out["tokens_in"] = tokens_in
        out["cached_tokens_in"] = cached
        out["cache_write_tokens_in"] = cache_write
    if tokens_out is not None:
        out["tokens_out"] = tokens_out
        out["reasoning_tokens"] = reasoning
    return out

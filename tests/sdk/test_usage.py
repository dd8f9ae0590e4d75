"""Usage read from the real response types of each provider package, built offline."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest

from _support.sdk import Telemetry
from runledger.cost.pricing import default_pricing
from runledger.sdk import Ledger
from runledger.sdk._usage import usage_from_response


def _usage(tin: int, tout: int, cached: int = 0, write: int = 0, reasoning: int = 0) -> dict:
    return {
        "tokens_in": tin, "tokens_out": tout, "cached_tokens_in": cached,
        "cache_write_tokens_in": write, "reasoning_tokens": reasoning,
    }  # fmt: skip


def test_openai_chat_completion_with_cached_and_reasoning_tokens() -> None:
    from openai.types.chat import ChatCompletion

    resp = ChatCompletion.model_validate({
        "id": "c", "object": "chat.completion", "created": 1, "model": "o4-mini-2025-04-16",
        "choices": [],
        "usage": {"prompt_tokens": 2000, "completion_tokens": 900, "total_tokens": 2900,
                  "prompt_tokens_details": {"cached_tokens": 1536},
                  "completion_tokens_details": {"reasoning_tokens": 640}},
    })  # fmt: skip
    assert usage_from_response(resp) == {
        **_usage(2000, 900, cached=1536, reasoning=640),
        "response_model": "o4-mini-2025-04-16",
    }


def test_openai_stream_chunks_only_the_last_carries_usage() -> None:
    from openai.types.chat import ChatCompletionChunk

    base = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o"}
    delta = ChatCompletionChunk.model_validate(
        {**base, "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": None}]}
    )
    last = ChatCompletionChunk.model_validate(
        {**base, "choices": [],
         "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}}
    )  # fmt: skip
    assert usage_from_response(delta) == {"response_model": "gpt-4o"}
    assert usage_from_response(last) == {**_usage(10, 5), "response_model": "gpt-4o"}


def test_openai_responses_api_and_its_completed_stream_event() -> None:
    from openai.types.responses import Response, ResponseCompletedEvent

    resp = Response.model_validate({
        "id": "r", "object": "response", "created_at": 1, "model": "o3-2025-04-16",
        "output": [], "parallel_tool_calls": True, "tool_choice": "auto", "tools": [],
        "usage": {"input_tokens": 3000, "output_tokens": 1200, "total_tokens": 4200,
                  "input_tokens_details": {"cached_tokens": 1024, "cache_write_tokens": 0},
                  "output_tokens_details": {"reasoning_tokens": 800}},
    })  # fmt: skip
    expected = {**_usage(3000, 1200, cached=1024, reasoning=800), "response_model": "o3-2025-04-16"}
    assert usage_from_response(resp) == expected
    event = ResponseCompletedEvent.model_validate(
        {"type": "response.completed", "sequence_number": 9, "response": resp.model_dump()}
    )
    assert usage_from_response(event) == expected


def test_anthropic_message_counts_cache_reads_and_writes_into_tokens_in() -> None:
    from anthropic.types import Message, RawMessageStartEvent

    message = {
        "id": "m", "type": "message", "role": "assistant", "model": "claude-sonnet-4-20250514",
        "content": [], "stop_reason": "end_turn", "stop_sequence": None,
        "usage": {"input_tokens": 500, "output_tokens": 100, "cache_read_input_tokens": 1000,
                  "cache_creation_input_tokens": 300},
    }  # fmt: skip
    expected = {**_usage(1800, 100, cached=1000, write=300),
                "response_model": "claude-sonnet-4-20250514"}  # fmt: skip
    assert usage_from_response(Message.model_validate(message)) == expected
    start = RawMessageStartEvent.model_validate({"type": "message_start", "message": message})
    assert usage_from_response(start) == expected


def test_google_genai_usage_metadata_with_cached_content_and_thoughts() -> None:
    from google.genai import types

    resp = types.GenerateContentResponse.model_validate({
        "model_version": "gemini-2.5-flash",
        "usage_metadata": {"prompt_token_count": 4000, "candidates_token_count": 300,
                           "cached_content_token_count": 2048, "thoughts_token_count": 700,
                           "total_token_count": 5000},
    })  # fmt: skip
    # Thinking is billed as output: tokens_out = candidates + thoughts.
    assert usage_from_response(resp) == {
        **_usage(4000, 1000, cached=2048, reasoning=700),
        "response_model": "gemini-2.5-flash",
    }


def test_bedrock_converse_dict_and_stream_metadata_event() -> None:
    # boto3's bedrock-runtime converse() answer (a dict): inputTokens exclude cache traffic.
    converse = {
        "output": {"message": {"role": "assistant", "content": [{"text": "hi"}]}},
        "stopReason": "end_turn",
        "usage": {"inputTokens": 120, "outputTokens": 80, "totalTokens": 1400,
                  "cacheReadInputTokens": 1000, "cacheWriteInputTokens": 200},
        "metrics": {"latencyMs": 812},
    }  # fmt: skip
    expected = _usage(1320, 80, cached=1000, write=200)
    assert usage_from_response(converse) == expected
    stream_event = {"metadata": {"usage": converse["usage"], "metrics": {"latencyMs": 812}}}
    assert usage_from_response(stream_event) == expected


@pytest.fixture
def litellm_offline(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    # LiteLLM fetches its price list over the network at import unless told not to.
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    yield litellm


def test_litellm_model_response_keeps_cache_traffic_inside_prompt_tokens(
    litellm_offline: Any,
) -> None:
    usage = litellm_offline.Usage(
        prompt_tokens=1800, completion_tokens=100, total_tokens=1900,
        cache_creation_input_tokens=300, cache_read_input_tokens=1000,
    )  # fmt: skip
    resp = litellm_offline.ModelResponse(model="claude-sonnet-4-20250514", usage=usage)
    assert usage_from_response(resp) == {
        **_usage(1800, 100, cached=1000, write=300),
        "response_model": "claude-sonnet-4-20250514",
    }


def test_a_real_anthropic_response_is_costed_with_its_cache_write_price(
    make_ledger: Callable[..., Ledger], telemetry: Telemetry
) -> None:
    from anthropic.types import Message

    ledger = make_ledger(costs=None, environ={"RUNLEDGER_ENFORCE_CAPS": "0"})
    message = Message.model_validate({
        "id": "m", "type": "message", "role": "assistant", "model": "claude-sonnet-4-20250514",
        "content": [], "stop_reason": "end_turn", "stop_sequence": None,
        "usage": {"input_tokens": 500, "output_tokens": 100, "cache_read_input_tokens": 1000,
                  "cache_creation_input_tokens": 300},
    })  # fmt: skip
    with ledger.run("acme", "p", phase="build", role="implementer") as run:
        with run.model_call(model="claude-sonnet-4", provider="anthropic") as call:
            call.record(response=message)
    assert call.cost_usd is None  # priced from the table, not given
    expected = default_pricing().cost(
        "claude-sonnet-4", tokens_in=1800, tokens_out=100,
        cached_tokens_in=1000, cache_write_tokens_in=300,
    )  # fmt: skip
    assert expected == Decimal("0.004425")
    assert (call.tokens_in, call.cached_tokens_in, call.cache_write_tokens_in) == (1800, 1000, 300)
    span = next(s for s in telemetry.finished_spans() if s.name == "chat claude-sonnet-4")
    assert span.attributes["runledger.cost_usd"] == float(expected)
    assert span.attributes["gen_ai.usage.cache_creation.input_tokens"] == 300

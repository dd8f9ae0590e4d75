"""otel/collector.yml: a structural check against the Collector's documented config schema.

The Collector binary cannot be installed here (no registry ships it), so its ``validate``
command cannot run. Instead, strict models of the components the example uses, written from
the Collector's documentation (receiver ``otlp``, processors ``memory_limiter`` and
``batch``, exporters ``otlphttp`` and ``otlp``, extension ``health_check``), refuse unknown
keys and bad values; every pipeline must name only defined components; and the two
destinations must be the ones this repository runs: runledger's ``/v1/traces`` (protobuf)
and Tempo's OTLP gRPC receiver.
"""

from __future__ import annotations

import re
from typing import Any, Literal

import pytest
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from _support import ROOT

CONFIG = ROOT / "otel" / "collector.yml"
DURATION = r"^\d+(ms|s|m|h)$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Endpoint(_Strict):
    endpoint: str = Field(pattern=r"^[\w.-]*:\d+$")


class _OtlpReceiver(_Strict):
    class _Protocols(_Strict):
        grpc: _Endpoint | None = None
        http: _Endpoint | None = None

    protocols: _Protocols


class _MemoryLimiter(_Strict):
    check_interval: str = Field(pattern=DURATION)
    limit_mib: int | None = None
    spike_limit_mib: int | None = None
    limit_percentage: int | None = Field(None, ge=1, le=100)
    spike_limit_percentage: int | None = Field(None, ge=1, le=100)


class _Batch(_Strict):
    send_batch_size: int = Field(8192, ge=1)
    send_batch_max_size: int = Field(0, ge=0)
    timeout: str = Field("200ms", pattern=DURATION)


class _Retry(_Strict):
    enabled: bool = True
    initial_interval: str | None = Field(None, pattern=DURATION)
    max_interval: str | None = Field(None, pattern=DURATION)
    max_elapsed_time: str | None = Field(None, pattern=DURATION)


class _Tls(_Strict):
    insecure: bool = False


class _OtlpHttpExporter(_Strict):
    endpoint: str = Field(pattern=r"^https?://[\w.-]+(:\d+)?$")
    encoding: Literal["proto", "json"] = "proto"
    compression: Literal["gzip", "zstd", "snappy", "zlib", "deflate", "lz4", "none", ""] = "gzip"
    headers: dict[str, str] = Field(default_factory=dict)
    retry_on_failure: _Retry | None = None
    timeout: str | None = Field(None, pattern=DURATION)
    tls: _Tls | None = None

    @field_validator("headers")
    @classmethod
    def _env_syntax(cls, headers: dict[str, str]) -> dict[str, str]:
        for value in headers.values():
            for ref in re.findall(r"\$\{([^}]*)\}", value):
                assert re.fullmatch(r"env:[A-Z_][A-Z0-9_]*", ref), f"${{{ref}}}: use ${{env:NAME}}"
        return headers


class _OtlpGrpcExporter(_Strict):
    endpoint: str = Field(pattern=r"^[\w.-]+:\d+$")
    tls: _Tls | None = None
    compression: str | None = None


COMPONENTS: dict[str, dict[str, type[BaseModel]]] = {
    "receivers": {"otlp": _OtlpReceiver},
    "processors": {"memory_limiter": _MemoryLimiter, "batch": _Batch},
    "exporters": {"otlphttp": _OtlpHttpExporter, "otlp": _OtlpGrpcExporter},
    "extensions": {"health_check": _Endpoint},
}


def _check(config: dict[str, Any]) -> list[str]:
    """Return every problem of a collector config (empty: valid)."""
    problems = []
    unknown = set(config) - {*COMPONENTS, "connectors", "service"}
    problems += [f"unknown top-level key {k!r}" for k in sorted(unknown)]
    for kind, known in COMPONENTS.items():
        for name, body in (config.get(kind) or {}).items():
            ctype = name.split("/", 1)[0]
            if ctype not in known:
                problems.append(f"{kind}.{name}: component type {ctype!r} not known here")
                continue
            try:
                known[ctype].model_validate(body or {})
            except ValidationError as exc:
                problems.append(f"{kind}.{name}: {exc.errors()[0]['msg']}")
    service = config.get("service") or {}
    for ext in service.get("extensions", []):
        if ext not in (config.get("extensions") or {}):
            problems.append(f"service.extensions: {ext!r} is not defined")
    pipelines = service.get("pipelines") or {}
    if not pipelines:
        problems.append("service.pipelines: none defined")
    for pname, pipeline in pipelines.items():
        if pname.split("/", 1)[0] not in ("traces", "metrics", "logs"):
            problems.append(f"service.pipelines.{pname}: not a signal")
        for kind in ("receivers", "processors", "exporters"):
            for ref in pipeline.get(kind, []):
                if ref not in (config.get(kind) or {}):
                    problems.append(f"service.pipelines.{pname}.{kind}: {ref!r} is not defined")
        if not pipeline.get("receivers") or not pipeline.get("exporters"):
            problems.append(f"service.pipelines.{pname}: needs receivers and exporters")
    batch = (config.get("processors") or {}).get("batch") or {}
    if batch.get("send_batch_max_size", 0) and batch["send_batch_max_size"] < batch.get(
        "send_batch_size", 8192
    ):
        problems.append("processors.batch: send_batch_max_size must be >= send_batch_size")
    return problems


def test_example_config_is_valid_and_fans_traces_out_to_runledger_and_tempo() -> None:
    config = yaml.safe_load(CONFIG.read_text())
    assert _check(config) == []
    traces = config["service"]["pipelines"]["traces"]
    exporters = config["exporters"]
    kinds = {name.split("/")[0]: exporters[name] for name in traces["exporters"]}
    runledger, tempo = kinds["otlphttp"], kinds["otlp"]
    assert runledger["encoding"] == "proto"
    assert runledger["headers"]["Authorization"].startswith("Bearer ${env:")
    # The otlphttp exporter appends /v1/traces to its endpoint: runledger's receiver route.
    from runledger.control.otlp import bp

    assert bp.url_prefix == "/v1"
    assert runledger["endpoint"].endswith(":8480")
    # Tempo receives OTLP gRPC on the port tempo/tempo.yml opens.
    tempo_cfg = yaml.safe_load((ROOT / "tempo" / "tempo.yml").read_text())
    grpc = tempo_cfg["distributor"]["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"]
    assert tempo["endpoint"] == f"tempo:{grpc.rsplit(':', 1)[1]}"
    # Batches stay within what the receiver takes per export.
    assert config["processors"]["batch"]["send_batch_max_size"] <= 512


BROKEN = [
    ({"exporters": {"otlphttp/runledger": {"endpoint": "proxy:8480"}}}, "String should match"),
    ({"exporters": {"otlphttp/runledger": {"endpoint": "http://x:1", "encodign": "proto"}}},
     "Extra inputs are not permitted"),
    ({"processors": {"batch": {"send_batch_size": 1024, "send_batch_max_size": 512}}},
     "send_batch_max_size must be >= send_batch_size"),
    ({"service": {"pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["zipkin"]}}}},
     "'zipkin' is not defined"),
    ({"exporters": {"otlphttp/runledger": {"endpoint": "http://x:1",
                                           "headers": {"Authorization": "Bearer ${TOKEN}"}}}},
     "use ${env:NAME}"),
]  # fmt: skip


@pytest.mark.parametrize(("change", "problem"), BROKEN)
def test_the_check_catches_broken_configs(change: dict[str, Any], problem: str) -> None:
    config = yaml.safe_load(CONFIG.read_text())
    for key, value in change.items():
        config[key] = {**(config.get(key) or {}), **value}
    assert any(problem in p for p in _check(config)), _check(config)

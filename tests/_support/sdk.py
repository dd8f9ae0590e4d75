"""Helpers of the SDK tests: in-memory telemetry and an OTLP/HTTP receiver that decodes what
it receives with opentelemetry-proto."""

from __future__ import annotations

import gzip
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter


class Telemetry:
    """In-memory span and log exporters behind real SDK providers."""

    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.logs = InMemoryLogRecordExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.logger_provider = LoggerProvider()
        self.logger_provider.add_log_record_processor(SimpleLogRecordProcessor(self.logs))

    def finished_spans(self) -> list[Any]:
        return list(self.spans.get_finished_spans())

    def log_records(self) -> list[Any]:
        return [getattr(r, "log_record", r) for r in self.logs.get_finished_logs()]

    def models(self, run_id: str) -> list[str]:
        """Return the requested model of each model-call span of ``run_id``, in order."""
        spans = sorted(self.finished_spans(), key=lambda s: s.start_time or 0)
        return [
            str(s.attributes["gen_ai.request.model"])
            for s in spans
            if s.attributes
            and s.attributes.get("runledger.run_id") == run_id
            and s.attributes.get("gen_ai.operation.name") == "chat"
        ]


class OtlpReceiver:
    """An OTLP/HTTP receiver on loopback that decodes what it receives with opentelemetry-proto."""

    def __init__(self) -> None:
        self.traces: list[ExportTraceServiceRequest] = []
        self.logs: list[ExportLogsServiceRequest] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                data = self.rfile.read(length)
                encoding = (self.headers.get("Content-Encoding") or "").lower()
                if encoding == "gzip":
                    data = gzip.decompress(data)
                elif encoding == "deflate":
                    data = zlib.decompress(data)
                if self.path == "/v1/traces":
                    req: Any = ExportTraceServiceRequest()
                    req.ParseFromString(data)
                    with receiver.lock:
                        receiver.traces.append(req)
                    answer = ExportTraceServiceResponse().SerializeToString()
                elif self.path == "/v1/logs":
                    req = ExportLogsServiceRequest()
                    req.ParseFromString(data)
                    with receiver.lock:
                        receiver.logs.append(req)
                    answer = ExportLogsServiceResponse().SerializeToString()
                else:
                    self.send_response(404)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def spans(self) -> list[tuple[Any, Any]]:
        """Return (resource, span) pairs received so far."""
        with self.lock:
            return [
                (rs.resource, span)
                for req in self.traces
                for rs in req.resource_spans
                for ss in rs.scope_spans
                for span in ss.spans
            ]

    def log_records(self) -> list[tuple[Any, Any]]:
        """Return (resource, log record) pairs received so far."""
        with self.lock:
            return [
                (rl.resource, rec)
                for req in self.logs
                for rl in req.resource_logs
                for sl in rl.scope_logs
                for rec in sl.log_records
            ]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

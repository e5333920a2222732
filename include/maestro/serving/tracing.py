"""Request tracing with OpenTelemetry, off unless the standard variables ask for it.

With `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) set, each
prediction request (JSON and V2) is one server span: the route, the model, the version that
answered, the rows, the status and the request id the answer carries, a child of the caller's
span when the request brings a W3C `traceparent`. Spans leave in batches from a thread of each
worker process (OTLP over HTTP, or gRPC with `OTEL_EXPORTER_OTLP_PROTOCOL=grpc`); the rest of
the exporter's configuration is OpenTelemetry's own variables (headers, timeout, service name,
resource attributes, `OTEL_SDK_DISABLED`). Off, a request pays one attribute test.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span

ENDPOINTS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
SERVICE = "maestro-model-server"


def wanted(environ: Mapping[str, str]) -> bool:
    """Whether the environment asks for traces: an OTLP endpoint, and tracing not disabled."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() == "none":
        return False
    return any(environ.get(name) for name in ENDPOINTS)


class Tracing:
    """One process's tracer provider and its batch exporter."""

    def __init__(self, provider: TracerProvider) -> None:
        self.provider = provider
        self.tracer = provider.get_tracer("maestro.serving")

    @classmethod
    def from_environment(cls) -> Tracing | None:
        if not wanted(os.environ):
            return None
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES, when set, win over the default name
        named = {} if os.environ.get("OTEL_SERVICE_NAME") else {"service.name": SERVICE}
        provider = TracerProvider(resource=Resource.create(named))
        provider.add_span_processor(BatchSpanProcessor(exporter()))
        return cls(provider)

    def start(self, headers: Mapping[str, str], method: str, route: str, model: str) -> Span:
        """A server span for one request, the caller's trace continued (`traceparent`)."""
        from opentelemetry.propagate import extract
        from opentelemetry.trace import SpanKind

        return self.tracer.start_span(
            f"{method} {route}",
            context=extract(headers),
            kind=SpanKind.SERVER,
            attributes={
                "http.request.method": method,
                "http.route": route,
                "maestro.model": model,
            },
        )

    def close(self) -> None:
        """Export what is left and stop the exporter's thread."""
        self.provider.shutdown()


def exporter() -> Any:
    """The OTLP span exporter the environment chooses (http/protobuf unless it says grpc)."""
    protocol = os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "")
    )
    if protocol.strip().lower() == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as Http

    return Http()

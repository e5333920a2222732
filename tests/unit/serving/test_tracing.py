"""Request tracing: with the standard OpenTelemetry variables set, the model server sends a
span per prediction request over OTLP (received here by an HTTP receiver on loopback), the
caller's trace continued; without them, nothing is traced."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from maestro.serving.app import create_app
from maestro.serving.tracing import wanted
from tests.support import post_receiver

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


def otlp_receiver():
    """An OTLP/HTTP traces endpoint on loopback: (its base URL, every (resource, span))."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    def spans(body: bytes) -> list:
        export = ExportTraceServiceRequest.FromString(body)
        return [
            (resource.resource, span)
            for resource in export.resource_spans
            for scope in resource.scope_spans
            for span in scope.spans
        ]

    return post_receiver(spans)


def v2_request(row: dict) -> dict:
    """One record as an Open Inference Protocol request, a tensor per feature."""
    kinds = {bool: "BOOL", int: "INT64", float: "FP64", str: "BYTES"}
    return {
        "inputs": [
            {"name": k, "shape": [1], "datatype": kinds[type(v)], "data": [v]}
            for k, v in row.items()
        ]
    }


def attributes(span) -> dict:
    found = {}
    for item in span.attributes:
        value = item.value
        found[item.key] = value.int_value if value.HasField("int_value") else value.string_value
    return found


@pytest.fixture
def serve(settings, demo_champion, monkeypatch):
    """`serve()`: the server in this process with the demo champion, open without a token."""
    _, frame = demo_champion
    monkeypatch.setenv("MAESTRO_PREDICTION_LOG", "off")
    from maestro.config import get_settings

    row = json.loads(
        frame.drop(columns=["customer_id", "event_timestamp", "churned"])
        .head(1)
        .to_json(orient="records")
    )[0]

    def start() -> tuple[TestClient, dict]:
        get_settings.cache_clear()
        return TestClient(create_app(get_settings(), ["demo"])), row

    return start


def test_each_prediction_request_is_a_span_continuing_the_callers_trace(serve, monkeypatch):
    with otlp_receiver() as (endpoint, spans):
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
        monkeypatch.setenv("OTEL_SERVICE_NAME", "scoring")
        client, row = serve()
        traceparent = {"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"}
        with client:
            answered = client.post("/v1/models/demo/predict", json=[row, row], headers=traceparent)
            refused = client.post("/v1/models/demo/predict", json={**row, "age": "old"})
            v2 = client.post("/v2/models/demo/versions/1/infer", json=v2_request(row))
        # leaving the client stops the server: its last spans are exported before it ends
    assert answered.status_code == 200 and refused.status_code == 422, refused.text
    assert v2.status_code == 200, v2.text
    assert len(spans) == 3, [span.name for _, span in spans]
    resource, first = next((r, s) for r, s in spans if attributes(s).get("maestro.rows") == 2)
    service = {a.key: a.value.string_value for a in resource.attributes}["service.name"]
    assert service == "scoring"
    assert first.trace_id.hex() == TRACE_ID and first.parent_span_id.hex() == PARENT_ID
    assert attributes(first) == {
        "http.request.method": "POST",
        "http.route": "/v1/models/{model}/predict",
        "maestro.model": "demo",
        "maestro.model_version": "1",
        "maestro.rows": 2,
        "maestro.request_id": answered.json()["request_id"],
        "http.response.status_code": 200,
    }
    refusals = [s for _, s in spans if attributes(s)["http.response.status_code"] == 422]
    assert len(refusals) == 1 and refusals[0].trace_id.hex() != TRACE_ID  # a trace of its own
    infer = next(s for _, s in spans if s.name.startswith("POST /v2/"))
    assert infer.name == "POST /v2/models/{model}/versions/{version}/infer"
    assert attributes(infer)["maestro.request_id"] == v2.json()["id"]


def test_without_an_otlp_endpoint_nothing_is_traced(serve, monkeypatch):
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    client, row = serve()
    with client:
        assert client.post("/v1/models/demo/predict", json=row).status_code == 200
        assert client.app.state.server.tracing is None


def test_the_standard_variables_turn_tracing_off():
    endpoint = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}
    assert wanted(endpoint)
    assert not wanted({**endpoint, "OTEL_SDK_DISABLED": "true"})
    assert not wanted({**endpoint, "OTEL_TRACES_EXPORTER": "none"})
    assert wanted({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"})
    assert not wanted({})

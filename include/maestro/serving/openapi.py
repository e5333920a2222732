"""The model server's OpenAPI document: the FastAPI routes as FastAPI describes them, and the
prediction routes (plain Starlette routes, which FastAPI does not see) of every model served,
each with its records as the serving version's signature declares them, and every answer a
route gives (the refusals too). It names the models, so it is for holders of the token."""

from __future__ import annotations

from importlib import metadata
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from maestro.serving.deps import REFUSALS
from maestro.serving.records import Column
from maestro.serving.routing import Router

KINDS = {kind: {"type": kind} for kind in ("number", "integer", "string", "boolean")}
ERROR: dict[str, Any] = {
    "type": "object",
    "properties": {
        "error": {"type": "string"},
        "status": {"type": "integer"},
        "field": {"type": "string"},
    },
    "required": ["error"],
}
PREDICTION = {
    "type": "object",
    "properties": {
        "model": {"type": "string"},
        "version": {"type": "string"},
        "request_id": {"type": "string"},
        "predictions": {"type": "array", "items": {"type": "number"}},
    },
    "required": ["model", "version", "request_id", "predictions"],
}
DATATYPES = ["BOOL", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"]
DATATYPES += ["FP16", "FP32", "FP64", "BYTES"]
TENSOR: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer"}},
        "datatype": {"type": "string", "enum": DATATYPES},
        "parameters": {"type": "object"},
        "data": {"type": "array"},
    },
    "required": ["name", "shape", "datatype", "data"],
}
INFERENCE = {
    "type": "object",
    "properties": {
        "model_name": {"type": "string"},
        "model_version": {"type": "string"},
        "id": {"type": "string"},
        "parameters": {"type": "object"},
        "outputs": {"type": "array", "items": TENSOR},
    },
    "required": ["model_name", "id", "outputs"],
}


def server_schema(app: FastAPI, router: Router, max_rows: int) -> dict:
    """The whole document for what the server serves now."""
    schema = get_openapi(
        title=app.title,
        version=metadata.version("maestro-ml"),
        routes=app.routes,
        description="The model server's routes; the prediction routes are the served models'.",
    )
    paths = schema.setdefault("paths", {})
    for model, routing in router.models.items():
        columns = routing.lanes[0].scorer.columns
        versions = list(routing.by_version)
        record = record_schema(columns)
        batch = {"type": "array", "items": record, "minItems": 1, "maxItems": max_rows}
        records = {"oneOf": [record, batch]}
        inference = inference_request(columns)
        paths[f"/v1/models/{model}/predict"] = {
            "post": operation(f"predict_{model}", records, PREDICTION, "error")
        }
        paths[f"/v1/models/{model}/versions/{{version}}/predict"] = {
            "post": operation(f"predict_{model}_version", records, PREDICTION, "error", versions)
        }
        paths[f"/v2/models/{model}/infer"] = {
            "post": operation(f"infer_{model}", inference, INFERENCE, "v2 error")
        }
        paths[f"/v2/models/{model}/versions/{{version}}/infer"] = {
            "post": operation(f"infer_{model}_version", inference, INFERENCE, "v2 error", versions)
        }
    schema.setdefault("components", {})["securitySchemes"] = {
        "bearer": {"type": "http", "scheme": "bearer"}
    }
    return schema


def record_schema(columns: list[Column]) -> dict:
    """One record: every column of the signature, typed, null only where it is optional."""
    properties = {
        c.name: KINDS[c.kind] if c.required else {"anyOf": [KINDS[c.kind], {"type": "null"}]}
        for c in columns
    }
    return {
        "type": "object",
        "properties": properties,
        "required": [c.name for c in columns if c.required],
        "additionalProperties": False,
    }


def inference_request(columns: list[Column]) -> dict:
    """An Open Inference Protocol request: one input tensor per column, in the signature's
    order, each of a datatype its column takes (the protocol allows any order; this is the
    shape a client following the model's metadata sends)."""
    return {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "parameters": {"type": "object"},
            "inputs": {
                "type": "array",
                "prefixItems": [input_tensor(c) for c in columns],
                "items": False,
                "minItems": len(columns),
            },
            "outputs": {"type": "array", "items": {"type": "object"}},
        },
        "required": ["inputs"],
    }


TENSOR_TYPES = {
    "number": ["FP64", "FP32"],
    "integer": ["INT64", "INT32"],
    "string": ["BYTES"],
    "boolean": ["BOOL"],
}


def input_tensor(column: Column) -> dict:
    """One row of one column as a tensor of shape [1]."""
    value = (
        KINDS[column.kind] if column.required else {"anyOf": [KINDS[column.kind], {"type": "null"}]}
    )
    one = {"minItems": 1, "maxItems": 1}
    return {
        "type": "object",
        "properties": {
            "name": {"const": column.name},
            "shape": {"type": "array", "items": {"const": 1}, **one},
            "datatype": {"enum": TENSOR_TYPES[column.kind]},
            "data": {"type": "array", "items": value, **one},
        },
        "required": ["name", "shape", "datatype", "data"],
        "additionalProperties": False,
    }


def operation(
    operation_id: str, body: dict, answer: dict, error: str, versions: list[str] | None = None
) -> dict[str, Any]:
    """A POST with a JSON body, its answer and its refusals (`error`: the protocol's shape)."""
    shape = ERROR if error == "error" else {**ERROR, "properties": {"error": {"type": "string"}}}
    responses: dict[str, Any] = {
        "200": {"description": "scored", "content": {"application/json": {"schema": answer}}}
    }
    for status, why in REFUSALS.items():
        responses[str(status)] = {
            "description": why,
            "content": {"application/json": {"schema": shape}},
        }
    found: dict[str, Any] = {
        "operationId": operation_id,
        "requestBody": {"required": True, "content": {"application/json": {"schema": body}}},
        "responses": responses,
        "security": [{"bearer": []}],
    }
    if versions is not None:
        found["parameters"] = [
            {"name": "version", "in": "path", "required": True, "schema": {"enum": versions}}
        ]
    return found

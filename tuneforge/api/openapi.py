"""The OpenAPI document: what FastAPI derives from the routes, completed with the answers it
cannot see. The guard (tuneforge.api.security) and the body limit (tuneforge.api.limits)
answer before any route runs, and validation errors come in our error shape, not FastAPI's."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from tuneforge.api.errors import DESCRIPTIONS, ErrorResponse
from tuneforge.api.security import guard_statuses

ERROR_REF = "#/components/schemas/ErrorResponse"


def install(app: FastAPI) -> None:
    """Serve the completed document at /openapi.json (built once, on first request)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = complete(FastAPI.openapi(app))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def complete(document: dict[str, Any]) -> dict[str, Any]:
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    error_schema = ErrorResponse.model_json_schema(
        ref_template="#/components/schemas/{model}", mode="serialization"
    )
    schemas.update(error_schema.pop("$defs", {}))
    schemas["ErrorResponse"] = error_schema
    # FastAPI's own validation error shape, which no answer of ours has.
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            if "422" in responses:
                responses["422"] = error_response(422)
            statuses = guard_statuses(method.upper(), path)
            if "requestBody" in operation:
                statuses.extend((408, 413))
            for status in statuses:
                responses.setdefault(str(status), error_response(status))
            operation["responses"] = dict(sorted(responses.items()))
    return document


def error_response(status: int) -> dict[str, Any]:
    return {
        "description": DESCRIPTIONS[status],
        "content": {"application/json": {"schema": {"$ref": ERROR_REF}}},
    }

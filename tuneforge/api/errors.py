"""The one place where errors become HTTP responses, in OpenAI's error shape, and the schema
that the OpenAPI document declares for them."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import MISSING, Field
from starlette.exceptions import HTTPException
from starlette.routing import Match

from tuneforge.api.schemas.base import Public
from tuneforge.errors import TuneforgeError

STATUS_BY_CODE = {
    "invalid_request": 400,
    "invalid_dataset": 400,
    "remote_code_refused": 400,
    "unsafe_weights": 400,
    "unsupported_file": 400,
    "unsupported_architecture": 400,
    "not_found": 404,
    "file_not_found": 404,
    "job_not_found": 404,
    "study_not_found": 404,
    "model_not_found": 404,
    "invalid_state": 409,
    "model_exists": 409,
    "file_too_large": 413,
    "validation_error": 422,
    "queue_full": 429,
}
# The router's own answers (no route, or not that method) in the same shape.
CODE_BY_HTTP_STATUS = {404: "not_found", 405: "method_not_allowed"}

# What each error status means, as the OpenAPI document says it.
DESCRIPTIONS = {
    400: "Invalid request (or a Host header this server does not answer to).",
    401: "No valid API key.",
    403: "The API key's scope does not allow this.",
    404: "Not found.",
    409: "Not in a state that allows this.",
    413: "The request body is larger than the limit.",
    422: "Validation error: every problem is listed in `details`.",
    429: "Too many requests, or too many queued jobs; see `Retry-After`.",
}


class Error(Public):
    message: str
    type: str = Field(
        ...,
        description="invalid_request_error, authentication_error, permission_error or "
        "server_error.",
    )
    param: str | None = Field(..., description="The field at fault, when one is.")
    code: str = Field(..., description="Stable and machine-readable, e.g. file_not_found.")
    details: Any = Field(
        MISSING, description="Every problem found (validation errors: param, message, type)."
    )


class ErrorResponse(Public):
    """Every error answer of the API, as OpenAI's."""

    error: Error


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The `responses=` of a route that can answer these error statuses."""
    return {s: {"model": ErrorResponse, "description": DESCRIPTIONS[s]} for s in statuses}


def error_body(
    code: str, message: str, param: str | None = None, details: Any = None
) -> dict[str, Any]:
    error: dict[str, Any] = {
        "message": message,
        "type": "invalid_request_error",
        "param": param,
        "code": code,
    }
    if details is not None:
        error["details"] = details
    return {"error": error}


def field_path(loc: tuple[Any, ...] | list[Any]) -> str:
    """pydantic's location as a dotted field path, without the leading 'body'."""
    parts = [str(p) for p in loc if p not in ("body", "query", "path")]
    # `method` is a union told apart by `type`, and pydantic puts the tag into the location
    # (method, embedding, embedding, loss): the user wrote method.embedding.loss.
    if len(parts) > 1 and parts[0] == "method":
        del parts[1]
    out = ""
    for part in parts:
        out += f"[{part}]" if part.isdigit() else (f".{part}" if out else part)
    return out


def install(app: FastAPI) -> None:
    @app.exception_handler(TuneforgeError)
    async def _tuneforge_error(_: Request, exc: TuneforgeError) -> JSONResponse:
        status = STATUS_BY_CODE.get(exc.code, 500)
        body = error_body(exc.code, exc.message, exc.param, exc.details)
        if status >= 500:
            body["error"]["type"] = "server_error"
        return JSONResponse(body, status_code=status)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"param": field_path(e["loc"]), "message": e["msg"], "type": e["type"]}
            for e in exc.errors()
        ]
        first = errors[0] if errors else {"param": None, "message": "invalid request"}
        message = "; ".join(f"{e['param'] or 'body'}: {e['message']}" for e in errors)
        return JSONResponse(
            error_body("validation_error", message, first["param"], errors), status_code=422
        )

    @app.exception_handler(HTTPException)
    async def _router_error(request: Request, exc: HTTPException) -> JSONResponse:
        # Raised by the router itself: no route for the path (404), or none for the method
        # (405, with the methods the path allows in `Allow`).
        route = f"{request.method} {request.url.path}"
        if exc.status_code == 404:
            message = f"No route {route}."
        elif exc.status_code == 405:
            # The router names the methods of the first route whose path matched; the path
            # may have others (GET and POST /v1/files are two routes).
            allowed = ", ".join(_allowed_methods(request))
            exc.headers = {**(exc.headers or {}), "Allow": allowed}
            message = f"{route}: the method is not allowed here (allowed: {allowed})."
        else:
            message = str(exc.detail)
        server_error = exc.status_code >= 500
        default_code = "internal" if server_error else "invalid_request"
        body = error_body(CODE_BY_HTTP_STATUS.get(exc.status_code, default_code), message)
        if server_error:
            body["error"]["type"] = "server_error"
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route of the app answers at the request's path."""
    allowed = []
    for method in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"):
        scope = {**request.scope, "method": method}
        if any(route.matches(scope)[0] == Match.FULL for route in request.app.router.routes):
            allowed.append(method)
    return allowed

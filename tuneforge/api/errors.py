"""The one place where errors become HTTP responses, in OpenAI's error shape."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from tuneforge.errors import TuneforgeError

STATUS_BY_CODE = {
    "invalid_request": 400,
    "invalid_dataset": 400,
    "remote_code_refused": 400,
    "unsafe_weights": 400,
    "unsupported_file": 400,
    "not_found": 404,
    "file_not_found": 404,
    "job_not_found": 404,
    "study_not_found": 404,
    "model_not_found": 404,
    "invalid_state": 409,
    "file_too_large": 413,
    "validation_error": 422,
}


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

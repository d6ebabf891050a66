"""The one place where errors become HTTP responses, in OpenAI's error shape, and the schema
that the OpenAPI document declares for them."""

from __future__ import annotations

import errno
import json
import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import MISSING, Field
from starlette.exceptions import HTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tuneforge.api.schemas.base import Public
from tuneforge.errors import DiskFullError, FieldValueError, TuneforgeError

# The server's log (uvicorn's), where tracebacks of failed requests belong.
log = logging.getLogger("uvicorn.error")

STATUS_BY_CODE = {
    "invalid_request": 400,
    "invalid_dataset": 400,
    "remote_code_refused": 400,
    "unsafe_weights": 400,
    "unsupported_file": 400,
    "unsupported_architecture": 400,
    "insufficient_memory": 400,
    "insufficient_disk": 400,
    "python_graders_disabled": 403,
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
    "disk_full": 507,
}
# When a client whose jobs fill its queue should ask again (`Retry-After`), in seconds.
QUEUE_RETRY_SECONDS = "30"
# The router's own answers (no route, or not that method) in the same shape.
CODE_BY_HTTP_STATUS = {404: "not_found", 405: "method_not_allowed"}
# Out of space, or over a quota: the same fault to the client.
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})

# What each error status means, as the OpenAPI document says it.
DESCRIPTIONS = {
    400: "Invalid request (or a Host header this server does not answer to).",
    401: "No valid API key.",
    403: "The API key's scope does not allow this.",
    404: "Not found.",
    408: "The request body stopped arriving (its Content-Length promised more).",
    409: "Not in a state that allows this.",
    413: "The request body is larger than the limit.",
    422: "Validation error: every problem is listed in `details`.",
    429: "Too many requests, or too many queued jobs; see `Retry-After`.",
    507: "The data folder's file system is full; nothing of the request was kept.",
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


def error_type(status: int) -> str:
    """OpenAI's error `type` for an HTTP status."""
    if status >= 500:
        return "server_error"
    return {401: "authentication_error", 403: "permission_error"}.get(
        status, "invalid_request_error"
    )


def error_body(
    code: str,
    message: str,
    param: str | None = None,
    details: Any = None,
    status: int = 400,
) -> dict[str, Any]:
    error: dict[str, Any] = {
        "message": message,
        "type": error_type(status),
        "param": param,
        "code": code,
    }
    if details is not None:
        error["details"] = details
    return {"error": error}


async def send_error(
    send: Send,
    status: int,
    code: str,
    message: str,
    param: str | None = None,
    headers: tuple[tuple[bytes, bytes], ...] = (),
) -> None:
    """An error answer written by a middleware, before or instead of the app's own."""
    payload = json.dumps(error_body(code, message, param, status=status)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


def _disk_full(exc: BaseException | None) -> OSError | None:
    """The out-of-space OSError behind `exc` (itself, or what it was raised from)."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


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


# A part of pydantic's location that names a member of a union (`str`, `list[int]`,
# `function-after[...]`), not a field.
_UNION_MEMBER = re.compile(
    r"(str|int|float|bool|bytes|none|dict|list|constrained-\w+|[\w-]+\[.*\])"
)
# Errors that say only "the value is not of this member's type".
_MISMATCH = ("_type", "_parsing", "literal_error", "union_tag_invalid")


def json_error_message(error: Any, body: Any) -> str:
    """One sentence for a body that is not JSON, with the line and column where it breaks
    (FastAPI gives the character offset and, as the body, the text)."""
    reason = str((error.get("ctx") or {}).get("error") or "it does not parse")
    loc = error.get("loc") or ()
    offset = loc[-1] if loc and isinstance(loc[-1], int) else None
    if offset is None or not isinstance(body, str):
        return f"The request body is not valid JSON: {reason}."
    line = body.count("\n", 0, offset) + 1
    column = offset - (body.rfind("\n", 0, offset) + 1) + 1
    return f"The request body is not valid JSON: {reason} at line {line}, column {column}."


def validation_errors(raw: Any) -> list[dict[str, Any]]:
    """pydantic's errors as (param, message, type): the members of a union collapse into the
    errors of the member whose type the value has (or one sentence of what the field takes,
    when it has none of them), and a model validator's error about one field names it."""
    errors: list[dict[str, Any]] = []
    unions: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for e in raw:
        loc = list(e["loc"])
        cause = (e.get("ctx") or {}).get("error")
        if isinstance(cause, FieldValueError):
            loc = [*loc, *cause.param.split(".")]
        message = str(e["msg"]).removeprefix("Value error, ")
        cut = next((i for i, p in enumerate(loc) if _is_union_member(p)), None)
        if cut is None:
            errors.append({"param": field_path(loc), "message": message, "type": e["type"]})
            continue
        rest = [p for p in loc[cut + 1 :] if not _is_union_member(p)]
        found = {"param": field_path(loc[:cut] + rest), "message": message, "type": e["type"]}
        members = unions.setdefault(field_path(loc[:cut]), {})
        members.setdefault(str(loc[cut]), []).append(found)
    for param, members in unions.items():
        fitting = [
            found for found in members.values()
            if any(not str(f["type"]).endswith(_MISMATCH) for f in found)
        ]
        if fitting:
            kept = [f for f in fitting[0] if not str(f["type"]).endswith(_MISMATCH)]
            errors += list({(f["param"], f["message"]): f for f in kept}.values())
            continue
        kinds = list(dict.fromkeys(_member_name(m) for m in members))
        takes = f"{', '.join(kinds[:-1])} or {kinds[-1]}" if len(kinds) > 1 else kinds[0]
        errors.append({"param": param, "message": f"expected {takes}", "type": "union_type"})
    return errors


def _is_union_member(part: Any) -> bool:
    return isinstance(part, str) and _UNION_MEMBER.fullmatch(part) is not None


_NAMES = {
    "str": ("a string", "strings"),
    "int": ("an integer", "integers"),
    "float": ("a number", "numbers"),
    "bool": ("a boolean", "booleans"),
    "dict": ("an object", "objects"),
    "none": ("null", "nulls"),
}


def _member_name(member: str, plural: bool = False) -> str:
    """A union member as the user reads it: `list[constrained-str]` -> "a list of strings"."""
    name = member.strip().removeprefix("constrained-")
    wrapped = re.fullmatch(r"(?:function-\w+|nullable|lax-or-strict|json-or-python)\[(.*)\]", name)
    if wrapped:
        name = wrapped.group(1).split(",")[-1].strip().removeprefix("constrained-")
    literal = re.fullmatch(r"literal\[(.*)\]", name)
    if literal:
        return literal.group(1).replace("'", '"')
    if name.startswith("list[") and name.endswith("]"):
        return ("lists of " if plural else "a list of ") + _member_name(name[5:-1], True)
    words = _NAMES.get(name)
    return (words[1] if plural else words[0]) if words else name


def install(app: FastAPI) -> None:
    @app.exception_handler(TuneforgeError)
    async def _tuneforge_error(_: Request, exc: TuneforgeError) -> JSONResponse:
        status = STATUS_BY_CODE.get(exc.code, 500)
        body = error_body(exc.code, exc.message, exc.param, exc.details, status)
        # A full queue (counted in the job's insert) says when to try again, as the early
        # check in `api.security` does.
        headers = {"Retry-After": QUEUE_RETRY_SECONDS} if status == 429 else None
        return JSONResponse(body, status_code=status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        unparsed = [e for e in exc.errors() if e["type"] == "json_invalid"]
        if unparsed:
            message = json_error_message(unparsed[0], exc.body)
            return JSONResponse(
                error_body("validation_error", message, None, [
                    {"param": None, "message": message, "type": "json_invalid"}
                ]),
                status_code=422,
            )
        errors = validation_errors(exc.errors())
        first = errors[0] if errors else {"param": None, "message": "invalid request"}
        message = "; ".join(f"{e['param'] or 'body'}: {e['message']}" for e in errors)
        return JSONResponse(
            error_body("validation_error", message, first["param"], errors), status_code=422
        )

    @app.exception_handler(HTTPException)
    async def _router_error(request: Request, exc: HTTPException) -> JSONResponse:
        # Raised by the router itself: no route for the path (404), or none for the method
        # (405, with the methods the path allows in `Allow`); or by FastAPI's body parsers.
        full = _disk_full(exc)
        if full is not None:  # a body parser that could not spool the upload
            return await _tuneforge_error(request, disk_full_error(full))
        route = f"{request.method} {request.url.path}"
        if exc.status_code == 404:
            message = f"No route {route}."
        elif exc.status_code == 405:
            # The router names the methods of the first route whose path matched; the path
            # may have others (GET and POST /v1/files are two routes).
            allowed = ", ".join(_allowed_methods(request))
            exc.headers = {**(exc.headers or {}), "Allow": allowed}
            message = f"{route}: the method is not allowed here (allowed: {allowed})."
        elif exc.__cause__ is not None and exc.status_code == 400:
            # FastAPI's body parsers (JSON, multipart) raise this from what went wrong.
            message = f"The request body could not be read: {_unreadable(exc.__cause__)}."
        else:
            message = str(exc.detail)
        default_code = "internal" if exc.status_code >= 500 else "invalid_request"
        code = CODE_BY_HTTP_STATUS.get(exc.status_code, default_code)
        body = error_body(code, message, status=exc.status_code)
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


def _unreadable(cause: BaseException) -> str:
    if isinstance(cause, RecursionError):
        return "it is nested too deeply"
    if isinstance(cause, UnicodeDecodeError):
        return "it is not UTF-8"
    if isinstance(cause, OSError):  # its text may name the server's own paths
        return cause.strerror or type(cause).__name__
    return str(cause) or type(cause).__name__


class LastResort:
    """ASGI middleware, inside the others: an exception that no handler took is logged and
    answered 500 in our shape (507 when it comes from a full disk). Starlette's own last
    resort answers in plain text and raises on to the server, which then closes the
    connection; here the client gets our answer and keeps its connection."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            if started:
                raise  # part of an answer is out: only closing the connection is left
            full = _disk_full(exc)
            if full is not None:
                error = disk_full_error(full)
                await send_error(send, 507, error.code, error.message)
                return
            log.exception("%s %s failed", scope["method"], scope["path"])
            await send_error(
                send,
                500,
                "internal",
                "The server failed to answer this request; the error is in its log.",
            )


def disk_full_error(exc: OSError) -> DiskFullError:
    return DiskFullError(
        f"The server's disk is full ({exc.strerror or 'no space left on device'}); retry once "
        "space has been freed."
    )


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route of the app answers at the request's path."""
    allowed = []
    for method in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"):
        scope = {**request.scope, "method": method}
        if any(route.matches(scope)[0] == Match.FULL for route in request.app.router.routes):
            allowed.append(method)
    return allowed

"""What the edge refuses before any route runs: text that no database stores.

PostgreSQL's text and JSON columns take no NUL character, and neither PostgreSQL nor SQLite
takes a lone UTF-16 surrogate (it has no UTF-8 form). Such a character in an id, a query
value, a header or a JSON body would reach a lookup, an insert or the audit log and fail
there; here it is a 400 in our error shape instead, the same on both databases.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, unquote_to_bytes

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tuneforge.api.errors import send_error

# In a JSON text: an escaped backslash (skipped, so that `\\u0000` stays six characters of
# text) or a \u escape, whose four hex digits are group 1.
_JSON_ESCAPE = re.compile(rb"\\\\|\\u([0-9a-fA-F]{4})")
BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def nul_param(scope: Scope) -> str | None:
    """Where a NUL is in the request's URL or headers: `path`, the query parameter's name, or
    the header's name; None when there is none."""
    if "\x00" in scope.get("path", ""):
        return "path"
    query: bytes = scope.get("query_string", b"")
    if b"%00" in query or b"\x00" in query:
        for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
            if b"\x00" in unquote_to_bytes(name) + unquote_to_bytes(value):
                return unquote_to_bytes(name).replace(b"\x00", b"").decode("utf-8", "replace")
        return "query"
    for name, value in scope.get("headers") or []:
        if b"\x00" in value:
            return str(name.decode("latin-1"))
    return None


def json_text_problem(body: bytes) -> str | None:
    """What in a JSON text decodes to a character no database stores (a NUL, a lone
    surrogate), or None. A linear scan of the escapes: no parsing, so no depth limit."""
    pending_high = -1  # the end of a high surrogate's escape, until its low half follows
    for match in _JSON_ESCAPE.finditer(body):
        if match.group(1) is None:
            continue
        unit = int(match.group(1), 16)
        if pending_high >= 0:
            if match.start() == pending_high and 0xDC00 <= unit <= 0xDFFF:
                pending_high = -1
                continue
            return "a lone surrogate (\\ud800 to \\udfff)"
        if unit == 0:
            return "a NUL character (\\u0000)"
        if 0xD800 <= unit <= 0xDBFF:
            pending_high = match.end()
        elif 0xDC00 <= unit <= 0xDFFF:
            return "a lone surrogate (\\ud800 to \\udfff)"
    return "a lone surrogate (\\ud800 to \\udfff)" if pending_high >= 0 else None


def is_json(scope: Scope) -> bool:
    """A body FastAPI would read as JSON: a JSON media type, or none at all."""
    for name, value in scope.get("headers") or []:
        if name == b"content-type":
            return b"json" in value.lower()
    return True


class JsonTextCheck:
    """ASGI middleware: a JSON body of up to `limit` bytes (the JSON body limit) is read
    whole, checked with `json_text_problem`, and handed on unchanged, or refused with 400. A
    longer body is no JSON body a route takes (the body limit refuses those): it streams on
    unread, so that this never holds more than `limit` bytes."""

    def __init__(self, app: ASGIApp, *, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in BODY_METHODS or not is_json(scope):
            await self.app(scope, receive, send)
            return
        read: list[Message] = []
        size = 0
        whole = False
        while size <= self.limit:
            message = await receive()
            read.append(message)
            if message["type"] != "http.request":
                break  # a disconnect (or the body limit's refusal)
            size += len(message.get("body", b""))
            if not message.get("more_body", False):
                whole = True
                break
        if whole:
            body = b"".join(m.get("body", b"") for m in read)
            problem = json_text_problem(body)
            if problem is not None:
                await send_error(
                    send,
                    400,
                    "invalid_request",
                    f"The JSON body holds {problem}, which tuneforge does not store; send the "
                    "text without it.",
                )
                return
            read = [{"type": "http.request", "body": body, "more_body": False}]

        async def replaying_receive() -> Message:
            return read.pop(0) if read else await receive()

        await self.app(scope, replaying_receive, send)

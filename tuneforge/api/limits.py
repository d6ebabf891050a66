"""Request body limits, enforced while the body streams in (413 before it is all read)."""

from __future__ import annotations

import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tuneforge.api.errors import error_body


class BodySizeLimit:
    """ASGI middleware: refuse bodies over the limit `upload_limits` gives an upload path (by
    exact path), `limit` elsewhere."""

    def __init__(self, app: ASGIApp, *, limit: int, upload_limits: dict[str, int]):
        self.app = app
        self.limit = limit
        self.upload_limits = upload_limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        limit = self.upload_limits.get(path.rstrip("/") or "/", self.limit)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _too_large(send, limit)
            return
        received = 0
        overflow = False
        replied = False

        async def counting_receive() -> Message:
            # Past the limit the app sees a disconnect, so no more of the body is read.
            nonlocal received, overflow
            if overflow:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    overflow = True
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal replied
            if not overflow:
                await send(message)
            elif message["type"] == "http.response.start" and not replied:
                replied = True
                await _too_large(send, limit)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not overflow:
                raise
        if overflow and not replied:
            await _too_large(send, limit)


async def _too_large(send: Any, limit: int) -> None:
    body = json.dumps(
        error_body(
            "file_too_large", f"The request body is larger than the limit of {limit} bytes.", "file"
        )
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})

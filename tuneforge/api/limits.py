"""Request body limits, enforced while the body streams in: 413 before a body over its size
is all read, and 408 for a body that stops arriving (a Content-Length that promised more
than the client sends would otherwise hold the request open until the client gives up)."""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tuneforge.api.errors import send_error

CLOSE = ((b"connection", b"close"),)


class BodySizeLimit:
    """ASGI middleware: refuse bodies over the limit `upload_limits` gives an upload path (by
    exact path), `limit` elsewhere, and bodies with no bytes for `idle_seconds`."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        limit: int,
        upload_limits: dict[str, int],
        idle_seconds: float = 30.0,
    ):
        self.app = app
        self.limit = limit
        self.upload_limits = upload_limits
        self.idle_seconds = idle_seconds

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
        body_done = False
        refusal: int | None = None  # 413 or 408, once the body is refused
        replied = False

        async def counting_receive() -> Message:
            # Once refused the app sees a disconnect, so no more of the body is read. The
            # idle wait is only for the body: after it, receive() waits for a disconnect,
            # which a streamed answer listens for as long as it runs.
            nonlocal received, body_done, refusal
            if refusal is not None:
                return {"type": "http.disconnect"}
            if body_done:
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.idle_seconds)
            except TimeoutError:
                refusal = 408
                return {"type": "http.disconnect"}
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                body_done = not message.get("more_body", False)
                if received > limit:
                    refusal = 413
                    return {"type": "http.disconnect"}
            return message

        async def refuse() -> None:
            nonlocal replied
            replied = True
            if refusal == 413:
                await _too_large(send, limit)
            else:
                await send_error(
                    send,
                    408,
                    "request_timeout",
                    f"No bytes of the request body arrived for {self.idle_seconds:g} s; send "
                    "the whole body its Content-Length announces.",
                    headers=CLOSE,
                )

        async def guarded_send(message: Message) -> None:
            if refusal is None:
                await send(message)
            elif message["type"] == "http.response.start" and not replied:
                await refuse()

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if refusal is None:
                raise
        if refusal is not None and not replied:
            await refuse()


async def _too_large(send: Send, limit: int) -> None:
    await send_error(
        send,
        413,
        "file_too_large",
        f"The request body is larger than the limit of {limit} bytes.",
        "file",
        headers=CLOSE,
    )

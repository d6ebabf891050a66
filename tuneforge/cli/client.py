"""The one HTTP client of the commands that talk to a server: its base URL, the API key,
JSON answers, and errors printed in one way (exit code 1).

httpx is imported when a client is made, so that `tuneforge --help` does not load it.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import typer

from tuneforge.cli.console import fail, print_api_error

if TYPE_CHECKING:
    import httpx


class ApiClient:
    """The server's REST API; any error is printed and ends the command with exit code 1."""

    def __init__(self, url: str):
        import httpx

        self.url = url.rstrip("/")
        # Like the `openai` client's OPENAI_API_KEY: the one key the commands send.
        key = os.environ.get("TUNEFORGE_API_KEY")
        self.http = httpx.Client(
            base_url=self.url,
            timeout=httpx.Timeout(60, connect=10),
            headers={"Authorization": f"Bearer {key}"} if key else None,
        )

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """The decoded JSON answer (None for an empty one)."""
        import httpx

        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            fail(
                f"Cannot reach tuneforge at {self.url} ({exc}). Is `tuneforge serve` running? "
                "Set --url or TUNEFORGE_URL to its address."
            )
        if response.is_error:
            print_api_error(error_of(response))
            raise typer.Exit(1)
        return response.json() if response.content else None

    def get(self, path: str, **params: Any) -> Any:
        """GET with these query parameters; those that are None are left out."""
        return self.request("GET", path, params={k: v for k, v in params.items() if v is not None})

    def post(self, path: str, **kwargs: Any) -> Any:
        return self.request("POST", path, **kwargs)

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)

    @contextlib.contextmanager
    def stream(self, method: str, path: str, **kwargs: Any) -> Iterator[httpx.Response]:
        """A response to read as it arrives; an error answer is printed and ends the command
        with exit code 1."""
        with self.http.stream(method, path, **kwargs) as response:
            if response.is_error:
                response.read()
                print_api_error(error_of(response))
                raise typer.Exit(1)
            yield response

    def events(self, path: str, **params: Any) -> Iterator[tuple[str | None, str, str]]:
        """The Server-Sent Events of `path`, as (id, event, data), for as long as the caller
        reads them. Uses a connection of its own, so another thread may read them while
        this client makes requests; when the connection drops (the server restarts, the
        network fails), it reconnects and asks for the events after the last one seen
        (Last-Event-ID)."""
        import httpx

        client = httpx.Client(base_url=self.url, headers=dict(self.http.headers))
        last_id: str | None = None
        while True:
            headers = {"Last-Event-ID": last_id} if last_id else {}
            try:
                with client.stream(
                    "GET",
                    path,
                    params=params,
                    headers=headers,
                    timeout=httpx.Timeout(10.0, read=120.0),
                ) as response:
                    for event_id, name, data in sse_messages(response.iter_lines()):
                        last_id = event_id or last_id
                        yield event_id, name, data
            except httpx.HTTPError:
                time.sleep(1.0)


def error_of(response: httpx.Response) -> dict[str, Any]:
    """The error of an answer in the API's shape; a body in another shape becomes its
    message, with the HTTP status as its code."""
    try:
        error = response.json()["error"]
    except (ValueError, KeyError, TypeError):
        return {
            "code": f"http_{response.status_code}",
            "param": None,
            "message": response.text.strip() or response.reason_phrase,
        }
    return (
        error if isinstance(error, dict) else {"code": None, "param": None, "message": str(error)}
    )


def sse_messages(lines: Iterable[str]) -> Iterator[tuple[str | None, str, str]]:
    """(id, event, data) of each Server-Sent Event in a stream of lines."""
    event_id: str | None = None
    name = "message"
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                yield event_id, name, "\n".join(data)
            event_id, name, data = None, "message", []
        elif line.startswith("id:"):
            event_id = line[3:].strip()
        elif line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())

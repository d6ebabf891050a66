"""The API's guard: Host allowlist, API keys and scopes, rate limits, the per-key queue
bound, and the audit log of every write. One ASGI middleware, outermost, so that a refused
request is answered before its body is read.

Open by default on loopback: with no API keys, requests to a loopback-bound server act as
`local` with every right (as a single-user tool on one's own machine). Once a key exists,
every API request needs `Authorization: Bearer <key>`. A server bound beyond loopback never
runs open: `tuneforge serve` refuses to start without keys, and should every key be revoked
while it runs, its API answers 401.
"""

from __future__ import annotations

import ipaddress
import json
import re
import time
import uuid
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tuneforge.api.edge import nul_param
from tuneforge.api.errors import QUEUE_RETRY_SECONDS, send_error
from tuneforge.config import Settings
from tuneforge.db.jobs import QUEUE_BOUND, QueueBound
from tuneforge.db.store import Store
from tuneforge.security.keys import LOCAL, Identity, KeyRing
from tuneforge.security.keys import Scope as KeyScope
from tuneforge.security.rate_limit import RateLimiter

# Paths that need a key once keys exist. The docs, /health and the dashboard's page are
# public; the data they show comes from these. /metrics takes a read key, as Prometheus'
# `authorization` sends it.
API_PREFIXES = ("/v1/", "/training/", "/evaluation/", "/metrics")
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# POSTs that change nothing: a read-only key may use them, and they are not audited.
INFERENCE_PATHS = frozenset(
    {
        "/v1/embeddings",
        "/v1/rerank",
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/classifications",
    }
)
# POSTs that queue work for a worker: bounded per key.
JOB_CREATION_PATHS = frozenset(
    {
        "/v1/fine_tuning/jobs",
        "/v1/exports",
        "/v1/evaluations",
        "/training/train",
        "/evaluation/evaluate",
        "/v1/synthetic-data",
        "/v1/feedback/retrain",
        "/v1/model_imports",
    }
)
# A study queues its trial jobs itself, later: its creation is rate-limited, not bounded.
# Grading runs judges and python code: limited like inference.
RATE_LIMITED_PATHS = (
    JOB_CREATION_PATHS | INFERENCE_PATHS | {"/v1/studies", "/v1/fine_tuning/alpha/graders/run"}
)
ADMIN_ONLY_PREFIXES = ("/v1/audit",)
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
# The response bytes kept to find the id a write created.
AUDIT_BODY_BYTES = 64 * 1024


def is_write(method: str, path: str) -> bool:
    """A request that changes something: it needs an admin key, and it is audited."""
    return method not in READ_METHODS and path not in INFERENCE_PATHS


def needs_admin(method: str, path: str) -> bool:
    return is_write(method, path) or path.startswith(ADMIN_ONLY_PREFIXES)


def is_rate_limited(method: str, path: str) -> bool:
    return method == "POST" and path in RATE_LIMITED_PATHS


def guard_statuses(method: str, path: str) -> list[int]:
    """The error statuses the guard may answer a request with before any route sees it, for
    the OpenAPI document. `path` may be a route's template: the prefixes and paths above hold
    no parameters."""
    statuses = [400]  # a Host this server does not answer to
    if path.startswith(API_PREFIXES):
        statuses.append(401)
        if needs_admin(method, path):
            statuses.append(403)
        if is_rate_limited(method, path):
            statuses.append(429)
    return statuses


def is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def allowed_hosts(settings: Settings) -> frozenset[str]:
    """Host header names this server answers to (lower case, no port)."""
    hosts = set(LOOPBACK_NAMES)
    if settings.host not in ("0.0.0.0", "::", ""):
        hosts.add(settings.host.strip("[]").lower())
    hosts.update(h.strip().strip("[]").lower() for h in settings.allowed_hosts)
    return frozenset(hosts)


def host_name(header: str) -> str:
    """`example.org:8000` -> `example.org`; `[::1]:8000` -> `::1`."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    name, sep, port = header.rpartition(":")
    return name if sep and port.isdigit() else header


class ApiGuard:
    """ASGI middleware; see the module docstring."""

    def __init__(self, app: ASGIApp, *, settings: Settings):
        self.app = app
        self.settings = settings
        self.hosts = allowed_hosts(settings)
        self.any_host = "*" in self.hosts
        self.exposed = not is_loopback(settings.host)
        self.keyring = KeyRing()
        self.limiter = RateLimiter(settings.rate_limit_per_minute, settings.rate_limit_burst)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        host = host_name(headers.get(b"host", b"").decode("latin-1"))
        if not self.any_host and host not in self.hosts:
            await _reply(
                send,
                400,
                "host_not_allowed",
                f"Host {host!r} is not one this server answers to; add it to "
                "TUNEFORGE_ALLOWED_HOSTS if it is yours.",
            )
            return
        # Before any lookup and before the audit log: PostgreSQL stores no NUL.
        param = nul_param(scope)
        if param is not None:
            await _reply(
                send,
                400,
                "invalid_request",
                f"A NUL character is in {param!r}; ids, query values and headers never hold one.",
                param=param,
            )
            return
        path: str = scope.get("path", "")
        if not path.startswith(API_PREFIXES):
            await self.app(scope, receive, send)
            return
        store: Store = scope["app"].state.store
        if self.keyring.refresh_due():
            await run_in_threadpool(self.keyring.refresh, store)
        identity = await self._identify(headers, send)
        if identity is None:
            return
        method: str = scope["method"]
        if identity.scope != KeyScope.ADMIN and needs_admin(method, path):
            await _reply(
                send,
                403,
                "insufficient_scope",
                f"This API key is {identity.scope.value}-only; {method} {path} needs an admin key.",
            )
            return
        scope.setdefault("state", {})["identity"] = identity
        if is_rate_limited(method, path):
            client = identity.actor if self.keyring.configured else _client_address(scope)
            wait = self.limiter.take(client)
            if wait > 0:
                retry = max(1, int(wait + 0.999))
                await _reply(
                    send,
                    429,
                    "rate_limited",
                    f"Too many requests to {path}; retry in {retry} s "
                    f"(limit: {self.settings.rate_limit_per_minute:g}/min, burst "
                    f"{self.settings.rate_limit_burst}).",
                    headers=((b"retry-after", str(retry).encode()),),
                )
                return
            if path in JOB_CREATION_PATHS:
                waiting = await run_in_threadpool(store.count_waiting_jobs_of, identity.actor)
                if waiting >= self.settings.max_queued_jobs_per_key:
                    await _reply(
                        send,
                        429,
                        "queue_full",
                        f"{waiting} jobs of yours are waiting to run (at most "
                        f"{self.settings.max_queued_jobs_per_key}); wait for some to start, "
                        "or cancel some.",
                        headers=((b"retry-after", QUEUE_RETRY_SECONDS.encode()),),
                    )
                    return
                # The exact bound: counted again in the job's insert (this request's task only).
                QUEUE_BOUND.set(QueueBound(identity.actor, self.settings.max_queued_jobs_per_key))
        if not is_write(method, path):
            await self.app(scope, receive, send)
            return
        await self._audited(scope, receive, send, store, identity)

    async def _identify(self, headers: dict[bytes, bytes], send: Send) -> Identity | None:
        """The request's identity, or None once a 401 has been sent."""
        if not self.keyring.configured:
            if not self.exposed:
                return LOCAL
            await _reply(
                send,
                401,
                "api_keys_required",
                "This server listens beyond loopback and has no API keys; create one with "
                "`tuneforge keys create`.",
            )
            return None
        scheme, _, secret = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            await _reply(
                send,
                401,
                "missing_api_key",
                "This API needs a key: send `Authorization: Bearer <key>`.",
            )
            return None
        identity = self.keyring.identify(secret.strip())
        if identity is None:
            await _reply(send, 401, "invalid_api_key", "The API key is not valid or was revoked.")
        return identity

    async def _audited(
        self, scope: Scope, receive: Receive, send: Send, store: Store, identity: Identity
    ) -> None:
        status = 500
        body = bytearray()
        recorded = False

        async def record() -> None:
            # Written before the last byte of the answer leaves, so a client that reads the
            # audit log right after its write finds the write there.
            nonlocal recorded
            if recorded:
                return
            recorded = True
            entry = {
                "created_at": time.time(),
                "actor": identity.actor,
                "method": scope["method"],
                "path": scope["path"][:2000],
                "status": status,
                "resource_id": _resource_id(scope["path"], bytes(body)),
                "client": _client_address(scope)[:64],
            }
            await run_in_threadpool(store.add_audit_entry, entry)

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                if len(body) < AUDIT_BODY_BYTES:
                    body.extend(message.get("body", b"")[: AUDIT_BODY_BYTES - len(body)])
                if not message.get("more_body", False):
                    await record()
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            await record()


def _client_address(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


_ID_IN_PATH = re.compile(r"^[a-z]+-[0-9a-f]{16,32}$")


def _resource_id(path: str, body: bytes) -> str | None:
    """The id of what a write created or changed: the response's `id` (for the seed-000
    routes, their task or evaluation id as the job id), else an id-shaped part of the path."""
    try:
        data: Any = json.loads(body) if body else None
    except ValueError:
        data = None
    if isinstance(data, dict):
        if isinstance(data.get("job"), dict):  # a write that answers with the job it queued
            data = data["job"]
        if isinstance(data.get("id"), str):
            return str(data["id"])[:255]
        for key, prefix in (("task_id", "ftjob"), ("evaluation_id", "evaljob")):
            value = data.get(key)
            if isinstance(value, str):
                try:
                    return f"{prefix}-{uuid.UUID(value).hex}"
                except ValueError:
                    return value[:255]
    for part in reversed(path.split("/")):
        if _ID_IN_PATH.match(part):
            return part
    return None


async def _reply(
    send: Send,
    status: int,
    code: str,
    message: str,
    headers: tuple[tuple[bytes, bytes], ...] = (),
    param: str | None = None,
) -> None:
    extra = ((b"www-authenticate", b"Bearer"),) if status == 401 else ()
    await send_error(send, status, code, message, param, headers=(*extra, *headers))

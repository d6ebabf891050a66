"""API keys: created and revoked from the CLI, kept only as a SHA-256 of the secret.

A secret is `tf-` and 43 characters of `secrets.token_urlsafe` (256 random bits): far too
many to guess, so a plain SHA-256 (no salt, no slow hash) is enough to keep a leaked database
from giving keys away, and it lets a request's key be found with one lookup.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from enum import StrEnum

from tuneforge.db.store import Row, Store, new_id
from tuneforge.errors import InvalidRequestError

SECRET_PREFIX = "tf-"
# How long the API trusts its copy of the key table: a new or revoked key takes effect
# within this many seconds, without a database read per request.
KEYRING_TTL_SECONDS = 1.0


class Scope(StrEnum):
    # Reads, and the inference endpoints (they change nothing).
    READ = "read"
    # Everything: writes, and the audit log.
    ADMIN = "admin"


@dataclass(frozen=True)
class Identity:
    """Who a request comes from: a key's id and scope, or `local` on the open loopback API."""

    actor: str
    scope: Scope


LOCAL = Identity("local", Scope.ADMIN)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_api_key(store: Store, name: str, scope: str) -> tuple[Row, str]:
    """Record a new key; returns its row and the secret, which is shown once and not kept."""
    if scope not in {s.value for s in Scope}:
        raise InvalidRequestError(
            f"scope must be one of {', '.join(s.value for s in Scope)}; got {scope!r}.",
            param="scope",
        )
    name = name.strip()
    if not name or len(name) > 100:
        raise InvalidRequestError("name must be 1 to 100 characters.", param="name")
    secret = SECRET_PREFIX + secrets.token_urlsafe(32)
    row = {
        "id": new_id("key")[:20],
        "name": name,
        "scope": scope,
        "prefix": secret[:9],
        "secret_hash": hash_secret(secret),
        "created_at": time.time(),
        "revoked_at": None,
    }
    store.insert_api_key(row)
    return {k: v for k, v in row.items() if k != "secret_hash"}, secret


class KeyRing:
    """The active keys by hash, read from the database at most once per TTL."""

    def __init__(self, ttl: float = KEYRING_TTL_SECONDS):
        self.ttl = ttl
        self._keys: dict[str, Row] = {}
        self._read_at = float("-inf")

    def refresh_due(self) -> bool:
        return time.monotonic() - self._read_at >= self.ttl

    def refresh(self, store: Store) -> None:
        self._keys = store.active_api_keys()
        self._read_at = time.monotonic()

    @property
    def configured(self) -> bool:
        return bool(self._keys)

    def identify(self, secret: str) -> Identity | None:
        row = self._keys.get(hash_secret(secret))
        return Identity(row["id"], Scope(row["scope"])) if row else None

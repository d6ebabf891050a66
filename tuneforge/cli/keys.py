"""`tuneforge keys`: API keys, on this machine's database (no server needed)."""

from __future__ import annotations

from typing import Annotated, Literal

import typer
from rich.markup import escape

from tuneforge.cli.console import console, err_console, fail, table, when
from tuneforge.cli.service import local_store

app = typer.Typer(
    help="API keys (on this machine's database): create, list, revoke.", no_args_is_help=True
)

# The values of `tuneforge.security.keys.Scope`, spelled out: importing it would load the
# database layer (SQLAlchemy) into every `tuneforge --help`. tests/test_cli.py checks that
# the two agree.
KeyScope = Literal["read", "admin"]


@app.command("create")
def create_key(
    name: Annotated[str, typer.Option(help="What the key is for (shown in lists and logs).")],
    scope: Annotated[
        KeyScope,
        typer.Option(help="read: reads and inference; admin: everything, audit log included."),
    ] = "read",
) -> None:
    """Create an API key and print its secret, once: only a hash of it is kept."""
    from tuneforge.config import get_settings
    from tuneforge.errors import TuneforgeError
    from tuneforge.security.keys import create_api_key

    store = local_store(get_settings())
    try:
        row, secret = create_api_key(store, name, scope)
    except TuneforgeError as exc:
        fail(exc.message)
    finally:
        store.dispose()
    err_console.print(
        f"Created {row['scope']} key {row['id']} ({escape(row['name'])}). Its secret is shown "
        "only now; send it as `Authorization: Bearer <secret>`:",
        soft_wrap=True,
    )
    print(secret)


@app.command("list")
def list_keys() -> None:
    """Every key with its scope and state; secrets are never shown (only their first
    characters)."""
    from tuneforge.config import get_settings

    store = local_store(get_settings())
    try:
        rows = store.list_api_keys()
    finally:
        store.dispose()
    keys = table("id", "name", "scope", "prefix", "created", "revoked")
    for row in rows:
        keys.add_row(
            row["id"], escape(row["name"]), row["scope"], row["prefix"] + "…",
            when(row["created_at"]), when(row["revoked_at"]),
        )
    console.print(keys)


@app.command("revoke")
def revoke_key(key_id: str) -> None:
    """Revoke a key; requests with it are refused within a second."""
    from tuneforge.config import get_settings

    store = local_store(get_settings())
    try:
        done = store.revoke_api_key(key_id)
    finally:
        store.dispose()
    if not done:
        fail(f"No active key with id {key_id!r} (see `tuneforge keys list`).")
    console.print(f"Revoked {key_id}.")

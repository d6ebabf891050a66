"""`tuneforge export`: a model exported on the server, its files downloaded and checked."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer

from tuneforge.cli.client import ApiClient
from tuneforge.cli.console import console, fail
from tuneforge.cli.options import DEFAULT_URL, Url
from tuneforge.jobs.status import TERMINAL, JobStatus


def export_model(
    model: Annotated[str, typer.Argument(help="The model: ft:..., name@alias, or a base model.")],
    format: Annotated[
        str, typer.Option("--format", help="sentence-transformers, merged or gguf.")
    ] = "gguf",
    quantization: Annotated[
        str | None, typer.Option(help="gguf: f16, bf16, f32, q8_0, q4_k_m (default), …")
    ] = None,
    dtype: Annotated[str, typer.Option(help="merged: auto, float16, bfloat16, float32.")] = "auto",
    system: Annotated[str | None, typer.Option(help="gguf: the Modelfile's SYSTEM.")] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Download the files into this folder.")
    ] = None,
    wait: Annotated[bool, typer.Option(help="Wait for the export to finish.")] = True,
    url: Url = DEFAULT_URL,
) -> None:
    """Export a model (POST /v1/exports): wait for it and download its files, each checked
    against its SHA-256."""
    api = ApiClient(url)
    body: dict[str, Any] = {"model": model, "format": format, "dtype": dtype}
    if quantization is not None:
        body["quantization"] = quantization
    if system is not None:
        body["system"] = system
    export = api.post("/v1/exports", json=body)
    console.print(f"Export {export['id']} {export['status']}.")
    if not wait:
        return
    while export["status"] not in TERMINAL:
        time.sleep(1)
        export = api.get(f"/v1/exports/{export['id']}")
    if export["status"] != JobStatus.SUCCEEDED:
        error = export.get("error") or {}
        fail(f"Export {export['status']}: {error.get('message', '')}")
    verification = export.get("verification")
    if verification:
        console.print(
            f"Verified in llama.cpp on {verification['prompts']} prompt(s): greedy agreement "
            f"{verification['token_agreement']:.1%}"
            + (" (identical)." if verification["identical"] else ".")
        )
    if output is None:
        for entry in export["files"]:
            console.print(f"{entry['name']}  {entry['bytes']} bytes  sha256 {entry['sha256']}")
        return
    for entry in export["files"]:
        _download(api, export["id"], entry, output)
    console.print(f"{len(export['files'])} file(s) in {output}.")


def _download(api: ApiClient, export_id: str, entry: dict[str, Any], output: Path) -> None:
    """One file of an export into `output`, checked against its SHA-256 while it streams."""
    import hashlib

    target = output / entry["name"]
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    digest = hashlib.sha256()
    with (
        api.stream(
            "GET", f"/v1/exports/{export_id}/content", params={"file": entry["name"]}
        ) as response,
        partial.open("wb") as f,
    ):
        for block in response.iter_bytes(1 << 20):
            digest.update(block)
            f.write(block)
    if digest.hexdigest() != entry["sha256"]:
        partial.unlink()
        fail(f"{entry['name']} arrived damaged (SHA-256 mismatch); run the download again.")
    partial.replace(target)

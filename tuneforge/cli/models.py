"""`tuneforge models`: base and fine-tuned models, imports of base models, and the registry's
versions and aliases."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from tuneforge.cli.client import ApiClient
from tuneforge.cli.console import console, fail, table, when
from tuneforge.cli.options import DEFAULT_URL, Url
from tuneforge.jobs.status import TERMINAL, JobStatus

app = typer.Typer(
    help="Models: base, fine-tuned, and the registry's versions and aliases.",
    no_args_is_help=True,
)


@app.command("list")
def list_models(url: Url = DEFAULT_URL) -> None:
    """List base models (imported or in use) and the fine-tuned models made here."""
    models = ApiClient(url).get("/v1/models")["data"]
    shown = table("id", "kind", "base_model / source", "job_id", "created")
    for m in models:
        shown.add_row(
            escape(m["id"]),
            m["kind"],
            escape(m["base_model"] or _source(m["provenance"])),
            m["job_id"] or "",
            when(m["created"]),
        )
    console.print(shown)
    registered = ApiClient(url).get("/v1/registered_models")["data"]
    if registered:
        shown = table("name", "kind", "versions", "aliases", "latest", title="Registry")
        for r in registered:
            latest = r["latest_version"] or {}
            shown.add_row(
                escape(r["name"]),
                r["kind"],
                str(r["versions"]),
                ", ".join(f"{a}->v{v}" for a, v in sorted(r["aliases"].items())),
                _primary(latest),
            )
        console.print(shown)


def _source(provenance: dict[str, Any] | None) -> str:
    """An imported model's source in a few words: `file.gguf (Q4_1 -> bfloat16)`."""
    if not provenance:
        return ""
    was = provenance["quantization"] or provenance["format"]
    return f"{provenance['file_name']} ({was} -> {provenance['dtype'] or 'as stored'})"


@app.command("import")
def import_model(
    source: Annotated[
        Path,
        typer.Argument(
            help="A GGUF file here (uploaded to the server), or a Hugging Face model folder "
            "on the server, inside its import roots (TUNEFORGE_IMPORT_ROOTS, default "
            "HOME/imports)."
        ),
    ],
    name: Annotated[
        str | None,
        typer.Option(help="The model's name (default: the file's name without .gguf)."),
    ] = None,
    wait: Annotated[bool, typer.Option(help="Wait for the import to finish.")] = True,
    url: Url = DEFAULT_URL,
) -> None:
    """Import a base model: a GGUF file (de-quantized to bf16, or kept in f32/f16/bf16) or a
    Hugging Face folder, written as safetensors with its tokenizer and chat template. Prints
    the model's name once the import has succeeded; exits 1 if it failed."""
    api = ApiClient(url)
    body: dict[str, Any] = {"name": name} if name else {}
    if source.is_file():
        with source.open("rb") as f:
            uploaded = api.request(
                "POST",
                "/v1/model_imports/files",
                files={"file": (source.name, f)},
                timeout=None,
            )
        console.print(f"Uploaded {escape(source.name)} as {uploaded['id']}.", soft_wrap=True)
        body["file"] = uploaded["id"]
    else:
        # A folder (or a file only the server has) is named by its path on the server.
        body["path"] = str(source.expanduser().absolute()) if source.exists() else str(source)
    job = api.post("/v1/model_imports", json=body)
    console.print(
        f"Import {job['id']} of {escape(job['source_name'])} as {escape(job['name'])} "
        f"{job['status']}.",
        soft_wrap=True,
    )
    if not wait:
        return
    job = _follow_import(api, job)
    if job["status"] != JobStatus.SUCCEEDED:
        error = job.get("error") or {}
        fail(f"Import {job['status']}: {error.get('message', '')}")
    console.print(job["name"], soft_wrap=True)


def _follow_import(api: ApiClient, job: dict[str, Any]) -> dict[str, Any]:
    """Print the import's events as they come, until it ends; the ended import."""
    from tuneforge.jobs.watch import format_event

    seen: set[str] = set()
    while True:
        done = job["status"] in TERMINAL
        events = api.get(f"/v1/fine_tuning/jobs/{job['id']}/events", limit=100)["data"]
        for event in reversed(events):
            if event["id"] not in seen:
                seen.add(event["id"])
                console.print(format_event(event), soft_wrap=True)
        if done:
            return job
        time.sleep(1)
        job = api.get(f"/v1/model_imports/{job['id']}")


def _primary(version: dict[str, Any]) -> str:
    """`metric value` of a version's primary metric on its validation split."""
    evaluation = version.get("evaluation") or {}
    key = evaluation.get("primary_metric")
    value = (evaluation.get("fine_tuned_model") or {}).get(key)
    return f"{key} {value:.4f}" if key and isinstance(value, int | float) else ""


@app.command("show")
def show_model(
    name: Annotated[str, typer.Argument(help="Registered model name, or NAME@vN / NAME@ALIAS.")],
    url: Url = DEFAULT_URL,
) -> None:
    """A registered model and its versions, or one version in full."""
    api = ApiClient(url)
    base, _, which = name.partition("@")
    if not which:
        model = api.get(f"/v1/registered_models/{base}")
        console.print(
            f"[bold]{escape(base)}[/] ({model['kind']}) {escape(model['description'] or '')}",
            soft_wrap=True,
        )
        versions = table("version", "model", "aliases", "metric", "job", "created")
        for v in api.get(f"/v1/registered_models/{base}/versions")["data"]:
            versions.add_row(
                str(v["version"]),
                escape(v["model"]),
                ", ".join(v["aliases"]),
                _primary(v),
                v["job_id"] or "",
                when(v["created_at"]),
            )
        console.print(versions)
        return
    if which[:1] == "v" and which[1:].isdigit():
        number = int(which[1:])
    else:
        number = api.get(f"/v1/registered_models/{base}")["aliases"].get(which)
        if number is None:
            fail(f"{base} has no alias {which!r}.")
    version = api.get(f"/v1/registered_models/{base}/versions/{number}")
    console.print_json(data=version)


@app.command("compare")
def compare_models(
    name: str,
    versions: Annotated[list[int], typer.Argument(help="Two or more version numbers.")],
    url: Url = DEFAULT_URL,
) -> None:
    """Metrics of versions side by side, and the spec fields in which they differ."""
    params = [("versions", v) for v in versions]
    comparison = ApiClient(url).request(
        "GET", f"/v1/registered_models/{name}/compare", params=params
    )
    metrics = table("metric", *(f"v{v}" for v in versions))
    for metric, values in comparison["metrics"].items():
        metrics.add_row(metric, *(f"{x:.4f}" if x is not None else "-" for x in values))
    console.print(metrics)
    if comparison["spec_differences"]:
        diff = table("spec field", *(f"v{v}" for v in versions), title="Differences")
        for field, values in comparison["spec_differences"].items():
            diff.add_row(field, *(escape(str(x)) for x in values))
        console.print(diff)


@app.command("alias")
def alias_model(
    name: str,
    alias: str,
    version: Annotated[int | None, typer.Argument(help="Version to point at.")] = None,
    delete: Annotated[bool, typer.Option("--delete", help="Remove the alias.")] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Even to a version worse than its base model.")
    ] = False,
    url: Url = DEFAULT_URL,
) -> None:
    """Point an alias (production, staging, …) at a version, or remove it."""
    api = ApiClient(url)
    if delete:
        api.request("DELETE", f"/v1/registered_models/{name}/aliases/{alias}")
        console.print(f"Alias {alias} of {name} removed.")
        return
    if version is None:
        fail("Give the version the alias should point at (or --delete).")
    body = {"version": version, "force": force}
    api.request("PUT", f"/v1/registered_models/{name}/aliases/{alias}", json=body)
    console.print(f"{name}@{alias} -> version {version}.")


@app.command("delete")
def delete_model_version(name: str, version: int, url: Url = DEFAULT_URL) -> None:
    """Delete a version and its files (refused while an alias points at it)."""
    ApiClient(url).delete(f"/v1/registered_models/{name}/versions/{version}")
    console.print(f"Version {version} of {name} deleted.")

"""The `tuneforge` command line (typer + rich).

`serve` and `worker` run the service; `files`, `datasets`, `jobs` and `models` talk to it over
HTTP (`--url`, or `TUNEFORGE_URL`); `train` runs a job spec locally, without a server.
Torch, httpx and the service's modules are imported inside the commands that need them, so
that `tuneforge --help` starts at once.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import signal
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tuneforge.training.spec import LOSSES

if TYPE_CHECKING:
    import httpx

    from tuneforge.config import Settings
    from tuneforge.db.store import Store
    from tuneforge.jobs.watch import Poll
    from tuneforge.jobs.worker import Worker

app = typer.Typer(help="tuneforge: self-hosted fine-tuning.", no_args_is_help=True)
files_app = typer.Typer(help="Upload, list and delete training files.", no_args_is_help=True)
datasets_app = typer.Typer(help="Validation reports and statistics of files.", no_args_is_help=True)
jobs_app = typer.Typer(help="Create, follow and cancel fine-tuning jobs.", no_args_is_help=True)
models_app = typer.Typer(
    help="Models: base, fine-tuned, and the registry's versions and aliases.",
    no_args_is_help=True,
)
app.add_typer(files_app, name="files")
app.add_typer(datasets_app, name="datasets")
app.add_typer(jobs_app, name="jobs")
app.add_typer(models_app, name="models")
keys_app = typer.Typer(
    help="API keys (on this machine's database): create, list, revoke.", no_args_is_help=True
)
app.add_typer(keys_app, name="keys")
studies_app = typer.Typer(
    help="Hyperparameter studies: create, list, show, cancel, promote.", no_args_is_help=True
)
app.add_typer(studies_app, name="studies")

# Without a terminal (piped, captured), rich would wrap at 80 columns: keep ids and names on
# one line instead, for grep and copying, unless COLUMNS asks for a width.
_WIDTH = None if sys.stdout.isatty() or "COLUMNS" in os.environ else 250
console = Console(width=_WIDTH)
err_console = Console(stderr=True, width=_WIDTH)

DEFAULT_URL = "http://127.0.0.1:8000"
# The loss names come from the job spec, so that typer offers and checks the same choices.
Loss = Literal[LOSSES]  # type: ignore[valid-type]
Url = Annotated[
    str, typer.Option("--url", envvar="TUNEFORGE_URL", help="Base URL of the tuneforge server.")
]


# -- talking to the server ---------------------------------------------------------------------


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
        import httpx

        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            fail(
                f"Cannot reach tuneforge at {self.url} ({exc}). Is `tuneforge serve` running? "
                "Set --url or TUNEFORGE_URL to its address."
            )
        if response.is_error:
            print_api_error(_error_of(response))
            raise typer.Exit(1)
        return response.json() if response.content else None

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params={k: v for k, v in params.items() if v is not None})

    def post(self, path: str, **kwargs: Any) -> Any:
        return self.request("POST", path, **kwargs)

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)


def _error_of(response: httpx.Response) -> dict[str, Any]:
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


def fail(message: str) -> NoReturn:
    """Print an error and end the command with exit code 1."""
    err_console.print(f"[bold red]Error:[/] {escape(message)}", soft_wrap=True)
    raise typer.Exit(1)


def print_api_error(error: dict[str, Any]) -> None:
    """An error in the API's shape (`message`, `param`, `code`, `details`), with every field
    error or dataset problem that its details carry."""
    details = error.get("details")
    code = f" [{error['code']}]" if error.get("code") else ""
    if isinstance(details, list) and details:
        err_console.print(
            f"[bold red]Error{escape(code)}:[/] {len(details)} invalid field(s):", soft_wrap=True
        )
        print_field_errors(details)
        return
    err_console.print(
        f"[bold red]Error{escape(code)}:[/] {escape(str(error.get('message')))}", soft_wrap=True
    )
    if error.get("param"):
        err_console.print(f"  param: {escape(error['param'])}", soft_wrap=True)
    if isinstance(details, dict) and details.get("problems"):
        print_problems(details["problems"], sum(details.get("problems_by_code", {}).values()))


def print_field_errors(errors: list[dict[str, Any]]) -> None:
    """Field errors (`param`, `message`), one a line, the field by its dotted path."""
    for item in errors:
        err_console.print(
            f"  {escape(str(item.get('param') or 'body'))}: {escape(str(item.get('message')))}",
            soft_wrap=True,
        )


def print_problems(problems: list[dict[str, Any]], total: int | None = None) -> None:
    """Dataset problems, one a line: where (line, column), code and message."""
    for problem in problems:
        where = f"line {problem['line']}" if problem.get("line") is not None else "file"
        if problem.get("column"):
            where += f", column {problem['column']!r}"
        err_console.print(
            f"  {escape(where)}: {escape(problem['code'])}: {escape(problem['message'])}",
            soft_wrap=True,
        )
    if total and total > len(problems):
        err_console.print(f"  ... and {total - len(problems)} more problem(s).")


def _when(timestamp: float | None) -> str:
    return datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M") if timestamp else ""


def _table(*columns: str, title: str | None = None) -> Table:
    table = Table(title=title, title_justify="left")
    for name in columns:
        # Ids stay whole on one line: they are copied into the next command.
        is_id = name == "id" or name.endswith("_id")
        table.add_column(name, no_wrap=is_id, overflow="fold")
    return table


# -- service -----------------------------------------------------------------------------------


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to bind (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8000).")] = None,
    worker: Annotated[bool, typer.Option(help="Run a worker in the same process.")] = True,
) -> None:
    """Start the API (and one worker) on the configured database and data folder."""
    import uvicorn

    from tuneforge.api.app import create_app
    from tuneforge.config import get_settings

    settings = get_settings()
    settings = settings.model_copy(
        update={k: v for k, v in {"host": host, "port": port}.items() if v}
    )
    _refuse_open_exposure(settings)
    uvicorn.run(
        create_app(settings, run_worker=worker),
        host=settings.host,
        port=settings.port,
        log_level="info",
    )


def _refuse_open_exposure(settings: Settings) -> None:
    """Beyond loopback, the API only runs behind API keys."""
    from tuneforge.api.security import is_loopback

    if is_loopback(settings.host):
        return
    store = _local_store(settings)
    try:
        has_keys = bool(store.active_api_keys())
    finally:
        store.dispose()
    if not has_keys:
        fail(
            f"Refusing to listen on {settings.host}: beyond loopback, tuneforge needs API keys "
            "and none exist. Create one with `tuneforge keys create --name NAME --scope admin` "
            "(same TUNEFORGE_HOME / DATABASE_URL), then start again."
        )


def _local_store(settings: Settings) -> Store:
    from tuneforge.db.store import Store

    settings.ensure_dirs()
    store = Store(settings.db_url)
    store.create_schema()
    return store


@keys_app.command("create")
def create_key(
    name: Annotated[str, typer.Option(help="What the key is for (shown in lists and logs).")],
    scope: Annotated[
        Literal["read", "admin"],
        typer.Option(help="read: reads and inference; admin: everything, audit log included."),
    ] = "read",
) -> None:
    """Create an API key and print its secret, once: only a hash of it is kept."""
    from tuneforge.config import get_settings
    from tuneforge.errors import TuneforgeError
    from tuneforge.security.keys import create_api_key

    store = _local_store(get_settings())
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


@keys_app.command("list")
def list_keys() -> None:
    """Every key with its scope and state; secrets are never shown (only their first
    characters)."""
    from tuneforge.config import get_settings

    store = _local_store(get_settings())
    try:
        rows = store.list_api_keys()
    finally:
        store.dispose()
    table = _table("id", "name", "scope", "prefix", "created", "revoked")
    for row in rows:
        table.add_row(
            row["id"], escape(row["name"]), row["scope"], row["prefix"] + "…",
            _when(row["created_at"]), _when(row["revoked_at"]),
        )
    console.print(table)


@keys_app.command("revoke")
def revoke_key(key_id: str) -> None:
    """Revoke a key; requests with it are refused within a second."""
    from tuneforge.config import get_settings

    store = _local_store(get_settings())
    try:
        done = store.revoke_api_key(key_id)
    finally:
        store.dispose()
    if not done:
        fail(f"No active key with id {key_id!r} (see `tuneforge keys list`).")
    console.print(f"Revoked {key_id}.")


@app.command("worker")
def run_worker(
    kinds: Annotated[
        str | None, typer.Option(help="Only these job kinds, comma-separated (e.g. embedding).")
    ] = None,
    devices: Annotated[
        str | None,
        typer.Option(help="Only jobs for these devices, comma-separated (cpu, cuda)."),
    ] = None,
    worker_id: Annotated[str | None, typer.Option(help="Name (default: host-pid).")] = None,
    studies: Annotated[
        bool,
        typer.Option(
            "--studies/--no-studies",
            help="Also drive hyperparameter studies (each study is driven by one process at "
            "a time; another takes over when it stops).",
        ),
    ] = True,
) -> None:
    """Run a worker that claims queued jobs from the configured database. Any number of
    workers, on any machines, may share one PostgreSQL database. SIGTERM or Ctrl-C: the
    running job writes a checkpoint and goes back to the queue."""
    import threading

    from tuneforge.config import get_settings
    from tuneforge.db.store import Store
    from tuneforge.jobs.worker import Worker
    from tuneforge.studies.driver import StudyDriver

    settings = get_settings()
    settings.ensure_dirs()
    store = Store(settings.db_url)
    store.create_schema()
    worker = Worker(
        store,
        settings,
        worker_id,
        kinds=_split_list(kinds),
        devices=_split_list(devices),
    )
    driver = StudyDriver(store, settings) if studies else None
    driver_thread = None
    if driver is not None:
        driver_thread = threading.Thread(
            target=driver.run_forever, name="tuneforge-studies", daemon=True
        )
        driver_thread.start()

    def stop(*_: object) -> None:
        worker.stop.set()
        if driver is not None:
            driver.stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, stop)
    console.print(
        f"Worker {worker.worker_id} waiting for jobs ({settings.db_url.split('://')[0]})"
        + (", driving studies." if driver else ".")
    )
    try:
        worker.run_forever()
    finally:
        stop()
        if driver_thread is not None:
            driver_thread.join(timeout=30)


def _split_list(value: str | None) -> list[str] | None:
    items = [v.strip() for v in (value or "").split(",") if v.strip()]
    return items or None


# -- files and datasets ------------------------------------------------------------------------


@files_app.command("upload")
def upload_file(
    path: Annotated[
        Path,
        typer.Argument(
            exists=True, dir_okay=False, readable=True, help="JSONL, CSV or Parquet file."
        ),
    ],
    purpose: Annotated[str, typer.Option(help="What the file is for.")] = "fine-tune",
    url: Url = DEFAULT_URL,
) -> None:
    """Upload a training file; it is validated at once. Exits 1 if it has problems."""
    api = ApiClient(url)
    with path.open("rb") as f:
        uploaded = api.request(
            "POST",
            "/v1/files",
            files={"file": (path.name, f)},
            data={"purpose": purpose},
            timeout=None,
        )
    console.print(uploaded["id"], soft_wrap=True)
    dataset = api.get(f"/v1/datasets/{uploaded['id']}")
    if uploaded["status"] != "error":
        console.print(
            f"status: [green]{uploaded['status']}[/] ({dataset['format']}, "
            f"{dataset['layout']}, {dataset['statistics']['rows']} rows)"
        )
        return
    console.print(
        f"status: [red]{uploaded['status']}[/] ({escape(uploaded['status_details'] or '')})",
        soft_wrap=True,
    )
    err_console.print(
        f"[bold red]{escape(path.name)} is not valid training data:[/]", soft_wrap=True
    )
    print_problems(dataset["problems"], dataset["problem_count"])
    raise typer.Exit(1)


@files_app.command("list")
def list_files(url: Url = DEFAULT_URL) -> None:
    """List uploaded files, newest first."""
    files = ApiClient(url).get("/v1/files")["data"]
    table = _table("id", "filename", "bytes", "format", "status", "created")
    for f in files:
        table.add_row(
            f["id"],
            escape(f["filename"]),
            str(f["bytes"]),
            f["format"],
            f["status"],
            _when(f["created_at"]),
        )
    console.print(table)


@files_app.command("get")
def get_file(file_id: str, url: Url = DEFAULT_URL) -> None:
    """Show a file object as JSON."""
    console.print_json(data=ApiClient(url).get(f"/v1/files/{file_id}"))


@files_app.command("delete")
def delete_file(file_id: str, url: Url = DEFAULT_URL) -> None:
    """Delete a file (refused while an unfinished job uses it)."""
    ApiClient(url).delete(f"/v1/files/{file_id}")
    console.print(f"Deleted {file_id}.", soft_wrap=True)


@datasets_app.command("show")
def show_dataset(dataset_id: str, url: Url = DEFAULT_URL) -> None:
    """The validation report (every problem, counts per code) and statistics of a file."""
    report = ApiClient(url).get(f"/v1/datasets/{dataset_id}")
    verdict = (
        "[green]valid[/]"
        if report["valid"]
        else (f"[red]invalid[/], {report['problem_count']} problem(s)")
    )
    console.print(
        f"[bold]{report['id']}[/] ({escape(report['file']['filename'])}): "
        f"{report['format']}, layout {report['layout'] or '-'}, "
        f"columns {', '.join(report['columns']) or '-'}; {verdict}",
        soft_wrap=True,
    )
    if report["problems"]:
        shown = len(report["problems"])
        title = "Problems" + (
            f" (first {shown} of {report['problem_count']})"
            if report["problem_count"] > shown
            else ""
        )
        problems = _table("line", "column", "code", "message", title=title)
        for p in report["problems"]:
            problems.add_row(
                str(p["line"] or ""), escape(p["column"] or ""), p["code"], escape(p["message"])
            )
        console.print(problems)
        counts = _table("code", "count", title="Problems by code")
        for code, n in report["problems_by_code"].items():
            counts.add_row(code, str(n))
        console.print(counts)
    stats = report["statistics"]
    extra = f", score scale 0-{stats['score_scale']:g}" if "score_scale" in stats else ""
    console.print(f"Rows: {stats['rows']}, exact duplicates: {stats['exact_duplicates']}{extra}")
    if stats["columns"]:
        lengths = _table("column", "unit", "min", "median", "p95", "max", title="Lengths")
        for column, units in stats["columns"].items():
            for unit in ("chars", "tokens"):
                s = units.get(unit)
                if s:
                    lengths.add_row(
                        column,
                        unit,
                        str(s["min"]),
                        f"{s['median']:g}",
                        f"{s['p95']:g}",
                        str(s["max"]),
                    )
        console.print(lengths)


# -- studies -----------------------------------------------------------------------------------


@studies_app.command("create")
def create_study(
    file: Annotated[
        Path,
        typer.Option(
            "-f", "--file", exists=True, dir_okay=False, help="YAML study spec (the request)."
        ),
    ],
    url: Url = DEFAULT_URL,
) -> None:
    """Start a study from a YAML spec (job, search_space, objective, n_trials, pruner)."""
    study = ApiClient(url).post("/v1/studies", json=read_yaml(file))
    console.print(study["id"], soft_wrap=True)
    console.print(
        f"{study['n_trials']} trials, {study['parallelism']} at a time; objective "
        f"{study['objective']['direction']} {study['objective']['metric']}."
    )


@studies_app.command("list")
def list_studies(
    limit: Annotated[int, typer.Option(min=1, max=100)] = 20, url: Url = DEFAULT_URL
) -> None:
    """List studies, newest first."""
    studies = ApiClient(url).get("/v1/studies", limit=limit)["data"]
    table = _table("id", "name", "status", "trials", "best", "created")
    for s in studies:
        done = sum(n for state, n in s["trial_counts"].items() if state != "running")
        best = s["best_trial"]
        table.add_row(
            s["id"],
            escape(s["name"]),
            s["status"],
            f"{done}/{s['n_trials']}",
            f"{best['value']:.4g} (#{best['number']})" if best else "",
            _when(s["created_at"]),
        )
    console.print(table)


@studies_app.command("show")
def show_study(
    study_id: str,
    as_json: Annotated[bool, typer.Option("--json", help="Print the study object.")] = False,
    url: Url = DEFAULT_URL,
) -> None:
    """A study's trials table, best trial, parameter importances and registered model."""
    study = ApiClient(url).get(f"/v1/studies/{study_id}")
    if as_json:
        console.print_json(data=study)
        return
    objective = study["objective"]
    console.print(
        f"[bold]{study['id']}[/] ({escape(study['name'])}): {study['status']}; "
        f"{objective['direction']} {objective['metric']}",
        soft_wrap=True,
    )
    names = list(study["search_space"])
    table = _table("#", "state", *names, "value", "last step", "job_id", title="Trials")
    for t in study["trials"]:
        table.add_row(
            str(t["number"]),
            t["state"],
            *(escape(str(t["params"].get(n, ""))) for n in names),
            f"{t['value']:.4g}" if t["value"] is not None else "",
            str(t["last_step"] or ""),
            t["job_id"] or "",
        )
    console.print(table)
    best = study["best_trial"]
    if best:
        params = ", ".join(f"{k}={v}" for k, v in best["params"].items())
        console.print(f"Best: trial {best['number']}, {best['value']:.4g} ({escape(params)})")
    if study["param_importances"]:
        importances = _table("parameter", "importance", title="Parameter importances")
        for name, value in study["param_importances"].items():
            importances.add_row(escape(name), f"{value:.3f}")
        console.print(importances)
    elif study["param_importances_note"]:
        console.print(f"Parameter importances: {escape(study['param_importances_note'])}")
    registered = study["registered_model"]
    if registered:
        console.print(
            f"Registered: {escape(registered['name'])} version {registered['version']}"
            + (f" (alias {registered['alias']})" if registered.get("alias") else "")
        )


@studies_app.command("cancel")
def cancel_study(study_id: str, url: Url = DEFAULT_URL) -> None:
    """Cancel a study and its unfinished trial jobs."""
    study = ApiClient(url).post(f"/v1/studies/{study_id}/cancel")
    console.print(f"{study['id']}: cancellation requested.", soft_wrap=True)


@studies_app.command("promote")
def promote_study(
    study_id: str,
    alias: Annotated[str, typer.Option(help="Registry alias to move.")] = "production",
    url: Url = DEFAULT_URL,
) -> None:
    """Point a registry alias at the best trial's model version."""
    done = ApiClient(url).post(f"/v1/studies/{study_id}/promote", json={"alias": alias})
    console.print(f"{done['alias']} -> {escape(done['name'])} version {done['version']}")


# -- jobs --------------------------------------------------------------------------------------


def job_body(
    config: dict[str, Any],
    *,
    model: str | None = None,
    training_files: list[str] | None = None,
    validation_file: str | None = None,
    loss: str | None = None,
    hyperparameters: dict[str, Any] | None = None,
    suffix: str | None = None,
    seed: int | None = None,
    timeout_seconds: int | None = None,
) -> dict[str, Any]:
    """A `POST /v1/fine_tuning/jobs` body: `config` (the JobCreate shape) with the given
    options put over it; options left as None keep the config's values."""
    body = copy.deepcopy(config)
    top = {
        "model": model,
        "validation_file": validation_file,
        "suffix": suffix,
        "seed": seed,
        "timeout_seconds": timeout_seconds,
    }
    body.update({k: v for k, v in top.items() if v is not None})
    if training_files:
        body.pop("training_file", None)
        body.pop("training_files", None)
        if len(training_files) == 1:
            body["training_file"] = training_files[0]
        else:
            body["training_files"] = list(training_files)
    chosen = {k: v for k, v in (hyperparameters or {}).items() if v is not None}
    if loss or chosen:
        method = body.setdefault("method", {})
        if not isinstance(method, dict):
            fail("`method` in the config must be a mapping.")
        params = method.setdefault(method.setdefault("type", "embedding"), {})
        if loss:
            params["loss"] = loss
        params.setdefault("hyperparameters", {}).update(chosen)
    return body


def read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        fail(f"Cannot read {path}: {exc}")
    if data is None:
        return {}
    if not isinstance(data, dict):
        fail(f"{path} must hold a mapping (the job spec), not {type(data).__name__}.")
    return data


@jobs_app.command("create")
def create_job(
    model: Annotated[str | None, typer.Option(help="Base model, e.g. org/name.")] = None,
    training_file: Annotated[
        list[str] | None,
        typer.Option(
            "--training-file", metavar="FILE_ID", help="Training file id; repeat for several."
        ),
    ] = None,
    validation_file: Annotated[
        str | None, typer.Option(metavar="FILE_ID", help="Validation file id.")
    ] = None,
    loss: Annotated[Loss | None, typer.Option(help="Embedding loss.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Passes over the data.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Examples per step.")] = None,
    learning_rate: Annotated[float | None, typer.Option(help="Peak learning rate.")] = None,
    suffix: Annotated[str | None, typer.Option(help="Part of the model's name.")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
    timeout_seconds: Annotated[
        int | None, typer.Option(help="Fail the job after this long.")
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            dir_okay=False,
            help="YAML job spec (the request's shape); options override it.",
        ),
    ] = None,
    watch: Annotated[bool, typer.Option("--watch", help="Follow the job until it ends.")] = False,
    url: Url = DEFAULT_URL,
) -> None:
    """Create a fine-tuning job and print its id."""
    body = job_body(
        read_yaml(config) if config else {},
        model=model,
        training_files=training_file,
        validation_file=validation_file,
        loss=loss,
        hyperparameters={
            "n_epochs": epochs,
            "batch_size": batch_size,
            "learning_rate": learning_rate,
        },
        suffix=suffix,
        seed=seed,
        timeout_seconds=timeout_seconds,
    )
    api = ApiClient(url)
    job = api.post("/v1/fine_tuning/jobs", json=body)
    console.print(job["id"], soft_wrap=True)
    if watch:
        _watch_over_http(api, job["id"])
    else:
        err_console.print(
            f"Status {job['status']}; follow it with: tuneforge jobs watch {job['id']}",
            soft_wrap=True,
        )


@jobs_app.command("list")
def list_jobs(
    limit: Annotated[int, typer.Option(min=1, max=100)] = 20, url: Url = DEFAULT_URL
) -> None:
    """List fine-tuning jobs, newest first."""
    jobs = ApiClient(url).get("/v1/fine_tuning/jobs", limit=limit)["data"]
    table = _table("id", "status", "model", "fine_tuned_model", "progress", "created")
    for job in jobs:
        percent = (job.get("progress") or {}).get("percent")
        table.add_row(
            job["id"],
            job["status"],
            escape(job["model"]),
            escape(job["fine_tuned_model"] or ""),
            f"{percent:.0f}%" if percent is not None else "",
            _when(job["created_at"]),
        )
    console.print(table)


@jobs_app.command("get")
def get_job(job_id: str, url: Url = DEFAULT_URL) -> None:
    """Show a job object as JSON."""
    console.print_json(data=ApiClient(url).get(f"/v1/fine_tuning/jobs/{job_id}"))


@jobs_app.command("events")
def list_events(
    job_id: str, limit: Annotated[int, typer.Option(min=1, max=1000)] = 20, url: Url = DEFAULT_URL
) -> None:
    """Show a job's latest events, oldest of them first."""
    from tuneforge.jobs.watch import format_event

    events = ApiClient(url).get(f"/v1/fine_tuning/jobs/{job_id}/events", limit=limit)["data"]
    for event in reversed(events):
        console.print(format_event(event), soft_wrap=True)


@jobs_app.command("cancel")
def cancel_job(job_id: str, url: Url = DEFAULT_URL) -> None:
    """Cancel a job: at once if it has not started, else at its next training step."""
    job = ApiClient(url).post(f"/v1/fine_tuning/jobs/{job_id}/cancel")
    if job["status"] == "cancelled":
        console.print(f"Job {job_id} cancelled.", soft_wrap=True)
    else:
        console.print(
            f"Cancellation of {job_id} requested; it stops at its next step.", soft_wrap=True
        )


@jobs_app.command("pause")
def pause_job(job_id: str, url: Url = DEFAULT_URL) -> None:
    """Pause a job: it writes a checkpoint at its next step and stops, freeing its device."""
    job = ApiClient(url).post(f"/v1/fine_tuning/jobs/{job_id}/pause")
    if job["status"] == "paused":
        console.print(f"Job {job_id} paused.", soft_wrap=True)
    else:
        console.print(
            f"Pause of {job_id} requested; it checkpoints at its next step and stops.",
            soft_wrap=True,
        )


@jobs_app.command("resume")
def resume_job(job_id: str, url: Url = DEFAULT_URL) -> None:
    """Resume a paused job: it is queued and continues from its checkpoint."""
    job = ApiClient(url).post(f"/v1/fine_tuning/jobs/{job_id}/resume")
    console.print(f"Job {job_id} is {job['status']}.", soft_wrap=True)


@jobs_app.command("watch")
def watch_job(job_id: str, url: Url = DEFAULT_URL) -> None:
    """Follow a job live until it ends; exit code 0 only if it succeeded."""
    _watch_over_http(ApiClient(url), job_id)


def _watch_over_http(api: ApiClient, job_id: str) -> None:
    from tuneforge.jobs.watch import watch_job as follow

    try:
        job = follow(_http_poll(api, job_id), console)
    except KeyboardInterrupt:
        err_console.print(
            f"\nStopped watching; the job goes on. Cancel it with: tuneforge jobs cancel {job_id}",
            soft_wrap=True,
        )
        raise typer.Exit(130) from None
    raise typer.Exit(0 if job["status"] == "succeeded" else 1)


def _http_poll(api: ApiClient, job_id: str) -> Poll:
    """Job from the API, message events from its event stream (SSE), which a thread reads
    and reconnects with Last-Event-ID when the connection drops."""
    import queue

    api.get(f"/v1/fine_tuning/jobs/{job_id}")  # an unknown job fails here, before a thread
    arrived: queue.Queue[dict[str, Any]] = queue.Queue()
    threading.Thread(
        target=_follow_stream, args=(api, job_id, arrived), name="tuneforge-sse", daemon=True
    ).start()

    def poll() -> tuple[dict[str, Any], list[dict[str, Any]]]:
        job = api.get(f"/v1/fine_tuning/jobs/{job_id}")
        fresh: list[dict[str, Any]] = []
        deadline = time.monotonic() + 2.0
        while True:
            try:
                event = arrived.get_nowait()
            except queue.Empty:
                # Once the job has ended, wait (briefly) for its last event to arrive.
                if job["status"] not in TERMINAL_STATUSES or time.monotonic() > deadline:
                    break
                if fresh and fresh[-1].get("_end"):
                    break
                time.sleep(0.05)
                continue
            fresh.append(event)
            if event.get("_end"):
                break
        return job, [e for e in fresh if not e.get("_end")]

    return poll


TERMINAL_STATUSES = ("succeeded", "failed", "cancelled")


def _follow_stream(api: ApiClient, job_id: str, arrived: Any) -> None:
    import httpx

    # Its own (this thread outlives requests), with the same key.
    client = httpx.Client(base_url=api.url, headers=dict(api.http.headers))
    last_id: str | None = None
    while True:
        headers = {"Last-Event-ID": last_id} if last_id else {}
        try:
            with client.stream(
                "GET",
                f"/v1/fine_tuning/jobs/{job_id}/events/stream",
                params={"type": "message"},
                headers=headers,
                timeout=httpx.Timeout(10.0, read=120.0),
            ) as response:
                for event_id, name, data in _sse_messages(response.iter_lines()):
                    if name == "end":
                        arrived.put({"_end": True})
                        return
                    last_id = event_id or last_id
                    arrived.put(json.loads(data))
        except httpx.HTTPError:
            time.sleep(1.0)  # the server restarts or the network drops: reconnect


def _sse_messages(lines: Any) -> Any:
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


def _event_number(event: dict[str, Any]) -> int:
    return int(event["id"].removeprefix("ftevent-"))


# -- models ------------------------------------------------------------------------------------


@models_app.command("list")
def list_models(url: Url = DEFAULT_URL) -> None:
    """List base models in use and the fine-tuned models made here."""
    models = ApiClient(url).get("/v1/models")["data"]
    table = _table("id", "kind", "base_model", "job_id", "created")
    for m in models:
        table.add_row(
            escape(m["id"]),
            m["kind"],
            escape(m["base_model"] or ""),
            m["job_id"] or "",
            _when(m["created"]),
        )
    console.print(table)
    registered = ApiClient(url).get("/v1/registered_models")["data"]
    if registered:
        table = _table("name", "kind", "versions", "aliases", "latest", title="Registry")
        for r in registered:
            latest = r["latest_version"] or {}
            table.add_row(
                escape(r["name"]),
                r["kind"],
                str(r["versions"]),
                ", ".join(f"{a}->v{v}" for a, v in sorted(r["aliases"].items())),
                _primary(latest),
            )
        console.print(table)


def _primary(version: dict[str, Any]) -> str:
    """`metric value` of a version's primary metric on its validation split."""
    evaluation = version.get("evaluation") or {}
    key = evaluation.get("primary_metric")
    value = (evaluation.get("fine_tuned_model") or {}).get(key)
    return f"{key} {value:.4f}" if key and isinstance(value, int | float) else ""


@models_app.command("show")
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
        table = _table("version", "model", "aliases", "metric", "job", "created")
        for v in api.get(f"/v1/registered_models/{base}/versions")["data"]:
            table.add_row(
                str(v["version"]),
                escape(v["model"]),
                ", ".join(v["aliases"]),
                _primary(v),
                v["job_id"] or "",
                _when(v["created_at"]),
            )
        console.print(table)
        return
    if which[:1] == "v" and which[1:].isdigit():
        number = int(which[1:])
    else:
        number = api.get(f"/v1/registered_models/{base}")["aliases"].get(which)
        if number is None:
            fail(f"{base} has no alias {which!r}.")
    version = api.get(f"/v1/registered_models/{base}/versions/{number}")
    console.print_json(data=version)


@models_app.command("compare")
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
    table = _table("metric", *(f"v{v}" for v in versions))
    for metric, values in comparison["metrics"].items():
        table.add_row(metric, *(f"{x:.4f}" if x is not None else "-" for x in values))
    console.print(table)
    if comparison["spec_differences"]:
        diff = _table("spec field", *(f"v{v}" for v in versions), title="Differences")
        for field, values in comparison["spec_differences"].items():
            diff.add_row(field, *(escape(str(x)) for x in values))
        console.print(diff)


@models_app.command("alias")
def alias_model(
    name: str,
    alias: str,
    version: Annotated[int | None, typer.Argument(help="Version to point at.")] = None,
    delete: Annotated[bool, typer.Option("--delete", help="Remove the alias.")] = False,
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
    api.request("PUT", f"/v1/registered_models/{name}/aliases/{alias}", json={"version": version})
    console.print(f"{name}@{alias} -> version {version}.")


@models_app.command("delete")
def delete_model_version(name: str, version: int, url: Url = DEFAULT_URL) -> None:
    """Delete a version and its files (refused while an alias points at it)."""
    ApiClient(url).delete(f"/v1/registered_models/{name}/versions/{version}")
    console.print(f"Version {version} of {name} deleted.")


# -- predictions -------------------------------------------------------------------------------


@app.command()
def predict(
    model: Annotated[str, typer.Argument(help="A text-classification model, e.g. ft:...")],
    texts: Annotated[list[str] | None, typer.Argument(help="Texts to label.")] = None,
    file: Annotated[
        str | None,
        typer.Option("--file", "-f", help="Texts to label, one a line ('-': standard input)."),
    ] = None,
    top_k: Annotated[
        int | None, typer.Option(min=1, help="Also show this many best classes with scores.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the responses as JSON.")] = False,
    url: Url = DEFAULT_URL,
) -> None:
    """Label texts with a trained classification model (POST /v1/classifications)."""
    from tuneforge.serving.classifier import MAX_INPUTS

    inputs = list(texts or [])
    if file is not None:
        try:
            lines = sys.stdin.read() if file == "-" else Path(file).read_text(encoding="utf-8")
        except OSError as exc:
            fail(f"Cannot read {file}: {exc}")
        inputs += [line for line in lines.splitlines() if line.strip()]
    if not inputs:
        fail("Give the texts to label as arguments or with --file.")
    api = ApiClient(url)
    responses = [
        api.post(
            "/v1/classifications",
            json={"model": model, "input": inputs[start : start + MAX_INPUTS], "top_k": top_k},
        )
        for start in range(0, len(inputs), MAX_INPUTS)
    ]
    if as_json:
        for response in responses:
            console.print_json(data=response)
        return
    columns = ["text", "labels", "score"] + (["best classes"] if top_k else [])
    table = _table(*columns)
    results = [item for response in responses for item in response["data"]]
    for text, item in zip(inputs, results, strict=True):
        scores = {s["label"]: s["score"] for s in item["scores"]}
        shown = [
            escape(text),
            escape(", ".join(item["labels"]) or "-"),
            ", ".join(f"{scores[name]:.3f}" for name in item["labels"] if name in scores),
        ]
        if top_k:
            shown.append(
                escape(", ".join(f"{s['label']} {s['score']:.3f}" for s in item["scores"]))
            )
        table.add_row(*shown)
    console.print(table)


# -- local training ----------------------------------------------------------------------------

FILE_FIELDS = ("training_file", "training_files", "validation_file")


@app.command()
def train(
    config: Annotated[
        Path,
        typer.Argument(
            exists=True,
            dir_okay=False,
            help="YAML job spec; its files are paths relative to the YAML's folder.",
        ),
    ],
) -> None:
    """Run a job spec on this machine, without a server, and show its progress.

    The files are validated, the job is recorded in the local database (TUNEFORGE_HOME) and a
    worker runs it here. Ctrl-C cancels it. Exits 0 only if the job succeeded."""
    from pydantic import ValidationError

    from tuneforge.api.errors import field_path
    from tuneforge.config import get_settings
    from tuneforge.db.store import Store
    from tuneforge.errors import InvalidStateError, TuneforgeError
    from tuneforge.jobs.service import create_job as queue_job
    from tuneforge.jobs.watch import watch_job as follow
    from tuneforge.jobs.worker import Worker
    from tuneforge.training.spec import JobCreate

    raw = read_yaml(config)
    try:
        # Checked before the files are read, so a typo costs no time; again with file ids.
        JobCreate.model_validate(raw)
    except ValidationError as exc:
        err_console.print(
            f"[bold red]Error:[/] {escape(str(config))} is not a valid job "
            f"spec ({exc.error_count()} invalid field(s)):",
            soft_wrap=True,
        )
        print_field_errors(
            [{"param": field_path(e["loc"]), "message": e["msg"]} for e in exc.errors()]
        )
        raise typer.Exit(1) from None

    settings = get_settings()
    settings.ensure_dirs()
    store = Store(settings.db_url)
    store.create_schema()
    try:
        spec = JobCreate.model_validate(_ingest_files(store, settings, raw, config.parent))
        job_id = queue_job(store, settings, spec)["id"]
    except TuneforgeError as exc:
        print_api_error(exc.to_dict())
        raise typer.Exit(1) from None
    console.print(f"Job {job_id} queued in {settings.home}", soft_wrap=True)

    worker_errors: list[BaseException] = []
    thread = threading.Thread(
        target=_work_until_ended,
        args=(Worker(store, settings), job_id, worker_errors),
        name="tuneforge-worker",
        daemon=True,
    )
    thread.start()

    def cancel() -> None:
        err_console.print("Cancelling; waiting for the job to stop ...")
        with contextlib.suppress(InvalidStateError):  # it has ended meanwhile
            store.request_cancel(job_id)

    job = follow(_store_poll(store, job_id, worker_errors), console, on_interrupt=cancel)
    thread.join(timeout=60)
    if job["status"] == "failed":
        err_console.print(f"Job log: {settings.jobs_dir / job_id / 'process.log'}", soft_wrap=True)
    if job["status"] != "succeeded":
        raise typer.Exit(1)
    console.print(f"Saved in: {settings.models_dir / job_id}", soft_wrap=True)


def _ingest_files(
    store: Store, settings: Settings, raw: dict[str, Any], folder: Path
) -> dict[str, Any]:
    """Validate and store every file the spec names; the spec with file ids for paths.
    Reports the problems of every invalid file, then exits 1, before any job exists."""
    from tuneforge.datasets.ingest import ingest_file

    def ingest(param: str, value: Any) -> str | None:
        if not isinstance(value, str):
            fail(f"{param}: expected a file path, got {value!r}.")
        path = (folder / value).expanduser()
        if not path.is_file():
            fail(f"{param}: no such file: {path}")
        with path.open("rb") as f:
            row = ingest_file(store, settings, path.name, f)
        report = row["report"]
        if report["valid"]:
            console.print(
                f"{escape(param)}: {escape(path.name)} -> {row['id']} ({report['layout']}, "
                f"{report['statistics']['rows']} rows)",
                soft_wrap=True,
            )
            return row["id"]
        err_console.print(
            f"[bold red]{escape(param)}: {escape(str(path))} is not valid training data:[/]",
            soft_wrap=True,
        )
        print_problems(report["problems"], report["problem_count"])
        return None

    spec = copy.deepcopy(raw)
    ids: list[str | None] = []
    for name in FILE_FIELDS:
        value = raw.get(name)
        if value is None:
            continue
        if name == "training_files":
            spec[name] = [ingest(f"{name}[{i}]", v) for i, v in enumerate(value)]
            ids.extend(spec[name])
        else:
            spec[name] = ingest(name, value)
            ids.append(spec[name])
    if None in ids:
        raise typer.Exit(1)
    return spec


def _work_until_ended(worker: Worker, job_id: str, errors: list[BaseException]) -> None:
    """Run our job (and only ours) until it has ended."""
    from tuneforge.jobs.status import TERMINAL

    try:
        while worker.store.require_job(job_id)["status"] not in TERMINAL:
            if not worker.run_once(job_id):
                worker.stop.wait(worker.settings.poll_seconds)
    except BaseException as exc:  # reported by the poll, which the main thread runs
        errors.append(exc)


def _store_poll(store: Store, job_id: str, worker_errors: list[BaseException]) -> Poll:
    """Job and new message events from the local database."""
    from tuneforge.api.schemas.fine_tuning import public_event, public_job

    seen = 0

    def poll() -> tuple[dict[str, Any], list[dict[str, Any]]]:
        nonlocal seen
        if worker_errors:
            fail(f"The worker stopped: {worker_errors[0]!r}")
        job = public_job(store.require_job(job_id)).model_dump(mode="json")
        fresh: list[dict[str, Any]] = []
        while True:
            rows, has_more = store.list_events(
                job_id, after=seen, limit=500, type="message", newest_first=False
            )
            fresh.extend(public_event(r).model_dump(mode="json") for r in rows)
            seen = rows[-1]["id"] if rows else seen
            if not has_more:
                return job, fresh

    return poll


# -- exports -----------------------------------------------------------------------------------


@app.command("export")
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
    while export["status"] not in ("succeeded", "failed", "cancelled"):
        time.sleep(1)
        export = api.get(f"/v1/exports/{export['id']}")
    if export["status"] != "succeeded":
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
        api.http.stream(
            "GET", f"/v1/exports/{export_id}/content", params={"file": entry["name"]}
        ) as response,
        partial.open("wb") as f,
    ):
        if response.is_error:
            response.read()
            print_api_error(_error_of(response))
            raise typer.Exit(1)
        for block in response.iter_bytes(1 << 20):
            digest.update(block)
            f.write(block)
    if digest.hexdigest() != entry["sha256"]:
        partial.unlink()
        fail(f"{entry['name']} arrived damaged (SHA-256 mismatch); run the download again.")
    partial.replace(target)


# -- data preparation, feedback and synthetic data (issue 11) -----------------------------------

feedback_app = typer.Typer(
    help="Ratings of a model's answers, exported into datasets.", no_args_is_help=True
)
app.add_typer(feedback_app, name="feedback")
synthetic_app = typer.Typer(
    help="Synthetic training data from template prompts.", no_args_is_help=True
)
app.add_typer(synthetic_app, name="synthetic")


@datasets_app.command("prepare")
def prepare_dataset_command(
    dataset_id: str,
    merge: Annotated[list[str] | None, typer.Option(help="Another dataset to merge in.")] = None,
    languages: Annotated[str | None, typer.Option(help="Keep these languages: de,en.")] = None,
    min_chars: Annotated[int, typer.Option(help="Remove rows with fewer characters.")] = 0,
    max_chars: Annotated[int | None, typer.Option(help="Remove rows with more.")] = None,
    near_duplicates: Annotated[
        float, typer.Option(help="Near-duplicate Jaccard threshold (0: exact ones only).")
    ] = 0.8,
    validation_share: Annotated[float, typer.Option(help="Share held out (0: none).")] = 0.1,
    seed: int = 0,
    url: Url = DEFAULT_URL,
) -> None:
    """Clean, de-duplicate, filter and split a dataset into new train/validation datasets."""
    body = {
        "merge": merge or [],
        "languages": _split_list(languages),
        "min_chars": min_chars,
        "max_chars": max_chars,
        "near_duplicate_threshold": near_duplicates or None,
        "validation_share": validation_share,
        "seed": seed,
    }
    done = ApiClient(url).post(f"/v1/datasets/{dataset_id}/prepare", json=body)
    report = done["report"]
    console.print(
        f"{report['rows_in']} rows in, {report['rows_out']} kept; train [bold]"
        f"{done['train']['id']}[/] ({report['split']['train_rows']} rows)"
        + (
            f", validation [bold]{done['validation']['id']}[/] "
            f"({report['split']['validation_rows']} rows)"
            if done["validation"]
            else ""
        ),
        soft_wrap=True,
    )
    removed = _table("reason", "rows", "example", title="Removed")
    for reason, n in report["removed"].items():
        example = report["examples"][reason][0]
        removed.add_row(reason, str(n), escape(f"row {example['row']}: {example['text'][:80]}"))
    if report["removed"]:
        console.print(removed)
    languages_seen = ", ".join(f"{k} {v}" for k, v in report["statistics"]["languages"].items())
    console.print(f"Languages: {languages_seen}", soft_wrap=True)


@feedback_app.command("add")
def add_feedback_command(
    model: Annotated[str, typer.Option(help="The model that answered (id or NAME@alias).")],
    prompt: Annotated[str, typer.Option(help="The user's prompt.")],
    output: Annotated[str, typer.Option(help="The model's answer.")],
    rating: Annotated[str, typer.Option(help="up, down or edited.")],
    corrected: Annotated[str | None, typer.Option(help="edited: the corrected answer.")] = None,
    url: Url = DEFAULT_URL,
) -> None:
    """Record a rating of a model's answer."""
    body = {"model": model, "prompt": prompt, "output": output, "rating": rating}
    if corrected is not None:
        body["corrected_output"] = corrected
    row = ApiClient(url).post("/v1/feedback", json=body)
    console.print(f"[bold]{row['id']}[/] ({row['rating']}, {row['model']})")


@feedback_app.command("list")
def list_feedback_command(
    model: str | None = None,
    registered_model: str | None = None,
    rating: str | None = None,
    limit: int = 100,
    url: Url = DEFAULT_URL,
) -> None:
    """Feedback, newest first."""
    rows = ApiClient(url).get(
        "/v1/feedback", model=model, registered_model=registered_model, rating=rating, limit=limit
    )["data"]
    table = _table("id", "created", "model", "rating", "prompt", "answer")
    for r in rows:
        answer = r["corrected_output"] or r["output"]
        table.add_row(
            r["id"], _when(r["created_at"]), escape(r["model"]), r["rating"],
            escape(r["messages"][-1]["content"][:60]), escape(answer[:60]),
        )  # fmt: skip
    console.print(table)


@feedback_app.command("export")
def export_feedback_command(
    kind: Annotated[str, typer.Option(help="supervised or dpo.")] = "supervised",
    model: str | None = None,
    registered_model: str | None = None,
    url: Url = DEFAULT_URL,
) -> None:
    """Turn feedback into a dataset (SFT examples or DPO preference pairs)."""
    body = {"kind": kind, "model": model, "registered_model": registered_model}
    done = ApiClient(url).post("/v1/feedback/export", json=body)
    sources = ", ".join(f"{k} {v}" for k, v in done["by_source"].items())
    console.print(f"[bold]{done['dataset']['id']}[/]: {done['rows']} {kind} rows ({sources})")


@feedback_app.command("retrain")
def retrain_command(
    registered_model: str,
    kind: Annotated[
        str | None, typer.Option(help="supervised (the default) or dpo.", show_default=False)
    ] = None,
    alias: Annotated[
        str | None,
        typer.Option(help="The version to start from and promote [default: production]."),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            help="YAML or JSON: more of the request (method, min_delta, seed, since, …); "
            "the options above win."
        ),
    ] = None,
    url: Url = DEFAULT_URL,
) -> None:
    """Export a registered model's feedback and fine-tune its production version on it."""
    import yaml

    body: dict[str, Any] = {}
    if config is not None:
        try:
            body = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as error:
            fail(f"Cannot read {config}: {error}")
        if not isinstance(body, dict):
            fail(f"{config} must hold a mapping of the request's fields.")
    given = {"registered_model": registered_model, "kind": kind, "alias": alias}
    body.update({k: v for k, v in given.items() if v is not None})
    done = ApiClient(url).post("/v1/feedback/retrain", json=body)
    console.print(
        f"Job [bold]{done['job']['id']}[/] queued on {done['export']['dataset']['id']} "
        f"({done['export']['rows']} rows); follow it with `tuneforge jobs watch`."
    )


@synthetic_app.command("create")
def create_synthetic_command(
    config: Annotated[Path, typer.Argument(help="YAML or JSON: the request body.")],
    wait: Annotated[bool, typer.Option(help="Wait until the dataset is made.")] = True,
    url: Url = DEFAULT_URL,
) -> None:
    """Generate synthetic data from template prompts (seed 004's request, as a file)."""
    import yaml

    body = yaml.safe_load(config.read_text(encoding="utf-8"))
    api = ApiClient(url)
    job = api.post("/v1/synthetic-data", json=body)
    console.print(f"[bold]{job['id']}[/] {job['status']}")
    while wait and job["status"] not in ("succeeded", "failed", "cancelled"):
        time.sleep(1)
        job = api.get(f"/v1/synthetic-data/{job['id']}")
    if job["status"] == "failed":
        fail(f"{job['error']['code']}: {job['error']['message']}")
    if job["status"] == "succeeded":
        result = job["result"]
        console.print(
            f"Dataset [bold]{result['dataset_id']}[/]: {result['kept']} of "
            f"{result['generated']} answers kept (removed: {result['removed'] or 'none'})."
        )


if __name__ == "__main__":
    app()

"""`tuneforge jobs`: create, list, follow, pause, resume, cancel and delete fine-tuning jobs,
and list their checkpoints with their metrics."""

from __future__ import annotations

import copy
import json
import queue
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from tuneforge.cli.client import ApiClient
from tuneforge.cli.console import console, err_console, fail, print_warnings, table, when
from tuneforge.cli.options import DEFAULT_URL, Loss, Url, read_yaml
from tuneforge.defaults import DEFAULT_METHOD_TYPE
from tuneforge.jobs.status import TERMINAL, JobStatus

if TYPE_CHECKING:
    from tuneforge.jobs.watch import Poll

app = typer.Typer(help="Create, follow, cancel and delete fine-tuning jobs.", no_args_is_help=True)


def job_body(
    config: dict[str, Any],
    *,
    model: str | None = None,
    training_files: list[str] | None = None,
    validation_file: str | None = None,
    loss: str | None = None,
    hyperparameters: dict[str, Any] | None = None,
    method_type: str | None = None,
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
    if method_type:
        method = body.get("method")
        if isinstance(method, dict) and method.get("type", method_type) != method_type:
            fail(f"--method {method_type} and the config's method.type {method['type']} differ.")
        body["method"] = {**(method if isinstance(method, dict) else {}), "type": method_type}
    if chosen and not loss and "method" not in body:
        # The server picks the method from the data; these go into it.
        body["hyperparameters"] = {**body.get("hyperparameters", {}), **chosen}
        return body
    if loss or chosen:
        method = body.setdefault("method", {})
        if not isinstance(method, dict):
            fail("`method` in the config must be a mapping.")
        params = method.setdefault(method.setdefault("type", DEFAULT_METHOD_TYPE), {})
        if loss:
            params["loss"] = loss
        params.setdefault("hyperparameters", {}).update(chosen)
    return body


@app.command("create")
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
    method: Annotated[
        str | None,
        typer.Option(
            metavar="TYPE",
            help="Method type: embedding, reranker, classification, supervised, dpo "
            "(default: the training file's kind).",
        ),
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
        method_type=method,
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
    print_warnings(job)
    console.print(job["id"], soft_wrap=True)
    if watch:
        _watch_over_http(api, job["id"])
    else:
        err_console.print(
            f"Status {job['status']}; follow it with: tuneforge jobs watch {job['id']}",
            soft_wrap=True,
        )


@app.command("list")
def list_jobs(
    limit: Annotated[int, typer.Option(min=1, max=100)] = 20, url: Url = DEFAULT_URL
) -> None:
    """List fine-tuning jobs, newest first."""
    jobs = ApiClient(url).get("/v1/fine_tuning/jobs", limit=limit)["data"]
    shown = table("id", "status", "model", "fine_tuned_model", "progress", "created")
    for job in jobs:
        percent = (job.get("progress") or {}).get("percent")
        shown.add_row(
            job["id"],
            job["status"],
            escape(job["model"]),
            escape(job["fine_tuned_model"] or ""),
            f"{percent:.0f}%" if percent is not None else "",
            when(job["created_at"]),
        )
    console.print(shown)


@app.command("get")
def get_job(job_id: str, url: Url = DEFAULT_URL) -> None:
    """Show a job object as JSON; its warnings first (on stderr), so the JSON on stdout
    stays whole."""
    job = ApiClient(url).get(f"/v1/fine_tuning/jobs/{job_id}")
    print_warnings(job)
    if job.get("warning"):
        label = "WORSE THAN BASE" if job.get("worse_than_base") else "Note"
        err_console.print(f"[bold yellow]{label}:[/] {escape(job['warning'])}", soft_wrap=True)
    console.print_json(data=job)


@app.command("events")
def list_events(
    job_id: str, limit: Annotated[int, typer.Option(min=1, max=1000)] = 20, url: Url = DEFAULT_URL
) -> None:
    """Show a job's latest events, oldest of them first."""
    from tuneforge.jobs.watch import format_event

    events = ApiClient(url).get(f"/v1/fine_tuning/jobs/{job_id}/events", limit=limit)["data"]
    for event in reversed(events):
        console.print(format_event(event), soft_wrap=True)


# A checkpoint's metrics as columns (acc: mean token accuracy, reward acc: the share of pairs
# whose chosen answer earns the higher reward): OpenAI's always, DPO's where a checkpoint has
# them.
CHECKPOINT_COLUMNS = {
    "train_loss": "train_loss",
    "train_mean_token_accuracy": "train_acc",
    "valid_loss": "valid_loss",
    "valid_mean_token_accuracy": "valid_acc",
    "full_valid_loss": "full_valid_loss",
    "full_valid_mean_token_accuracy": "full_valid_acc",
}
OPTIONAL_CHECKPOINT_COLUMNS = {
    "train_reward_accuracy": "train_reward_acc",
    "train_reward_margin": "train_margin",
    "full_valid_reward_accuracy": "full_valid_reward_acc",
    "full_valid_reward_margin": "full_valid_margin",
}


@app.command("checkpoints")
def list_checkpoints(
    job_id: str, limit: Annotated[int, typer.Option(min=1, max=100)] = 100, url: Url = DEFAULT_URL
) -> None:
    """List a job's checkpoints, oldest first, with their metrics: training means since the
    previous checkpoint, a validation batch, the whole validation split (acc: mean token
    accuracy; DPO: reward accuracy and margin)."""
    found = ApiClient(url).get(f"/v1/fine_tuning/jobs/{job_id}/checkpoints", limit=limit)
    checkpoints = list(reversed(found["data"]))
    if not checkpoints:
        console.print(f"Job {escape(job_id)} has no checkpoints yet.")
        return
    columns = CHECKPOINT_COLUMNS | {
        name: header
        for name, header in OPTIONAL_CHECKPOINT_COLUMNS.items()
        if any(c["metrics"].get(name) is not None for c in checkpoints)
    }
    shown = table("step", "epoch", *columns.values(), "checkpoint")
    for c in checkpoints:
        values = [c["metrics"].get(name) for name in columns]
        shown.add_row(
            str(c["step_number"]),
            f"{c['epoch']:.2f}" if c.get("epoch") is not None else "",
            *(f"{v:.4f}" if isinstance(v, int | float) else "" for v in values),
            escape(c["fine_tuned_model_checkpoint"]),
        )
    console.print(shown)


@app.command("cancel")
def cancel_job(job_id: str, url: Url = DEFAULT_URL) -> None:
    """Cancel a job: at once if it has not started, else at its next training step."""
    job = ApiClient(url).post(f"/v1/fine_tuning/jobs/{job_id}/cancel")
    if job["status"] == JobStatus.CANCELLED:
        console.print(f"Job {job_id} cancelled.", soft_wrap=True)
    else:
        console.print(
            f"Cancellation of {job_id} requested; it stops at its next step.", soft_wrap=True
        )


@app.command("pause")
def pause_job(job_id: str, url: Url = DEFAULT_URL) -> None:
    """Pause a job: it writes a checkpoint at its next step and stops, freeing its device."""
    job = ApiClient(url).post(f"/v1/fine_tuning/jobs/{job_id}/pause")
    if job["status"] == JobStatus.PAUSED:
        console.print(f"Job {job_id} paused.", soft_wrap=True)
    else:
        console.print(
            f"Pause of {job_id} requested; it checkpoints at its next step and stops.",
            soft_wrap=True,
        )


@app.command("resume")
def resume_job(job_id: str, url: Url = DEFAULT_URL) -> None:
    """Resume a paused job: it is queued and continues from its checkpoint."""
    job = ApiClient(url).post(f"/v1/fine_tuning/jobs/{job_id}/resume")
    console.print(f"Job {job_id} is {job['status']}.", soft_wrap=True)


@app.command("delete")
def delete_job(job_id: str, url: Url = DEFAULT_URL) -> None:
    """Delete a finished job with its events, checkpoints and logs. The model it made and its
    registry version stay. A job still queued, running or paused is refused: cancel it
    first."""
    done = ApiClient(url).delete(f"/v1/fine_tuning/jobs/{job_id}")
    kept = done["kept_models"]
    console.print(
        f"Job {escape(job_id)} deleted ({len(done['removed'])} folder(s) removed)."
        + (f" Kept its model {escape(', '.join(kept))}." if kept else ""),
        soft_wrap=True,
    )


@app.command("watch")
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
    raise typer.Exit(0 if job["status"] == JobStatus.SUCCEEDED else 1)


def _http_poll(api: ApiClient, job_id: str) -> Poll:
    """Job from the API, message events from its event stream (SSE), which a thread reads
    and reconnects with Last-Event-ID when the connection drops."""
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
                if job["status"] not in TERMINAL or time.monotonic() > deadline:
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


def _follow_stream(api: ApiClient, job_id: str, arrived: queue.Queue[dict[str, Any]]) -> None:
    """Put each message event of the job's stream into `arrived`, then `{"_end": True}` when
    the stream says the job has ended."""
    stream = api.events(f"/v1/fine_tuning/jobs/{job_id}/events/stream", type="message")
    for _, name, data in stream:
        if name == "end":
            arrived.put({"_end": True})
            return
        arrived.put(json.loads(data))

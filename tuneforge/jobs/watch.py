"""Following a job in a terminal: a live progress bar and the job's message events.

`tuneforge jobs watch` feeds it over HTTP and `tuneforge train` from the local database; both
hand over a `Poll`, which returns the public job object (`api.schemas.fine_tuning`) and the
message events that it has not returned before, oldest first.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn

from tuneforge.jobs.status import TERMINAL

Poll = Callable[[], tuple[dict[str, Any], list[dict[str, Any]]]]

EVENT_STYLES = {"warn": "yellow", "error": "bold red"}


def watch_job(
    poll: Poll,
    console: Console,
    *,
    interval: float = 1.0,
    on_interrupt: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Show the job's progress and new events until it has ended; return its final object.

    Ctrl-C calls `on_interrupt` and goes on watching (for a job this process owns, which
    should end as cancelled rather than be left behind); without one, KeyboardInterrupt
    propagates and only the watching stops."""
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[steps]}"),
        TextColumn("{task.fields[percent]}"),
        TextColumn("{task.fields[loss]}"),
        TextColumn("{task.fields[lr]}"),
        TextColumn("{task.fields[eta]}"),
    )
    job, events = poll()  # before the display starts, so that an unknown job shows no bar
    with Progress(*columns, console=console) as display:
        task = display.add_task("", total=None, **progress_fields(job))
        while True:
            for event in events:
                display.console.print(format_event(event), soft_wrap=True)
            progress = job.get("progress") or {}
            display.update(
                task,
                description=f"[bold]{job['status']}[/]",
                total=progress.get("total_steps") or None,
                completed=progress.get("step", 0),
                **progress_fields(job),
            )
            if job["status"] in TERMINAL:
                break
            try:
                time.sleep(interval)
                job, events = poll()
            except KeyboardInterrupt:
                if on_interrupt is None:
                    raise
                on_interrupt()
                events = []
    print_outcome(job, console)
    return job


def progress_fields(job: dict[str, Any]) -> dict[str, Any]:
    """The text beside the bar: steps, percent, latest loss and learning rate, and ETA."""
    progress = job.get("progress") or {}
    metrics = job.get("metrics") or {}
    total = progress.get("total_steps")
    loss = metrics.get("loss", metrics.get("train_loss"))
    rate = metrics.get("learning_rate")
    eta = progress.get("eta_seconds") if job["status"] == "running" else None
    return {
        "steps": f"step {progress.get('step', 0)}/{total}" if total else "step -/-",
        "percent": f"{progress['percent']:.0f}%" if "percent" in progress else "",
        "loss": f"loss {loss:.4f}" if loss is not None else "",
        "lr": f"lr {rate:.2e}" if rate is not None else "",
        "eta": f"ETA {_clock(eta)}" if eta is not None else "",
    }


def format_event(event: dict[str, Any]) -> str:
    """One event as a line of rich markup: time, level (if not info) and message."""
    when = datetime.fromtimestamp(event["created_at"]).strftime("%H:%M:%S")
    level = event.get("level", "info")
    message = escape(event["message"])
    if level in EVENT_STYLES:
        return f"[dim]{when}[/] [{EVENT_STYLES[level]}]{level}: {message}[/]"
    return f"[dim]{when}[/] {message}"


def print_outcome(job: dict[str, Any], console: Console) -> None:
    """How the job ended: its fine-tuned model and evaluation, or its error."""
    status = job["status"]
    if status == "succeeded":
        console.print(
            f"[green]Job {job['id']} succeeded.[/] Fine-tuned model: "
            f"[bold]{escape(job['fine_tuned_model'])}[/]",
            soft_wrap=True,
        )
        evaluation = job.get("evaluation") or {}
        key = evaluation.get("primary_metric")
        before = (evaluation.get("base_model") or {}).get(key)
        after = (evaluation.get("fine_tuned_model") or {}).get(key)
        if key and before is not None and after is not None:
            console.print(f"{escape(key)}: {before:.4f} (base) -> {after:.4f} (fine-tuned)")
    elif status == "failed":
        error = job.get("error") or {}
        console.print(
            f"[bold red]Job {job['id']} failed[/] ({escape(str(error.get('code')))}): "
            f"{escape(str(error.get('message')))}",
            soft_wrap=True,
        )
    else:
        console.print(f"[yellow]Job {job['id']} was cancelled.[/]", soft_wrap=True)


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"

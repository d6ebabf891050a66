"""Running the service on this machine: `serve` (the API and a worker) and `worker`."""

from __future__ import annotations

import signal
from typing import TYPE_CHECKING, Annotated

import typer

from tuneforge.cli.console import console, fail
from tuneforge.cli.options import split_list
from tuneforge.defaults import DEFAULT_HOST, DEFAULT_PORT

if TYPE_CHECKING:
    from tuneforge.config import Settings
    from tuneforge.db.store import Store


def serve(
    host: Annotated[
        str | None, typer.Option(help=f"Address to bind (default {DEFAULT_HOST}).")
    ] = None,
    port: Annotated[int | None, typer.Option(help=f"Port (default {DEFAULT_PORT}).")] = None,
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
    _say_where_models_come_from(settings)
    uvicorn.run(
        create_app(settings, run_worker=worker),
        host=settings.host,
        port=settings.port,
        log_level="info",
    )


def _say_where_models_come_from(settings: Settings) -> None:
    """The base models this machine has, and where they come from: the first lines a
    newcomer reads (`make serve`)."""
    from huggingface_hub import constants

    from tuneforge.cli.doctor import local_models

    names = local_models(settings)
    dirs = ":".join(str(d) for d in settings.model_dirs) or "not set"
    hub = "off" if constants.HF_HUB_OFFLINE else "on (downloads a Hub id on first use)"
    shown = ", ".join(names[:6]) + (f", … ({len(names) - 6} more)" if len(names) > 6 else "")
    console.print(
        f"Models on this machine: {len(names)}{': ' + shown if names else ''}. They come from "
        f"the data folder ({settings.home}), TUNEFORGE_MODEL_DIRS ({dirs}) and the Hugging "
        f"Face cache ({constants.HF_HUB_CACHE}); the Hub is {hub}."
        + ("" if names else " To add one offline, see the README's \"A base model, offline\" "
           "(or run `tuneforge doctor`)."),
        soft_wrap=True,
        markup=False,
        highlight=False,
    )


def _refuse_open_exposure(settings: Settings) -> None:
    """Beyond loopback, the API only runs behind API keys."""
    from tuneforge.api.security import is_loopback

    if is_loopback(settings.host):
        return
    store = local_store(settings)
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


def local_store(settings: Settings) -> Store:
    """The configured database, its schema created if need be, and the data folder."""
    from tuneforge.db.store import Store

    settings.ensure_dirs()
    store = Store(settings.db_url)
    store.create_schema()
    return store


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
    threads: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Threads of each job process this worker starts (default: its share of the "
            "cores, see --job-slots; TUNEFORGE_JOB_THREADS).",
        ),
    ] = None,
    job_slots: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Jobs that run at once on this machine (its workers): each job process "
            "computes on 1/N of the cores (TUNEFORGE_JOB_SLOTS).",
        ),
    ] = None,
) -> None:
    """Run a worker that claims queued jobs from the configured database. Any number of
    workers, on any machines, may share one PostgreSQL database. SIGTERM or Ctrl-C: the
    running job writes a checkpoint and goes back to the queue."""
    import threading

    from tuneforge.config import get_settings
    from tuneforge.jobs.worker import Worker
    from tuneforge.studies.driver import StudyDriver

    settings = get_settings()
    budget = {"job_threads": threads, "job_slots": job_slots}
    settings = settings.model_copy(update={k: v for k, v in budget.items() if v is not None})
    store = local_store(settings)
    worker = Worker(
        store,
        settings,
        worker_id,
        kinds=split_list(kinds),
        devices=split_list(devices),
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

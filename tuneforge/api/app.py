"""The FastAPI application; `tuneforge serve` runs it with an embedded worker."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from tuneforge import __version__
from tuneforge.api import docs, errors, openapi
from tuneforge.api.edge import JsonTextCheck
from tuneforge.api.event_watch import EventWatcher
from tuneforge.api.limits import BodySizeLimit
from tuneforge.api.routes import (
    audit,
    classifications,
    dashboard,
    datasets,
    deployments,
    evaluations,
    exports,
    feedback,
    files,
    fine_tuning,
    graders,
    metrics,
    model_imports,
    models,
    registry,
    rerank,
    serving,
    statistics,
    studies,
    synthetic_data,
    training_seed,
    workers,
)
from tuneforge.api.routes.model_imports import MODEL_UPLOAD_PATH
from tuneforge.api.schemas.system import HealthPublic
from tuneforge.api.security import ApiGuard
from tuneforge.config import Settings
from tuneforge.datasets.sweep import sweep_at_start
from tuneforge.db.store import Store
from tuneforge.jobs.worker import Worker
from tuneforge.monitoring.usage import UsageMeter
from tuneforge.serving.cache import ModelCache
from tuneforge.studies.driver import StudyDriver

JSON_BODY_LIMIT = 1024 * 1024


def create_app(settings: Settings, *, run_worker: bool = True) -> FastAPI:
    """The API over `settings`' database; with `run_worker`, one worker runs in a thread."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.ensure_dirs()
        store = Store(settings.db_url)
        store.create_schema()
        sweep_at_start(store, settings)  # what a crash left in the data folder (issue 22)
        app.state.store = store
        app.state.settings = settings
        app.state.model_cache = ModelCache(settings.serving_memory_mb * 1024 * 1024)
        app.state.event_watcher = EventWatcher(store)
        meter = app.state.usage_meter = UsageMeter(store)
        flushes_stop = threading.Event()
        flushes = threading.Thread(
            target=meter.run_flushes, args=(flushes_stop,), name="tuneforge-usage", daemon=True
        )
        flushes.start()
        worker = None
        if run_worker:
            worker = Worker(store, settings)
            thread = threading.Thread(
                target=worker.run_forever, name="tuneforge-worker", daemon=True
            )
            thread.start()
        app.state.worker = worker
        # Studies are coordinated beside the worker, never in its place: a study waits on
        # trial jobs that the worker runs.
        driver = StudyDriver(store, settings) if run_worker else None
        if driver is not None:
            driver_thread = threading.Thread(
                target=driver.run_forever, name="tuneforge-studies", daemon=True
            )
            driver_thread.start()
        try:
            yield
        finally:
            if driver is not None:
                driver.stop.set()
                driver_thread.join(timeout=30)
            if worker is not None:
                # The running job checkpoints and goes back to the queue (see Worker).
                worker.stop.set()
                thread.join(timeout=settings.shutdown_grace_seconds + 15)
            flushes_stop.set()  # the last minutes counted are stored before the store closes
            flushes.join(timeout=30)
            app.state.model_cache.clear()
            store.dispose()

    app = FastAPI(
        title="tuneforge",
        version=__version__,
        lifespan=lifespan,
        description="Self-hosted fine-tuning: files, datasets, jobs, models.",
        # Served by tuneforge.api.docs, with assets from a package rather than a CDN.
        docs_url=None,
        redoc_url=None,
    )
    errors.install(app)
    openapi.install(app)
    docs.install(app)
    # Innermost: what no exception handler took is still answered in our shape.
    app.add_middleware(errors.LastResort)
    # Inside the body limit, which bounds the JSON body it reads whole.
    app.add_middleware(JsonTextCheck, limit=JSON_BODY_LIMIT)
    app.add_middleware(
        BodySizeLimit,
        limit=JSON_BODY_LIMIT,
        idle_seconds=settings.body_idle_seconds,
        # Room for the multipart framing around the file.
        upload_limits={
            "/v1/files": settings.max_upload_bytes + 64 * 1024,
            MODEL_UPLOAD_PATH: settings.max_model_upload_bytes + 64 * 1024,
        },
    )
    # Added last, so outermost: Host, key and rate checks come before the body is read.
    app.add_middleware(ApiGuard, settings=settings)
    for module in (
        audit,
        files,
        datasets,
        fine_tuning,
        graders,
        evaluations,
        exports,
        deployments,
        feedback,
        synthetic_data,
        models,
        model_imports,
        classifications,
        registry,
        rerank,
        serving,
        studies,
        training_seed,
        workers,
        statistics,
        metrics,
        dashboard,
    ):
        app.include_router(module.router)

    @app.get("/health", tags=["system"])
    def health() -> HealthPublic:
        worker = app.state.worker
        return HealthPublic(
            version=__version__,
            worker=worker.worker_id if worker else None,
            jobs=app.state.store.count_jobs(),
        )

    return app

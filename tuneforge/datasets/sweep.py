"""The start-up sweep of the data folder: what a crash left behind that no row refers to.

A kill at the wrong moment can leave, with no database row:
- `files/file-…` (renamed into place, its row never written), `files/file-….part` (an upload
  cut short), and anything kept beside a file under its name (`file-….<suffix>`);
- `.staging-<job>-<lease>` folders of a training run (under `models/`) or an export (under
  `exports/`) that will never be renamed into place;
- `.staging-<name>-<hex>` folders of a model import (under `models/imported/`).

The sweep removes those, logs each, and never removes anything a row refers to. Other
processes may share the data folder (a second server or worker) and be writing right now,
so an item is left alone while
- it is younger than GRACE_SECONDS (a write that is just starting), or
- an upload holds its lock (`hold`, taken by tuneforge.datasets.ingest from the first byte
  until the file's row is committed; the kernel drops it when the process dies), or
- its job still runs under that lease (training, export), or any model import runs.
What was skipped as too young is looked at once more after GRACE_SECONDS, in the background.
"""

from __future__ import annotations

import fcntl
import logging
import shutil
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

from tuneforge.config import Settings
from tuneforge.db.store import Store
from tuneforge.jobs.status import JobStatus

log = logging.getLogger(__name__)

GRACE_SECONDS = 5.0
STAGING = ".staging-"
IMPORT_KIND = "model_import"


def hold(file: IO[Any]) -> None:
    """Mark an open file as being written by this process: the sweep leaves it (and what is
    kept beside it) alone until the file is closed or the process ends."""
    fcntl.flock(file.fileno(), fcntl.LOCK_EX)


def is_held(path: Path) -> bool:
    """Whether some process holds `path` (see `hold`)."""
    try:
        with path.open("rb") as probe:
            fcntl.flock(probe.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:  # gone meanwhile, or a folder
        return False
    return False


def _young(paths: Iterable[Path], now: float) -> bool:
    for path in paths:
        try:
            if now - path.lstat().st_mtime < GRACE_SECONDS:
                return True
        except FileNotFoundError:
            continue
    return False


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
    log.warning("Sweep: removed %s, which no database row refers to.", path)


def sweep_files(store: Store, settings: Settings, now: float) -> tuple[list[Path], int]:
    """Remove stored files, parts and files kept beside them whose file has no row.
    Returns (what was removed, how many items were skipped as too young)."""
    if not settings.files_dir.is_dir():
        return [], 0
    groups: dict[str, list[Path]] = {}
    # Only what uploads write (`file-<id>` and `file-<id>.<suffix>`); anything else there is
    # not the sweep's to judge.
    for path in settings.files_dir.glob("file-*"):
        groups.setdefault(path.name.split(".", 1)[0], []).append(path)
    known = store.file_ids()
    removed: list[Path] = []
    young = 0
    for file_id, paths in sorted(groups.items()):
        if file_id in known:
            continue
        if _young(paths, now):
            young += 1
            continue
        # Checked again after the lock test: an upload holds its lock until its row commits.
        if any(is_held(p) for p in paths) or store.get_file(file_id) is not None:
            continue
        for path in paths:
            _remove(path)
            removed.append(path)
    return removed, young


def _staging_folders(settings: Settings) -> list[Path]:
    roots = [settings.models_dir, settings.home / "exports", settings.models_dir / "imported"]
    return [p for root in roots if root.is_dir() for p in root.glob(f"{STAGING}*")]


def _staging_in_use(store: Store, folder: Path, imports_running: bool) -> bool:
    """Whether a run may still write into this staging folder."""
    job_id, _, lease = folder.name.removeprefix(STAGING).rpartition("-")
    job = store.get_job(job_id) if lease.isdigit() else None
    if job is None:  # a model import's folder, named after the model
        return imports_running
    return job.status == JobStatus.RUNNING.value and job.lease == int(lease)


def sweep_staging(store: Store, settings: Settings, now: float) -> tuple[list[Path], int]:
    """Remove staging folders no running job writes into. Returns (removed, young)."""
    running, _ = store.list_jobs(status=JobStatus.RUNNING.value, kind=IMPORT_KIND, limit=1)
    removed: list[Path] = []
    young = 0
    for folder in _staging_folders(settings):
        if _young([folder], now):
            young += 1
        elif not _staging_in_use(store, folder, bool(running)):
            _remove(folder)
            removed.append(folder)
    return removed, young


def sweep_data_folder(store: Store, settings: Settings) -> tuple[list[Path], int]:
    """One pass over the data folder (see the module's docstring). Returns (what was
    removed, how many items were too young to judge)."""
    now = time.time()
    files, young_files = sweep_files(store, settings, now)
    staging, young_staging = sweep_staging(store, settings, now)
    return files + staging, young_files + young_staging


def sweep_at_start(store: Store, settings: Settings) -> None:
    """Sweep the data folder before the service answers; what was too young to judge (a
    crash just before this start, or another process writing) is looked at once more after
    GRACE_SECONDS, in the background."""
    removed, young = sweep_data_folder(store, settings)
    _report(settings, removed, young)
    if not young:
        return

    def again() -> None:
        time.sleep(GRACE_SECONDS)
        try:
            _report(settings, *sweep_data_folder(store, settings))
        except Exception:  # never take the service down for its housekeeping
            log.exception("Sweep of %s failed.", settings.home)

    threading.Thread(target=again, name="tuneforge-sweep", daemon=True).start()


def _report(settings: Settings, removed: list[Path], young: int) -> None:
    if removed:
        log.warning("Sweep of %s: %d orphan(s) removed.", settings.home, len(removed))
    if young:
        log.info(
            "Sweep of %s: %d item(s) too young to judge; looked at again in %g s.",
            settings.home,
            young,
            GRACE_SECONDS,
        )

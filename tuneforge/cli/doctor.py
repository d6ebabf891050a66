"""`tuneforge doctor`: what this machine and configuration can do, one line per check, each
with what to do when it fails. It reads the same settings as `tuneforge serve` (TUNEFORGE_HOME,
DATABASE_URL, TUNEFORGE_MODEL_DIRS, HF_HOME, ...) and changes nothing: no folder is created
and no migration is run. Exit code 1 when a required check fails."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rich.markup import escape

from tuneforge.cli.console import console

if TYPE_CHECKING:
    from tuneforge.config import Settings

# Below this much free space, training and exports soon fail with disk_full.
LOW_SPACE = 5 * 1024**3
NO_SPACE = 1024**3
MIN_PYTHON = (3, 11)  # pyproject's requires-python


@dataclass
class Check:
    """One line of the report: `state` is ok, warn (works, with a limit) or fail."""

    name: str
    state: str
    summary: str
    fix: str = ""


def ok(name: str, summary: str) -> Check:
    return Check(name, "ok", summary)


def doctor() -> None:
    """Check this machine's set-up, one line per check with what to do when it fails: Python,
    torch, CUDA, bitsandbytes, llama.cpp, the data folder, the database, the models
    available, disk space, the bind address and API keys. Exit code 1 when a required check
    fails (a warning is something that works, with a limit)."""
    from tuneforge.config import get_settings

    settings = get_settings()
    checks: list[Callable[[Settings], Check]] = [
        check_python, check_torch, check_cuda, check_bitsandbytes, check_llama_cpp,
        check_data_folder, check_database, check_models, check_disk_space, check_exposure,
    ]
    failed = 0
    for check in checks:
        try:
            result = check(settings)
        except Exception as exc:  # a check that breaks is a failed check, not a traceback
            result = Check(check.__name__.removeprefix("check_"), "fail",
                           f"{type(exc).__name__}: {exc}")
        failed += result.state == "fail"
        style = {"ok": "green", "warn": "yellow", "fail": "bold red"}[result.state]
        line = f"[{style}]{result.state:<4}[/] {result.name:<13} {escape(result.summary)}"
        if result.fix and result.state != "ok":
            line += f" [dim]-> {escape(result.fix)}[/]"
        console.print(line, soft_wrap=True)
    if failed:
        console.print(f"{failed} required check(s) failed.", soft_wrap=True)
        raise SystemExit(1)


def check_python(_: Settings) -> Check:
    version = ".".join(map(str, sys.version_info[:3]))
    if sys.version_info[:2] < MIN_PYTHON:
        return Check("python", "fail", f"Python {version}", "tuneforge needs Python 3.11 or newer")
    return ok("python", f"Python {version} ({sys.executable})")


def check_torch(_: Settings) -> Check:
    try:
        import torch
    except ImportError as exc:
        return Check("torch", "fail", f"not importable ({exc})",
                     "pip install torch (make setup installs the CPU build)")
    return ok("torch", f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")


def check_cuda(_: Settings) -> Check:
    import torch

    if not torch.cuda.is_available():
        return Check("cuda", "warn", "no CUDA GPU: training and serving run on the CPU",
                     "for a GPU, install a CUDA build of torch (pip install torch --index-url "
                     "https://download.pytorch.org/whl/cu124) on a machine with an NVIDIA driver")
    names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return ok("cuda", f"CUDA {torch.version.cuda}: {', '.join(names)}")


def check_bitsandbytes(_: Settings) -> Check:
    import importlib.util

    import torch

    found = importlib.util.find_spec("bitsandbytes") is not None
    if found:
        return ok("bitsandbytes", "installed: 4-bit and 8-bit loading (QLoRA) on CUDA")
    if not torch.cuda.is_available():
        return ok("bitsandbytes", "not installed; not needed without CUDA (quantization none)")
    return Check("bitsandbytes", "warn", "not installed: no 4-bit/8-bit loading (QLoRA)",
                 "pip install 'tuneforge[cuda]'")


def check_llama_cpp(_: Settings) -> Check:
    try:
        import llama_cpp
    except Exception as exc:  # ImportError, or the shared library failing to load
        return Check("llama.cpp", "fail", f"llama_cpp does not import ({exc})",
                     "GGUF export needs it: pip install llama-cpp-python==0.3.36 (it compiles "
                     "llama.cpp; CMAKE_ARGS as in the Makefile)")
    has_quantize = hasattr(llama_cpp, "llama_model_quantize")
    return ok("llama.cpp", f"llama-cpp-python {llama_cpp.__version__}: GGUF export"
              + (" and quantization" if has_quantize else ""))


def check_data_folder(settings: Settings) -> Check:
    home = settings.home
    existing = home
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return Check("data folder", "fail", f"{home}: {existing} is not a folder",
                     "point TUNEFORGE_HOME at a folder (it is created on first start)")
    if not os.access(existing, os.W_OK | os.X_OK):
        return Check("data folder", "fail", f"{home}: {existing} is not writable",
                     "make it writable for this user, or point TUNEFORGE_HOME elsewhere")
    if existing == home:
        try:
            with tempfile.NamedTemporaryFile(dir=home):
                pass
        except OSError as exc:
            return Check("data folder", "fail", f"{home}: cannot write ({exc.strerror})",
                         "make it writable for this user, or point TUNEFORGE_HOME elsewhere")
        return ok("data folder", f"{home} (writable)")
    return ok("data folder", f"{home} (created on first start)")


def check_database(settings: Settings) -> Check:
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from sqlalchemy import create_engine

    from tuneforge.db.migrate import MIGRATIONS

    url = settings.db_url
    shown = url.split("@")[-1] if "@" in url else url  # no password in the output
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        return ok("database", f"{shown}: none yet, created on first start")
    head = ScriptDirectory(str(MIGRATIONS)).get_current_head()
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            current = MigrationContext.configure(conn).get_current_revision()
    except Exception as exc:
        return Check("database", "fail", f"{shown}: cannot connect ({type(exc).__name__})",
                     "check DATABASE_URL (user, password, host, database) and that it runs")
    finally:
        engine.dispose()
    if current == head:
        return ok("database", f"{shown}: connects, migrations at head ({head})")
    if current is not None and current > (head or ""):
        return Check("database", "fail", f"{shown}: revision {current} is newer than {head}",
                     "a newer tuneforge wrote it: upgrade tuneforge")
    return Check("database", "warn", f"{shown}: at revision {current or 'none'}, head is {head}",
                 "`tuneforge serve` (or a worker) upgrades it when it starts")


def local_models(settings: Settings) -> list[str]:
    """The base and fine-tuned models this machine has: the data folder's (fine-tuned and
    imported), TUNEFORGE_MODEL_DIRS' folders, and the Hugging Face cache's."""
    names: list[str] = []
    names += _database_models(settings)
    for folder in settings.model_dirs:
        if not folder.is_dir():
            continue
        for candidate in sorted(folder.iterdir()):
            if _is_model(candidate):
                names.append(candidate.name)
            elif candidate.is_dir():
                names += [f"{candidate.name}/{c.name}" for c in sorted(candidate.iterdir())
                          if _is_model(c)]
    try:
        from huggingface_hub import scan_cache_dir

        names += sorted(r.repo_id for r in scan_cache_dir().repos if r.repo_type == "model")
    except Exception:  # no cache folder yet, or one it cannot read
        pass
    return list(dict.fromkeys(names))


def _is_model(folder: Path) -> bool:
    from tuneforge.registry.models import snapshot_or_self

    if not folder.is_dir():
        return False
    inner = snapshot_or_self(folder)
    return (inner / "config.json").is_file() or (inner / "modules.json").is_file()


def _database_models(settings: Settings) -> list[str]:
    url = settings.db_url
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        return []
    from sqlalchemy import create_engine, inspect, text

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            if "models" not in inspect(conn).get_table_names():
                return []
            rows = conn.execute(text("SELECT id FROM models WHERE kind = 'fine-tuned' "
                                     "OR provenance IS NOT NULL ORDER BY id"))
            return [str(r[0]) for r in rows]
    except Exception:
        return []
    finally:
        engine.dispose()


def check_models(settings: Settings) -> Check:
    names = local_models(settings)
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    if names:
        shown = ", ".join(names[:8]) + (f", … ({len(names) - 8} more)" if len(names) > 8 else "")
        return ok("models", f"{len(names)} on this machine: {shown}")
    fix = ("import one (`tuneforge models import FILE.gguf --name NAME`), set "
           "TUNEFORGE_MODEL_DIRS to a folder holding org/name model folders, or fill the "
           "Hugging Face cache (HF_HOME); README: A base model, offline")
    if offline:
        return Check("models", "fail", "none on this machine, and the Hub is off", fix)
    return Check("models", "warn", "none on this machine; a Hub id downloads on first use "
                 "(needs internet)", fix)


def check_disk_space(settings: Settings) -> Check:
    from huggingface_hub import constants

    places = {"data folder": settings.home, "model cache": Path(constants.HF_HUB_CACHE)}
    worst: tuple[int, str] | None = None
    parts = []
    for label, path in places.items():
        while not path.exists() and path != path.parent:
            path = path.parent
        free = shutil.disk_usage(path).free
        parts.append(f"{label} {free / 1024**3:.1f} GiB free")
        if worst is None or free < worst[0]:
            worst = (free, label)
    assert worst is not None
    summary = ", ".join(parts)
    fix = f"free space on the {worst[1]}'s disk (old jobs' checkpoints, exports), or move it"
    if worst[0] < NO_SPACE:
        return Check("disk space", "fail", summary, fix)
    if worst[0] < LOW_SPACE:
        return Check("disk space", "warn", summary, fix)
    return ok("disk space", summary)


def check_exposure(settings: Settings) -> Check:
    from tuneforge.api.security import is_loopback

    where = f"{settings.host}:{settings.port}"
    keys = _api_key_count(settings)
    if is_loopback(settings.host):
        if keys:
            return ok("bind, keys", f"{where} (this machine only), {keys} API key(s) required")
        return ok("bind, keys", f"{where} (this machine only), no API keys: open to local users")
    if keys:
        return ok("bind, keys", f"{where} (reachable from the network), {keys} API key(s)")
    return Check("bind, keys", "fail",
                 f"{where} is reachable from the network and no API key exists: serve refuses",
                 "tuneforge keys create --name NAME --scope admin, or TUNEFORGE_HOST=127.0.0.1")


def _api_key_count(settings: Settings) -> int:
    url = settings.db_url
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        return 0
    from sqlalchemy import create_engine, inspect, text

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            if "api_keys" not in inspect(conn).get_table_names():
                return 0
            return int(conn.execute(text(
                "SELECT COUNT(*) FROM api_keys WHERE revoked_at IS NULL")).scalar_one())
    except Exception:  # the database check says what is wrong with it
        return 0
    finally:
        engine.dispose()

"""`tuneforge doctor`, run as a user runs it (a real process): one line per check, a fix for
each that fails, exit code 1 when a required one fails; it changes nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tuneforge.db.store import Store

CHECKS = ("python", "torch", "cuda", "bitsandbytes", "llama.cpp", "data folder", "database",
          "models", "disk space", "bind, keys")


def doctor(**env: str) -> tuple[int, dict[str, str]]:
    """Exit code, and each check's line by its name."""
    full = {k: v for k, v in os.environ.items()
            if k not in ("DATABASE_URL", "TUNEFORGE_DATABASE_URL", "TUNEFORGE_MODEL_DIRS")}
    done = subprocess.run([sys.executable, "-m", "tuneforge.cli", "doctor"], env={**full, **env},
                          capture_output=True, text=True, timeout=120)
    lines = {}
    for line in done.stdout.splitlines():
        for name in CHECKS:
            if line[5:].startswith(name + " "):
                lines[name] = line
    assert set(lines) == set(CHECKS), done.stdout + done.stderr
    return done.returncode, lines


def test_a_working_set_up_passes_with_its_models_named(tmp_path: Path, offline_hub: Path) -> None:
    home = tmp_path / "data"
    home.mkdir()
    store = Store(f"sqlite:///{home / 'tuneforge.db'}")
    store.create_schema()
    store.dispose()
    # A cache of its own with MiniLM alone: other tests of the session add models to the
    # shared one.
    hub = tmp_path / "hf" / "hub"
    hub.mkdir(parents=True)
    minilm = "models--sentence-transformers--all-MiniLM-L6-v2"
    (hub / minilm).symlink_to(offline_hub / "hub" / minilm)
    code, lines = doctor(TUNEFORGE_HOME=str(home), HF_HOME=str(hub.parent), HF_HUB_OFFLINE="1")
    assert code == 0, lines
    assert lines["python"].startswith("ok   python        Python 3.")
    assert lines["database"].startswith("ok") and "migrations at head" in lines["database"]
    assert lines["data folder"].startswith("ok") and "(writable)" in lines["data folder"]
    assert "1 on this machine: sentence-transformers/all-MiniLM-L6-v2" in lines["models"]
    assert lines["bind, keys"].startswith("ok") and "127.0.0.1:8000" in lines["bind, keys"]
    assert lines["llama.cpp"].startswith("ok") and "GGUF export" in lines["llama.cpp"]


def test_each_failing_check_says_what_to_do_and_the_exit_code_is_1(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    empty = tmp_path / "empty-hf"
    empty.mkdir()
    code, lines = doctor(
        TUNEFORGE_HOME=str(blocker / "data"), HF_HOME=str(empty), HF_HUB_OFFLINE="1",
        TUNEFORGE_HOST="0.0.0.0", DATABASE_URL="postgresql+psycopg://nobody@127.0.0.1:1/none",
    )
    assert code == 1
    for name, says, fix in (
        ("data folder", "is not a folder", "-> point TUNEFORGE_HOME at a folder"),
        ("database", "cannot connect", "-> check DATABASE_URL"),
        ("models", "none on this machine, and the Hub is off", "TUNEFORGE_MODEL_DIRS"),
        ("bind, keys", "0.0.0.0:8000 is reachable from the network and no API key exists",
         "-> tuneforge keys create"),
    ):
        assert lines[name].startswith("fail") and says in lines[name], lines[name]
        assert fix in lines[name], lines[name]
    assert not (blocker / "data").exists()  # it changed nothing

"""Python graders, run apart: each call starts a process (`python_child`) that confines
itself before the grader's source runs, and is killed when it takes too long.

| wall                        | how                                                          |
|-----------------------------|--------------------------------------------------------------|
| no network                  | a network namespace of its own (only a loopback, down)       |
| no data folder              | a mount namespace of its own, an empty read-only tmpfs over  |
|                             | each folder of `hidden` (tuneforge's data folder)            |
| another user                | run by root: the grader runs as `nobody` (65534), so it      |
|                             | cannot signal tuneforge's processes or write its files, and  |
|                             | RLIMIT_NPROC bounds what it forks                            |
| bounded CPU time and memory | RLIMIT_CPU (then SIGKILL), RLIMIT_AS, RLIMIT_FSIZE,           |
|                             | RLIMIT_NOFILE; no core files                                 |
| bounded time                | killed (its whole process group) after `seconds`             |
| no sockets, processes,      | an audit hook in the process (see `python_child`)            |
| ctypes                      |                                                              |

Namespaces come from unshare(2): as root, or as any user where unprivileged user namespaces
are allowed. Where neither is possible the grader does not run (a server error of the
grader, `sandbox_unavailable`): it never runs with fewer walls than these.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHILD = Path(__file__).with_name("python_child.py")
# What comes back is a small JSON list; more is a grader writing where it should not.
MAX_OUTPUT_BYTES = 1024 * 1024


@dataclass(frozen=True)
class PythonLimits:
    """How a python grader's process is bounded (see the module's docstring)."""

    seconds: float = 60.0
    cpu_seconds: int = 60
    memory_mb: int = 2048
    hidden: tuple[Path, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class PythonOutcome:
    """One grade: its reward, or the grader's error (`error`), or the sandbox's own failure
    (`server_error`, a short type, with `error` saying more). `timed_out`: it was killed
    for taking too long."""

    reward: float | None = None
    error: str | None = None
    server_error: str | None = None
    timed_out: bool = False


def run_python(
    source: str, pairs: list[tuple[dict[str, Any], Any]], limits: PythonLimits
) -> list[PythonOutcome]:
    """`grade(sample, item)` of `source` for each (sample, item), in one confined process."""
    request = {
        "source": source,
        "pairs": pairs,
        "limits": {
            "cpu_seconds": limits.cpu_seconds,
            "memory_bytes": limits.memory_mb * 1024 * 1024,
            "hidden": [str(p) for p in limits.hidden],
        },
    }
    with tempfile.TemporaryDirectory(prefix="tuneforge-grader-") as workdir:
        os.chmod(workdir, 0o777)  # the grader may run as nobody
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": workdir,
            "TMPDIR": workdir,
            "LANG": "C.UTF-8",
            "OMP_NUM_THREADS": "1",
            "OPENBLAS_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
        }
        # Files, not pipes: what a grader writes is bounded by RLIMIT_FSIZE, never held here
        # beyond MAX_OUTPUT_BYTES.
        out_path, err_path = Path(workdir, ".result"), Path(workdir, ".stderr")
        with out_path.open("wb") as out_file, err_path.open("wb") as err_file:
            process = subprocess.Popen(
                [sys.executable, "-I", str(CHILD)],
                stdin=subprocess.PIPE,
                stdout=out_file,
                stderr=err_file,
                cwd=workdir,
                env=env,
                start_new_session=True,
            )
        try:
            process.communicate(json.dumps(request).encode(), timeout=limits.seconds)
        except subprocess.TimeoutExpired:
            message = f"The grader did not finish within {limits.seconds:g} s."
            return [PythonOutcome(error=message, timed_out=True)] * len(pairs)
        finally:
            _kill_group(process)
        out = _head(out_path, MAX_OUTPUT_BYTES + 1)
        err = _tail(err_path, 2000)
    return _outcomes(process.returncode, out, err, len(pairs), limits)


def _outcomes(
    returncode: int, out: bytes, err: bytes, count: int, limits: PythonLimits
) -> list[PythonOutcome]:
    if returncode == 0 and len(out) <= MAX_OUTPUT_BYTES:
        try:
            answers = json.loads(out)
        except ValueError:
            answers = None
        if isinstance(answers, dict) and "sandbox_error" in answers:
            outcome = PythonOutcome(
                error=str(answers["sandbox_error"]), server_error="sandbox_unavailable"
            )
            return [outcome] * count
        if isinstance(answers, list) and len(answers) == count:
            return [PythonOutcome(reward=a.get("reward"), error=a.get("error")) for a in answers]
    tail = err.decode(errors="replace").strip().splitlines()[-3:]
    if returncode < 0 or returncode > 128:
        try:
            name = signal.Signals(abs(returncode) % 128).name
        except ValueError:
            name = f"signal {abs(returncode) % 128}"
        why = {
            "SIGXCPU": f"it used more than {limits.cpu_seconds} s of CPU time",
            "SIGKILL": "it was killed (CPU time or memory limit)",
        }.get(name, f"it was ended by {name}")
        message = f"The grader's process stopped: {why}."
        if name in ("SIGXCPU", "SIGKILL"):
            return [PythonOutcome(error=message, timed_out=name == "SIGXCPU")] * count
    else:
        message = f"The grader's process failed (exit status {returncode})."
    if tail:
        message += " " + " | ".join(tail)[-500:]
    return [PythonOutcome(error=message)] * count


def _head(path: Path, size: int) -> bytes:
    with path.open("rb") as f:
        return f.read(size)


def _tail(path: Path, size: int) -> bytes:
    with path.open("rb") as f:
        f.seek(max(0, path.stat().st_size - size))
        return f.read()


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    """End the grader and whatever it started (its session's process group)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()

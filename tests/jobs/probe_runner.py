"""A job process that reports what it is (pid, parent, session, arguments, command line,
environment and folder) in JOB_DIR/probe.json, then does what JOB_DIR/probe-action says:
`exit N`, or `wait` until a signal ends it. The tests of the warm job process run it as the
runner."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

from tuneforge.config import Settings


def main() -> int:
    job_id, _lease, settings_json = sys.argv[1:]
    folder = Settings.model_validate_json(settings_json).jobs_dir / job_id
    report = {
        "pid": os.getpid(),
        "parent": os.getppid(),
        "session": os.getsid(0),
        "argv": sys.argv[1:],
        "cmdline": Path("/proc/self/cmdline").read_bytes().rstrip(b"\0").decode().split("\0"),
        "env": dict(os.environ),
        "cwd": os.getcwd(),
    }
    (folder / "probe.tmp").write_text(json.dumps(report))
    (folder / "probe.tmp").rename(folder / "probe.json")
    print(f"probe of {job_id} ran", flush=True)
    action = folder / "probe-action"
    what, *value = action.read_text().split() if action.exists() else ["exit", "0"]
    while what == "wait":
        signal.pause()
    return int(value[0])


if __name__ == "__main__":
    sys.exit(main())

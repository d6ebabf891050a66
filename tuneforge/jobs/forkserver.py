"""The warm job process: a fork server that has imported the training libraries once, and
forks a fresh process for each job.

A job process started cold (`python -m RUNNER JOB_ID LEASE SETTINGS`) spends seconds
importing torch, transformers, peft and sentence-transformers before it trains. A worker
therefore starts one fork server (`python -m tuneforge.jobs.forkserver RUNNER`, in a session
of its own) that imports the runner module and the modules it names in `PRELOAD`, and then
forks a child for each single-process job. The child is what the cold process would have
been: a session of its own, its output appended to the job's `process.log`, the worker's
environment of the moment, `python -m RUNNER JOB_ID ...` as its command line in ps and /proc,
`main()` of the runner module with those arguments, and memory of its own, freed at its exit.

The server only imports: it runs no torch operation and starts no thread of its own before it
forks (a Python thread or a loaded CUDA driver after the imports turns it away: jobs then start
cold). The pools some libraries start as they load (OpenBLAS's, jemalloc's) restart in the
child through their fork handlers. Each child gets the worker's environment and folder of the
moment; values that libraries read from the environment as they are imported (few: most read
it when first used) come from the worker's environment when the server started.

The server is each child's parent: it tells the worker the child's pid and, later, its exit
status, and `ForkedJob` gives the worker the `subprocess.Popen` calls it supervises with.
When the worker's end of the socket closes (the worker stopped, or was killed), the server
exits; a running child then notices that its parent changed and stops, as a job process does
whose worker is gone. A job the server cannot start (it failed to start, ended, or does not
answer) starts cold instead; nothing is lost.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import json
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

BUFFER = 1 << 20  # the largest message: a request carries the worker's environment
# How long a job may wait for the server to fork it (it may still be importing) before the
# server counts as hung and the job starts cold.
START_TIMEOUT = 300.0
# The exit status of a child whose server ended before it: no process can read it any more.
UNKNOWN_EXIT = 1


def start_process(
    command: list[str], log_path: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start `command` cold, in a session of its own, its output appended to `log_path`."""
    with log_path.open("ab") as log_file:
        return subprocess.Popen(
            command, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
        )


class ForkServer:
    """The worker's side: starts the server, asks it for job processes, reads its answers.
    One server per worker, for the worker's one job at a time."""

    def __init__(self, runner_module: str, room: int):
        self.runner_module = runner_module
        # Bytes a job's command line needs beyond the runner's name (its arguments): the
        # child writes its command line over the server's, so the server's must be as long.
        self.room = room
        self.generation = 0  # which server: a new one is started after one ended
        self.ready = False
        self.started: dict[int, int] = {}  # request id: the pid of its child
        self.exits: dict[int, int] = {}  # pid: exit status, as Popen.returncode
        self._wanted = False
        self._failed = False
        self._process: subprocess.Popen[bytes] | None = None
        self._channel: socket.socket | None = None
        self._requests = 0

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self) -> None:
        """Start the server (it imports in the background); later jobs are forked from it."""
        self._wanted = True
        if self._process is not None or self._failed:
            return
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with theirs:
            command = [sys.executable, "-m", __name__, self.runner_module, str(theirs.fileno())]
            try:
                self._process = subprocess.Popen(
                    [*command, " " * self.room],
                    pass_fds=(theirs.fileno(),),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    start_new_session=True,
                )
            except OSError as exc:
                ours.close()
                self._give_up(f"it could not start ({exc})")
                return
        self._channel = ours
        self.generation += 1
        self.ready = False

    def start_job(self, command: list[str], log_path: Path) -> JobProcess:
        """The process of a job's `command` (`python -m RUNNER ARGS...`): forked by the
        server once it has imported, or started cold where there is none."""
        self.pump(0)  # notice a server that has ended
        if self._wanted:
            self.start()
        if self._channel is None:
            return start_process(command, log_path)
        self._requests += 1
        request = {
            "id": self._requests,
            "args": command[3:],
            "env": dict(os.environ),
            "cwd": os.getcwd(),
        }
        with log_path.open("ab") as log_file:
            try:
                socket.send_fds(self._channel, [json.dumps(request).encode()], [log_file.fileno()])
            except OSError:
                self._ended()
                return start_process(command, log_path)
        return ForkedJob(self, self._requests, command, log_path)

    def serves(self, generation: int) -> bool:
        """Whether the server of `generation` still runs."""
        return self._channel is not None and self.generation == generation

    def pump(self, timeout: float) -> None:
        """Take in what the server has sent, waiting up to `timeout` seconds for a first
        message."""
        while self._channel is not None:
            if not select.select([self._channel], [], [], timeout)[0]:
                return
            try:
                data = self._channel.recv(BUFFER)
            except OSError:
                data = b""
            if not data:
                self._ended()
                return
            message = json.loads(data)
            if "ready" in message:
                self.ready = True
            elif "started" in message:
                self.exits.pop(message["started"], None)  # an earlier child's, pid reused
                self.started[message["id"]] = message["started"]
            else:
                self.exits[message["exited"]] = message["returncode"]
            timeout = 0

    def abandon(self) -> None:
        """End a server that does not answer; what it sent before is still read."""
        if self._process is not None:
            self._process.kill()
            self._process.wait()
        self.pump(0)

    def close(self) -> None:
        """End the server (a child still running then notices it and stops); jobs start cold
        until `start` is called again."""
        self._wanted = False
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        if self._process is not None:
            self._process.kill()  # it keeps nothing; a running child notices and stops
            self._process.wait()
            self._process = None

    def _ended(self) -> None:
        assert self._channel is not None and self._process is not None
        self._channel.close()
        self._channel = None
        code = self._process.wait()
        self._process = None
        if self.ready:
            log.warning("The warm job process ended (exit code %s); starting another.", code)
        else:
            self._give_up(f"it ended before it was ready (exit code {code}; see its output)")

    def _give_up(self, why: str) -> None:
        log.warning("No warm job process: %s. Jobs start cold, each importing on its own.", why)
        self._failed = True


class ForkedJob:
    """A job process forked by the server, supervised like a `subprocess.Popen`: `pid` is the
    child's own (and its session's), `poll` and `wait` give the exit status the server read.
    If the server ends or stays silent before it has forked the child, the job starts cold."""

    def __init__(self, server: ForkServer, request_id: int, command: list[str], log_path: Path):
        self.args = command
        self.returncode: int | None = None
        self._server = server
        self._id = request_id
        self._generation = server.generation
        self._log_path = log_path
        self._start_by = time.monotonic() + START_TIMEOUT
        self._child: int | None = None
        self._pidfd: int | None = None  # the child's, to see it exit if the server has gone
        self._cold: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        """The job process's pid; waits for the server to fork it."""
        while self._child is None and self._cold is None:
            self._advance(1.0)
        if self._cold is not None:
            return self._cold.pid
        assert self._child is not None
        return self._child

    def poll(self) -> int | None:
        if self.returncode is None:
            self._advance(0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.returncode is None:
            left = 1.0 if deadline is None else deadline - time.monotonic()
            if left <= 0:
                raise subprocess.TimeoutExpired(self.args, timeout or 0)
            self._advance(min(left, 1.0))
        return self.returncode

    def _advance(self, timeout: float) -> None:
        """Take in what happened to the job, waiting up to `timeout` seconds for news."""
        if self._cold is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.returncode = self._cold.wait(timeout)
            return
        server = self._server
        self._take_news()
        if self.returncode is not None:
            return
        if server.serves(self._generation):
            if self._child is None and time.monotonic() > self._start_by:
                log.warning("The warm job process gave no answer in %g s.", START_TIMEOUT)
                server.abandon()
            else:
                server.pump(timeout)
            self._take_news()
            if self.returncode is not None or server.serves(self._generation):
                return
        # The server has ended.
        if self._child is None:
            log.warning("The warm job process could not start the job; starting it cold.")
            self._cold = start_process(self.args, self._log_path)
        elif self._pidfd is None or select.select([self._pidfd], [], [], timeout)[0]:
            log.warning(
                "Job process %s ended after its warm job process: exit status unknown.", self._child
            )
            self._exited(UNKNOWN_EXIT)

    def _take_news(self) -> None:
        """Take the child's pid and exit status, where the server has reported them."""
        server = self._server
        if self._child is None:
            self._child = server.started.pop(self._id, None)
            if self._child is not None:
                with contextlib.suppress(OSError):  # gone already: its exit status follows
                    self._pidfd = os.pidfd_open(self._child)
        if self._child is not None and self._child in server.exits:
            self._exited(server.exits.pop(self._child))

    def _exited(self, code: int) -> None:
        self.returncode = code
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None


JobProcess = subprocess.Popen[bytes] | ForkedJob


# -- the server ------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int | None:
    """The server: `RUNNER_MODULE CHANNEL_FD ROOM`. Returns in the server when the worker is
    gone, and in each child with the runner's result."""
    runner_module, fd, _room = sys.argv[1:] if argv is None else argv
    channel = socket.socket(fileno=int(fd))
    # A service manager may send SIGTERM to every process of the service: the worker and its
    # job then stop in order (the job writes its checkpoint), and this process, whose exit
    # would end the job at once, ends with the worker.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # torch.cuda.is_available() during the imports then asks NVML and leaves CUDA alone.
    os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] = "1"
    module = importlib.import_module(runner_module)
    for name in getattr(module, "PRELOAD", ()):
        importlib.import_module(name)
    hazard = _fork_hazard()
    if hazard:
        print(f"tuneforge warm job process: {hazard}; not forking jobs.", file=sys.stderr)
        return 1
    if not _send(channel, {"ready": os.getpid()}):
        return 0
    request = _serve(channel)
    if request is None:
        return 0
    os.environ.clear()
    os.environ.update(request["env"])
    os.chdir(request["cwd"])
    if "numpy" in sys.modules:  # a cold process seeds numpy's global generator afresh
        sys.modules["numpy"].random.seed()
    sys.argv = [str(module.__file__), *request["args"]]
    _show_command_line([sys.executable, "-m", runner_module, *request["args"]])
    result: int | None = module.main()
    return result


def _fork_hazard() -> str | None:
    """Why forking here would be unsafe, if it would."""
    if threading.active_count() > 1:
        return "a thread was started while importing"
    try:
        os.close(os.pidfd_open(os.getpid()))
    except (AttributeError, OSError):
        return "this system cannot watch processes through pidfds (Linux 5.3 and later can)"
    with contextlib.suppress(OSError):
        if "libcuda.so" in Path("/proc/self/maps").read_text():
            return "the CUDA driver was loaded while importing"
    return None


def _serve(channel: socket.socket) -> dict[str, Any] | None:
    """Fork a child for each request and report its pid and exit status, until the worker
    closes its end (None); in each child, its request."""
    children: dict[int, int] = {}  # pidfd: pid
    while True:
        readable = select.select([channel.fileno(), *children], [], [])[0]
        for pidfd in [fd for fd in readable if fd in children]:
            pid = children.pop(pidfd)
            os.close(pidfd)
            status = os.waitpid(pid, 0)[1]
            if not _send(channel, {"exited": pid, "returncode": os.waitstatus_to_exitcode(status)}):
                return None
        if channel.fileno() not in readable:
            continue
        try:
            data, fds, _, _ = socket.recv_fds(channel, BUFFER, 1)
        except OSError:
            return None
        if not data:
            return None
        request = json.loads(data)
        if _fork(channel, request, fds[0], children):
            return dict(request)


def _fork(
    channel: socket.socket, request: dict[str, Any], log_fd: int, children: dict[int, int]
) -> bool:
    """Fork the child of `request`; True in the child. The child waits for word that the
    worker knows its pid: a child the worker does not know of never runs."""
    ours, theirs = socket.socketpair()
    sys.stdout.flush()
    sys.stderr.flush()
    with warnings.catch_warnings():
        # Python 3.12 warns of any thread; the libraries' pools restart in the child.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        ours.close()
        channel.close()
        for pidfd in children:
            os.close(pidfd)
        os.setsid()
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        os.close(log_fd)
        theirs.send(b"s")  # leads its session: the worker may signal it
        go = theirs.recv(1)
        theirs.close()
        if go != b"g":
            os._exit(1)  # the server ended before it had told the worker
        return True
    theirs.close()
    os.close(log_fd)
    with ours, contextlib.suppress(OSError):  # a child killed meanwhile is reported as ended
        ours.recv(1)
        children[os.pidfd_open(pid)] = pid
        if _send(channel, {"started": pid, "id": request["id"]}):
            ours.send(b"g")
    return False


def _send(channel: socket.socket, message: dict[str, Any]) -> bool:
    """Send to the worker; False if it is gone."""
    try:
        channel.send(json.dumps(message).encode())
    except OSError:
        return False
    return True


def _show_command_line(args: list[str]) -> None:
    """Write `args` over this process's command line (what ps and /proc/PID/cmdline show),
    cut to the room the server's own command line left."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        start, end = int(fields[45]), int(fields[46])  # arg_start and arg_end (fields 48, 49)
    except (OSError, IndexError, ValueError):
        return
    text = b"\0".join(arg.encode() for arg in args)[: end - start - 1]
    ctypes.memmove(start, text.ljust(end - start, b"\0"), end - start)


if __name__ == "__main__":
    sys.exit(main())

"""The worker: claims queued jobs and runs each in a process of its own.

While the process runs, the worker renews the job's lease (its heartbeat) and enforces what
the process may not manage itself: a cancel or timeout that it does not honour within the
grace period ends in a kill. When the process is gone and left the job `running`, the run
crashed: the job is retried from its last checkpoint, or failed at `max_attempts`.

A single-process job's process is forked from the worker's warm job process, which has
imported the training libraries already (tuneforge.jobs.forkserver; `warm_start`).

On shutdown (SIGTERM) the worker asks its job to checkpoint and waits for it; the job goes
back to the queue and continues on the next start, on this or any other worker.

A job on several machines (`distributed.num_machines`) is claimed by one worker, node 0: it
opens the run's rendezvous (its address and a port) and waits for idle workers on other
machines to join as nodes 1..N-1 before each machine starts its share of the processes. Only
node 0 holds the lease and settles the job; the others follow the run, and node 0 ends it
as a crash (retried from the last checkpoint) when one of them fails or goes silent, or
checkpoints and requeues it when one of them shuts down.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneforge.config import Settings
from tuneforge.db.store import Row, Store
from tuneforge.errors import InvalidStateError, LeaseLostError, TuneforgeError
from tuneforge.jobs.forkserver import ForkServer, JobProcess, start_process
from tuneforge.jobs.status import JobStatus, StopReason
from tuneforge.net import free_port
from tuneforge.training.devices import (
    accelerate_config,
    check_strategy,
    job_device_environment,
    mixed_precision,
    probe_capability,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Node:
    """This machine's place in a run: node `rank` of `machines`, meeting at address:port."""

    rank: int = 0
    machines: int = 1
    address: str = "127.0.0.1"
    port: int | None = None


class Worker:
    """Runs queued jobs one at a time until `stop` is set; optionally only some job kinds,
    or only jobs for some devices."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        worker_id: str | None = None,
        *,
        kinds: list[str] | None = None,
        devices: list[str] | None = None,
    ):
        self.store = store
        self.settings = settings
        self.worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}"
        self.kinds = kinds or None
        self.devices = devices or None
        self.stop = threading.Event()
        self.hostname = socket.gethostname()
        self._refused: set[tuple[str, int]] = set()  # runs whose folder this worker lacks
        self._forkserver = ForkServer(settings.runner_module, len(settings.model_dump_json()) + 100)

    def run_forever(self) -> None:
        self.store.register_worker(
            {
                "id": self.worker_id,
                "hostname": self.hostname,
                "pid": os.getpid(),
                "kinds": self.kinds,
                "devices": self.devices,
            }
        )
        last_recovery = last_beat = 0.0
        if self.settings.warm_start:
            self._forkserver.start()  # it imports while the worker waits for work
        try:
            while not self.stop.is_set():
                try:
                    if time.monotonic() - last_recovery > self.settings.stalled_after_seconds / 2:
                        self.store.requeue_stalled(self.settings.stalled_after_seconds)
                        last_recovery = time.monotonic()
                    ran = self.run_once()
                    if time.monotonic() - last_beat > self.settings.heartbeat_seconds:
                        self.store.worker_alive(self.worker_id, None)
                        last_beat = time.monotonic()
                except Exception:  # a database hiccup must not end the worker
                    log.exception("worker loop error")
                    ran = False
                if not ran:
                    self.stop.wait(self.settings.poll_seconds)
        finally:
            self._forkserver.close()
            with contextlib.suppress(Exception):
                self.store.worker_stopped(self.worker_id)

    def run_once(self, job_id: str | None = None) -> bool:
        """Claim and run one job (the oldest, or `job_id`) until its process ends; False if
        none was queued). A multi-machine run that waits for machines comes first: joining
        it lets a job go on that holds machines already."""
        if job_id is None and self._join_a_run():
            return True
        job = self.store.claim_next_job(
            self.worker_id, job_id, kinds=self.kinds, devices=self.devices
        )
        if job is None:
            return False
        self._supervise(job)
        return True

    def _heartbeats(self, process: JobProcess) -> Iterator[float]:
        """The time at each heartbeat interval while `process` runs; ends when it exits."""
        while process.poll() is None:
            try:
                process.wait(timeout=self.settings.heartbeat_seconds)
            except subprocess.TimeoutExpired:
                yield time.time()

    def _launch(self, job_id: str, lease: int, spec: dict[str, Any], node: Node) -> JobProcess:
        """Start this machine's share of a job: its runner, or a launcher of its ranks."""
        log_path = (
            self.settings.jobs_dir
            / job_id
            / ("process.log" if node.rank == 0 else f"process-node{node.rank}.log")
        )
        log_path.parent.mkdir(parents=True, exist_ok=True)
        runner_args = [job_id, str(lease), self.settings.model_dump_json()]
        if _world_size(spec) > 1:
            # The ranks are the launcher's children: they watch this worker's pid themselves.
            command, extra = launch_command(spec, self.settings.runner_module, runner_args, node)
            command.append(str(os.getpid()))
            return start_process(command, log_path, {**os.environ, **extra})
        command = [sys.executable, "-m", self.settings.runner_module, *runner_args]
        # Forked from the warm job process once the worker has started it (run_forever).
        return self._forkserver.start_job(command, log_path)

    def _supervise(self, job: Row) -> None:
        job_id, lease = job["id"], job["lease"]
        self.store.worker_alive(self.worker_id, job_id)
        node = Node()
        if _machines(job["spec"]) > 1:
            gathered = self._gather(job)
            if gathered is None:
                return
            node = gathered
        try:
            process = self._launch(job_id, lease, job["spec"], node)
        except TuneforgeError as exc:  # devices this worker lacks, a missing package
            error = {"code": exc.code, "message": exc.message, "param": exc.param}
            with contextlib.suppress(InvalidStateError, LeaseLostError):
                self.store.retry_or_fail(job_id, lease, error, retry=False)
            self.store.worker_alive(self.worker_id, None)
            return
        timeout = job["spec"].get("timeout_seconds")
        hard_deadline = (
            job["claimed_at"] + timeout - job["run_seconds"] + self.settings.cancel_grace_seconds
            if timeout
            else None
        )
        cancel_seen: float | None = None
        shutdown_seen: float | None = None
        killed_for: StopReason | None = None
        trouble: tuple[str, str] | None = None  # a machine of the run that left or failed
        for now in self._heartbeats(process):
            try:
                held = self.store.heartbeat(job_id, lease)
                self.store.worker_alive(self.worker_id, job_id)
            except Exception:  # the database is away: keep the process, try again
                log.exception("heartbeat failed")
                continue
            if not held:
                # Ended by its own process a moment ago (paused, requeued on shutdown), or
                # taken over by another worker: either way this run must not go on.
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=5)
                if process.poll() is None:
                    log.warning("job %s is no longer held by lease %s; killing it", job_id, lease)
                    _kill(process)
                return
            if node.machines > 1 and trouble is None:
                trouble = self._machine_trouble(job_id, lease)
                if trouble and trouble[0] == "lost":
                    log.warning("job %s: %s", job_id, trouble[1])
                    killed_for = StopReason.MACHINE_LOST
                    _kill(process)
                    break
            leaving = trouble is not None and trouble[0] == "leaving"
            if (self.stop.is_set() or leaving) and shutdown_seen is None:
                shutdown_seen = now
                if _world_size(job["spec"]) > 1:
                    # Not the launcher, which would end its ranks before they checkpoint.
                    _signal_ranks(process, signal.SIGTERM)
                else:
                    _signal(process, signal.SIGTERM)
            if cancel_seen is None and self.store.job_controls(job_id)["cancel_requested"]:
                cancel_seen = now
            if shutdown_seen and now - shutdown_seen > self.settings.shutdown_grace_seconds:
                killed_for = StopReason.SHUTDOWN
            elif cancel_seen and now - cancel_seen > self.settings.cancel_grace_seconds:
                killed_for = StopReason.CANCELLED
            elif hard_deadline and now > hard_deadline:
                killed_for = StopReason.TIMEOUT
            if killed_for:
                _kill(process)
        self.store.worker_alive(self.worker_id, None)
        detail = trouble[1] if trouble else None
        self._settle(job_id, lease, process.returncode, killed_for, timeout, detail)

    # -- multi-machine runs ------------------------------------------------------------------

    def _gather(self, job: Row) -> Node | None:
        """As node 0 of a multi-machine job: open the run's rendezvous and wait for the other
        machines. None when the run ended while waiting (cancelled, paused, shut down,
        given way to an older run, or out of time; the job's status says which)."""
        job_id, lease, spec = job["id"], job["lease"], job["spec"]
        dist = spec.get("distributed") or {}
        machines = _machines(spec)
        address = dist.get("main_process_ip") or self.settings.worker_address or _own_address()
        port = int(dist.get("main_process_port") or free_port("0.0.0.0"))
        timeout = float(dist.get("join_timeout_seconds", 600))
        # Workers that cannot read this token do not share the data folder and stay out.
        token = secrets.token_hex(16)
        token_file = _token_file(self.settings.jobs_dir, job_id, lease)
        token_file.parent.mkdir(parents=True, exist_ok=True)
        token_file.write_text(token)
        self.store.open_rendezvous(
            job_id,
            lease,
            {
                "machines": machines,
                "worker_id": self.worker_id,
                "hostname": self.hostname,
                "address": address,
                "port": port,
                "token": token,
            },
        )
        self.store.add_event(
            job_id,
            f"Waiting up to {timeout:g} s for {machines - 1} more machine(s) to join at "
            f"{address}:{port}: each needs a tuneforge worker on this database and data folder.",
            data={"address": address, "port": port, "machines": machines},
            lease=lease,
        )
        deadline = time.time() + timeout
        while True:
            nodes = self.store.rendezvous_nodes(job_id, lease)
            if len(nodes) >= machines:
                names = ", ".join(f"{n['node_rank']}: {n['hostname']}" for n in nodes)
                self.store.add_event(
                    job_id, f"All {machines} machines are in ({names}); starting.", lease=lease
                )
                return Node(rank=0, machines=machines, address=address, port=port)
            self.stop.wait(min(self.settings.poll_seconds, self.settings.heartbeat_seconds))
            try:
                if not self.store.heartbeat(job_id, lease):
                    return None  # taken over meanwhile
                self.store.worker_alive(self.worker_id, job_id)
                controls = self.store.job_controls(job_id)
                endings: tuple[tuple[bool, JobStatus, str, dict[str, Any]], ...] = (
                    (
                        controls["cancel_requested"],
                        JobStatus.CANCELLED,
                        "Job cancelled while waiting for machines.",
                        {},
                    ),
                    (
                        controls["pause_requested"],
                        JobStatus.PAUSED,
                        "Job paused while waiting for machines; it waits again when resumed.",
                        {"pause_requested": False, "worker_id": None},
                    ),
                    (
                        self.stop.is_set(),
                        JobStatus.QUEUED,
                        "Worker shut down while waiting for machines; job queued again.",
                        {"level": "warn", "worker_id": None},
                    ),
                )
                for due, target, message, fields in endings:
                    if due:
                        self.store.transition(
                            job_id,
                            target,
                            message,
                            expected={JobStatus.RUNNING},
                            lease=lease,
                            **fields,
                        )
                        return None
                if self._give_way(job):
                    return None
                if time.time() > deadline:
                    joined = len(self.store.rendezvous_nodes(job_id, lease))
                    message = (
                        f"Only {joined} of {machines} machines joined within "
                        f"join_timeout_seconds={timeout:g}. Start a tuneforge worker on each "
                        "machine, on the same database and data folder."
                    )
                    self.store.retry_or_fail(
                        job_id, lease, {"code": "rendezvous_timeout", "message": message}
                    )
                    return None
            except (InvalidStateError, LeaseLostError):
                return None
            except Exception:  # the database is away: keep waiting, try again
                log.exception("waiting for machines failed")

    def _give_way(self, job: Row) -> bool:
        """Two workers that each claimed a multi-machine job would wait for each other
        forever: the run of the younger job steps back (the job goes back to the queue)
        and its worker joins the older one."""
        older = [
            o
            for o in self.store.rendezvous_openings()
            if (o["created_at"], o["job_id"]) < (job["created_at"], job["id"]) and self._may_take(o)
        ]
        if not older:
            return False
        self.store.transition(
            job["id"],
            JobStatus.QUEUED,
            f"Job {older[0]['job_id']}, older and also waiting for machines, goes first; "
            "queued again.",
            expected={JobStatus.RUNNING},
            lease=job["lease"],
            worker_id=None,
        )
        self._join_a_run()
        return True

    def _may_take(self, opening: Row) -> bool:
        """Whether this worker may join a run: a kind and device it takes, and the run's data
        folder is this worker's (announced on the job once if not)."""
        if self.kinds and opening["kind"] not in self.kinds:
            return False
        if self.devices and opening["device"] not in ("auto", *self.devices):
            return False
        job_id, lease = opening["job_id"], opening["lease"]
        token_file = _token_file(self.settings.jobs_dir, job_id, lease)
        with contextlib.suppress(OSError):
            if token_file.read_text() == opening["token"]:
                return True
        if (job_id, lease) not in self._refused:
            self._refused.add((job_id, lease))
            self.store.add_event(
                job_id,
                f"Worker {self.worker_id} on {self.hostname} does not join: it cannot see this "
                f"run in its data folder ({token_file.parent}). The machines of a job share "
                "one data folder.",
                level="warn", data={"worker_id": self.worker_id},
            )
        return False

    def _join_a_run(self) -> bool:
        """Join the oldest multi-machine run that waits for machines and that this worker may
        take, and follow it to its end; False if there is none."""
        for opening in self.store.rendezvous_openings():
            if not self._may_take(opening):
                continue
            node = self.store.join_rendezvous(
                opening["job_id"], opening["lease"], self.worker_id, self.hostname
            )
            if node is not None:
                self._follow(opening, node)
                return True
        return False

    def _follow(self, opening: Row, joined: Row) -> None:
        """Run this machine's share of a run that node 0 holds, until its processes end.
        They stop by themselves with the run (rank 0 decides for all); if the run ends
        without them (node 0 failed, or cancelled it before they met), they are killed."""
        job_id, lease, rank = opening["job_id"], opening["lease"], joined["node_rank"]
        self.store.worker_alive(self.worker_id, job_id)
        node = Node(rank, opening["machines"], opening["address"], opening["port"])
        process = self._launch(job_id, lease, opening["spec"], node)
        self.store.update_node(job_id, lease, rank, state="running")
        run_over: float | None = None
        leaving: float | None = None
        for now in self._heartbeats(process):
            try:
                self.store.update_node(job_id, lease, rank)
                self.store.worker_alive(self.worker_id, job_id)
                job = self.store.require_job(job_id)
                if self.stop.is_set() and leaving is None:
                    leaving = now  # node 0 checkpoints and stops the run everywhere
                    self.store.update_node(job_id, lease, rank, state="leaving")
            except Exception:
                log.exception("following job %s failed", job_id)
                continue
            if run_over is None and (
                job["status"] != JobStatus.RUNNING.value or job["lease"] != lease
            ):
                run_over = now
            if (run_over and now - run_over > self.settings.cancel_grace_seconds) or (
                leaving and now - leaving > self.settings.shutdown_grace_seconds
            ):
                _kill(process)
        code = process.returncode
        with contextlib.suppress(Exception):
            state = "done" if code == 0 else "failed"
            self.store.update_node(job_id, lease, rank, state=state, exit_code=code)
        self.store.worker_alive(self.worker_id, None)

    def _machine_trouble(self, job_id: str, lease: int) -> tuple[str, str] | None:
        """("lost", why) when another machine of the run failed or went silent, ("leaving",
        why) when its worker shuts down; None while all is well."""
        cutoff = time.time() - self.settings.stalled_after_seconds
        try:
            nodes = self.store.rendezvous_nodes(job_id, lease)
        except Exception:
            return None
        for node in nodes[1:]:
            where = f"machine {node['node_rank']} ({node['hostname']}, worker {node['worker_id']})"
            if node["state"] == "failed":
                return "lost", f"{where} ended with exit code {node['exit_code']}."
            if node["state"] == "leaving":
                return "leaving", f"{where} is shutting down."
            if node["state"] in ("joined", "running") and node["heartbeat_at"] < cutoff:
                silent = self.settings.stalled_after_seconds
                return "lost", f"{where} has not answered for {silent:g} s."
        return None

    def _settle(
        self,
        job_id: str,
        lease: int,
        returncode: int | None,
        killed_for: StopReason | None,
        timeout: int | None,
        detail: str | None = None,
    ) -> None:
        """Give a job its next status if its process ended without doing so."""
        job = self.store.require_job(job_id)
        if job["status"] != JobStatus.RUNNING.value or job["lease"] != lease:
            return
        try:
            if killed_for == StopReason.CANCELLED or job["cancel_requested"]:
                self.store.transition(
                    job_id,
                    JobStatus.CANCELLED,
                    "Job cancelled (process stopped).",
                    expected={JobStatus.RUNNING},
                    lease=lease,
                )
            elif killed_for == StopReason.MACHINE_LOST:
                message = f"A machine of this multi-machine run was lost: {detail}"
                self.store.retry_or_fail(
                    job_id, lease, {"code": "machine_lost", "message": message}
                )
            elif killed_for == StopReason.SHUTDOWN or self.stop.is_set() or detail:
                self.store.transition(
                    job_id,
                    JobStatus.QUEUED,
                    f"{detail or 'Worker shut down.'} Job queued again to continue from its "
                    "last checkpoint.",
                    expected={JobStatus.RUNNING},
                    lease=lease,
                    level="warn",
                    worker_id=None,
                )
            elif killed_for == StopReason.TIMEOUT:
                message = f"The job ran longer than timeout_seconds={timeout} and was stopped."
                self.store.retry_or_fail(
                    job_id, lease, {"code": "timeout", "message": message}, retry=False
                )
            elif returncode in (-signal.SIGKILL, 137):
                message = (
                    "The job's process was killed (SIGKILL), most likely for lack of memory. "
                    "Try a smaller batch_size or max_seq_length."
                )
                # A SIGKILL may also be an operator's kill -9: it counts as a failed attempt
                # and keeps the settings. An out-of-memory error the job itself sees (CUDA,
                # cuBLAS, the CPU allocator) adapts the batch instead (jobs.oom).
                self.store.retry_or_fail(
                    job_id, lease, {"code": "out_of_memory", "message": message}
                )
            else:
                message = f"The job's process exited with code {returncode}; see its log."
                self.store.retry_or_fail(job_id, lease, {"code": "internal", "message": message})
        except (InvalidStateError, LeaseLostError):
            pass  # someone else settled it meanwhile


def _machines(spec: dict[str, Any]) -> int:
    return int((spec.get("distributed") or {}).get("num_machines", 1))


def _world_size(spec: dict[str, Any]) -> int:
    return int(spec.get("num_processes", 1)) * _machines(spec)


def _token_file(jobs_dir: Path, job_id: str, lease: int) -> Path:
    return jobs_dir / job_id / f"rendezvous-{lease}"


def _own_address() -> str:
    """The address of the interface this machine's outgoing traffic leaves by (a UDP socket
    picks a route without sending anything); the host name's address if there is none."""
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("192.0.2.1", 9))  # TEST-NET-1: never reached
        return str(probe.getsockname()[0])
    return socket.gethostbyname(socket.gethostname())


def launch_command(
    spec: dict[str, Any], runner_module: str, runner_args: list[str], node: Node | None = None
) -> tuple[list[str], dict[str, str]]:
    """(command, environment additions) that start this machine's processes of a job, one
    per device: torch's launcher (torchrun) for ddp, gloo on CPU and NCCL on CUDA;
    `accelerate launch` with an Accelerate config for fsdp and deepspeed, whose `config` is
    passed through. `node`: this machine's place in a multi-machine run."""
    import json
    import tempfile

    dist = spec.get("distributed") or {}
    node = node or Node()
    machines = node.machines
    per_machine = int(spec.get("num_processes", 1))
    port = str(node.port or dist.get("main_process_port") or free_port())
    address = node.address
    rank = str(node.rank)
    # Every CUDA job sees exactly its devices (a worker that cannot give them fails here).
    env = job_device_environment(spec, os.environ.get("CUDA_VISIBLE_DEVICES"))
    strategy = dist.get("strategy", "ddp")
    if strategy == "ddp":
        command = [
            sys.executable, "-m", "torch.distributed.run",
            "--nproc_per_node", str(per_machine),
            "--nnodes", str(machines),
            "--node_rank", rank,
            "--master_addr", address,
            "--master_port", port,
        ]  # fmt: skip
        return [*command, "-m", runner_module, *runner_args], env
    check_strategy(strategy)
    config = accelerate_config(
        strategy, dist.get("config"), mixed_precision(probe_capability({**os.environ, **env}))
    )
    # Accelerate reads YAML, and JSON is YAML.
    with tempfile.NamedTemporaryFile(
        "w", suffix=".yaml", prefix="tuneforge-accelerate-", delete=False
    ) as handle:
        json.dump(config, handle)
    command = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--config_file", handle.name,
        "--num_processes", str(per_machine * machines),
        "--num_machines", str(machines),
        "--machine_rank", rank,
        "--main_process_ip", address,
        "--main_process_port", port,
    ]  # fmt: skip
    return [*command, "-m", runner_module, *runner_args], env


def _signal(process: JobProcess, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signum)


def _signal_ranks(process: JobProcess, signum: int) -> None:
    # A launcher's ranks run in sessions of their own (torch's elastic agent starts them so).
    import psutil

    with contextlib.suppress(psutil.Error):
        for child in psutil.Process(process.pid).children():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child.pid, signum)


def _kill(process: JobProcess) -> None:
    _signal_ranks(process, signal.SIGKILL)
    _signal(process, signal.SIGKILL)
    process.wait()

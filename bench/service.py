"""How fast is the service itself? Job creation, the way to a job's first training step, event
fan-out and status reads, measured against a real `tuneforge serve`.

The script starts `tuneforge serve --no-worker` on a temporary data folder (SQLite there, or a
fresh schema in PostgreSQL with `--database-url`) and, from the second part on, a separate
`tuneforge worker` on the same database:

1. creation: `--jobs` sequential `POST /v1/fine_tuning/jobs` with an uploaded pair file, and a
   few with the whole STS-B train file, which shows what a larger file costs (a POST reads and
   checks the files); while they wait in the queue, the server's CPU with `--clients` idle
   event streams open; then each job is cancelled (latency too), so no worker runs them;
2. first step: `--first-step-runs` embedding jobs on all-MiniLM-L6-v2, each from POST to its
   first trained step (the first `metrics` event with a loss), broken down by the job's own
   event timestamps; each is cancelled once its first step is seen;
3. fan-out: `--clients` concurrent SSE clients on one running job's `/events/stream`; every
   client must receive every event of the job exactly once and in order (else the exit code
   is 1); delivery lag is receipt time minus the event's `created_at` (to the microsecond,
   read from the database: the API rounds it to seconds), for events created after the client
   had connected;
4. status reads: `--readers` threads `GET /v1/fine_tuning/jobs/{id}` for `--read-seconds`, of
   the finished fan-out job and of a stopped first-step job; req/s, latency, response size, and
   the server's and this process's CPU meanwhile.

Results: a summary on stdout and `bench/results/service-<time>.{json,md}`.

`--warm-start RUNS` measures part 2 alone, with job processes started cold
(TUNEFORGE_WARM_START=0) and forked from the worker's warm job process, on a worker started
for each: RUNS jobs each after one not counted (`bench/results/service-warm-<time>.*`).

    python bench/service.py [--database-url postgresql+psycopg://...] [--jobs 200] ...
    python bench/service.py --warm-start 3
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import report
from measure import (
    CpuMeter,
    cpu_model,
    machine_busy_seconds,
    own_cpu_seconds,
    spread,
    wait_until_quiet,
)
from running import ROOT, Service, database  # also puts the checkout on sys.path for tuneforge

from tuneforge.jobs.status import TERMINAL

DATA = ROOT.parent / "shared" / "data" / "stsb-en-train.csv"
MODEL = "sentence-transformers/all-MiniLM-L6-v2"
# Cores other processes may use during the run before it counts as disturbed.
QUIET_CORES = 0.2


# -- data -----------------------------------------------------------------------------------


def write_pairs(path: Path, source: Path, count: int) -> Path:
    """The first `count` STS pairs scored >= 3.0 (close in meaning), as anchor/positive JSONL."""
    with source.open(encoding="utf-8", newline="") as f, path.open("w", encoding="utf-8") as out:
        written = 0
        for sentence1, sentence2, score in csv.reader(f):
            if float(score) >= 3.0:
                out.write(json.dumps({"anchor": sentence1, "positive": sentence2}) + "\n")
                written += 1
                if written == count:
                    break
    if written < count:
        raise SystemExit(f"{source} has only {written} pairs scored >= 3.0")
    return path


def job_body(file_id: str, *, loss: str = "mnrl", batch_size: int = 16) -> dict[str, Any]:
    """An embedding job on all-MiniLM-L6-v2 that logs every step."""
    return {
        "model": MODEL,
        "training_file": file_id,
        "seed": 7,
        "device": "cpu",
        "method": {
            "type": "embedding",
            "embedding": {
                "loss": loss,
                "hyperparameters": {"batch_size": batch_size, "logging_steps": 1},
            },
        },
    }


# -- 1. creation ----------------------------------------------------------------------------


def measure_creation(
    service: Service,
    small_file: str,
    large_file: str,
    jobs: int,
    large_jobs: int,
    clients: int,
    idle_seconds: float,
) -> dict[str, Any]:
    """Sequential POSTs (one client: latency, not throughput), idle streams on a queued job,
    then a cancel of each job."""
    body = job_body(small_file)
    started = time.perf_counter()
    first_id = service.create_job(body)
    first = time.perf_counter() - started
    ids, latencies = [first_id], []
    server_cpu = CpuMeter(service.process.pid).start()
    wall = time.perf_counter()
    for _ in range(jobs):
        started = time.perf_counter()
        ids.append(service.create_job(body))
        latencies.append(time.perf_counter() - started)
    wall = time.perf_counter() - wall
    cores = server_cpu.stop()
    large = []
    for _ in range(large_jobs):
        started = time.perf_counter()
        ids.append(service.create_job(job_body(large_file, loss="cosent")))
        large.append(time.perf_counter() - started)
    idle = asyncio.run(idle_streams(service, ids[-1], clients, idle_seconds))
    cancels = []
    for job_id in ids:
        started = time.perf_counter()
        r = service.client.post(f"/v1/fine_tuning/jobs/{job_id}/cancel")
        cancels.append(time.perf_counter() - started)
        r.raise_for_status()
    return {
        "first_post_ms": round(first * 1000, 1),
        "post_ms": spread(latencies),
        "posts_per_s": round(jobs / wall, 1),
        "server_cores": cores,
        "post_whole_stsb_ms": spread(large),
        "cancel_queued_ms": spread(cancels),
        "idle_streams": idle,
    }


async def idle_streams(
    service: Service, job_id: str, clients: int, seconds: float
) -> dict[str, Any]:
    """The server's CPU over `seconds`, first with no client, then with `clients` event
    streams open on a queued job (no events arrive: what they cost is their polling)."""
    server = CpuMeter(service.process.pid)
    server.start()
    await asyncio.sleep(seconds)
    quiet = server.stop()
    connected = 0

    async def hold(client: httpx.AsyncClient) -> None:
        nonlocal connected
        async with client.stream("GET", f"/v1/fine_tuning/jobs/{job_id}/events/stream") as r:
            r.raise_for_status()
            connected += 1
            async for _ in r.aiter_raw():
                pass

    limits = httpx.Limits(max_connections=clients + 5)
    async with httpx.AsyncClient(base_url=service.url, limits=limits, timeout=60) as client:
        tasks = [asyncio.create_task(hold(client)) for _ in range(clients)]
        while connected < clients:
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)  # past the streams' first polls
        server.start()
        await asyncio.sleep(seconds)
        busy = server.stop()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return {
        "clients": clients,
        "seconds": seconds,
        "server_cores_no_clients": quiet,
        "server_cores_with_clients": busy,
    }


# -- 2. POST to first step ------------------------------------------------------------------

# The way from POST to a job's first trained step, as the job's events mark it: each phase
# runs from the end of the one before (the first from the POST) to the first event that passes
# its test.
FIRST_STEP_PHASES: list[tuple[str, Callable[[dict[str, Any]], bool]]] = [
    ("post_until_queued", lambda e: e["message"].startswith("Files validated")),
    ("queue_wait", lambda e: "worker_id" in e["data"]),  # the claim's event
    ("process_start_and_data", lambda e: "train_rows" in e["data"]),  # the runner's first note
    ("model_lookup_and_device", lambda e: e["message"].startswith("Training ")),
    (
        "model_load_and_baseline_eval",
        lambda e: e["type"] == "metrics" and e["data"].get("step") == 0,
    ),
    ("trainer_setup_and_first_step", lambda e: e["type"] == "metrics" and "loss" in e["data"]),
]


def first_step(service: Service, file_id: str) -> dict[str, Any]:
    """One job from POST to its first trained step, then cancelled. Times in seconds after
    the POST was sent; the phases come from the job's own events."""
    posted = time.time()
    job_id = service.create_job(job_body(file_id))
    answered = time.time()
    seen: dict[str, float] = {}
    while len(seen) < 2:
        job = service.job(job_id)
        now = time.time()
        if (job.get("metrics") or {}).get("step", 0) > 0:
            seen.setdefault("metrics", now)
        if (job.get("progress") or {}).get("step", 0) > 0:
            seen.setdefault("progress", now)
        if job["status"] in TERMINAL:
            raise SystemExit(f"job {job_id} {job['status']} before its first step: {job['error']}")
        if now - posted > 600:
            raise SystemExit(f"job {job_id}: no step within 600 s")
        time.sleep(0.05)
    service.client.post(f"/v1/fine_tuning/jobs/{job_id}/cancel")  # 409 if it ended already
    service.wait_for(job_id, timeout=600, poll=0.25)
    # The job has its final status before its process has exited; the next job would wait.
    worker_busy_after_end = service.wait_worker_idle()
    events = service.events(job_id)
    marks: dict[str, float | None] = {}
    phases, previous = {}, 0.0
    for phase, ends in FIRST_STEP_PHASES:
        found = next((e["created_at"] - posted for e in events if ends(e)), None)
        marks[phase] = round(found, 3) if found is not None else None
        if found is not None:
            phases[phase], previous = round(found - previous, 3), found
    steps = [e["data"] for e in events if "steps_per_second" in e["data"]]
    return {
        "job_id": job_id,
        "post_response_s": round(answered - posted, 3),
        "first_step_s": marks["trainer_setup_and_first_step"],
        "seen_in_metrics_s": round(seen["metrics"] - posted, 3),
        "seen_in_progress_s": round(seen["progress"] - posted, 3),
        "phase_ends_s": marks,
        "phases_s": phases,
        "worker_busy_after_end_s": round(worker_busy_after_end, 3),
        # A step once running (the second logged one), to tell set-up from the step itself.
        "step_s": round(1 / steps[1]["steps_per_second"], 3) if len(steps) > 1 else None,
    }


def measure_warm_start(service: Service, file_id: str, runs: int) -> dict[str, Any]:
    """`first_step` with job processes started cold (TUNEFORGE_WARM_START=0) and forked from
    the worker's warm job process: `runs` of each, on a worker started for each. Each worker's
    first job is not counted (a warm worker's job process may still be importing then), only
    shown."""
    result: dict[str, Any] = {}
    for way, flag in (("cold", "0"), ("warm", "1")):
        service.env["TUNEFORGE_WARM_START"] = flag
        service.start_worker()
        print(f"warm start: {way}, first job and {runs} runs", flush=True)
        first = first_step(service, file_id)
        timed = [first_step(service, file_id) for _ in range(runs)]
        assert service.worker is not None
        service.worker.send_signal(signal.SIGTERM)
        service.worker.wait(timeout=120)
        service.worker = None
        result[way] = {
            "first_job_s": first["first_step_s"],
            "runs_s": [r["first_step_s"] for r in timed],
            "median_s": round(statistics.median(r["first_step_s"] for r in timed), 3),
            "median_phases_s": {
                name: round(statistics.median(r["phases_s"][name] for r in timed), 3)
                for name, _ in FIRST_STEP_PHASES
                if all(name in r["phases_s"] for r in timed)
            },
        }
    return result


def warm_start_markdown(result: dict[str, Any]) -> str:
    """The comparison as a Markdown table: way | first job | median | runs | phases."""
    lines = [
        f"## POST to first training step, cold and warm job processes, {result['date']}",
        "",
        f"{result['machine']['cpu']}, {result['machine']['cores']} cores; other processes "
        f"used {result['other_load_cores']} cores during the run.",
        "",
        "| job process | worker's first job | median | runs | phases (medians) |",
        "|---|---|---|---|---|",
    ]
    for way, r in result["warm_start"].items():
        phases = ", ".join(f"{k} {v}" for k, v in r["median_phases_s"].items())
        runs = " / ".join(str(v) for v in r["runs_s"])
        lines.append(f"| {way} | {r['first_job_s']} s | {r['median_s']} s | {runs} | {phases} |")
    return "\n".join(lines) + "\n"


# -- 3. fan-out -----------------------------------------------------------------------------


@dataclass
class Stream:
    """What one SSE client received: (event number, type, receipt time) in arrival order."""

    connected_at: float = 0.0
    received: list[tuple[int, str, float]] = field(default_factory=list)
    ended: bool = False
    error: str | None = None


async def follow(client: httpx.AsyncClient, job_id: str) -> Stream:
    """Read a job's event stream from its start until its `end` event."""
    stream = Stream()
    try:
        async with client.stream("GET", f"/v1/fine_tuning/jobs/{job_id}/events/stream") as r:
            r.raise_for_status()
            stream.connected_at = time.time()
            number, kind = None, None
            async for line in r.aiter_lines():
                if line.startswith("id: "):
                    number = int(line[4:].removeprefix("ftevent-"))
                elif line.startswith("event: "):
                    kind = line[7:]
                elif line == "" and kind is not None:
                    if kind == "end":
                        stream.ended = True
                        break
                    if number is not None:
                        stream.received.append((number, kind, time.time()))
                    number, kind = None, None
    except (httpx.HTTPError, ValueError) as exc:
        stream.error = f"{type(exc).__name__}: {exc}"
    return stream


async def fan_out_streams(url: str, job_id: str, clients: int, timeout: float) -> list[Stream]:
    limits = httpx.Limits(max_connections=clients + 5)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:
        return list(
            await asyncio.wait_for(
                asyncio.gather(*(follow(client, job_id) for _ in range(clients))), timeout
            )
        )


def check_stream(stream: Stream, expected: list[int]) -> str | None:
    """What is wrong with what a client received, or None."""
    if stream.error or not stream.ended:
        return stream.error or "the stream ended without an `end` event"
    numbers = [n for n, _, _ in stream.received]
    if numbers == expected:
        return None
    duplicates = len(numbers) - len(set(numbers))
    missing = len(set(expected) - set(numbers))
    reordered = any(a >= b for a, b in zip(numbers, numbers[1:], strict=False))
    return (
        f"{missing} missing, {duplicates} duplicated, {'out of order' if reordered else 'in order'}"
    )


def measure_fan_out(service: Service, file_id: str, clients: int) -> dict[str, Any]:
    """One job, `clients` streams opened right after its POST, followed until it ends."""
    job_id = service.create_job(job_body(file_id, batch_size=8))
    server_cpu = CpuMeter(service.process.pid).start()
    started = time.perf_counter()
    streams = asyncio.run(fan_out_streams(service.url, job_id, clients, timeout=900))
    wall = time.perf_counter() - started
    cores = server_cpu.stop()
    job = service.wait_for(job_id, timeout=600, poll=0.25)
    events = service.events(job_id)
    expected = [e["id"] for e in events]
    created = {e["id"]: e["created_at"] for e in events}
    problems = {i: p for i, s in enumerate(streams) if (p := check_stream(s, expected))}
    lags: list[float] = []
    by_event: dict[int, list[float]] = {}
    for s in streams:
        for number, _, received in s.received:
            if number in created and created[number] > s.connected_at:
                lags.append(received - created[number])
                by_event.setdefault(number, []).append(received - created[number])
    return {
        "job_id": job_id,
        "job_status": job["status"],
        "clients": clients,
        "events": len(expected),
        "live_events": len(by_event),
        "deliveries": sum(len(s.received) for s in streams),
        "all_received_in_order": not problems,
        "problems": {str(i): p for i, p in problems.items()},
        "lag_ms": spread(lags),
        # Per event: when its first and its last client had it (the fan-out's own spread).
        "first_client_lag_ms": spread([min(v) for v in by_event.values()]),
        "last_client_lag_ms": spread([max(v) for v in by_event.values()]),
        "stream_seconds": round(wall, 1),
        "server_cores": cores,
    }


# -- 4. status reads ------------------------------------------------------------------------


def measure_status_reads(
    service: Service, job_id: str, readers: int, seconds: float
) -> dict[str, Any]:
    """`readers` threads, each with its own keep-alive connection, GET the job for `seconds`."""
    path = f"/v1/fine_tuning/jobs/{job_id}"
    latencies: list[list[float]] = [[] for _ in range(readers)]
    errors = [0] * readers
    go = threading.Barrier(readers + 1)
    size = len(service.client.get(path).content)
    deadline = 0.0

    def read(index: int) -> None:
        with httpx.Client(base_url=service.url, timeout=60) as client:
            client.get(path)  # connect first
            go.wait()
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                r = client.get(path)
                latencies[index].append(time.perf_counter() - started)
                errors[index] += r.status_code != 200

    threads = [threading.Thread(target=read, args=(i,)) for i in range(readers)]
    for thread in threads:
        thread.start()
    server_cpu = CpuMeter(service.process.pid)
    own_cpu = CpuMeter(os.getpid())
    deadline = time.perf_counter() + seconds + 0.5  # set before the barrier lets them go
    go.wait()
    started = time.perf_counter()
    server_cpu.start()
    own_cpu.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    everything = [x for per_thread in latencies for x in per_thread]
    return {
        "readers": readers,
        "response_bytes": size,
        "seconds": round(wall, 1),
        "requests": len(everything),
        "errors": sum(errors),
        "req_per_s": round(len(everything) / wall, 1),
        "latency_ms": spread(everything),
        "server_cores": server_cpu.stop(),
        "client_cores": own_cpu.stop(),
        "store_get_job_per_s": store_reads_per_second(service.db_url, job_id, 2.0),
    }


def store_reads_per_second(db_url: str, job_id: str, seconds: float) -> float:
    """`Store.get_job` in this process, one thread: the database's part of a status read."""
    from tuneforge.db.store import Store

    store = Store(db_url)
    try:
        count, deadline = 0, time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            store.get_job(job_id)
            count += 1
    finally:
        store.dispose()
    return round(count / seconds, 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--database-url",
        help="PostgreSQL URL (a fresh schema is used and "
        "dropped); default: SQLite in a temporary data folder",
    )
    parser.add_argument("--data", type=Path, default=DATA, help="STS Benchmark CSV")
    parser.add_argument("--jobs", type=int, default=200, help="POSTs timed for creation")
    parser.add_argument(
        "--large-jobs", type=int, default=10, help="POSTs with the whole --data file"
    )
    parser.add_argument("--first-step-runs", type=int, default=3)
    parser.add_argument(
        "--pairs", type=int, default=256, help="pairs in the first-step jobs' file (batch 16)"
    )
    parser.add_argument(
        "--fan-out-pairs",
        type=int,
        default=480,
        help="pairs in the fan-out job's file (batch 8, an event per step)",
    )
    parser.add_argument("--clients", type=int, default=50, help="SSE clients")
    parser.add_argument("--idle-seconds", type=float, default=5.0)
    parser.add_argument("--readers", type=int, default=8, help="status-read threads")
    parser.add_argument("--read-seconds", type=float, default=10.0)
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=60.0,
        help="first wait up to this many seconds for other processes to leave the CPUs idle",
    )
    parser.add_argument("--out", type=Path, default=report.RESULTS)
    parser.add_argument(
        "--warm-start",
        type=int,
        metavar="RUNS",
        help="only compare POST to first step with cold and warm job processes, RUNS each",
    )
    args = parser.parse_args(argv)

    load = round(wait_until_quiet(args.quiet_wait, QUIET_CORES), 2)
    if load >= QUIET_CORES:
        print(f"Warning: other processes use {load} cores; the timings will not be clean.")
    if args.warm_start:
        return warm_start_main(args)

    # This process's CPU includes its children's once they have exited: server, worker, jobs.
    started = time.time()
    busy_before, own_before = machine_busy_seconds(), own_cpu_seconds(children=True)
    with (
        tempfile.TemporaryDirectory(prefix="tuneforge-bench-service-") as tmp,
        database(args.database_url) as db_url,
    ):
        workdir = Path(tmp)
        small = write_pairs(workdir / "pairs.jsonl", args.data, args.pairs)
        fan_out_file = write_pairs(workdir / "fan-out.jsonl", args.data, args.fan_out_pairs)
        service = Service(workdir, db_url)
        try:
            small_id = service.upload(small)["id"]
            large_id = service.upload(args.data)["id"]
            print(f"1/4 creation: {args.jobs} jobs", flush=True)
            creation = measure_creation(
                service,
                small_id,
                large_id,
                args.jobs,
                args.large_jobs,
                args.clients,
                args.idle_seconds,
            )
            service.start_worker()
            runs = []
            for i in range(args.first_step_runs):
                print(f"2/4 first step: run {i + 1}/{args.first_step_runs}", flush=True)
                runs.append(first_step(service, small_id))
            print(f"3/4 fan-out: {args.clients} clients", flush=True)
            fan_out = measure_fan_out(service, service.upload(fan_out_file)["id"], args.clients)
            print(
                f"4/4 status reads: {args.readers} clients, 2 x {args.read_seconds:.0f} s",
                flush=True,
            )
            # A finished job's object holds its whole result; a stopped one about what a
            # running job's holds (spec, progress, metrics).
            reads = {
                "finished_job": measure_status_reads(
                    service, fan_out["job_id"], args.readers, args.read_seconds
                ),
                "stopped_job": measure_status_reads(
                    service, runs[-1]["job_id"], args.readers, args.read_seconds
                ),
            }
        finally:
            service.stop()
    wall = time.time() - started
    own = own_cpu_seconds(children=True) - own_before
    other = (machine_busy_seconds() - busy_before - own) / wall

    def median_of(key: str) -> float:
        return round(statistics.median(r[key] for r in runs), 3)

    phase_names = [n for n, _ in FIRST_STEP_PHASES if all(n in r["phases_s"] for r in runs)]
    result = {
        "date": datetime.now().strftime("%Y-%m-%d %H:%M"),
        "database": "PostgreSQL" if args.database_url else "SQLite",
        "commit": _commit(),
        "machine": {
            "cpu": cpu_model(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
        },
        "wall_seconds": round(wall, 1),
        "other_load_cores": round(max(other, 0.0), 2),
        "settings": {k: str(v) for k, v in vars(args).items() if k != "database_url"},
        "creation": creation,
        "first_step": {
            "runs": runs,
            "median_s": median_of("first_step_s"),
            "median_seen_metrics_s": median_of("seen_in_metrics_s"),
            "median_seen_progress_s": median_of("seen_in_progress_s"),
            "median_worker_busy_after_end_s": median_of("worker_busy_after_end_s"),
            "median_phases_s": {
                name: round(statistics.median(r["phases_s"][name] for r in runs), 3)
                for name in phase_names
            },
        },
        "fan_out": fan_out,
        "status_reads": reads,
    }
    table = report.service_markdown(result, QUIET_CORES)
    print("\n" + table)
    if not fan_out["all_received_in_order"]:
        print(f"Fan-out FAILED: {fan_out['problems']}", file=sys.stderr)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"service-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    stem.with_suffix(".md").write_text(table)
    print(f"Results: {stem}.json, {stem}.md")
    return 0 if fan_out["all_received_in_order"] else 1


def warm_start_main(args: argparse.Namespace) -> int:
    """`--warm-start`: the cold and warm comparison alone."""
    started, busy_before, own_before = time.time(), machine_busy_seconds(), own_cpu_seconds()
    with (
        tempfile.TemporaryDirectory(prefix="tuneforge-bench-warm-") as tmp,
        database(args.database_url) as db_url,
    ):
        workdir = Path(tmp)
        service = Service(workdir, db_url)
        try:
            file_id = service.upload(write_pairs(workdir / "pairs.jsonl", args.data, args.pairs))
            comparison = measure_warm_start(service, file_id, args.warm_start)
        finally:
            service.stop()
    wall = time.time() - started
    other = (machine_busy_seconds() - busy_before - (own_cpu_seconds() - own_before)) / wall
    result = {
        "date": datetime.now().strftime("%Y-%m-%d %H:%M"),
        "commit": _commit(),
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count()},
        "other_load_cores": round(max(other, 0.0), 2),
        "warm_start": comparison,
    }
    table = warm_start_markdown(result)
    print("\n" + table)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"service-warm-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    stem.with_suffix(".md").write_text(table)
    print(f"Results: {stem}.json, {stem}.md")
    return 0


def _commit() -> str:
    """The checkout's commit, with `+changes` when tuneforge/ has uncommitted changes."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout

    changed = git("status", "--porcelain", "--", "tuneforge").strip()
    return git("rev-parse", "--short", "HEAD").strip() + ("+changes" if changed else "")


if __name__ == "__main__":
    sys.exit(main())

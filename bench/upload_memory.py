"""What an upload's validation costs in memory, and what a page of `/rows` costs in time, on a
large JSONL file of short lines, against a real `tuneforge serve` (issue 22).

1. writes `--mib` MiB (512 by default, the default upload limit) of short embedding pairs,
   `{"anchor": "...", "positive": "..."}` of about 90 bytes, into a temporary folder;
2. starts `tuneforge serve --no-worker` on a fresh data folder (SQLite), with the statistics
   tokenizer (all-MiniLM-L6-v2) in an offline Hugging Face cache, as a real server counts
   tokens; waits for its memory to settle and takes that as idle;
3. uploads the file, sampling the resident memory of the server and all its children every
   20 ms, and reports the peak above idle, what stays held after the answer, and the time;
4. times `GET /v1/datasets/{id}/rows` at the start, the middle and the end of the file (the
   first request of each and the median of five more);
5. baselines, each in a fresh process on the same file, peak RSS above the interpreter with its
   imports done: `pandas.read_json(lines=True)`, and (`--old PATH`, a checkout before the
   streaming readers) that checkout's validation and one `/rows` page, on a `--old-mib` MiB
   slice (the old code held the whole file many times over: 512 MiB would not fit), beside
   this checkout's on the same slice, the same way.

Results: a summary on stdout and `bench/results/upload-memory-<time>.json`.

    python bench/upload_memory.py [--mib 512] [--old /path/to/old/checkout --old-mib 32]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for tests.* and tuneforge when run as `python bench/...`

from tests.server import Server  # noqa: E402

RESULTS = ROOT / "bench" / "results"
SAMPLE_SECONDS = 0.02
WORDS = [
    "data", "model", "train", "token", "answer", "question",
    "reset", "password", "account", "order", "refund", "ship",
]  # fmt: skip


def write_pairs(path: Path, mib: int) -> int:
    """Up to `mib` MiB of short pairs (no more: the default limit is exactly 512 MiB); the
    number of lines."""
    target, size, lines = mib * 1024 * 1024, 0, 0
    with path.open("wb") as out:
        while True:
            chunk = []
            for i in range(lines, lines + 10_000):
                a, b, c = WORDS[i % 12], WORDS[(i // 12) % 12], WORDS[(i // 144) % 12]
                chunk.append(
                    f'{{"anchor": "how do I {a} my {b} {i}?", '
                    f'"positive": "To {a} your {b}, open {c} settings, step {i % 97}."}}\n'
                )
            data = "".join(chunk).encode()
            if size + len(data) > target:
                return lines
            out.write(data)
            size += len(data)
            lines += len(chunk)


def tree_rss(process: psutil.Process) -> int:
    """Resident bytes of a process and all its children."""
    total = 0
    for p in [process, *process.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):  # a child that just ended
            total += p.memory_info().rss
    return total


class PeakSampler(threading.Thread):
    """Samples a process tree's RSS until stopped; keeps the peak."""

    def __init__(self, process: psutil.Process):
        super().__init__(daemon=True)
        self.process, self.peak, self.done = process, 0, threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            self.peak = max(self.peak, tree_rss(self.process))
            time.sleep(SAMPLE_SECONDS)

    def stop(self) -> int:
        self.done.set()
        self.join()
        return self.peak


def settle(process: psutil.Process, seconds: float = 3.0) -> int:
    """The tree's RSS once it has not grown for `seconds`."""
    last, since = tree_rss(process), time.monotonic()
    while time.monotonic() - since < seconds:
        time.sleep(0.25)
        now = tree_rss(process)
        if now > last + 1024 * 1024:
            since = time.monotonic()
        last = now
    return last


def page_latency(client: httpx.Client, file_id: str, offset: int) -> dict[str, float]:
    times = []
    for _ in range(6):
        start = time.perf_counter()
        r = client.get(f"/v1/datasets/{file_id}/rows", params={"offset": offset, "limit": 20})
        times.append(time.perf_counter() - start)
        assert r.status_code == 200 and r.json()["data"], r.text
    return {"first_ms": times[0] * 1000, "median_ms": statistics.median(times[1:]) * 1000}


def in_fresh_process(code: str, cwd: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run `code` in a new interpreter in `cwd` (which `python -c` imports from first); it
    prints one JSON object last."""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=cwd, check=False
    )
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1:] or [f"exit {done.returncode}"]}
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


# Peak RSS (sampled every 5 ms; ru_maxrss would count the parent's RSS at the fork) above the
# RSS with the imports done: what reading the file added.
MEASURED = """
import json, threading, time, psutil
{imports}
process = psutil.Process()
base, peak, done = process.memory_info().rss, 0, threading.Event()
def sample():
    global peak
    while not done.is_set():
        peak = max(peak, process.memory_info().rss)
        time.sleep(0.005)
sampler = threading.Thread(target=sample)
sampler.start()
start = time.perf_counter()
{work}
seconds = time.perf_counter() - start
done.set()
sampler.join()
print(json.dumps({{"peak_above_start_mb": (peak - base) / 1e6, "seconds": seconds, **extra}}))
"""


def pandas_baseline(path: Path) -> dict[str, Any]:
    """pandas' JSONL reader on the file, in a fresh process."""
    return in_fresh_process(
        MEASURED.format(
            imports="import pandas",
            work=f"frame = pandas.read_json({str(path)!r}, lines=True)\n"
            "extra = {'rows': len(frame)}",
        ),
        ROOT,
    )


# The validation an upload ran, counting tokens: before (whole file, every record and row
# kept) and now (streamed, with the row index written).
VALIDATE = {
    "old": "report = read_upload(path, 'jsonl', min_rows=2, tokenizer=tokenizer).report",
    "new": "from tuneforge.datasets.row_index import RowIndexBuilder\n"
    "index = RowIndexBuilder()\n"
    "report = read_upload(path, 'jsonl', min_rows=2, tokenizer=tokenizer, keep_rows=False, "
    "index=index).report\n"
    "index.save(path)",
}


def checkout_figures(checkout: Path, path: Path, version: str) -> dict[str, Any]:
    """A checkout's validation of `path` (as its upload ran it), then one /rows page of it,
    each in a fresh process importing from `checkout`."""
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    validate = in_fresh_process(
        MEASURED.format(
            imports="from pathlib import Path\nfrom tuneforge.datasets.kinds import read_upload\n"
            "from tuneforge.datasets.statistics import load_tokenizer\n"
            "tokenizer = load_tokenizer('sentence-transformers/all-MiniLM-L6-v2')\n"
            f"path = Path({str(path)!r})",
            work=VALIDATE[version] + "\nextra = {'rows': report['statistics']['rows']}",
        ),
        checkout,
        env,
    )
    page = in_fresh_process(
        MEASURED.format(
            imports="from pathlib import Path\nfrom tuneforge.datasets.preview import preview_rows",
            work=f"page = preview_rows(Path({str(path)!r}), 'jsonl', {{}}, offset=1000, limit=20)\n"
            "extra = {'total': page['total']}",
        ),
        checkout,
        env,
    )
    return {"validation": validate, "rows_page": page}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=512, help="size of the uploaded file")
    parser.add_argument("--old", type=Path, help="a checkout with the old readers, to compare")
    parser.add_argument("--old-mib", type=int, default=32, help="slice the old code reads")
    parser.add_argument("--no-pandas", action="store_true", help="skip the pandas baseline")
    options = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="tuneforge-upload-memory-"))
    # The statistics tokenizer, offline, as the tests have it (before the Hub is imported).
    from tests.offline_models import build_hf_cache

    os.environ["HF_HOME"] = str(build_hf_cache(work / "hf"))
    os.environ["HF_HUB_OFFLINE"] = "1"
    data = work / "pairs.jsonl"
    started = time.perf_counter()
    lines = write_pairs(data, options.mib)
    print(
        f"wrote {data.stat().st_size / 2**20:.0f} MiB, {lines:,} lines "
        f"in {time.perf_counter() - started:.0f} s"
    )
    results: dict[str, Any] = {"mib": options.mib, "lines": lines, "bytes": data.stat().st_size}

    server = Server(work / "home", args=("--no-worker",), env={})
    try:
        process = psutil.Process(server.process.pid)
        idle = settle(process)
        sampler = PeakSampler(process)
        sampler.start()
        started = time.perf_counter()
        with data.open("rb") as f:
            r = httpx.post(
                f"{server.url}/v1/files",
                files={"file": ("pairs.jsonl", f)},
                data={"purpose": "fine-tune"},
                timeout=3600,
            )
        upload_seconds = time.perf_counter() - started
        peak = sampler.stop()
        assert r.status_code == 200, r.text
        uploaded = r.json()
        held = settle(process)
        report = server.client.get(f"/v1/datasets/{uploaded['id']}").json()
        results["server"] = {
            "idle_mb": idle / 1e6,
            "peak_mb": peak / 1e6,
            "peak_above_idle_mb": (peak - idle) / 1e6,
            "held_after_mb": (held - idle) / 1e6,
            "upload_and_validation_seconds": upload_seconds,
            "valid": report["valid"],
            "rows": report["statistics"]["rows"],
            "tokens_counted": "tokens" in report["statistics"]["columns"]["anchor"],
        }
        total = report["statistics"]["rows"]
        results["rows_pages"] = {
            name: page_latency(server.client, uploaded["id"], offset)
            for name, offset in (("start", 0), ("middle", total // 2), ("end", total - 20))
        }
    finally:
        server.stop()

    if not options.no_pandas:
        results["pandas_read_json"] = pandas_baseline(data)
    if options.old is not None:
        part = work / "slice.jsonl"
        with data.open("rb") as source, part.open("wb") as out:
            out.write(source.read(options.old_mib * 2**20).rsplit(b"\n", 1)[0] + b"\n")
        results["old_code"] = {"mib": options.old_mib, **checkout_figures(options.old, part, "old")}
        results["new_code"] = {"mib": options.old_mib, **checkout_figures(ROOT, part, "new")}
    shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(results, indent=2))
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"upload-memory-{datetime.now():%Y%m%d-%H%M%S}.json"
    out.write_text(json.dumps(results, indent=2))
    print(f"results: {out}")


if __name__ == "__main__":
    main()

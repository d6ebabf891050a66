"""Generated hostile data files through the readers, in-process (issue 22: ≥ 10,000 files,
0 exceptions).

Each file comes from the hypothesis strategies of tests/datasets/hostile_files.py (JSONL, CSV
and Parquet of valid structure with hostile values, odd encodings, and random bytes read as
each format) and goes through what an upload and the dashboard do with it: the streamed
validation with its row index, the same validation in memory (the reports must be equal),
and three `/rows` pages (their JSON must serialise). Counts by outcome: a valid report, a
report with problems, or an exception (a broken contract: must be 0; the first few are
printed with their file).

    python bench/fuzz_files.py [--files 10000] [--seed 22]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

from hypothesis import HealthCheck, given, seed, settings

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for tests.* and tuneforge when run as `python bench/...`

from tests.datasets.hostile_files import FILES, check_file  # noqa: E402

SHOWN_FAILURES = 5


def fuzz(
    name: str,
    examples: int,
    seed_value: int,
    folder: Path,
    outcomes: Counter[str],
    codes: Counter[str],
    failures: list[str],
) -> None:
    """Run `examples` files of generator `name` through `check_file`, counting outcomes."""
    formats = {"random": ("jsonl", "csv", "parquet"), "well_formed": ("jsonl",)}.get(name, (name,))
    count = 0

    @seed(seed_value)
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(FILES[name])
    def run(content: bytes) -> None:
        nonlocal count
        fmt = formats[count % len(formats)]
        if name == "well_formed" and not content.lstrip().startswith(b"{"):
            fmt = "csv"
        count += 1
        try:
            outcome = check_file(folder, f"f{count}.{fmt}", content, fmt)
        except Exception:  # counted: it is what is measured
            outcomes["exception"] += 1
            if len(failures) < SHOWN_FAILURES:
                failures.append(f"{name} as {fmt}: {content[:200]!r}\n{traceback.format_exc()}")
            return
        outcomes[outcome.kind] += 1
        codes.update(outcome.report["problems_by_code"])

    run()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=10_000, help="files in all")
    parser.add_argument("--seed", type=int, default=22)
    options = parser.parse_args()
    outcomes: dict[str, Counter[str]] = {name: Counter() for name in FILES}
    codes: Counter[str] = Counter()
    failures: list[str] = []
    folder = Path(tempfile.mkdtemp(prefix="tuneforge-fuzz-"))
    per_kind = -(-options.files // len(FILES))
    started = time.perf_counter()
    for name in FILES:
        fuzz(name, per_kind, options.seed, folder, outcomes[name], codes, failures)
        print(f"{name}: {dict(outcomes[name])}", flush=True)
    total = Counter[str]()
    for counted in outcomes.values():
        total.update(counted)
    summary = {
        "files": sum(total.values()),
        "seconds": round(time.perf_counter() - started, 1),
        "outcomes": {
            "valid": total["valid"],
            "problems": total["problems"],
            "exception": total["exception"],
        },
        "by_generator": {name: dict(counted) for name, counted in outcomes.items()},
        "problem_codes": dict(codes.most_common()),
    }
    shutil.rmtree(folder, ignore_errors=True)
    print(json.dumps(summary, indent=2))
    for failure in failures:
        print(failure, file=sys.stderr)
    sys.exit(1 if total["exception"] else 0)


if __name__ == "__main__":
    main()

"""Reporting, for the benchmarks: the medians and ratios A/B of the training benchmarks as
Markdown (stdout and `bench/results/<name>-<time>.md`) with a JSON file of every run, and the
service benchmark's summary table."""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from measure import QUIET_CORES, Run, describe_device

if TYPE_CHECKING:
    from running import Benchmark

RESULTS = Path(__file__).resolve().parent / "results"

# The metrics of the summary tables: (Run field, label, format).
METRICS = (
    ("trained_tokens_per_s", "trained tokens/s", "{:,.0f}"),
    ("examples_per_s", "{examples}/s", "{:,.2f}"),
    ("tokens_per_s", "real (non-padding) tokens/s", "{:,.0f}"),
    ("padding_share", "padding share of computed tokens", "{:.1%}"),
    ("mfu", "MFU", "{:.2%}"),
    ("peak_memory_mib", "peak memory (MiB)", "{:,.0f}"),
    ("train_runtime_s", "train_runtime (s)", "{:,.2f}"),
    ("total_wall_s", "whole run incl. load/save/eval (s)", "{:,.2f}"),
    ("train_loss", "training loss (mean over the run)", "{:.4f}"),
)
METRIC_NAMES = {m: label for m, label, _ in METRICS}


# -- the training benchmarks --------------------------------------------------------------------


def describe_machine(device: str, peak: float, peaks: dict[str, float]) -> dict[str, Any]:
    """The machine and the library versions, for the report: `peak` is the matmul peak MFU is
    against, `peaks` every one measured."""
    return {
        "device": device,
        "description": describe_device(device),
        "matmul_peak_flops": peak,
        "matmul_peaks": peaks,
        "peak_dtype": "bfloat16" if device == "cuda" else "float32",
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "versions": {
            name: __import__(name).__version__
            for name in (
                "torch",
                "transformers",
                "trl",
                "peft",
                "sentence_transformers",
                "datasets",
                "tuneforge",
            )
        },
    }


def write(
    bench: Benchmark, kept: list[Run], repeated: list[Run], machine: dict[str, Any], out: Path
) -> dict[str, Any]:
    """The report of the runs: Markdown on stdout and in `out`, with a JSON file of every run
    (`kept`, and the disturbed ones that were `repeated`); returns what the JSON holds."""
    summary = summarize(bench, kept)
    report = markdown(bench, kept, repeated, summary, machine)
    print("\n" + report)
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (out / f"{bench.name}-{stamp}.md").write_text(report)
    results = {
        "benchmark": bench.name,
        "machine": machine,
        "config": bench.config,
        "flops_model": asdict(bench.flops),
        "summary": summary,
        "runs": [asdict(r) for r in kept],
        "repeated_runs": [asdict(r) for r in repeated],
        "quiet_cores": QUIET_CORES,
    }
    (out / f"{bench.name}-{stamp}.json").write_text(json.dumps(results, indent=2))
    print(f"Wrote {out}/{bench.name}-{stamp}.{{md,json}}")
    return results


def summarize(bench: Benchmark, runs: list[Run]) -> dict[str, Any]:
    """Medians per path (metrics and quality), and per comparison the ratios A/B."""
    medians: dict[str, dict[str, float]] = {}
    for path in bench.paths:
        mine = [r for r in runs if r.path == path.key]
        values = {m: statistics.median(getattr(r, m) for r in mine) for m, _, _ in METRICS}
        for key in sorted({k for r in mine for k in r.quality}):
            values[key] = statistics.median(r.quality[key] for r in mine if key in r.quality)
        medians[path.key] = values
    comparisons = []
    for c in bench.comparisons:
        a, b = medians[c.a], medians[c.b]
        ratios = {m: a[m] / b[m] for m in a if b.get(m)}
        comparisons.append(
            {
                "title": c.title,
                "a": c.a,
                "b": c.b,
                "headline": c.headline,
                "target": c.target,
                "ratio": ratios[c.headline],
                "ratios": ratios,
                "met": ratios[c.headline] >= c.target,
            }
        )
    return {"medians": medians, "comparisons": comparisons}


def markdown(
    bench: Benchmark,
    runs: list[Run],
    repeated: list[Run],
    summary: dict[str, Any],
    machine: dict[str, Any],
) -> str:
    labels = {p.key: p.label for p in bench.paths}
    precision = {p.key: p.precision for p in bench.paths}
    peak = machine["matmul_peak_flops"]
    lines = [
        f"# {bench.title}",
        "",
        *bench.description,
        "",
        f"{machine['date']}, {machine['description']}; measured matmul peak "
        f"{peak / 1e9:,.1f} GFLOP/s ({machine['peak_dtype']})"
        + (
            f", bfloat16 {machine['matmul_peaks']['bfloat16'] / 1e9:,.1f} GFLOP/s"
            if "bfloat16" in machine["matmul_peaks"]
            else ""
        )
        + ".",
        f"Model FLOPs per token: {bench.flops.of_run(1, 0) / 1e6:,.1f} M (matmuls) + "
        f"{12 * bench.flops.layers * bench.flops.attention_width:,} × sequence length "
        "(attention).",
        "",
    ]
    medians = summary["medians"]
    for comparison, c in zip(bench.comparisons, summary["comparisons"], strict=True):
        a, b = medians[c["a"]], medians[c["b"]]
        lines += [f"## {c['title']}", "", f"A: {labels[c['a']]}.", f"B: {labels[c['b']]}."]
        if comparison.note:
            lines += ["", comparison.note]
        lines += ["", "| metric (median) | A | B | A/B |", "|---|---:|---:|---:|"]
        for metric, label, fmt in METRICS:
            if metric == "trained_tokens_per_s" and not a[metric]:
                continue
            lines.append(
                f"| {label.format(examples=bench.examples_name)} | {fmt.format(a[metric])}"
                f" | {fmt.format(b[metric])} | {c['ratios'].get(metric, 0):.3f}× |"
            )
        for key in sorted(k for k in a if k in b and k not in METRIC_NAMES):
            lines.append(
                f"| {key} (after training) | {a[key]:.4f} | {b[key]:.4f} | "
                f"{a[key] / b[key] if b[key] else 0:.3f}× |"
            )
        name = METRIC_NAMES[c["headline"]]
        lines += [
            "",
            f"**{name.format(examples=bench.examples_name)}: A/B = {c['ratio']:.3f}×**"
            f" — target ≥ {c['target']}×: {'met' if c['met'] else 'NOT met'}.",
            "",
        ]
    odd = [k for k, p in precision.items() if p != machine["peak_dtype"]]
    if odd:
        lines += [
            f"MFU of {', '.join(odd)} ({', '.join(precision[k] for k in odd)}) is "
            f"against the {machine['peak_dtype']} peak too.",
            "",
        ]
    lm = any(r.trained_tokens for r in runs)
    lines += [
        "## Every run",
        "",
        f"| round | path | train_runtime (s) | steps | {bench.examples_name}/s | tokens/s | "
        + ("trained tokens/s | " if lm else "")
        + "padding | MFU | peak memory (MiB) | "
        "loss | whole run (s) | CPU (s) | other load (cores) |",
        "|---:|---|" + "---:|" * (12 if lm else 11),
    ]
    for r in runs:
        lines.append(
            f"| {r.round} | {r.path} | {r.train_runtime_s:.2f} | {r.steps} | "
            f"{r.examples_per_s:,.2f} | {r.tokens_per_s:,.0f} | "
            + (f"{r.trained_tokens_per_s:,.0f} | " if lm else "")
            + f"{r.padding_share:.1%} | {r.mfu:.2%} | {r.peak_memory_mib:,.0f} | "
            f"{r.train_loss:.4f} | {r.total_wall_s:.1f} | {r.cpu_s:.1f} | "
            f"{r.other_load_cores:.2f} |"
        )
    lines += ["", "Per run, each path trained on (the first round's counts):", ""]
    for path in bench.paths:
        r = next(r for r in runs if r.path == path.key)
        lines.append(
            f"- {path.key}: {r.examples:,} {bench.examples_name}, {r.real_tokens:,} "
            f"real tokens, {r.computed_tokens:,} computed (padding included)"
            + (f", {r.trained_tokens:,} trained" if lm else "")
            + f", {r.model_flops / 1e12:,.2f} model TFLOPs"
        )
    disturbed = [f"{r.round}/{r.path}" for r in runs if r.other_load_cores > QUIET_CORES]
    if disturbed:
        lines += [
            "",
            f"Warning: other processes used > {QUIET_CORES} cores during "
            f"{', '.join(disturbed)} even after retries; those timings are not clean.",
        ]
    if repeated:
        lines += [
            "",
            f"{len(repeated)} disturbed run(s) were repeated: "
            + ", ".join(
                f"{d.round}/{d.path} ({d.other_load_cores:.2f} cores, {d.train_runtime_s:.1f} s)"
                for d in repeated
            )
            + ".",
        ]
    lines += overhead_lines(runs, medians)
    return "\n".join(lines) + "\n"


def overhead_lines(runs: list[Run], medians: dict[str, dict[str, float]]) -> list[str]:
    """Where tuneforge's time went inside `train_runtime`, medians over its runs."""
    mine = [r for r in runs if r.overhead]
    if not mine:
        return []
    lines = ["", "## Where tuneforge's time went inside train_runtime (medians)", ""]
    saves = statistics.median(r.overhead["checkpoint_save_s"] for r in mine)
    lines.append(
        f"- checkpoint saves (model/adapters, optimizer, scheduler; staged, fsynced): {saves:.2f} s"
    )
    for method in sorted({m for r in mine for m in r.overhead["reporter_seconds"]}):
        seconds = statistics.median(r.overhead["reporter_seconds"].get(method, 0.0) for r in mine)
        calls = statistics.median(r.overhead["reporter_calls"].get(method, 0) for r in mine)
        lines.append(f"- JobReporter.{method}: {calls:.0f} calls, {seconds * 1000:.1f} ms")
    events = statistics.median(r.overhead["events_written"] for r in mine)
    lines.append(f"- events written per run: {events:.0f}")
    added = statistics.median(
        r.overhead["checkpoint_save_s"] + sum(r.overhead["reporter_seconds"].values()) for r in mine
    )
    runtime = medians[mine[0].path]["train_runtime_s"]
    lines.append(
        f"- attributed overhead (checkpoint saves + reporter): {added:.2f} s of "
        f"{runtime:.2f} s, i.e. an expected ratio of {(runtime - added) / runtime:.3f}×"
    )
    return lines


# -- the service benchmark -----------------------------------------------------------------------


def service_markdown(result: dict[str, Any], quiet_cores: float) -> str:
    """The service benchmark's summary: one Markdown table, measure | value; a run whose other
    processes used more than `quiet_cores` is marked disturbed."""
    c, f, s, r = (result[k] for k in ("creation", "first_step", "fan_out", "status_reads"))
    idle, post, lag = c["idle_streams"], c["post_ms"], s["lag_ms"]
    fin, stop = r["finished_job"], r["stopped_job"]
    phases = ", ".join(f"{k} {v}" for k, v in f["median_phases_s"].items())
    rows = [
        (
            f"job creation, p50 / p99 ({post['n']} sequential POSTs)",
            f"{post['p50']} / {post['p99']} ms",
        ),
        ("job creation, first POST after start", f"{c['first_post_ms']} ms"),
        (
            "job creation with the whole STS-B train file, p50",
            f"{c['post_whole_stsb_ms']['p50']} ms",
        ),
        (
            "cancel of a queued job, p50 / p99",
            f"{c['cancel_queued_ms']['p50']} / {c['cancel_queued_ms']['p99']} ms",
        ),
        (
            f"server CPU with {idle['clients']} idle event streams (with none)",
            f"{idle['server_cores_with_clients']} ({idle['server_cores_no_clients']}) cores",
        ),
        (f"POST to first training step, median of {len(f['runs'])}", f"{f['median_s']} s"),
        ("... seconds between events (medians)", phases),
        (
            "... first step seen in GET `metrics` / `progress`",
            f"{f['median_seen_metrics_s']} / {f['median_seen_progress_s']} s",
        ),
        ("worker busy after its job ended (median)", f"{f['median_worker_busy_after_end_s']} s"),
        (
            f"fan-out: {s['clients']} clients x {s['events']} events, each once and in order",
            "yes" if s["all_received_in_order"] else "**NO**",
        ),
        (
            f"fan-out delivery lag, p50 / p99 ({lag['n']} live deliveries)",
            f"{lag['p50']} / {lag['p99']} ms",
        ),
        (
            "... per event, its first / its last client, p50",
            f"{s['first_client_lag_ms']['p50']} / {s['last_client_lag_ms']['p50']} ms",
        ),
        ("server CPU during fan-out", f"{s['server_cores']} cores"),
        (
            f"status reads, {fin['readers']} clients: finished job ({fin['response_bytes']} B) "
            f"/ stopped job ({stop['response_bytes']} B)",
            f"{fin['req_per_s']} / {stop['req_per_s']} req/s",
        ),
        (
            "... latency p50 / p99: finished job; stopped job",
            f"{fin['latency_ms']['p50']} / {fin['latency_ms']['p99']} ms; "
            f"{stop['latency_ms']['p50']} / {stop['latency_ms']['p99']} ms",
        ),
        (
            "... CPU meanwhile, server / client: finished job; stopped job",
            f"{fin['server_cores']} / {fin['client_cores']}; "
            f"{stop['server_cores']} / {stop['client_cores']} cores",
        ),
        (
            "`Store.get_job` alone, one thread: finished job; stopped job",
            f"{fin['store_get_job_per_s']}; {stop['store_get_job_per_s']} /s",
        ),
    ]
    machine, other = result["machine"], result["other_load_cores"]
    disturbed = " (**disturbed**)" if other > quiet_cores else ""
    lines = [
        f"## Service benchmark, {result['date']}",
        "",
        f"{machine['cpu']}, {machine['cores']} cores, {result['database']}; other processes "
        f"used {other} cores during the run{disturbed}.",
        "",
        "| measure | value |",
        "|---|---|",
        *(f"| {measure} | {value} |" for measure, value in rows),
    ]
    return "\n".join(lines) + "\n"

"""Quality on a real instruct model: what tuneforge's supervised and dpo jobs, with their default
hyperparameters, make of SmolLM2-135M-Instruct on a structured-output task.

The task (tests/banking_json.py): a BANKING77 customer message in, one JSON object with exactly
the keys `intent` (the message's label) and `topic` (a coarse group of it) out, under a system
prompt that states the task and the keys. Training rows, the jobs' validation rows and the
held-out prompts are disjoint draws from the file; the jobs never see the held-out ones.

It goes through the product as a user would: the files are ingested (validated), each job is
created as `POST /v1/fine_tuning/jobs` creates it and run by a worker (its own process,
checkpoints, the registry), then the registered model is loaded as the server loads it.

1. **Base**: SmolLM2 answers the held-out prompts (greedy, the generation checks' code): the
   share of answers that are valid JSON, that have exactly the keys, and with the right intent.
2. **SFT**: a `supervised` job (LoRA, every hyperparameter at its default); the same held-out
   figures for the fine-tuned model.
3. **DPO**: a `dpo` job (LoRA, defaults) on preference pairs of the task (the correct JSON
   chosen; a wrong intent, a missing key or prose rejected), starting from the SFT model (the
   usual order: SFT, then preferences) or, with `--dpo-from base`, from SmolLM2. On held-out
   pairs: DPO's implicit reward (beta x the log-probability ratio of policy to reference)
   accuracy and margin, the reference-free preference accuracy and log-probability margin of
   the start model and the DPO model, and the held-out generation figures again.

Every phase records its wall time, this process's and its children's CPU (the job processes),
and the CPU that other processes used meanwhile. Results: `bench/results/llm_quality-<time>.
{json,md}` and the Markdown on stdout.

    python bench/llm_quality.py                      # ~20 min on 2 busy cores
    python bench/llm_quality.py --train-rows 48 --held-out 32 --skip-dpo
    python bench/llm_quality.py --set learning_rate=4e-4 --set n_epochs=2
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import measure
import report
import running

from tests import banking_json as task

# The run of bench/README.md: ~20 min on 2 busy cores.
DEFAULT_SIZES = {
    "train": 96,
    "validation": 8,
    "held_out": 64,
    "dpo_train": 48,
    "dpo_held_out": 32,
}


@dataclass
class Phase:
    """What one phase of the benchmark cost."""

    name: str
    wall_s: float = 0.0
    cpu_s: float = 0.0  # this process and the job processes it waited for
    other_load_cores: float = 0.0  # CPU that the rest of the machine used meanwhile


@contextmanager
def phase(phases: list[Phase], name: str) -> Iterator[Phase]:
    record = Phase(name)
    busy, own = measure.machine_busy_seconds(), measure.own_cpu_seconds(children=True)
    start = time.perf_counter()
    print(f"-- {name}", flush=True)
    try:
        yield record
    finally:
        record.wall_s = round(time.perf_counter() - start, 1)
        record.cpu_s = round(measure.own_cpu_seconds(children=True) - own, 1)
        other = measure.machine_busy_seconds() - busy - record.cpu_s
        record.other_load_cores = round(max(other, 0.0) / max(record.wall_s, 1e-9), 2)
        phases.append(record)
        print(
            f"   {name}: {record.wall_s:.0f} s, own CPU {record.cpu_s:.0f} s, other processes "
            f"{record.other_load_cores:.2f} cores",
            flush=True,
        )


# -- the product's side ------------------------------------------------------------------------


class Product:
    """A tuneforge data folder with its store and a worker in this process (the jobs run in
    their own processes, as under `tuneforge worker`)."""

    def __init__(self, home: Path):
        from tuneforge.config import Settings
        from tuneforge.db.store import Store
        from tuneforge.jobs.worker import Worker

        self.settings = Settings(home=home)
        self.settings.ensure_dirs()
        self.store = Store(self.settings.db_url)
        self.store.create_schema()
        self.worker = Worker(self.store, self.settings, "bench")

    def upload(self, name: str, rows: list[dict[str, Any]]) -> str:
        """Ingest rows as a JSONL file, as `POST /v1/files` does; its id."""
        import io

        from tuneforge.datasets.ingest import ingest_file

        body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()
        return str(ingest_file(self.store, self.settings, name, io.BytesIO(body))["id"])

    def train(self, body: dict[str, Any]) -> dict[str, Any]:
        """Create a job from `body` (the REST request's JSON) and run it to its end."""
        from tuneforge.jobs.service import create_job
        from tuneforge.training.spec import JobCreate

        job = create_job(self.store, self.settings, JobCreate.model_validate(body))
        while self.worker.run_once(job["id"]):
            pass
        job = self.store.require_job(job["id"])
        if job["status"] != "succeeded":
            log = self.settings.jobs_dir / job["id"] / "process.log"
            raise SystemExit(f"{body['method']['type']} job {job['status']}: {job['error']}; {log}")
        return dict(job)

    def location(self, model: str) -> str:
        """Where a named model loads from, as the server resolves it."""
        from tuneforge.registry.models import resolve_model

        return resolve_model(self.store, self.settings, model).location

    def from_events(self, job_id: str, key: str, kind: str | None = None) -> float | None:
        """The last value of `key` in the job's events' data (of events of type `kind`): the
        trainer's `train_runtime` in a metrics event, the learning rate an auto default chose."""
        events, _ = self.store.list_events(job_id, limit=100_000)
        values = [
            e["data"][key]
            for e in events
            if (kind is None or e["type"] == kind) and key in (e["data"] or {})
        ]
        return float(values[-1]) if values else None



def offline_smollm2(tmp: Path, device_option: str, bench: str) -> tuple[str, str, dict[str, Any]]:
    """SMOLLM2 in an offline Hugging Face cache under `tmp` (the Hub switched off), quiet
    transformers, and the device asked for: (the model's Hub id, the device, the machine as
    the report describes it, printed under `bench`'s name)."""
    hf_home = tmp / "hf"
    running.offline_hub(hf_home)
    from tests.offline_models import SMOLLM2, install_smollm2

    install_smollm2(hf_home)
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    device = measure.pick_device(device_option)
    machine = report.describe_machine(device, 0.0, {})
    print(f"{bench}: {machine['description']}", flush=True)
    return SMOLLM2, device, machine

def load(location: str, device: str) -> tuple[Any, Any]:
    """A model and its chat tokenizer, loaded as the server and the evaluations load them."""
    from tuneforge.training import llm

    model = llm.load_causal_lm(location, device=device).to(device)
    return model, llm.load_chat_tokenizer(location)


def job_summary(product: Product, job: dict[str, Any]) -> dict[str, Any]:
    result = job["result"] or {}
    kind = job["spec"]["method"]["type"]
    return {
        "job": job["id"],
        "model": job["fine_tuned_model"],
        "steps": result.get("steps"),
        "train_loss": result.get("train_loss"),
        "train_runtime_s": product.from_events(job["id"], "train_runtime", "metrics"),
        "learning_rate": job["spec"]["method"][kind]["hyperparameters"]["learning_rate"]
        or product.from_events(job["id"], "learning_rate", "message"),
        # The job's own measurement of its validation rows, before and after.
        "validation": {
            key: result.get("evaluation", {}).get(key) for key in ("base_model", "fine_tuned_model")
        },
    }


# -- the benchmark ----------------------------------------------------------------------------


def checks(samples: int) -> dict[str, Any]:
    """The jobs' own generation checks, set for this task: every validation prompt, answers
    as long as the task's longest, the task's keys."""
    return {"samples": samples, "max_new_tokens": 48, "expected_keys": list(task.KEYS)}


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for name, size in DEFAULT_SIZES.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=size, dest=name)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--dpo-from", choices=("sft", "base"), default="sft")
    parser.add_argument("--skip-dpo", action="store_true")
    parser.add_argument("--out", type=Path, default=report.RESULTS)
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a supervised hyperparameter (default: none, the job's defaults); repeatable",
    )
    parser.add_argument(
        "--dpo-set",
        dest="dpo_overrides",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a dpo hyperparameter (default: none); repeatable",
    )
    parser.add_argument(
        "--dpo-also",
        dest="dpo_also",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="train a second dpo job from the same start with this hyperparameter changed "
        "(e.g. learning_rate=5e-5), measured alike; repeatable",
    )
    options = parser.parse_args(argv)
    sft_hp = running.overrides(options)
    dpo_hp = running.overrides(argparse.Namespace(overrides=options.dpo_overrides))
    dpo_also = running.overrides(argparse.Namespace(overrides=options.dpo_also))
    phases: list[Phase] = []
    results: dict[str, Any] = {"sizes": {k: getattr(options, k) for k in DEFAULT_SIZES}}

    with tempfile.TemporaryDirectory(prefix="tuneforge-bench-llm-quality-") as tmp:
        SMOLLM2, device, machine = offline_smollm2(Path(tmp), options.device, "llm_quality")

        with phase(phases, "data: draw, write and ingest the files"):
            drawn = task.draw(
                running.DATA, {k: getattr(options, k) for k in DEFAULT_SIZES}, options.seed
            )
            intents = sorted({e.intent for e in task.read_examples(running.DATA)})
            product = Product(Path(tmp) / "home")
            files = {
                "train": product.upload("train.jsonl", [e.chat_row() for e in drawn["train"]]),
                "validation": product.upload(
                    "validation.jsonl", [e.chat_row() for e in drawn["validation"]]
                ),
            }
            dpo_held_out = task.preference_rows(drawn["dpo_held_out"], intents)
            if not options.skip_dpo:
                for name, examples in (
                    ("dpo_train", drawn["dpo_train"]),
                    # The DPO job's validation pairs: of the SFT job's validation messages.
                    ("dpo_validation", drawn["validation"]),
                ):
                    rows = task.preference_rows(examples, intents)
                    files[name] = product.upload(
                        f"{name}.jsonl", [task.openai_preference(r) for r in rows]
                    )

        held_out = drawn["held_out"]
        with phase(phases, f"base: answer {len(held_out)} held-out prompts"):
            base_location = product.location(SMOLLM2)
            model, tokenizer = load(base_location, device)
            results["base"] = task.generation_quality(model, tokenizer, held_out)
            del model

        sft_body = {
            "model": SMOLLM2,
            "training_file": files["train"],
            "validation_file": files["validation"],
            "seed": options.seed,
            "suffix": "banking-json",
            "method": {
                "type": "supervised",
                "supervised": {"generation_checks": checks(options.validation)},
            },
        }
        if sft_hp:
            sft_body["method"]["supervised"]["hyperparameters"] = sft_hp
        with phase(phases, f"sft: a supervised job on {options.train} rows") as sft_phase:
            sft_job = product.train(sft_body)
        results["sft_job"] = job_summary(product, sft_job)
        results["sft_job"]["hyperparameters"] = sft_job["spec"]["method"]["supervised"][
            "hyperparameters"
        ]
        print(f"   {results['sft_job']}", flush=True)
        sft_location = product.location(sft_job["fine_tuned_model"])
        with phase(phases, f"sft: answer {len(held_out)} held-out prompts"):
            model, tokenizer = load(sft_location, device)
            results["sft"] = task.generation_quality(model, tokenizer, held_out)
            del model

        if not options.skip_dpo:
            start = sft_job["fine_tuned_model"] if options.dpo_from == "sft" else SMOLLM2
            start_location = sft_location if options.dpo_from == "sft" else base_location
            variants = [("dpo", dpo_hp)]
            if dpo_also:
                variants.append(("dpo_also", {**dpo_hp, **dpo_also}))
            for key, overrides in variants:
                dpo_body = {
                    "model": start,
                    "training_file": files["dpo_train"],
                    "validation_file": files["dpo_validation"],
                    "seed": options.seed,
                    "suffix": "banking-json-dpo",
                    "method": {"type": "dpo", "dpo": {"generation_checks": checks(0)}},
                }
                if overrides:
                    dpo_body["method"]["dpo"]["hyperparameters"] = overrides
                with phase(phases, f"{key}: a dpo job on {options.dpo_train} pairs {overrides}"):
                    dpo_job = product.train(dpo_body)
                summary = results[f"{key}_job"] = job_summary(product, dpo_job)
                summary["hyperparameters"] = dpo_job["spec"]["method"]["dpo"]["hyperparameters"]
                summary["start"] = options.dpo_from
                print(f"   {summary}", flush=True)
                with phase(phases, f"{key}: {len(dpo_held_out)} held-out pairs"):
                    reference, tokenizer = load(start_location, device)
                    policy, _ = load(product.location(dpo_job["fine_tuned_model"]), device)
                    figures = task.preference_figures(
                        policy,
                        reference,
                        tokenizer,
                        dpo_held_out,
                        summary["hyperparameters"]["beta"],
                    )
                    results[f"{key}_start"] = figures["start"]
                    results[f"{key}_tuned"] = figures["tuned"]
                    del reference
                with phase(phases, f"{key}: answer {len(held_out)} held-out prompts"):
                    results[key] = task.generation_quality(policy, tokenizer, held_out)
                    del policy

    results["phases"] = [asdict(p) for p in phases]
    results["machine"] = machine
    results["sft_job"]["train_phase_s"] = sft_phase.wall_s
    write(results, options.out)
    return 0


# -- the report ---------------------------------------------------------------------------------


def markdown(results: dict[str, Any]) -> str:
    sizes, sft_job = results["sizes"], results["sft_job"]
    hp = sft_job["hyperparameters"]
    lines = [
        "# LLM quality: SmolLM2-135M-Instruct, BANKING77 as JSON",
        "",
        f"{results['machine']['date']}; {results['machine']['description']}. Training rows "
        f"{sizes['train']}, validation {sizes['validation']}, held-out prompts "
        f"{sizes['held_out']}. SFT: {sft_job['steps']} steps ({hp['n_epochs']} epochs, batch "
        f"{hp['batch_size']} x {hp['gradient_accumulation_steps']}, "
        f"lr {sft_job['learning_rate']}).",
        "",
        "| held-out prompts | valid JSON | exactly the keys | right intent | right topic |",
        "|---|---:|---:|---:|---:|",
    ]
    labels = (("base", "base"), ("sft", "SFT"), ("dpo", "then DPO"), ("dpo_also", "DPO, changed"))
    for key, label in labels:
        if key in results:
            r = results[key]
            lines.append(
                f"| {label} | {r['json_valid_share']:.2f} | {r['exact_keys_share']:.2f} | "
                f"{r['intent_correct_share']:.2f} | {r['topic_correct_share']:.2f} |"
            )
    for key in ("dpo", "dpo_also"):
        if f"{key}_job" not in results:
            continue
        dpo = results[f"{key}_job"]
        lines += [
            "",
            f"DPO from {dpo['start']}: {dpo['steps']} steps on {sizes['dpo_train']} pairs, lr "
            f"{dpo['learning_rate']}, beta {dpo['hyperparameters']['beta']}; "
            f"{sizes['dpo_held_out']} held-out pairs.",
            "",
            "| held-out pairs | reward accuracy | reward margin | preference accuracy "
            "(no reference) | log-prob margin (nats) |",
            "|---|---:|---:|---:|---:|",
        ]
        for part, label in (("start", "start model"), ("tuned", "DPO model")):
            r = results[f"{key}_{part}"]
            lines.append(
                f"| {label} | {r['reward_accuracy']:.2f} | {r['reward_margin']:.3f} | "
                f"{r['preference_accuracy']:.2f} | {r['logp_margin']:.2f} |"
            )
    lines += ["", "| phase | wall | CPU (ours) | other processes |", "|---|---:|---:|---:|"]
    for p in results["phases"]:
        lines.append(
            f"| {p['name']} | {p['wall_s']:.0f} s | {p['cpu_s']:.0f} s | "
            f"{p['other_load_cores']:.2f} cores |"
        )
    return "\n".join(lines) + "\n"


def write(results: dict[str, Any], out: Path) -> None:
    text = markdown(results)
    print("\n" + text)
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (out / f"llm_quality-{stamp}.md").write_text(text)
    (out / f"llm_quality-{stamp}.json").write_text(json.dumps(results, indent=2))
    print(f"Wrote {out}/llm_quality-{stamp}.{{md,json}}")


if __name__ == "__main__":
    sys.exit(main())

"""Reinforcement fine-tuning on a real instruct model: what a `reinforcement` job (trl's GRPO,
LoRA, a string_check grader) makes of SmolLM2-135M-Instruct on arithmetic with checkable
answers.

The task: "What is 13 + 8?" under a system prompt asking for the number only. Each line of
the file is OpenAI's reinforcement format, the prompt plus the answer as a field
(`{"messages": […], "answer": "21"}`); the grader, a `multi`, scores an answer 0.5 when it
contains the right number (string_check `like`) and 0.5 when it is at most 16 characters long
(`tuneforge_checks`), as the system prompt asks:

    0.5 * correct + 0.5 * short

Problems are drawn with a seeded generator (sums of two numbers from 1 to 20); the training
prompts and the held-out prompts are disjoint. The held-out prompts are the job's validation
file, so the job's own evaluation is the figure: the mean reward of greedy answers (at most
`--max-completion-length` tokens) to the held-out prompts, by SmolLM2 before training and by
the fine-tuned model after it.

It goes through the product: the files are ingested, the job is created as `POST
/v1/fine_tuning/jobs` creates it (the grader checked against every line) and run by a worker
in its own process. Results: `bench/results/rft-<time>.{json,md}` and the Markdown on stdout.

    python bench/rft.py                              # ~10 min on 2 busy cores
    python bench/rft.py --train 32 --held-out 16 --set n_epochs=1
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import report
import running
from llm_quality import Phase, Product, offline_smollm2, phase

SYSTEM_PROMPT = "You are a calculator. Reply with the result as a number only, nothing else."
GRADER = {
    "type": "multi",
    "name": "arithmetic",
    "graders": {
        "correct": {
            "type": "string_check",
            "name": "correct",
            "input": "{{sample.output_text}}",
            "reference": "{{item.answer}}",
            "operation": "like",
        },
        "short": {
            "type": "tuneforge_checks",
            "name": "short",
            "json_valid": False,
            "max_chars": 16,
        },
    },
    "calculate_output": "0.5 * correct + 0.5 * short",
}
# The job's hyperparameters unless --set changes them: one pass over the prompts, 4 prompts
# of 4 answers a step, short answers.
HYPERPARAMETERS = {"n_epochs": 1, "batch_size": 4, "max_completion_length": 16}
# 20 x 20 sums: at most 400 distinct prompts.
MAX_PROMPTS = 400


def problems(count: int, seed: int) -> list[dict[str, Any]]:
    """`count` distinct arithmetic prompts in OpenAI's reinforcement format."""
    rng = random.Random(seed)
    seen: set[str] = set()
    rows = []
    if count > MAX_PROMPTS:
        raise SystemExit(f"at most {MAX_PROMPTS} distinct prompts")
    while len(rows) < count:
        a, b = rng.randint(1, 20), rng.randint(1, 20)
        question = f"What is {a} + {b}?"
        if question in seen:
            continue
        seen.add(question)
        rows.append(
            {
                "messages": [
                    {"role": "system", "content": SYSTEM_PROMPT},
                    {"role": "user", "content": question},
                ],
                "answer": str(a + b),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", type=int, default=64, help="training prompts")
    parser.add_argument("--held-out", type=int, default=32, help="held-out prompts")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--out", type=Path, default=report.RESULTS)
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a reinforcement hyperparameter (default: HYPERPARAMETERS); repeatable",
    )
    options = parser.parse_args(argv)
    hyperparameters = {**HYPERPARAMETERS, **running.overrides(options)}
    phases: list[Phase] = []

    with tempfile.TemporaryDirectory(prefix="tuneforge-bench-rft-") as tmp:
        SMOLLM2, _, machine = offline_smollm2(Path(tmp), options.device, "rft")

        with phase(phases, "data: draw, write and ingest the files"):
            rows = problems(options.train + options.held_out, options.seed)
            product = Product(Path(tmp) / "home")
            train = product.upload("train.jsonl", rows[: options.train])
            held_out = product.upload("held_out.jsonl", rows[options.train :])
        body = {
            "model": SMOLLM2,
            "training_file": train,
            "validation_file": held_out,
            "seed": options.seed,
            "suffix": "arithmetic",
            "device": options.device,
            "method": {
                "type": "reinforcement",
                "reinforcement": {"grader": GRADER, "hyperparameters": hyperparameters},
            },
        }
        with phase(phases, f"rft: a reinforcement job on {options.train} prompts"):
            job = product.train(body)
        events, _ = product.store.list_events(job["id"], limit=100_000)
        steps = sorted(
            (e["data"]["step"], e["data"]["reward"], e["data"]["reward_std"])
            for e in events
            if e["type"] == "metrics" and "reward" in (e["data"] or {})
        )
        # The job's own measurement of its validation file (the held-out prompts).
        evaluation = job["result"]["evaluation"]
        results = {
            "machine": machine,
            "sizes": {"train": options.train, "held_out": options.held_out},
            "grader": GRADER,
            "hyperparameters": job["spec"]["method"]["reinforcement"]["hyperparameters"],
            "learning_rate": product.from_events(job["id"], "learning_rate", "message"),
            "train_runtime_s": product.from_events(job["id"], "train_runtime", "metrics"),
            "base": evaluation["base_model"],
            "fine_tuned": evaluation["fine_tuned_model"],
            "steps": [{"step": s, "reward": r, "reward_std": d} for s, r, d in steps],
            "phases": [vars(p) for p in phases],
        }
    stamp = time.strftime("%Y%m%d-%H%M%S")
    options.out.mkdir(parents=True, exist_ok=True)
    text = markdown(results)
    (options.out / f"rft-{stamp}.json").write_text(json.dumps(results, indent=2))
    (options.out / f"rft-{stamp}.md").write_text(text)
    print(text)
    return 0


def markdown(results: dict[str, Any]) -> str:
    base, tuned = results["base"], results["fine_tuned"]
    lines = [
        f"## rft: {results['sizes']['train']} training prompts, "
        f"{results['sizes']['held_out']} held out",
        "",
        f"{results['machine']['description']}; learning rate {results['learning_rate']}",
        "",
        "| held-out prompts (greedy) | mean reward | spread | answer tokens |",
        "|---|---:|---:|---:|",
        f"| SmolLM2 (base) | {base['reward_mean']:.3f} | {base['reward_std']:.3f} | "
        f"{base['answer_tokens']:.1f} |",
        f"| after the reinforcement job | {tuned['reward_mean']:.3f} | "
        f"{tuned['reward_std']:.3f} | {tuned['answer_tokens']:.1f} |",
        "",
        "| step | reward (16 sampled answers) | spread |",
        "|---:|---:|---:|",
        *(f"| {s['step']} | {s['reward']:.3f} | {s['reward_std']:.3f} |" for s in results["steps"]),
        "",
        "| phase | wall s | own CPU s | other processes (cores) |",
        "|---|---:|---:|---:|",
        *(
            f"| {p['name']} | {p['wall_s']} | {p['cpu_s']} | {p['other_load_cores']} |"
            for p in results["phases"]
        ),
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())

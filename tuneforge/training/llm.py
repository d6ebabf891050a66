"""What the `supervised` and `dpo` kinds share: the tokenizer and its chat template, the base
model (quantized or not, or one of our LoRA models), the adapters, the training arguments,
the measurement of a model on chat rows, and the folder a trained model is saved as.

A trained model's folder holds, with `tuning: lora`, the adapters (peft's
`adapter_config.json` + `adapter_model.safetensors`, loadable with `PeftModel` on the base
model) and, with `merge`, the merged model under `merged/`; with `tuning: full`, the whole
model. Either way the tokenizer with the chat template it was trained with, and
`tuneforge.json`, which records the base model.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuneforge.datasets.chat_render import chat_text
from tuneforge.errors import InvalidRequestError, QuantizationUnavailableError
from tuneforge.training.base import TrainResult, batch_arguments
from tuneforge.training.checkpoint_metrics import VALID_BATCH_ROWS
from tuneforge.training.hyperparameters import learning_rate
from tuneforge.training.spec import DPOMethod, ReinforcementMethod, SupervisedMethod, hub_id_of

if TYPE_CHECKING:
    from tuneforge.training.base import RunContext
    from tuneforge.training.hyperparameters import LLMHyperparameters
    from tuneforge.training.spec import (
        DPOMethodParams,
        GenerationChecks,
        JobCreate,
        LLMMethodParams,
        ReinforcementMethodParams,
        SupervisedMethodParams,
    )

# The chat template of tokenizers that have none: ChatML, as Qwen and many others write it.
CHATML = (
    "{%- for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{%- endif %}"
)
MODEL_INFO = "tuneforge.json"
MERGED = "merged"
IGNORED = -100  # the label of a token the loss skips


# -- tokenizer ---------------------------------------------------------------------------------


def load_chat_tokenizer(location: str) -> Any:
    """The model's tokenizer with a chat template (ChatML where it has none) and a pad token."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(location, trust_remote_code=False)
    if not tokenizer.chat_template:
        tokenizer.chat_template = CHATML
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


@lru_cache(maxsize=8)
def cached_chat_tokenizer(location: str) -> Any:
    """`load_chat_tokenizer`, loaded once per process: to check a job's files (token lengths,
    special tokens) as the job will read them. Not to be changed by the caller."""
    return load_chat_tokenizer(location)


def render_ids(
    tokenizer: Any, messages: list[dict[str, Any]], prompt: bool = False, tools: Any = None
) -> list[int]:
    """Token ids of messages as the chat template writes them (`prompt`: followed by the
    start of an assistant turn), with their tools (`datasets.chat_render`)."""
    text = chat_text(tokenizer, messages, tools, prompt=prompt)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def tokenize_conversation(
    tokenizer: Any, messages: list[dict[str, Any]], tools: Any = None
) -> dict[str, list[int]]:
    """`input_ids` of a conversation and its `labels`: IGNORED everywhere but on the tokens of
    the assistant messages that are trained on (weight 1, the default), their tool calls and
    end-of-turn marker included.

    An assistant message's tokens are those between the conversation up to it, rendered with
    the generation prompt, and the conversation up to and with it: whatever the template
    writes around a turn, only the answer (and its end) is learnt."""
    from trl.data_utils import common_prefix_length

    ids = render_ids(tokenizer, messages, tools=tools)
    labels = [IGNORED] * len(ids)
    for i, message in enumerate(messages):
        if message["role"] != "assistant" or message.get("weight", 1) == 0:
            continue
        before = render_ids(tokenizer, messages[:i], prompt=True, tools=tools)
        start = common_prefix_length(before, ids)
        end = common_prefix_length(render_ids(tokenizer, messages[: i + 1], tools=tools), ids)
        labels[start:end] = ids[start:end]
    return {"input_ids": ids, "labels": labels}


# -- where quantization can run ----------------------------------------------------------------


def _bitsandbytes_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("bitsandbytes") is not None


def check_quantization(spec: JobCreate) -> None:
    """Refuse, at job creation, 4-bit/8-bit loading that cannot run: on `device: cpu`, and
    with `device: auto` on a machine without a CUDA GPU or without bitsandbytes. (`device:
    cuda` is left to the CUDA worker that will take the job.)"""
    params = method_params(spec)
    if params is None or params.quantization not in ("4bit", "8bit"):
        return
    param = f"method.{spec.method.type}.quantization"
    wanted = f"quantization {params.quantization!r} (bitsandbytes)"
    if spec.device == "cpu":
        raise QuantizationUnavailableError(
            f"{wanted} needs a CUDA GPU, and the job asks for device 'cpu'. Use quantization "
            "'none' (or 'auto') to train on the CPU.",
            param=param,
        )
    if spec.device == "auto":
        import torch

        if not torch.cuda.is_available():
            raise QuantizationUnavailableError(
                f"{wanted} needs a CUDA GPU, and this machine has none. Use quantization "
                "'none' (or 'auto') to train on the CPU, or device 'cuda' to leave the job to "
                "a worker with a GPU.",
                param=param,
            )
        if not _bitsandbytes_installed():
            raise QuantizationUnavailableError(
                f"{wanted} needs the bitsandbytes package: pip install 'tuneforge[cuda]'.",
                param=param,
            )


def method_params(
    spec: JobCreate,
) -> SupervisedMethodParams | DPOMethodParams | ReinforcementMethodParams | None:
    """The supervised, DPO or reinforcement settings of a job (None for other kinds)."""
    if isinstance(spec.method, SupervisedMethod):
        return spec.method.supervised
    if isinstance(spec.method, DPOMethod):
        return spec.method.dpo
    if isinstance(spec.method, ReinforcementMethod):
        return spec.method.reinforcement
    return None


def resolve_quantization(params: LLMMethodParams, device: str, location: str, kind: str) -> str:
    """The quantization a run of a `kind` job uses: `auto` is 4bit on CUDA with bitsandbytes
    (LoRA only, and not over one of our adapter folders without merged weights), else none.
    An explicit 4bit/8bit where it cannot run is an InvalidRequestError."""
    wanted = params.quantization
    param = f"method.{kind}.quantization"
    over_adapter = _is_adapter(Path(location)) and not (Path(location) / MERGED).is_dir()
    if wanted == "auto":
        usable = device == "cuda" and _bitsandbytes_installed()
        return "4bit" if usable and params.tuning == "lora" and not over_adapter else "none"
    if wanted != "none":
        if device != "cuda" or not _bitsandbytes_installed():
            raise InvalidRequestError(
                f"quantization {wanted!r} needs a CUDA GPU and bitsandbytes; this worker has "
                f"{'no CUDA GPU' if device != 'cuda' else 'no bitsandbytes'}.",
                param=param,
            )
        if over_adapter:
            raise InvalidRequestError(
                "The base is a LoRA model saved without merged weights: it cannot be loaded "
                "quantized. Use quantization 'none', or a base trained with merge: true.",
                param=param,
            )
    return wanted


# -- models ------------------------------------------------------------------------------------


def _is_adapter(folder: Path) -> bool:
    return (folder / "adapter_config.json").is_file()


def compute_dtype(device: str) -> Any:
    """bfloat16 on GPUs that have it, float16 on other GPUs, float32 on the CPU."""
    import torch

    if device != "cuda":
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def load_causal_lm(
    location: str, *, device: str, quantization: str = "none", dtype: Any = None
) -> Any:
    """A causal LM from a folder or Hub id: safetensors only, no remote code. One of our LoRA
    models loads as its merged weights (`merged/`), or as its base with the adapters merged
    in. `quantization` 4bit/8bit loads it with bitsandbytes onto the current CUDA device."""
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    folder = Path(location)
    if _is_adapter(folder):
        if (folder / MERGED).is_dir():
            return load_causal_lm(
                str(folder / MERGED), device=device, quantization=quantization, dtype=dtype
            )
        from peft import PeftModel

        base = load_causal_lm(base_location(folder), device=device, dtype=dtype)
        return PeftModel.from_pretrained(base, location).merge_and_unload()
    kwargs: dict[str, Any] = {
        "dtype": dtype or compute_dtype(device),
        "use_safetensors": True,
        "trust_remote_code": False,
    }
    if quantization in ("4bit", "8bit"):
        kwargs["quantization_config"] = (
            BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type="nf4",
                bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=compute_dtype(device),
            )
            if quantization == "4bit"
            else BitsAndBytesConfig(load_in_8bit=True)
        )
        kwargs["device_map"] = {"": torch.cuda.current_device()}
    return AutoModelForCausalLM.from_pretrained(location, **kwargs)


def base_location(folder: Path) -> str:
    """Where the base of one of our LoRA models loads from: the folder it was trained from
    when it is still there, else its Hub id (from the local cache or the Hub)."""
    info = json.loads((folder / MODEL_INFO).read_text())
    if info.get("base_location") and Path(info["base_location"]).is_dir():
        return str(info["base_location"])
    return hub_id_of(info["base_model"])


def load_for_training(
    ctx: RunContext, params: LLMMethodParams, hp: LLMHyperparameters
) -> tuple[Any, Any, str]:
    """(model, peft LoraConfig or None, quantization used) for a run. With quantization the
    model is prepared for k-bit training (norms in float32, input gradients on)."""
    import torch

    location, device = ctx.model_location, ctx.device
    quantization = resolve_quantization(params, device, location, ctx.spec.method.type)
    full = params.tuning == "full"
    # Full fine-tuning keeps float32 master weights (mixed precision computes in half).
    dtype = torch.float32 if full else compute_dtype(device)
    model = load_causal_lm(location, device=device, quantization=quantization, dtype=dtype)
    if quantization != "none":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=hp.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
    return model, None if full else lora_config(params), quantization


def with_learning_rate(
    ctx: RunContext, params: LLMMethodParams, hp: LLMHyperparameters, model: Any
) -> Any:
    """`hp` with its learning rate decided for the loaded base `model` (see learning_rate);
    an automatic choice is noted in the job's events."""
    parameters = model.num_parameters()  # counts 4-bit weights as unpacked
    rate = learning_rate(hp, params.tuning, parameters)
    if hp.learning_rate is None:
        ctx.reporter.note(
            f"Learning rate {rate:g} (auto, for {params.tuning} tuning of a model of "
            f"{parameters / 1e6:.1f}M parameters).",
            data={"learning_rate": rate, "hyperparameters": {"learning_rate": rate}},
        )
    return hp.model_copy(update={"learning_rate": rate})


def lora_config(params: LLMMethodParams) -> Any:
    from peft import LoraConfig

    lora = params.lora
    return LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        bias="none",
        task_type="CAUSAL_LM",
    )


# -- training ----------------------------------------------------------------------------------


def training_arguments(
    hp: LLMHyperparameters,
    *,
    device: str,
    seed: int,
    work_dir: Path,
    has_eval: bool,
    world_size: int = 1,
) -> dict[str, Any]:
    """Keyword arguments of trl's SFTConfig / DPOConfig that both kinds set alike
    (`world_size`: the processes of a distributed job, see `base.batch_arguments`)."""
    import torch

    evaluate_by = ("steps" if hp.eval_steps else "epoch") if has_eval else "no"
    # The best model can only be kept when every evaluation has a checkpoint to go back to.
    keep_best = hp.early_stopping_patience is not None and has_eval
    save_steps = hp.checkpoint_steps or (hp.eval_steps if keep_best else None)
    bf16 = device == "cuda" and torch.cuda.is_bf16_supported()
    return {
        "output_dir": str(work_dir / "checkpoints"),
        "num_train_epochs": hp.n_epochs,
        **batch_arguments(hp.batch_size, world_size),
        "gradient_accumulation_steps": hp.gradient_accumulation_steps,
        "learning_rate": hp.learning_rate,
        "lr_scheduler_type": hp.lr_scheduler,
        # transformers reads a float below 1 as a share of the steps.
        "warmup_steps": hp.warmup_steps if hp.warmup_steps is not None else hp.warmup_ratio,
        "weight_decay": hp.weight_decay,
        "max_grad_norm": hp.max_grad_norm,
        "seed": seed,
        "data_seed": seed,
        "logging_steps": hp.logging_steps,
        "eval_strategy": evaluate_by,
        "eval_steps": hp.eval_steps,
        "save_strategy": "steps" if save_steps else "epoch",
        "save_steps": save_steps or 500,
        "save_total_limit": 3,
        "load_best_model_at_end": keep_best,
        "metric_for_best_model": "eval_loss" if keep_best else None,
        "greater_is_better": False if keep_best else None,
        "gradient_checkpointing": hp.gradient_checkpointing,
        "gradient_checkpointing_kwargs": {"use_reentrant": False},
        "bf16": bf16,
        "fp16": device == "cuda" and not bf16,
        "use_cpu": device == "cpu",
        "report_to": [],
        "disable_tqdm": True,
    }


def trainer_callbacks(
    ctx: RunContext,
    hp: LLMHyperparameters,
    measure_valid: Callable[[Any], dict[str, float]] | None = None,
) -> list[Any]:
    """Our reporting (progress, metrics, checkpoints with their metrics, stop requests), and
    early stopping when asked for. Every checkpoint gets the trainer's evaluation of the
    validation split; `measure_valid(model)` adds the small batch's `valid_` metrics."""
    from transformers import EarlyStoppingCallback

    from tuneforge.training.callbacks import ReportingCallback

    callbacks: list[Any] = [
        ReportingCallback(
            ctx.reporter,
            hp.batch_size * hp.gradient_accumulation_steps * ctx.world_size,
            measure_valid=measure_valid,
            evaluate_at_checkpoints=True,
        )
    ]
    if hp.early_stopping_patience is not None and ctx.data.eval_rows:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=hp.early_stopping_patience))
    return callbacks


def train_and_save(
    ctx: RunContext,
    params: LLMMethodParams,
    trainer: Any,
    tokenizer: Any,
    *,
    quantization: str,
    metrics_of: Callable[[Any, Any, list[dict[str, Any]]], dict[str, float]],
    examples: list[tuple[list[dict[str, Any]], str]],
    primary_metric: str,
) -> TrainResult:
    """What both kinds do with their trainer: measure the base model (once per job: a resumed
    run reads the measurement back), train or continue from `ctx.resume_from`, measure the
    trained model, save it. Stops early, saving nothing (the trainer wrote a checkpoint unless
    cancelled), when the reporter says so.

    `metrics_of(model, tokenizer, validation rows)` gives the kind's metrics; `examples`
    (prompt, reference answer) are the generation checks' prompts."""
    from tuneforge.training.generation_checks import check_generations, shares

    eval_rows = ctx.data.eval_rows

    def measure(which: str) -> dict[str, Any]:
        metrics = metrics_of(trainer.model, tokenizer, eval_rows) if eval_rows else {}
        report = None
        if examples:
            checks: GenerationChecks = params.generation_checks
            report = check_generations(
                trainer.model,
                tokenizer,
                examples,
                max_new_tokens=checks.max_new_tokens,
                expected_keys=checks.expected_keys,
            )
            metrics |= shares(report)
            tokens = report["tokens"]
            ctx.reporter.note(
                f"Generation checks of the {which} model: {report['samples']} answers in "
                f"{report['seconds']:.1f} s ({tokens} tokens, at most "
                f"{report['max_new_tokens']} each).",
                data={
                    "generation_checks": which,
                    "answers": report["samples"],
                    "seconds": report["seconds"],
                    "tokens": tokens,
                    "max_new_tokens": report["max_new_tokens"],
                },
            )
        return {"metrics": metrics, "generation": report}

    baseline_file = ctx.work_dir / "baseline.json"
    main = ctx.rank == 0  # in a distributed job, only rank 0 measures and saves
    if not main:
        baseline: dict[str, Any] = {"metrics": {}, "generation": None}
    elif baseline_file.is_file():
        baseline = json.loads(baseline_file.read_text())
    else:
        baseline = measure("base")
        baseline_file.write_text(json.dumps(baseline))
        ctx.reporter.metrics(0, {f"eval_{k}": v for k, v in baseline["metrics"].items()})
    result = TrainResult(primary_metric=primary_metric if eval_rows else None)
    result.baseline = baseline["metrics"]
    if not result.train(trainer, ctx.reporter, ctx.resume_from) or not main:
        return result
    final = measure("fine-tuned")
    result.evaluation = final["metrics"]
    info = save_trained(
        trainer.model,
        tokenizer,
        ctx.output_dir,
        spec=ctx.spec,
        params=params,
        model_location=ctx.model_location,
        quantization=quantization,
    )
    result.details = {
        "model": info,
        "trainable_parameters": sum(
            p.numel() for p in trainer.model.parameters() if p.requires_grad
        ),
        "generation_checks": {
            "base_model": baseline["generation"],
            "fine_tuned_model": final["generation"],
        },
    }
    return result


# -- measuring ---------------------------------------------------------------------------------


def token_scores(model: Any, tokenized: list[dict[str, list[int]]]) -> list[tuple[float, int, int]]:
    """Per sequence: (summed log-probability of its labelled tokens, how many, how many the
    model ranks first). One sequence at a time: the logits of a long one are large."""
    import torch

    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    scores = []
    with torch.no_grad():
        for row in tokenized:
            ids = torch.tensor([row["input_ids"]], device=device)
            labels = torch.tensor(row["labels"][1:], device=device)
            logits = model(input_ids=ids).logits[0, :-1].float()
            mask = labels != IGNORED
            logps = torch.log_softmax(logits[mask], dim=-1)
            picked = logps.gather(1, labels[mask].unsqueeze(1)).squeeze(1)
            correct = int((logits[mask].argmax(-1) == labels[mask]).sum())
            scores.append((float(picked.sum()), int(mask.sum()), correct))
    model.train(was_training)
    return scores


def chat_metrics(model: Any, tokenizer: Any, rows: list[dict[str, Any]]) -> dict[str, float]:
    """Validation loss (mean negative log-likelihood per trained token), its perplexity and
    the share of trained tokens the model ranks first, over chat rows."""
    tokenized = [tokenize_conversation(tokenizer, r["messages"], r.get("tools")) for r in rows]
    scores = token_scores(model, tokenized)
    tokens = sum(n for _, n, _ in scores)
    if not tokens:
        return {}
    loss = -sum(s for s, _, _ in scores) / tokens
    return {
        "loss": loss,
        "perplexity": math.exp(min(loss, 50.0)),
        "token_accuracy": sum(c for _, _, c in scores) / tokens,
    }


def valid_batch_measure(
    tokenizer: Any, rows: list[dict[str, Any]]
) -> Callable[[Any], dict[str, float]] | None:
    """For chat rows: a checkpoint's `valid_loss` and `valid_mean_token_accuracy`, on the
    first VALID_BATCH_ROWS validation rows (the same rows at every checkpoint; loss and token
    accuracy on the answers as `chat_metrics` measures them); None without validation rows."""
    batch = rows[:VALID_BATCH_ROWS]
    if not batch:
        return None

    def measure(model: Any) -> dict[str, float]:
        found = chat_metrics(model, tokenizer, batch)
        if not found:
            return {}
        return {"valid_loss": found["loss"], "valid_mean_token_accuracy": found["token_accuracy"]}

    return measure


def preference_metrics(model: Any, tokenizer: Any, rows: list[dict[str, Any]]) -> dict[str, float]:
    """How much the model prefers the chosen answers, without a reference model: the share of
    pairs whose chosen answer is the more likely one (`preference_accuracy`) and the mean
    log-probability margin chosen minus rejected, in nats."""
    tokenized = [
        tokenize_conversation(tokenizer, r["prompt"] + answer)
        for r in rows
        for answer in (r["chosen"], r["rejected"])
    ]
    scores = [s for s, _, _ in token_scores(model, tokenized)]
    if not scores:
        return {}
    margins = [c - r for c, r in zip(scores[::2], scores[1::2], strict=True)]
    return {
        "preference_accuracy": sum(m > 0 for m in margins) / len(margins),
        "logp_margin": sum(margins) / len(margins),
        "chosen_logp": sum(scores[::2]) / len(margins),
        "rejected_logp": sum(scores[1::2]) / len(margins),
    }


# -- saving ------------------------------------------------------------------------------------


def save_trained(
    model: Any,
    tokenizer: Any,
    output_dir: Path,
    *,
    spec: JobCreate,
    params: LLMMethodParams,
    model_location: str,
    quantization: str,
) -> dict[str, Any]:
    """Save a trained model as described above; returns what `tuneforge.json` says."""
    output_dir.mkdir(parents=True, exist_ok=True)
    lora = params.tuning == "lora"
    if lora:
        # The adapters name the base as users load it, not as this machine found it.
        model.peft_config["default"].base_model_name_or_path = hub_id_of(spec.model)
    model.save_pretrained(str(output_dir), safe_serialization=True)
    tokenizer.save_pretrained(str(output_dir))
    info = {
        "kind": spec.method.type,
        "base_model": spec.model,
        "base_location": model_location,
        "tuning": params.tuning,
        "quantization": quantization,
        "adapter": lora,
        "merged": MERGED if lora and params.merge else None,
    }
    (output_dir / MODEL_INFO).write_text(json.dumps(info, indent=2))
    if lora and params.merge:
        merge_adapter(output_dir, model_location)
    return info


def merge_adapter(adapter_dir: Path, base: str) -> Path:
    """Write the base model with the adapters of `adapter_dir` merged in, as safetensors in
    its dtype, under `adapter_dir/merged` (loaded anew: a quantized base cannot be merged)."""
    from peft import PeftModel

    model = load_causal_lm(base, device="cpu", dtype="auto")
    merged = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    target = adapter_dir / MERGED
    merged.save_pretrained(str(target), safe_serialization=True)
    load_chat_tokenizer(str(adapter_dir)).save_pretrained(str(target))
    return target

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
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from tuneforge.datasets.chat_render import chat_text
from tuneforge.errors import InvalidRequestError, QuantizationUnavailableError
from tuneforge.training.base import TrainResult, batch_arguments
from tuneforge.training.devices import (
    bnb_quant_storage,
    choose_dtype,
    cuda_capability,
    ddp_arguments,
    device_map_for,
    local_rank,
    precision_flags,
    torch_dtype,
)
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
    """bfloat16 on GPUs with native bf16 (Ampere and newer), float16 on older GPUs, float32
    on the CPU (see `devices.choose_dtype`)."""
    return torch_dtype(choose_dtype(cuda_capability() if device == "cuda" else None))


def load_causal_lm(
    location: str,
    *,
    device: str,
    quantization: str = "none",
    dtype: Any = None,
    strategy: str | None = None,
) -> Any:
    """A causal LM from a folder or Hub id: safetensors only, no remote code. One of our LoRA
    models loads as its merged weights (`merged/`), or as its base with the adapters merged
    in. On `device` cuda it loads straight onto this process's GPU (its local rank's), never
    through the CPU (unquantized under fsdp/deepspeed, which place it, as before);
    `quantization` 4bit/8bit loads it with bitsandbytes, its packed weights stored in the
    compute dtype under `strategy` fsdp."""
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    folder = Path(location)
    if _is_adapter(folder):
        if (folder / MERGED).is_dir():
            return load_causal_lm(
                str(folder / MERGED),
                device=device,
                quantization=quantization,
                dtype=dtype,
                strategy=strategy,
            )
        from peft import PeftModel

        base = load_causal_lm(base_location(folder), device=device, dtype=dtype)
        return PeftModel.from_pretrained(base, location).merge_and_unload()
    kwargs: dict[str, Any] = {
        "dtype": dtype or compute_dtype(device),
        "use_safetensors": True,
        "trust_remote_code": False,
    }
    # Sharded strategies place the weights themselves (each rank holds a shard, not a copy);
    # bitsandbytes quantizes only on the GPU.
    if device == "cuda" and (strategy not in ("fsdp", "deepspeed") or quantization != "none"):
        kwargs["device_map"] = device_map_for(local_rank())
    if quantization in ("4bit", "8bit"):
        compute = choose_dtype(cuda_capability())
        kwargs["quantization_config"] = (
            BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type="nf4",
                bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=torch_dtype(compute),
                **bnb_quant_storage(strategy, compute),
            )
            if quantization == "4bit"
            else BitsAndBytesConfig(load_in_8bit=True)
        )
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
    """(model, peft LoraConfig or None, quantization used) for a run. A quantized model keeps
    its embedding, head and norms in the compute dtype (as trl does since it stopped calling
    peft's `prepare_model_for_kbit_training`); `hp.qlora_upcast` casts them to float32 as
    that function does (about 2.2 GB more for a 7B, and a float32 residual stream)."""
    import torch

    location, device = ctx.model_location, ctx.device
    quantization = resolve_quantization(params, device, location, ctx.spec.method.type)
    full = params.tuning == "full"
    # Full fine-tuning keeps float32 master weights (mixed precision computes in half).
    dtype = torch.float32 if full else compute_dtype(device)
    strategy = ctx.spec.distributed.strategy if ctx.spec.distributed else None
    model = load_causal_lm(
        location, device=device, quantization=quantization, dtype=dtype, strategy=strategy
    )
    if quantization != "none":
        model = prepare_quantized(model, hp.gradient_checkpointing, upcast=hp.qlora_upcast)
    return model, None if full else lora_config(params), quantization


def prepare_quantized(model: Any, gradient_checkpointing: bool, *, upcast: bool) -> Any:
    """A quantized model made ready for adapters: with `upcast`, peft's
    `prepare_model_for_kbit_training` (float32 embedding, head and norms); without, only
    what training needs of it: input gradients, so that checkpointed layers over a frozen
    embedding still pass gradients to the adapters."""
    if upcast:
        from peft import prepare_model_for_kbit_training

        return prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
    if gradient_checkpointing:
        model.enable_input_require_grads()
    return model


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
    tuning: str = "lora",
) -> dict[str, Any]:
    """Keyword arguments of trl's SFTConfig / DPOConfig that both kinds set alike
    (`world_size`: the processes of a distributed job, see `base.batch_arguments`; `tuning`:
    lora or full, for DDP's settings)."""
    evaluate_by = ("steps" if hp.eval_steps else "epoch") if has_eval else "no"
    # The best model can only be kept when every evaluation has a checkpoint to go back to.
    keep_best = hp.early_stopping_patience is not None and has_eval
    save_steps = hp.checkpoint_steps or (hp.eval_steps if keep_best else None)
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
        **precision_flags(cuda_capability() if device == "cuda" else None),
        **ddp_arguments(tuning, world_size),
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
    steps = finishing_steps(ctx.spec.distributed.strategy if ctx.spec.distributed else None)
    if not result.train(trainer, ctx.reporter, ctx.resume_from) or not (main or steps.all_ranks):
        return result
    final = measure("fine-tuned")  # under FSDP on every rank: each forward gathers the shards
    state_dict = full_state_dict(trainer) if steps.gather else None
    if not main:
        return result
    model = trainer.accelerator.unwrap_model(trainer.model) if steps.gather else trainer.model
    result.evaluation = final["metrics"]
    # Adapters or weights of the best evaluation, or of the last step; the base itself is
    # not handed on as a chat model's fine-tune (it is flagged when better, see jobs.publish).
    result.keep(trainer, bool(trainer.args.load_best_model_at_end), base_counts=False)
    info = save_trained(
        model,
        tokenizer,
        ctx.output_dir,
        spec=ctx.spec,
        params=params,
        model_location=ctx.model_location,
        quantization=quantization,
        state_dict=state_dict,
    )
    result.details = {
        "model": info,
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "generation_checks": {
            "base_model": baseline["generation"],
            "fine_tuned_model": final["generation"],
        },
    }
    return result


class FinishingSteps(NamedTuple):
    """How a run ends after training: `all_ranks` measure the trained model (else rank 0
    alone), `gather` its full state dict on every rank before rank 0 saves it."""

    all_ranks: bool
    gather: bool


def finishing_steps(strategy: str | None) -> FinishingSteps:
    """Under FSDP each rank holds a shard: a forward pass is a collective every rank makes,
    and a save needs the shards gathered, so every rank measures and joins the gathering
    (rank 0 alone would wait forever, or save its shard). Otherwise rank 0 holds the whole
    model and finishes alone."""
    sharded = strategy == "fsdp"
    return FinishingSteps(all_ranks=sharded, gather=sharded)


def full_state_dict(trainer: Any) -> dict[str, Any]:
    """The whole model's state dict, gathered from the FSDP shards (a collective: every rank
    calls it); rank 0 gets the tensors, on the CPU."""
    accelerator = trainer.accelerator
    accelerator.state.fsdp_plugin.set_state_dict_type("FULL_STATE_DICT")
    return dict(accelerator.get_state_dict(trainer.model))


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
    state_dict: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Save a trained model as described above; returns what `tuneforge.json` says.
    `state_dict`: its weights as gathered from the ranks of a sharded run."""
    output_dir.mkdir(parents=True, exist_ok=True)
    lora = params.tuning == "lora"
    if lora:
        # The adapters name the base as users load it, not as this machine found it.
        model.peft_config["default"].base_model_name_or_path = hub_id_of(spec.model)
    extra = {"state_dict": state_dict} if state_dict is not None else {}
    model.save_pretrained(str(output_dir), safe_serialization=True, **extra)
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

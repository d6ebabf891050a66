"""What a training job will need before it runs: each device's peak memory, the time, and
the disk. Pure arithmetic over a model's shape (`ModelShape`, read from its config on the
meta device by tuneforge.jobs.fit) and the run's settings (`TrainingSetup`): no weights are
loaded, nothing is measured here.

Memory per device is the sum of
- weights: frozen ones at their stored size (bf16 2 bytes, fp32 4, 8-bit 1, 4-bit NF4 packed
  two to a byte plus one scale per 64 weights and bitsandbytes' double quantization, which
  keeps the embeddings, norms and head in the compute dtype);
- adapters (LoRA A and B of every targeted linear layer) and their gradients;
- optimizer states: AdamW's m and v in fp32 for every trainable parameter (full tuning keeps
  its weights in fp32: they are the master weights, bf16 autocast computes on a GPU);
- activations: per layer, the tensors the backward pass keeps (batch x sequence x what the
  layer's linear layers, attention and MLP save); with gradient checkpointing only each
  layer's input is kept, plus one layer's activations recomputed at a time;
- logits: batch x sequence x vocabulary, in the compute dtype plus the loss's fp32 copy and
  its gradient (chunked when the recipe chunks its loss, as torchtune's does);
- the runtime: the CUDA context, or on the CPU the job process's own libraries;
- on the CPU, the allocator's keep: glibc's malloc keeps the memory of a step's freed
  activations and logits in its heap for the next step (its mmap threshold rises with each
  large free), so between steps the process holds about one step's transient memory more
  than before its first step, and peaks at that plus the next step's. Measured on
  SmolLM2-135M LoRA: 1182 MiB before the first step, 1900 between steps, 2642 at the peak;
  with a fixed mmap threshold 1186 between steps and 2000 at the peak. On a GPU the caching
  allocator reuses the same blocks, which the peak already counts.

Time is training tokens x FLOPs per token (6 per parameter for full tuning, 4 for frozen
weights: no weight gradients; +2 with recomputation; plus attention's 12 x layers x hidden x
sequence) divided by the device's datasheet peak times an expected MFU.

Disk is the checkpoints (trainable weights plus AdamW's two fp32 states, times the number
kept plus the one being written), the saved model and a merged copy.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

GIB = 1024**3

# Bytes per weight of a frozen base by how it is loaded. NF4 (QLoRA): 4 bits, one fp32
# absmax per block of 64 that double quantization stores as one byte plus a fp32 per 256
# blocks; LLM.int8: one byte plus a fp32 scale per row (negligible).
WEIGHT_BYTES = {
    "fp32": 4.0,
    "bf16": 2.0,
    "fp16": 2.0,
    "8bit": 1.0,
    "4bit": 0.5 + 1 / 64 + 4 / 64 / 256,
}

# bf16/fp16 dense tensor-core peaks from the datasheets, in TFLOP/s, by device name part
# (first match wins; the more specific names first).
DATASHEET_TFLOPS = (
    ("H200", 989.0),
    ("H100 PCIe", 756.0),
    ("H100", 989.0),
    ("A100", 312.0),
    ("L40S", 362.0),
    ("A6000", 155.0),
    ("4090", 165.0),
    ("L4", 121.0),
    ("A10", 125.0),
    ("3090", 71.0),
    ("V100", 125.0),
    ("T4", 65.0),
)
# A GPU we do not know: about an A10's peak.
DEFAULT_GPU_TFLOPS = 125.0
# A CPU core's fp32 peak (AVX2: two 8-wide FMA units at ~3 GHz) in GFLOP/s.
CPU_CORE_GFLOPS = 96.0
# The share of the peak a run reaches: what LoRA on HF Trainer reaches on a GPU, less with
# 4-bit weights (each matmul dequantizes first), and what eager PyTorch reaches on CPU cores.
EXPECTED_MFU = {"cuda": 0.35, "cuda-4bit": 0.25, "cpu": 0.2}

# What a job process holds before its model: on a GPU the CUDA context and cuBLAS workspace;
# on the CPU the resident part of torch, transformers, trl and peft as a job imports them
# (measured: bench/estimate.py).
RUNTIME_BYTES = {"cuda": int(0.6 * GIB), "cpu": int(0.6 * GIB)}


@dataclass(frozen=True)
class ModelShape:
    """A model's shape: parameter counts and the sizes activations scale with."""

    parameters: int  # every parameter
    # The weights of the transformer layers' linear layers (in_features, out_features), every
    # layer listed: the ones 4-bit loading packs and all-linear LoRA adapts.
    linears: tuple[tuple[int, int], ...]
    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    # A causal LM (logits over the vocabulary at every position), not an encoder.
    decoder: bool = True
    # The MLP has a gate (SwiGLU: gate, up and down projections), as Llama and Qwen2 do.
    gated_mlp: bool = True
    # Names of the linear layers, parallel to `linears` (q_proj, ...): LoRA's targets.
    linear_names: tuple[str, ...] = ()

    @property
    def linear_parameters(self) -> int:
        return sum(i * o for i, o in self.linears)


@dataclass(frozen=True)
class TrainingSetup:
    """How a job trains, as far as memory, time and disk go."""

    kind: str  # supervised, dpo, reinforcement, embedding, classification
    device: str = "cpu"  # cpu or cuda
    tuning: str = "lora"  # lora or full
    # How the frozen weights are held: fp32, bf16, fp16, 8bit or 4bit.
    weights: str = "fp32"
    # Bytes per activation (4 on the CPU, 2 in bf16/fp16 on a GPU).
    compute_bytes: int = 4
    lora_rank: int = 16
    # LoRA's targets: None for all-linear, else the module names.
    lora_targets: tuple[str, ...] | None = None
    # Sequences in one forward pass on one device, and their length in tokens.
    batch: int = 1
    seq: int = 512
    gradient_accumulation: int = 1
    gradient_checkpointing: bool = False
    # Extra forward passes over the same batch that keep activations (dpo: the rejected
    # answers beside the chosen; embedding: one per text column).
    passes: int = 1
    # A frozen reference model beside the trained one (dpo and reinforcement with full
    # tuning; with LoRA the reference is the base with the adapters switched off).
    reference_copy: bool = False
    # torchtune's chunked cross-entropy: the fp32 copy of the logits exists one chunk at a time.
    logits_chunks: int = 1
    # A compiled (fused) loss: no fp32 upcast or log-softmax is materialized, only the
    # logits' gradient (torchtune's recipes with compile, Liger's fused cross-entropy).
    fused_loss: bool = False
    labels: int = 2  # classification: the head's outputs
    tokens: int = 0  # training tokens over the whole run (every epoch), for the time
    # Tokens generated per training token (reinforcement: the sampled answers).
    generated_tokens: int = 0
    processes: int = 1
    checkpoints_kept: int = 3
    merge: bool = False
    # Bytes per parameter of a merged copy (LoRA's `merge`: the base's own dtype).
    saved_bytes: float = 2.0
    device_name: str = ""  # the GPU's name, for its datasheet peak
    cpu_cores: int = 1


@dataclass(frozen=True)
class Estimate:
    """Bytes per device by part, the run's seconds and FLOPs, and bytes on disk by part."""

    memory: dict[str, int]
    seconds: float
    flops: float
    disk: dict[str, int]
    trainable_parameters: int
    assumptions: dict[str, Any] = field(default_factory=dict)

    @property
    def peak_bytes(self) -> int:
        return self.memory["total"]

    @property
    def disk_bytes(self) -> int:
        return self.disk["total"]

    def to_dict(self) -> dict[str, Any]:
        """The estimate as stored on the job and shown by the API (bytes, seconds, and GiB
        for people)."""
        data = asdict(self)
        data["peak_memory_gib"] = round(self.peak_bytes / GIB, 3)
        data["disk_gib"] = round(self.disk_bytes / GIB, 3)
        return data


def lora_shapes(shape: ModelShape, targets: tuple[str, ...] | None) -> list[tuple[int, int]]:
    """The (in, out) of every linear layer LoRA adapts: all of them, or those by name."""
    if targets is None or not shape.linear_names:
        return list(shape.linears)
    wanted = set(targets)
    return [
        io for io, name in zip(shape.linears, shape.linear_names, strict=True) if name in wanted
    ]


def trainable_parameters(shape: ModelShape, setup: TrainingSetup) -> int:
    """Parameters the optimizer updates: all of them, or LoRA's A and B (plus a
    classification head, which LoRA jobs train whole)."""
    if setup.tuning == "full":
        return shape.parameters
    lora = sum(setup.lora_rank * (i + o) for i, o in lora_shapes(shape, setup.lora_targets))
    head = shape.hidden * setup.labels + setup.labels if setup.kind == "classification" else 0
    return lora + head


def _weights(shape: ModelShape, setup: TrainingSetup) -> int:
    """The frozen or trained weights themselves."""
    if setup.tuning == "full":
        # Trained weights stay fp32 (they are the master weights; bf16 autocast computes).
        return shape.parameters * 4
    packed = setup.weights in ("4bit", "8bit")
    linear = shape.linear_parameters if packed else 0
    dense_bytes = 2 if packed else WEIGHT_BYTES[setup.weights]
    return int(linear * WEIGHT_BYTES[setup.weights] + (shape.parameters - linear) * dense_bytes)


def _activations_per_token_layer(shape: ModelShape, setup: TrainingSetup) -> float:
    """Activation values one layer keeps for the backward pass, per token."""
    h, inter = shape.hidden, shape.intermediate
    kv = shape.kv_heads * shape.head_dim
    q = shape.heads * shape.head_dim
    # Norm inputs and outputs (2 norms), q/k/v and the attention output, o_proj's output
    # (the residual add), SDPA's log-sum-exp (per head).
    attention = 4 * h + q + 2 * kv + h + shape.heads
    # MLP: gate and up outputs, the activation's output and the product (down's input).
    mlp = 4 * inter if shape.gated_mlp else 2 * inter
    values = float(attention + mlp)
    if not shape.decoder:
        # Encoders (BERT family) compute attention eagerly: scores and probabilities per head,
        # and dropout masks (one byte each) on them and the two residual branches.
        values += (
            2 * shape.heads * setup.seq + (shape.heads * setup.seq + 2 * h) / setup.compute_bytes
        )
    if setup.tuning == "lora":
        # Each adapter keeps its A projection's output (rank values) per targeted layer.
        per_layer = len(lora_shapes(shape, setup.lora_targets)) / max(shape.layers, 1)
        values += per_layer * setup.lora_rank
    return values


def _activations(shape: ModelShape, setup: TrainingSetup) -> int:
    tokens = setup.batch * setup.seq * setup.passes
    per_layer = _activations_per_token_layer(shape, setup) * setup.compute_bytes
    if setup.gradient_checkpointing:
        # Each layer's input, plus one layer's activations recomputed at a time.
        kept = shape.layers * shape.hidden * setup.compute_bytes + per_layer
    else:
        kept = shape.layers * per_layer
    # The embeddings' output and the final norm.
    kept += 2 * shape.hidden * setup.compute_bytes
    return int(tokens * kept)


def _logits(shape: ModelShape, setup: TrainingSetup) -> int:
    """The output layer's values: a causal LM's logits over the vocabulary (in the compute
    dtype), the loss's fp32 upcast (in bf16), the log-softmax it keeps (fp32) and the
    logits' gradient; with a chunked loss only the logits themselves exist whole. An
    encoder's pooled outputs are small."""
    tokens = setup.batch * setup.seq * setup.passes
    if not shape.decoder:
        return int(tokens * shape.hidden * setup.compute_bytes)
    values = tokens * shape.vocab
    upcast = 4 if setup.compute_bytes < 4 else 0
    # The upcast, the log-softmax and the gradient (only the gradient when fused).
    transient = setup.compute_bytes if setup.fused_loss else upcast + 4 + setup.compute_bytes
    return int(values * (setup.compute_bytes + transient / setup.logits_chunks))


def _dequantized(shape: ModelShape, setup: TrainingSetup) -> int:
    """4-/8-bit weights are dequantized one layer at a time for each matmul."""
    if setup.weights not in ("4bit", "8bit") or not shape.linears:
        return 0
    return max(i * o for i, o in shape.linears) * 2


def estimate_memory(shape: ModelShape, setup: TrainingSetup) -> dict[str, int]:
    """Peak bytes on one device, by part, and their `total`."""
    trainable = trainable_parameters(shape, setup)
    full = setup.tuning == "full"
    adapters = 0 if full else trainable * 4  # adapters train in fp32 (peft's default)
    gradients = trainable * 4
    optimizer = trainable * 8  # AdamW's m and v in fp32
    weights = _weights(shape, setup)
    if setup.reference_copy and full:
        weights *= 2
    parts = {
        "weights": weights,
        "adapters": adapters,
        "gradients": gradients,
        "optimizer": optimizer,
        "activations": _activations(shape, setup),
        "logits": _logits(shape, setup),
        "dequantization": _dequantized(shape, setup),
        "runtime": RUNTIME_BYTES["cuda" if setup.device == "cuda" else "cpu"],
    }
    parts["allocator"] = (
        0 if setup.device == "cuda" else parts["activations"] + parts["logits"]
    )
    parts["total"] = sum(parts.values())
    return parts


def flops_per_token(shape: ModelShape, setup: TrainingSetup) -> float:
    """Training FLOPs per token: 2 per parameter forward, 2 backward for the activations' and
    2 for the weights' gradients (frozen weights have none), 2 more with recomputation; and
    attention's score and value products (forward 4 x layers x hidden x sequence)."""
    per_parameter = 6.0 if setup.tuning == "full" else 4.0
    if setup.gradient_checkpointing:
        per_parameter += 2.0
    attention = 4.0 * shape.layers * shape.heads * shape.head_dim * setup.seq
    if shape.decoder:
        attention /= 2  # causal: half the scores
    return per_parameter * shape.parameters + 3.0 * attention


def peak_flops(setup: TrainingSetup) -> float:
    """The device's peak in FLOP/s: the GPU's datasheet bf16 dense figure, or the CPU cores'."""
    if setup.device != "cuda":
        return CPU_CORE_GFLOPS * 1e9 * max(setup.cpu_cores, 1)
    for part, tflops in DATASHEET_TFLOPS:
        if part.lower() in setup.device_name.lower():
            return tflops * 1e12
    return DEFAULT_GPU_TFLOPS * 1e12


def estimate_seconds(shape: ModelShape, setup: TrainingSetup) -> tuple[float, float]:
    """(seconds, FLOPs) of the run over all its devices."""
    flops = setup.tokens * flops_per_token(shape, setup)
    # Generation: a forward pass per sampled token.
    flops += setup.tokens * setup.generated_tokens * 2.0 * shape.parameters
    mfu_key = "cuda-4bit" if setup.device == "cuda" and setup.weights == "4bit" else setup.device
    rate = peak_flops(setup) * EXPECTED_MFU.get(mfu_key, EXPECTED_MFU["cpu"]) * setup.processes
    return flops / rate, flops


def estimate_disk(shape: ModelShape, setup: TrainingSetup) -> dict[str, int]:
    """Bytes the run writes at its peak, by part, and their `total`: the checkpoints kept
    (plus the one being written before the oldest goes), the saved model, a merged copy."""
    trainable = trainable_parameters(shape, setup)
    full = setup.tuning == "full"
    checkpoint = trainable * (4 + 8)  # fp32 weights and AdamW's m and v
    kept = setup.checkpoints_kept + 1
    if full or setup.kind in ("embedding", "classification"):
        model = shape.parameters * 4  # trained weights are fp32, and saved so
    else:
        model = int(trainable * 4)  # the adapters
    merged = int(shape.parameters * setup.saved_bytes) if setup.merge else 0
    parts = {
        "checkpoint": checkpoint,
        "checkpoints": checkpoint * kept,
        "model": model,
        "merged": merged,
    }
    parts["total"] = parts["checkpoints"] + model + merged
    return parts


def estimate(shape: ModelShape, setup: TrainingSetup) -> Estimate:
    """Memory per device, time and disk of a run of `setup` on a model of `shape`."""
    seconds, flops = estimate_seconds(shape, setup)
    return Estimate(
        memory=estimate_memory(shape, setup),
        seconds=round(seconds, 1),
        flops=flops,
        disk=estimate_disk(shape, setup),
        trainable_parameters=trainable_parameters(shape, setup),
        assumptions={
            "device": setup.device,
            "tuning": setup.tuning,
            "weights": setup.weights,
            "batch": setup.batch,
            "seq": setup.seq,
            "gradient_accumulation": setup.gradient_accumulation,
            "gradient_checkpointing": setup.gradient_checkpointing,
            "passes": setup.passes,
            "peak_tflops": round(peak_flops(setup) / 1e12, 3),
        },
    )


def smaller_setups(
    setup: TrainingSetup, *, gpu: bool
) -> list[tuple[dict[str, Any], TrainingSetup]]:
    """The nearest settings that need less memory, nearest first: the micro-batch halved with
    the gradient accumulation doubled (the same effective batch, down to 1), then gradient
    checkpointing, then 4-bit weights (QLoRA, on a GPU), then the sequence halved. Each is
    (the hyperparameters changed, the setup)."""
    out: list[tuple[dict[str, Any], TrainingSetup]] = []
    llm = setup.kind in ("supervised", "dpo")
    base = setup
    changes: dict[str, Any] = {}
    steps: list[tuple[str, Any]] = []
    batch = setup.batch
    while batch > 1:
        batch = max(1, batch // 2)
        steps.append(("batch", batch))
    if llm and not setup.gradient_checkpointing:
        steps.append(("gradient_checkpointing", True))
    if gpu and llm and setup.tuning == "lora" and setup.weights not in ("4bit",):
        steps.append(("quantization", "4bit"))
    seq = setup.seq
    while seq > 256:
        seq = max(256, seq // 2)
        steps.append(("max_seq_length", seq))
    for what, value in steps:
        if what == "batch":
            factor = base.batch // value
            accumulation = base.gradient_accumulation * factor
            base = replace(base, batch=value, gradient_accumulation=accumulation)
            changes = {**changes, "batch_size": value}
            if llm:
                changes["gradient_accumulation_steps"] = accumulation
        elif what == "gradient_checkpointing":
            base = replace(base, gradient_checkpointing=True)
            changes = {**changes, "gradient_checkpointing": True}
        elif what == "quantization":
            base = replace(base, weights="4bit")
            changes = {**changes, "quantization": "4bit"}
        else:
            base = replace(base, seq=value)
            changes = {**changes, "max_seq_length": value}
        out.append((dict(changes), base))
    return out


def fitting_settings(
    shape: ModelShape, setup: TrainingSetup, free_bytes: int, *, gpu: bool
) -> dict[str, Any] | None:
    """The nearest hyperparameter changes whose estimate fits in `free_bytes` (None when
    none does)."""
    for changes, smaller in smaller_setups(setup, gpu=gpu):
        if estimate_memory(shape, smaller)["total"] <= free_bytes:
            return changes
    return None


def gib(n: float) -> str:
    """Bytes as people read them: `7.4 GiB`, `512 MiB`."""
    if n >= GIB:
        return f"{n / GIB:.1f} GiB"
    return f"{math.ceil(n / 2**20)} MiB"

"""Out of memory: telling it apart from other failures, and the smaller settings the retry
runs with.

A run that ran out of memory is retried with half the micro-batch and twice the gradient
accumulation: the same effective batch, so the same optimizer steps on the same examples.
It goes down to a micro-batch of 1; each adaptation is an event, and does not count as one
of the job's failed attempts (the settings changed, so the next run is not the same try).
"""

from __future__ import annotations

from typing import Any

from tuneforge.db.store import Store
from tuneforge.jobs.status import JobStatus
from tuneforge.training.spec import JobCreate

# How out-of-memory reads in the messages of torch (CUDA caching allocator, CPU allocator),
# cuBLAS (its workspace allocation fails inside a matmul) and bitsandbytes.
OOM_SIGNS = (
    "out of memory",
    "cublas_status_alloc_failed",
    "cuda error: out of memory",
    "defaultcpuallocator: can't allocate memory",
    "failed to allocate",
)


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether `exc`, or an exception it was raised from, is an out-of-memory error:
    torch.OutOfMemoryError, Python's MemoryError, or an error whose message says so."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, MemoryError) or type(current).__name__ == "OutOfMemoryError":
            return True
        text = str(current).lower()
        if any(sign in text for sign in OOM_SIGNS):
            return True
        current = current.__cause__ or current.__context__
    return False


def _divisor_below_half(n: int) -> int:
    """The largest divisor of n that is at most n / 2 (1 for a prime)."""
    for d in range(n // 2, 0, -1):
        if n % d == 0:
            return d
    return 1


def smaller_settings(spec_data: dict[str, Any]) -> tuple[dict[str, Any], str] | None:
    """(the job's stored spec with a smaller micro-batch, what changed in words), or None
    when the micro-batch is 1 already. LLM kinds: micro-batch halved (to a divisor) and
    gradient accumulation raised by the same factor. Reinforcement: a step's answers in twice
    as many forward passes. Embedding with (cached_)mnrl: cached_mnrl with half the mini-batch
    (the same gradients). Other embedding losses and classification, which have no gradient
    accumulation: half the batch (said so: the effective batch halves)."""
    spec = JobCreate.model_validate(spec_data)
    kind = spec.method.type
    params: Any = getattr(spec.method, kind)
    hp = params.hyperparameters
    changes: dict[str, Any]
    if kind in ("supervised", "dpo"):
        if hp.batch_size <= 1:
            return None
        batch = _divisor_below_half(hp.batch_size)
        accumulation = hp.gradient_accumulation_steps * (hp.batch_size // batch)
        changes = {"batch_size": batch, "gradient_accumulation_steps": accumulation}
        words = (
            f"micro-batch {hp.batch_size} -> {batch}, gradient accumulation "
            f"{hp.gradient_accumulation_steps} -> {accumulation} (the same effective batch "
            f"of {batch * accumulation})"
        )
    elif kind == "reinforcement":
        answers = hp.batch_size * hp.generations
        per_pass = answers // hp.gradient_accumulation_steps
        if per_pass <= 1:
            return None
        smaller = _divisor_below_half(per_pass)
        accumulation = answers // smaller
        changes = {"gradient_accumulation_steps": accumulation}
        words = (
            f"answers per forward pass {per_pass} -> {smaller}, gradient accumulation "
            f"{hp.gradient_accumulation_steps} -> {accumulation} (the same step)"
        )
    elif kind == "embedding" and params.loss in ("mnrl", "cached_mnrl"):
        current = (
            min(hp.mini_batch_size, hp.batch_size)
            if params.loss == "cached_mnrl"
            else (hp.batch_size)
        )
        if current <= 1:
            return None
        mini = max(1, current // 2)
        changes = {"mini_batch_size": mini}
        words = (
            f"loss {params.loss} -> cached_mnrl with mini-batch {mini} (the same batch of "
            f"{hp.batch_size} and the same gradients, in smaller forward passes)"
        )
    else:
        if hp.batch_size <= 1:
            return None
        batch = max(1, hp.batch_size // 2)
        changes = {"batch_size": batch}
        words = (
            f"batch {hp.batch_size} -> {batch} ({kind} jobs have no gradient accumulation: "
            "the effective batch halves)"
        )
    data = spec.model_dump(mode="json")
    method = data["method"][kind]
    method["hyperparameters"] = {**method["hyperparameters"], **changes}
    if kind == "embedding" and "mini_batch_size" in changes:
        method["loss"] = "cached_mnrl"
    return data, words


def requeue_smaller(store: Store, job_id: str, lease: int, reason: str) -> bool:
    """Queue a job that ran out of memory again with smaller settings (its spec changed, an
    event saying how); False when it has none smaller (a micro-batch of 1 already): the
    caller then retries or fails it as any crash."""
    job = store.require_job(job_id)
    smaller = smaller_settings(job["spec"])
    if smaller is None:
        return False
    spec, words = smaller
    kind = spec["method"]["type"]
    store.transition(
        job_id,
        JobStatus.QUEUED,
        f"Out of memory: {reason} Retrying with {words}; the run continues from its last "
        "checkpoint.",
        expected={JobStatus.RUNNING},
        lease=lease,
        level="warn",
        data={
            "out_of_memory": True,
            "hyperparameters": spec["method"][kind]["hyperparameters"],
            "loss": spec["method"][kind].get("loss"),
        },
        spec=JobCreate.model_validate(spec).model_dump(mode="json"),
        worker_id=None,
    )
    return True

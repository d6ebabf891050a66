"""Which rows each process trains on, step by step: one process with a global batch against
two processes, as Accelerate shards sentence-transformers' no-duplicates batch sampler.

    python -m tests.jobs.distributed_batches FILE.jsonl GLOBAL_BATCH [SEED]

Prints, for the first steps, the row indices of the single run's batch and of the two ranks'
shares, once with whole per-process batches (rank r takes batches r, r+2, ...: what a
distributed job did before) and once with split global batches (`split_batches`: what it does
now). A diagnostic beside tests/jobs/test_distributed.py, not a test.
"""

from __future__ import annotations

import json
import sys

import torch
from accelerate.data_loader import BatchSamplerShard
from datasets import Dataset
from sentence_transformers.base.sampler import NoDuplicatesBatchSampler


def sampler(
    dataset: Dataset, batch_size: int, seed: int, drop_last: bool
) -> NoDuplicatesBatchSampler:
    # As SentenceTransformerTrainer._build_dataloader builds it.
    generator = torch.Generator().manual_seed(seed)
    return NoDuplicatesBatchSampler(
        dataset, batch_size=batch_size, drop_last=drop_last, generator=generator, seed=seed
    )


def main() -> None:
    path, global_batch = sys.argv[1], int(sys.argv[2])
    seed = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    with open(path, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    dataset = Dataset.from_list(
        [{k: r[k] for k in ("question", "positive", "negative")} for r in rows]
    )
    single = list(sampler(dataset, global_batch, seed, drop_last=False))
    half = global_batch // 2
    whole = [
        list(BatchSamplerShard(sampler(dataset, half, seed, False), 2, rank, False, False))
        for rank in (0, 1)
    ]
    split = [
        list(BatchSamplerShard(sampler(dataset, global_batch, seed, True), 2, rank, True, False))
        for rank in (0, 1)
    ]
    print(
        f"{len(rows)} rows; steps: single {len(single)}, whole batches "
        f"{[len(w) for w in whole]}, split {[len(s) for s in split]}"
    )
    for step, batch in enumerate(single):
        print(f"step {step + 1}: single {sorted(batch)}")
        for name, shares in (("whole", whole), ("split", split)):
            parts = [s[step] if step < len(s) else [] for s in shares]
            same = sorted(parts[0] + parts[1]) == sorted(batch)
            print(f"    {name}: rank0 {parts[0]} rank1 {parts[1]}  same rows: {same}")


if __name__ == "__main__":
    main()

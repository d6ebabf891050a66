"""Length-grouped batches that a resumed run replays exactly.

A batch is padded to its longest example, so batching examples of similar length removes most
padding on data of varied lengths (transformers' `LengthGroupedSampler`: random groups of
batches, sorted by length within a group). That sampler draws from the process's global random
numbers, which a resumed run restores only after the epoch's order is drawn: the run would go
on with another order than the one it paused in. Here each epoch's order comes from its own
generator, seeded by the job's seed and the epoch, and a resumed run sees the same batches.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

GROUP_BY_LENGTH = "group_by_length"


def seeded_length_grouped_sampler(batch_size: int, lengths: list[int], seed: int) -> Any:
    """A length-grouped sampler whose order depends only on `seed` and the epoch."""
    import torch
    from transformers.trainer_pt_utils import LengthGroupedSampler, get_length_grouped_indices

    class SeededLengthGroupedSampler(LengthGroupedSampler):
        def __init__(self) -> None:
            super().__init__(batch_size, lengths=lengths)
            self.epoch = 0

        def set_epoch(self, epoch: int) -> None:
            # The trainer calls this before each epoch, resumed ones included.
            self.epoch = epoch

        def __iter__(self) -> Iterator[int]:
            generator = torch.Generator().manual_seed(seed * 1_000_003 + self.epoch)
            order = get_length_grouped_indices(self.lengths, self.batch_size, generator=generator)
            return iter(order)

    return SeededLengthGroupedSampler()


class LengthGrouping:
    """A Trainer mixin: with `train_sampling_strategy="group_by_length"`, the training batches
    come from `seeded_length_grouped_sampler` over the lengths of `input_ids`; evaluation
    batches always keep the rows' order."""

    def _get_train_sampler(self, train_dataset: Any = None) -> Any:
        args = self.args  # type: ignore[attr-defined]
        dataset = train_dataset if train_dataset is not None else self.train_dataset  # type: ignore[attr-defined]
        if args.train_sampling_strategy != GROUP_BY_LENGTH or dataset is None:
            return super()._get_train_sampler(train_dataset)  # type: ignore[misc]
        lengths = [len(ids) for ids in dataset["input_ids"]]
        batch = args.train_batch_size * args.gradient_accumulation_steps
        return seeded_length_grouped_sampler(batch, lengths, args.data_seed or args.seed)

    def _get_eval_sampler(self, eval_dataset: Any) -> Any:
        # transformers length-groups (and so reorders) evaluation batches too under this
        # strategy; our metrics and reports pair predictions with rows in their order.
        from torch.utils.data import SequentialSampler

        if eval_dataset is None:
            return None
        return SequentialSampler(eval_dataset)

"""Length-grouped batches: each epoch's order depends on the seed and the epoch only, so a
resumed run (a new sampler, the process's random state elsewhere) replays the same batches."""

from __future__ import annotations

import torch

from tuneforge.training.batching import seeded_length_grouped_sampler

LENGTHS = [(7 * i) % 53 + 3 for i in range(200)]


def _order(seed: int, epoch: int) -> list[int]:
    sampler = seeded_length_grouped_sampler(8, LENGTHS, seed)
    sampler.set_epoch(epoch)
    torch.manual_seed(epoch * 31 + 7)  # whatever the global random state: no effect
    return list(sampler)


def test_an_epochs_order_depends_on_seed_and_epoch_only() -> None:
    assert _order(3, 2) == _order(3, 2)
    assert sorted(_order(3, 2)) == list(range(len(LENGTHS)))  # every example once
    assert _order(3, 2) != _order(3, 1) and _order(3, 2) != _order(4, 2)


def test_batches_hold_similar_lengths() -> None:
    order = _order(1, 0)
    batches = [order[i : i + 8] for i in range(0, len(order), 8)]
    spread = sum(max(LENGTHS[i] for i in b) - min(LENGTHS[i] for i in b) for b in batches)
    shuffled = torch.randperm(len(LENGTHS), generator=torch.Generator().manual_seed(0)).tolist()
    random_batches = [shuffled[i : i + 8] for i in range(0, len(shuffled), 8)]
    random_spread = sum(
        max(LENGTHS[i] for i in b) - min(LENGTHS[i] for i in b) for b in random_batches
    )
    assert spread < random_spread / 3, (spread, random_spread)

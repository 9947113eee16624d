"""Which samples go in which batch: epoch order, shards per rank, resuming mid-epoch.

Epoch order: ``torch.randperm(N)`` from a ``torch.Generator`` seeded with
``epoch_seed(seed, epoch) = seed * 2**32 + epoch`` when shuffling, else ``0..N-1``.

Shards (like ``torch.utils.data.DistributedSampler``): the order is first made a multiple of
``world_size`` long, by repeating its first samples (``drop_last=False``) or by dropping its tail
(``drop_last=True``); rank ``r`` then takes positions ``r, r + world_size, r + 2*world_size, ...``.
Every rank thus holds the same number of samples and of batches. Batches are consecutive runs
of ``batch_size`` of the rank's samples; the last one is shorter or dropped (``drop_last``).
``start_batch=k`` skips the first ``k`` batches of the epoch, for resuming mid-epoch.
"""

from __future__ import annotations

import math

import torch


def epoch_seed(seed: int, epoch: int) -> int:
    """The generator seed of one epoch: ``seed * 2**32 + epoch`` (both in [0, 2**32))."""
    if not (0 <= seed < 2**32 and 0 <= epoch < 2**32):
        raise ValueError(f"seed and epoch must be in [0, 2**32), got {seed} and {epoch}")
    return seed * 2**32 + epoch


def epoch_order(n: int, *, shuffle: bool, seed: int, epoch: int) -> torch.Tensor:
    """The order of all ``n`` samples in ``epoch`` (int64 tensor)."""
    if not shuffle:
        return torch.arange(n)
    generator = torch.Generator().manual_seed(epoch_seed(seed, epoch))
    return torch.randperm(n, generator=generator)


def samples_per_rank(n: int, world_size: int, drop_last: bool) -> int:
    """How many samples each rank gets in one epoch."""
    return n // world_size if drop_last else math.ceil(n / world_size)


def num_batches(n: int, batch_size: int, drop_last: bool = False, world_size: int = 1) -> int:
    """How many batches each rank iterates in one epoch."""
    if batch_size < 1 or world_size < 1:
        raise ValueError(f"batch_size and world_size must be >= 1, got {batch_size}, {world_size}")
    per_rank = samples_per_rank(n, world_size, drop_last)
    return per_rank // batch_size if drop_last else math.ceil(per_rank / batch_size)


def batch_indices(
    n: int,
    batch_size: int,
    *,
    shuffle: bool = False,
    seed: int = 0,
    epoch: int = 0,
    drop_last: bool = False,
    rank: int = 0,
    world_size: int = 1,
    start_batch: int = 0,
) -> list[torch.Tensor]:
    """The sample indices of each batch this rank iterates (see module doc)."""
    count = num_batches(n, batch_size, drop_last, world_size)
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
    if start_batch < 0:
        raise ValueError(f"start_batch must be >= 0, got {start_batch}")
    if n == 0 or start_batch >= count:
        return []
    order = epoch_order(n, shuffle=shuffle, seed=seed, epoch=epoch)
    per_rank = samples_per_rank(n, world_size, drop_last)
    total = per_rank * world_size
    if total > n:
        order = torch.cat([order, order.repeat(math.ceil(total / n))[: total - n]])
    mine = order[rank:total:world_size]
    return [mine[b * batch_size:(b + 1) * batch_size] for b in range(start_batch, count)]

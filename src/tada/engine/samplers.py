"""The samplers of the engine: which items each process loads, in which order, with which seed.

Every loader the engine builds is driven by one of these samplers over a :class:`SeededDataset`.

Training (:class:`TrainSampler`) is resumable to the bit: every random choice is a function of
the run's state, not of history:
- the order of an epoch is a permutation drawn from ``(seed, epoch)`` alone;
- each sample's augmentation is drawn from its own seed ``(seed, epoch, position in the epoch)``,
  which :class:`SeededDataset` installs in the python, numpy and torch generators of whichever
  worker process decodes it. Which worker that is, and what it decoded before, does not matter.
A resumed run therefore skips exactly the iterations it had consumed and sees the same clips.
Batches are split across ranks in contiguous blocks: iteration ``i`` of an epoch uses positions
``[i*B, (i+1)*B)`` of the permutation for the global batch ``B``, and rank ``r`` takes the ``r``-th
block of ``B / world_size`` of them. A run of N processes sees the same global batches as a run of one.

Evaluation (:class:`EvalSampler`, validation and test) follows one sharding rule,
:func:`shard_range`: rank ``r`` of ``W`` takes the contiguous items ``[n*r//W, n*(r+1)//W)``, in
order, without padding. Every item is loaded exactly once across ranks, and the ranks' shards
concatenated in rank order are the dataset in order, which is how evaluation merges them.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from tada.engine.distributed import EngineError

__all__ = ["EvalSampler", "SeededDataset", "TrainSampler", "mix_seed", "shard_range"]

_MASK64 = (1 << 64) - 1


def mix_seed(*parts: int) -> int:
    """A well-mixed 63-bit seed from integers (SplitMix64 finaliser over a running hash)."""
    h = 0x9E3779B97F4A7C15
    for part in parts:
        h = (h ^ (int(part) & _MASK64)) & _MASK64
        h = (h + 0x9E3779B97F4A7C15) & _MASK64
        z = h
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        h = z ^ (z >> 31)
    return h >> 1


class TrainSampler(Sampler):
    """This rank's share of a seeded, per-epoch permutation, in whole batches; resumable mid-epoch.

    Yields ``(dataset_index, sample_seed)`` pairs for :class:`SeededDataset`. The last incomplete
    global batch of an epoch is dropped (as the official DataLoader(drop_last=True)).
    """

    def __init__(self, num_samples: int, *, global_batch: int, rank: int = 0, world_size: int = 1, seed: int = 0):
        if global_batch % world_size:
            raise ValueError(f"the global batch {global_batch} is not divisible by {world_size} processes")
        if num_samples < global_batch:
            raise EngineError(
                f"the training set has {num_samples} clips, fewer than one global batch of {global_batch}: "
                "lower TRAIN.BATCH_SIZE"
            )
        self.num_samples = num_samples
        self.global_batch = global_batch
        self.local_batch = global_batch // world_size
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.epoch = 0
        self.start_iter = 0

    @property
    def iters_per_epoch(self) -> int:
        return self.num_samples // self.global_batch

    def set_epoch(self, epoch: int, start_iter: int = 0) -> None:
        """Select the epoch's permutation and skip its first ``start_iter`` (already trained) iterations."""
        if not 0 <= start_iter <= self.iters_per_epoch:
            raise ValueError(f"start_iter {start_iter} outside [0, {self.iters_per_epoch}]")
        self.epoch = epoch
        self.start_iter = start_iter

    def permutation(self, epoch: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(mix_seed(self.seed, epoch, 0x5A3))
        return torch.randperm(self.num_samples, generator=gen)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        perm = self.permutation(self.epoch).tolist()
        for it in range(self.start_iter, self.iters_per_epoch):
            first = it * self.global_batch + self.rank * self.local_batch
            for pos in range(first, first + self.local_batch):
                yield perm[pos], mix_seed(self.seed, self.epoch, pos)

    def __len__(self) -> int:
        return (self.iters_per_epoch - self.start_iter) * self.local_batch


def shard_range(num_items: int, *, rank: int, world_size: int) -> range:
    """Rank ``rank``'s contiguous share of ``num_items`` evaluation items (see the module docstring)."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside [0, {world_size})")
    return range(num_items * rank // world_size, num_items * (rank + 1) // world_size)


class EvalSampler(Sampler):
    """This rank's :func:`shard_range` of the items, in order, each with its own fixed seed.

    Yields ``(dataset_index, sample_seed)`` pairs for :class:`SeededDataset`; the seed depends on
    the item only, so a view's random choices (if any) do not depend on the number of ranks.
    """

    def __init__(self, num_samples: int, *, rank: int = 0, world_size: int = 1, seed: int = 0):
        self.indices = shard_range(num_samples, rank=rank, world_size=world_size)
        self.seed = seed

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for index in self.indices:
            yield index, mix_seed(self.seed, 0x7E57, index)

    def __len__(self) -> int:
        return len(self.indices)


class SeededDataset(Dataset):
    """Wraps a map-style dataset: item ``(index, seed)`` seeds python, numpy and torch, then loads ``index``.

    The seeding happens in the process that loads the item (a DataLoader worker or the main
    process); in the main process the generators' previous states are restored afterwards so that
    the training loop's own random stream (dropout) is untouched.
    """

    def __init__(self, dataset: Any):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name: str) -> Any:
        """The wrapped dataset's attributes (name, split, class_names, num_views, ...)."""
        if name == "dataset":  # not yet set (unpickling in a worker): no recursion
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        in_worker = torch.utils.data.get_worker_info() is not None
        if not in_worker:
            saved = (random.getstate(), np.random.get_state(), torch.get_rng_state())
        random.seed(seed)
        np.random.seed(seed % (1 << 32))
        torch.default_generator.manual_seed(seed)  # the CPU one only: the loop's CUDA dropout stream stays
        try:
            return self.dataset[index]
        finally:
            if not in_worker:
                random.setstate(saved[0])
                np.random.set_state(saved[1])
                torch.set_rng_state(saved[2])

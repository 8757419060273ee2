"""Samplers: seeded epochs, exact mid-epoch skip, rank blocks equal to the one-process batches."""

import random

import numpy as np
import pytest
import torch

from tada.engine import EngineError
from tada.engine.samplers import EvalSampler, SeededDataset, TrainSampler, mix_seed, shard_range


def _batches(sampler, batch):
    items = list(sampler)
    return [items[i:i + batch] for i in range(0, len(items), batch)]


def test_permutation_depends_on_seed_and_epoch_only():
    a = TrainSampler(50, global_batch=8, seed=3)
    b = TrainSampler(50, global_batch=8, seed=3)
    a.set_epoch(2)
    b.set_epoch(2)
    assert list(a) == list(b)
    b.set_epoch(3)
    assert list(a) != list(b)
    assert len(list(a)) == 48 == len(a)  # the last incomplete batch is dropped
    assert len({i for i, _ in a}) == 48


def test_resume_skips_exactly_the_consumed_iterations():
    full = TrainSampler(40, global_batch=4, seed=1)
    full.set_epoch(5)
    resumed = TrainSampler(40, global_batch=4, seed=1)
    resumed.set_epoch(5, start_iter=3)
    assert list(resumed) == list(full)[12:]
    assert len(resumed) == 28


def test_ranks_split_each_global_batch_into_contiguous_blocks():
    one = TrainSampler(30, global_batch=6, seed=0)
    one.set_epoch(1)
    ranks = [TrainSampler(30, global_batch=6, rank=r, world_size=3, seed=0) for r in range(3)]
    for s in ranks:
        s.set_epoch(1)
    per_rank = [_batches(s, 2) for s in ranks]
    for i, batch in enumerate(_batches(one, 6)):
        assert [x for r in range(3) for x in per_rank[r][i]] == batch  # same items and same sample seeds


def test_train_sampler_rejects_bad_sizes():
    with pytest.raises(ValueError, match="divisible"):
        TrainSampler(10, global_batch=4, world_size=3)
    with pytest.raises(EngineError, match="fewer than one global batch"):  # a user error: the CLI prints it
        TrainSampler(3, global_batch=4)


@pytest.mark.parametrize("n,world", [(10, 3), (7, 2), (2, 4), (0, 2)])
def test_eval_sampler_covers_each_item_exactly_once(n, world):
    seen = [i for r in range(world) for i, _ in EvalSampler(n, rank=r, world_size=world)]
    assert seen == list(range(n))


def test_eval_shards_are_contiguous_balanced_and_seeded_per_item():
    shards = [shard_range(10, rank=r, world_size=3) for r in range(3)]
    assert [list(s) for s in shards] == [[0, 1, 2], [3, 4, 5], [6, 7, 8, 9]]
    one = dict(EvalSampler(10, seed=4))
    split = {i: seed for r in range(3) for i, seed in EvalSampler(10, rank=r, world_size=3, seed=4)}
    assert split == one  # an item's seed does not depend on the number of ranks
    with pytest.raises(ValueError, match="outside"):
        shard_range(10, rank=3, world_size=3)


class _Random(torch.utils.data.Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        return (i, random.random(), float(np.random.rand()), float(torch.rand(())))


def test_seeded_items_are_reproducible_and_leave_the_callers_generators_alone():
    ds = SeededDataset(_Random())
    torch.manual_seed(0)
    before = torch.rand(3)
    torch.manual_seed(0)
    first = ds[(2, 123)]
    after = torch.rand(3)
    assert torch.equal(before, after)  # the main process's stream did not move
    assert ds[(2, 123)] == first
    assert ds[(2, 124)] != first
    assert mix_seed(1, 2) != mix_seed(2, 1) and 0 <= mix_seed(5) < 2**63


def test_seeded_dataset_passes_attributes_through():
    inner = _Random()
    inner.class_names = ["a", "b"]
    assert SeededDataset(inner).class_names == ["a", "b"]
    with pytest.raises(AttributeError):
        _ = SeededDataset(inner).missing_attribute

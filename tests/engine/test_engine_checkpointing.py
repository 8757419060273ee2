"""Checkpoint files: names in time order, atomic writes, pruning, best link, RNG round trip."""

import random

import numpy as np
import torch

from tada.engine import checkpointing as ckpt


def test_names_sort_in_training_order(tmp_path):
    positions = [(0, 3), (1, 0), (1, 2), (1, 10), (2, 0), (10, 0)]
    for e, i in reversed(positions):
        ckpt.save_atomic({"x": torch.zeros(1)}, ckpt.checkpoint_path(tmp_path, e, iteration=i))
    (ckpt.checkpoint_dir(tmp_path) / "notes.txt").write_text("ignored")
    found = ckpt.list_checkpoints(tmp_path)
    assert [(c.epochs_done, c.iteration) for c in found] == positions
    assert sorted(p.name for p in ckpt.checkpoint_dir(tmp_path).iterdir() if p.suffix == ".pyth") == [
        c.path.name for c in found
    ]
    assert ckpt.checkpoint_path(tmp_path, 5).name == "checkpoint_epoch_00005.pyth"  # official name
    assert ckpt.latest_checkpoint(tmp_path).path.name == "checkpoint_epoch_00010.pyth"


def test_atomic_save_leaves_no_temporary_and_reads_weights_only(tmp_path):
    path = ckpt.save_atomic({"model_state": {"w": torch.ones(2)}, "epoch": 3}, tmp_path / "c.pyth")
    assert [p.name for p in tmp_path.iterdir()] == ["c.pyth"]
    assert ckpt.read_checkpoint(path)["epoch"] == 3


def test_prune_keeps_the_last_epochs_and_only_the_newest_iteration_file(tmp_path):
    for e, i in [(1, 0), (1, 5), (2, 0), (3, 0), (3, 2), (3, 4)]:
        ckpt.save_atomic({}, ckpt.checkpoint_path(tmp_path, e, iteration=i))
    ckpt.link_best(ckpt.checkpoint_path(tmp_path, 1), tmp_path)
    ckpt.prune_checkpoints(tmp_path, keep_last=2)
    left = [(c.epochs_done, c.iteration) for c in ckpt.list_checkpoints(tmp_path)]
    assert left == [(2, 0), (3, 0), (3, 4)]
    assert ckpt.best_path(tmp_path).is_file()  # the link keeps the pruned best alive


def test_linking_best_to_the_file_it_already_links_leaves_no_temporary(tmp_path):
    src = ckpt.save_atomic({"epoch": 1}, ckpt.checkpoint_path(tmp_path, 1))
    ckpt.link_best(src, tmp_path)
    ckpt.link_best(src, tmp_path)  # e.g. a resumed run re-links the best it had
    assert sorted(p.name for p in ckpt.checkpoint_dir(tmp_path).iterdir()) == ["best.pyth", src.name]


def test_rng_states_round_trip_through_a_weights_only_file(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    np.random.randn()  # a cached gaussian in numpy's state
    state = ckpt.capture_rng(torch.device("cpu"))
    expected = (random.random(), np.random.randn(), torch.rand(2))
    ckpt.save_atomic({"rng": state}, tmp_path / "r.pyth")
    random.seed(9)
    np.random.seed(9)
    torch.manual_seed(9)
    ckpt.restore_rng(ckpt.read_checkpoint(tmp_path / "r.pyth")["rng"], torch.device("cpu"))
    got = (random.random(), np.random.randn(), torch.rand(2))
    assert got[0] == expected[0] and got[1] == expected[1] and torch.equal(got[2], expected[2])

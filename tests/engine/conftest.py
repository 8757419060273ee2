"""Shared engine fixtures: one finished tiny training (real TAda2D model, in-memory clips).

The engine tests run torch on one thread: on a shared 2-core machine, OpenMP's spinning threads
make these tiny models about 10x slower with two. The thread count is restored afterwards.
"""

import contextlib

import pytest
import torch
from engine_standins import dataset_fn_factory, tiny_cfg


@contextlib.contextmanager
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with one_thread():
        yield


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory):
    """A complete 2-epoch run without iteration checkpoints: the reference for resume tests."""
    from tada.engine import train

    out = tmp_path_factory.mktemp("reference")
    cfg = tiny_cfg(out, "TEST.ENABLE", "false")
    with one_thread():
        result = train(cfg, dataset_fn=dataset_fn_factory())
    return cfg, result

"""TRAIN.CUDA_GRAPHS: the replayed train step computes what the eager step computes.

The CUDA tests run in benchmarks/gpu_check.sh (`pytest -m cuda`); the config checks run anywhere.
"""

import copy
import json

import pytest
import torch
import torch.nn.functional as F
from engine_standins import dataset_fn_factory, tiny_cfg

from tada.engine import EngineError, train
from tada.engine.trainer import check_train_config
from tada.models import create_model


@pytest.mark.parametrize("extra, message", [
    (["NUM_GPUS", "0"], "needs a CUDA device"),
    (["NUM_GPUS", "1", "TRAIN.COMPILE", "true"], "exclusive"),
])
def test_cuda_graphs_config_errors(tmp_path, extra, message):
    cfg = tiny_cfg(tmp_path, "TRAIN.CUDA_GRAPHS", "true", *extra)
    with pytest.raises(EngineError, match=message):
        check_train_config(cfg, world_size=1)


def test_cuda_graphs_refused_with_several_processes(tmp_path):
    cfg = tiny_cfg(tmp_path, "TRAIN.CUDA_GRAPHS", "true", "NUM_GPUS", "2", "TRAIN.BATCH_SIZE", "4")
    with pytest.raises(EngineError, match="one GPU"):
        check_train_config(cfg, world_size=2)


@pytest.fixture
def no_tf32():
    """TF32 off for one test (fp32 comparisons at 1e-4), then the process's settings back."""
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("amp", ["off", "bf16"])
def test_graphed_steps_equal_eager_steps(amp, no_tf32):
    """Three SGD steps on different batches: losses, weights and BN statistics match eager.

    Only a few steps: this small network with a strong calibration amplifies rounding (on an H100
    the fifth fp32 loss was 7e-4 off eager while the first four agreed to 1e-4).
    """
    from tada.engine.graphs import GraphedTrainStep

    dev = torch.device("cuda")
    torch.manual_seed(0)
    eager = create_model("tada2d_r50", num_classes=5, dropout=0.0, widths=(8, 32, 64, 128, 256),
                         layers=(1, 1, 1, 1), channels_last=True).to(dev)
    with torch.no_grad():  # a live routing function and pool branch (both start as no-ops)
        for name, p in eager.named_parameters():
            if "b_rf.b." in name or "b_avgpool_bn.weight" in name:
                p.normal_(0.0, 0.1)
    graph_model = copy.deepcopy(eager)
    opts = [torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9) for m in (eager, graph_model)]
    dtype = torch.bfloat16 if amp == "bf16" else None

    def autocast(cache_enabled=True):
        return torch.autocast("cuda", dtype=dtype, enabled=dtype is not None, cache_enabled=cache_enabled)

    step = GraphedTrainStep(graph_model, F.cross_entropy, autocast=autocast)
    gen = torch.Generator().manual_seed(1)
    eager_losses, graph_losses = [], []
    for _ in range(3):
        video = torch.randn(2, 3, 4, 32, 32, generator=gen).to(dev)
        labels = torch.randint(0, 5, (2,), generator=gen).to(dev)
        opts[0].zero_grad(set_to_none=True)
        with autocast():
            loss = F.cross_entropy(eager(video).float(), labels)
        loss.backward()
        opts[0].step()
        eager_losses.append(loss.item())
        _, gloss = step(video, labels)
        graph_losses.append(gloss.item())
        opts[1].step()
    tol = 2e-2 if amp == "bf16" else 1e-4
    torch.testing.assert_close(torch.tensor(graph_losses), torch.tensor(eager_losses), rtol=tol, atol=tol)
    for (name, a), b in zip(eager.state_dict().items(), graph_model.state_dict().values()):
        if a.is_floating_point():
            torch.testing.assert_close(b, a, rtol=tol * 10, atol=tol * 10, msg=lambda m, name=name: f"{name}: {m}")
        else:
            assert torch.equal(a, b), name  # num_batches_tracked: the warm-up left no trace


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("workers", ["0", "2"])
def test_trainer_with_cuda_graphs(tmp_path, workers):
    """With workers, the pin-memory thread allocates and queries events while the step is captured."""
    cfg = tiny_cfg(tmp_path, "NUM_GPUS", "1", "TRAIN.CHANNELS_LAST", "true", "TRAIN.AMP", "bf16",
                   "TRAIN.CUDA_GRAPHS", "true", "TEST.ENABLE", "false", "OPTIMIZER.MAX_EPOCH", "2",
                   "TRAIN.EVAL_PERIOD", "1", "DATA_LOADER.NUM_WORKERS", workers)
    result = train(cfg, dataset_fn=dataset_fn_factory(delay=0.01 if workers != "0" else 0.0))
    assert result.trained
    records = [r for r in map(json.loads, (tmp_path / "stats.jsonl").read_text().splitlines())]
    losses = [r["loss"] for r in records if r["_type"] == "train_iter"]
    assert losses and all(torch.isfinite(torch.tensor(losses)))
    assert any(r["_type"] == "val_epoch" for r in records)  # eager validation between graphed epochs

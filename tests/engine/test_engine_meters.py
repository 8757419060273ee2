"""TrainMeter: exact sums per window and per epoch, the first non-finite step, records written."""

from __future__ import annotations

import json
import math

import torch

from tada.engine.distributed import DistContext
from tada.engine.meters import TrainMeter, hms
from tada.engine.reporting import StatsWriter


def _meter(tmp_path) -> tuple[TrainMeter, StatsWriter]:
    stats = StatsWriter(tmp_path, enabled=True, tensorboard=False)
    meter = TrainMeter(ctx=DistContext(), iters_per_epoch=4, max_epoch=3, stats=stats, show_bar=False)
    meter.start_epoch(1, start_iter=0)
    return meter, stats


def _step(meter: TrainMeter, *, loss: float, step: int) -> None:
    logits = torch.tensor([[3.0, 1.0, 0.0], [0.0, 1.0, 3.0]], dtype=torch.float64)  # predicts 0, 2
    meter.update(loss=torch.tensor(loss), logits=logits, labels=torch.tensor([0, 1]), global_step=step)


def test_windows_sum_exactly_into_the_epoch_record(tmp_path):
    meter, stats = _meter(tmp_path)
    _step(meter, loss=1.0, step=4)
    _step(meter, loss=3.0, step=5)
    assert meter.sync() is None
    window = meter.log_window(iteration=2, global_step=6, lr=0.1)
    assert (window["epoch"], window["iter"], window["epoch_float"]) == (2, 2, 1.5)
    assert window["loss"] == 2.0 and window["top1"] == 50.0 and window["window_clips"] == 4
    _step(meter, loss=6.0, step=6)
    assert meter.sync() is None
    meter.log_window(iteration=3, global_step=7, lr=0.1)
    assert meter.sync() is None  # an empty window: no record, nothing added
    assert meter.log_window(iteration=3, global_step=7, lr=0.1) == {}
    epoch = meter.epoch_record(lr=0.1)
    assert epoch["epoch"] == 2 and math.isclose(epoch["loss"], (2 * 1.0 + 2 * 3.0 + 2 * 6.0) / 6)
    assert epoch["top1"] == 50.0 and epoch["top5"] == 100.0
    lines = [json.loads(line) for line in stats.path.read_text().splitlines()]
    assert [(r["_type"], r["global_step"], r["iter"]) for r in lines] == [("train_iter", 6, 2), ("train_iter", 7, 3)]


def test_the_first_non_finite_step_is_found_and_left_out_of_the_sums(tmp_path):
    meter, _ = _meter(tmp_path)
    _step(meter, loss=1.0, step=4)
    _step(meter, loss=float("nan"), step=5)
    _step(meter, loss=float("inf"), step=6)
    assert meter.sync() == 5
    assert meter.log_window(iteration=3, global_step=7, lr=0.1)["loss"] == 1.0 / 3  # finite losses only


def test_hms():
    assert hms(3725.9) == "1:02:05" and hms(-3) == "0:00:00"

"""Parameters and multiply-accumulates of a model, by torch's own FlopCounterMode (no fvcore).

GMACs = counted FLOPs / 2, which is the fvcore convention the literature's "GFLOPs" use:
convolutions, linear layers and matmuls count; BN, pooling and elementwise ops do not.
TAda2D-R50 is 33.02 GMACs at 8x224x224 and 43.13 at 8x256x256 per view.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["FlopsReport", "count", "count_model", "count_params"]


@dataclass
class FlopsReport:
    """One forward's cost at ``input_shape``; ``by_op`` splits the FLOPs per aten op."""

    input_shape: tuple[int, ...]
    params: int
    flops: int
    by_op: dict[str, int] = field(default_factory=dict)

    @property
    def macs(self) -> int:
        return self.flops // 2

    @property
    def gmacs(self) -> float:
        return self.flops / 2e9


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count(model: nn.Module, input_shape: Sequence[int], *, device: str | torch.device | None = None) -> FlopsReport:
    """Count one eval-mode forward on a random input of ``input_shape`` (e.g. (1, 3, 8, 224, 224)).

    The model's train/eval mode is restored afterwards.
    """
    if device is None:
        device = next(model.parameters()).device
    x = torch.randn(*input_shape, device=device)
    was_training = model.training
    model.eval()
    try:
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            model(x)
    finally:
        model.train(was_training)
    by_op = {str(op): int(n) for op, n in counter.get_flop_counts().get("Global", {}).items()}
    return FlopsReport(tuple(int(s) for s in input_shape), count_params(model), int(counter.get_total_flops()), by_op)


def count_model(cfg: Any) -> dict[str, Any]:
    """Params and GMACs per view of the model a config describes, at its train and test crops.

    The model is built on the meta device (no memory, no compute), so this is cheap for any size.
    ``gmacs`` is the train-crop figure.
    """
    from tada.models import build_model

    with torch.device("meta"):
        model = build_model(cfg)
    model.channels_last = False
    frames = cfg.DATA.NUM_INPUT_FRAMES
    channels = cfg.VIDEO.BACKBONE.NUM_INPUT_CHANNELS
    train = count(model, (1, channels, frames, cfg.DATA.TRAIN_CROP_SIZE, cfg.DATA.TRAIN_CROP_SIZE)).gmacs
    test = count(model, (1, channels, frames, cfg.DATA.TEST_CROP_SIZE, cfg.DATA.TEST_CROP_SIZE)).gmacs
    return {
        "params": count_params(model),
        "gmacs": train,
        "gmacs_train_view": train,
        "gmacs_test_view": test,
        "frames": frames,
        "train_crop": cfg.DATA.TRAIN_CROP_SIZE,
        "test_crop": cfg.DATA.TEST_CROP_SIZE,
    }

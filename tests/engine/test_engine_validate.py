"""validate(): exact sums, and clips whose logits overflow are reported instead of poisoning the loss."""

from __future__ import annotations

import math

import torch

from tada.engine.distributed import DistContext
from tada.engine.runtime import resolve_precision
from tada.engine.trainer import validate


class _Overflowing(torch.nn.Module):
    """Logits = the clip's first pixel times a fixed row; a clip marked 1e39 overflows to inf."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("row", torch.tensor([1.0, 0.0, -1.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)[:, :1] * self.row


def test_nonfinite_clips_are_wrong_and_left_out_of_the_loss() -> None:
    video = torch.ones(4, 3, 2, 2, 2)
    video[1] = float("inf")
    batch = {"video": video, "label": torch.tensor([0, 0, 2, 1])}
    ctx = DistContext()
    out = validate(_Overflowing(), [batch], ctx=ctx, precision=resolve_precision("off", ctx.device))
    assert out["num_clips"] == 4 and out["nonfinite_clips"] == 1
    assert out["top1"] == 25.0  # clip 0 right; clip 1 overflowed (wrong); clips 2 and 3 wrong
    expected = torch.nn.functional.cross_entropy(
        torch.tensor([[1.0, 0.0, -1.0]] * 3), torch.tensor([0, 2, 1]), reduction="sum").item() / 3
    assert math.isclose(out["loss"], expected, rel_tol=1e-9)

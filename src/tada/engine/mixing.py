"""Mixup and CutMix of a training batch, with their soft targets and label smoothing.

One draw per batch (batch mode): with probability ``prob`` the batch is mixed with itself in
reverse order; when both are enabled, CutMix is chosen with probability ``switch_prob``, else
Mixup. Mixup: x <- lam * x + (1 - lam) * x.flip(0), lam ~ Beta(mixup_alpha, mixup_alpha). CutMix:
a box of area fraction 1 - lam (lam ~ Beta(cutmix_alpha, cutmix_alpha)), centred uniformly and
clipped to the frame, or with side fractions drawn from ``cutmix_minmax``, is pasted from the
reversed batch into every frame, and lam is corrected to the pasted area. Targets are
``lam * y + (1 - lam) * y.flip(0)`` with smoothed one-hots (off = eps / K, on = 1 - eps + eps / K).

Every draw comes from the generator the caller passes (the engine seeds one per step), so a
resumed run mixes exactly as an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

__all__ = ["Mixer", "cutmix_box", "mixer_from_config", "smoothed_one_hot"]


def smoothed_one_hot(labels: Tensor, num_classes: int, *, smoothing: float = 0.0) -> Tensor:
    """One-hot float targets with label smoothing: off = eps / K, on = 1 - eps + eps / K."""
    off = smoothing / num_classes
    out = torch.full((labels.numel(), num_classes), off, dtype=torch.float32, device=labels.device)
    return out.scatter_(1, labels.view(-1, 1), 1.0 - smoothing + off)


def cutmix_box(height: int, width: int, *, lam: float, rng: np.random.Generator,
               minmax: Sequence[float] | None = None) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1) of a CutMix box: side ratio sqrt(1 - lam) at a uniform centre, clipped; or,
    with ``minmax``, sides drawn in [min, max) of the frame at a uniform position inside it."""
    if minmax is not None:
        cut_h = int(rng.integers(int(height * minmax[0]), int(height * minmax[1])))
        cut_w = int(rng.integers(int(width * minmax[0]), int(width * minmax[1])))
        y0 = int(rng.integers(0, height - cut_h))
        x0 = int(rng.integers(0, width - cut_w))
        return y0, y0 + cut_h, x0, x0 + cut_w
    ratio = float(np.sqrt(1.0 - lam))
    cut_h, cut_w = int(height * ratio), int(width * ratio)
    cy, cx = int(rng.integers(0, height)), int(rng.integers(0, width))
    y0, y1 = int(np.clip(cy - cut_h // 2, 0, height)), int(np.clip(cy + cut_h // 2, 0, height))
    x0, x1 = int(np.clip(cx - cut_w // 2, 0, width)), int(np.clip(cx + cut_w // 2, 0, width))
    return y0, y1, x0, x1


@dataclass(frozen=True)
class Mixer:
    """Batch-mode Mixup/CutMix; an alpha of 0 disables that kind."""

    num_classes: int
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    cutmix_minmax: tuple[float, float] | None = None
    prob: float = 1.0
    switch_prob: float = 0.5
    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        if self.mixup_alpha <= 0 and self.cutmix_alpha <= 0 and self.cutmix_minmax is None:
            raise ValueError("Mixer needs AUGMENTATION.MIXUP.ALPHA > 0 or AUGMENTATION.CUTMIX.ALPHA > 0")
        if self.cutmix_minmax is not None and len(self.cutmix_minmax) != 2:
            raise ValueError(f"AUGMENTATION.CUTMIX.MINMAX needs [min, max], got {list(self.cutmix_minmax)}")

    def draw(self, rng: np.random.Generator) -> tuple[float, bool]:
        """(lam, use_cutmix) for one batch; lam 1.0 means no mixing."""
        if rng.random() >= self.prob:
            return 1.0, False
        if self.mixup_alpha > 0 and self.cutmix_alpha > 0:
            use_cutmix = bool(rng.random() < self.switch_prob)
            alpha = self.cutmix_alpha if use_cutmix else self.mixup_alpha
        elif self.mixup_alpha > 0:
            use_cutmix, alpha = False, self.mixup_alpha
        else:
            use_cutmix, alpha = True, self.cutmix_alpha
        return float(rng.beta(alpha, alpha)) if alpha > 0 else 1.0, use_cutmix

    def __call__(self, video: Tensor, labels: Tensor, *, rng: np.random.Generator) -> tuple[Tensor, Tensor]:
        """(mixed video, soft targets) for a (B, C, T, H, W) batch and its integer labels; in place on video."""
        lam, use_cutmix = self.draw(rng)
        if lam < 1.0:
            if use_cutmix:
                h, w = video.shape[-2:]
                y0, y1, x0, x1 = cutmix_box(h, w, lam=lam, rng=rng, minmax=self.cutmix_minmax)
                video[..., y0:y1, x0:x1] = video.flip(0)[..., y0:y1, x0:x1]
                lam = 1.0 - (y1 - y0) * (x1 - x0) / float(h * w)
            else:
                reversed_part = video.flip(0).mul_(1.0 - lam)
                video.mul_(lam).add_(reversed_part)
        y = smoothed_one_hot(labels, self.num_classes, smoothing=self.label_smoothing)
        reversed_targets = y.flip(0).mul_(1.0 - lam)
        return video, y.mul_(lam).add_(reversed_targets)


def mixer_from_config(aug: object, num_classes: int) -> Mixer | None:
    """The :class:`Mixer` the AUGMENTATION keys ask for, or None when MIXUP and CUTMIX are off."""
    mixup, cutmix = aug.MIXUP, aug.CUTMIX
    if not (mixup.ENABLE or cutmix.ENABLE):
        return None
    if mixup.MODE != "batch":
        raise ValueError(f"AUGMENTATION.MIXUP.MODE {mixup.MODE!r}: only 'batch' is implemented")
    if mixup.ENABLE and mixup.ALPHA <= 0:
        raise ValueError("AUGMENTATION.MIXUP.ENABLE is true but MIXUP.ALPHA is 0: set an alpha > 0")
    if cutmix.ENABLE and cutmix.ALPHA <= 0 and cutmix.MINMAX is None:
        raise ValueError("AUGMENTATION.CUTMIX.ENABLE is true but CUTMIX.ALPHA is 0: set an alpha > 0")
    return Mixer(
        num_classes=int(num_classes),
        mixup_alpha=float(mixup.ALPHA) if mixup.ENABLE else 0.0,
        cutmix_alpha=float(cutmix.ALPHA) if cutmix.ENABLE else 0.0,
        cutmix_minmax=tuple(float(v) for v in cutmix.MINMAX) if cutmix.ENABLE and cutmix.MINMAX else None,
        prob=float(mixup.PROB),
        switch_prob=float(mixup.SWITCH_PROB),
        label_smoothing=float(aug.LABEL_SMOOTHING),
    )

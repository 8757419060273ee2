"""The RandAugment ops as the official code runs them: Pillow's image operations, frame by frame.

This is the reference that tada.data.augment must equal bit for bit. Each op makes the same
Pillow call as the official (timm-derived) video RandAugment on one RGB frame. One exception:
Posterize at 0 bits (magnitude 10) keeps no bit, i.e. black, which is what the Pillow of the
official code did; current Pillow refuses 0 bits, so that case is written as the same lookup
table that ImageOps.posterize builds.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageOps
from torch import Tensor

from tada.data.augment import MAX_LEVEL, _enhance_factor, _signed


def _affine(img: Image.Image, matrix: Sequence[float], fill: Sequence[int]) -> Image.Image:
    return img.transform(img.size, Image.AFFINE, tuple(matrix), resample=Image.BICUBIC, fillcolor=tuple(fill))


def pillow_op(img: Image.Image, name: str, m: float, negate: bool, fill: Sequence[int]) -> Image.Image:
    """One RandAugment op at magnitude ``m`` on one RGB frame, as the official code calls Pillow."""
    w, h = img.size
    if name == "AutoContrast":
        return ImageOps.autocontrast(img)
    if name == "Equalize":
        return ImageOps.equalize(img)
    if name == "Invert":
        return ImageOps.invert(img)
    if name == "PosterizeIncreasing":
        bits = 4 - int(m / MAX_LEVEL * 4)
        if bits >= 8:
            return img
        if bits > 0:
            return ImageOps.posterize(img, bits)
        return img.point([0] * 256 * 3)  # mask ~(2**8 - 1) & 0xFF = 0
    if name == "SolarizeIncreasing":
        return ImageOps.solarize(img, 256 - int(m / MAX_LEVEL * 256))
    if name == "SolarizeAdd":
        add = int(m / MAX_LEVEL * 110)
        return img.point([min(255, i + add) if i < 128 else i for i in range(256)] * 3)
    enhance = {"ColorIncreasing": ImageEnhance.Color, "ContrastIncreasing": ImageEnhance.Contrast,
               "BrightnessIncreasing": ImageEnhance.Brightness, "SharpnessIncreasing": ImageEnhance.Sharpness}
    if name in enhance:
        return enhance[name](img).enhance(_enhance_factor(m, negate))
    if name == "Rotate":
        return img.rotate(_signed(m / MAX_LEVEL * 30.0, negate), resample=Image.BICUBIC, fillcolor=tuple(fill))
    if name == "ShearX":
        return _affine(img, (1, _signed(m / MAX_LEVEL * 0.3, negate), 0, 0, 1, 0), fill)
    if name == "ShearY":
        return _affine(img, (1, 0, 0, _signed(m / MAX_LEVEL * 0.3, negate), 1, 0), fill)
    if name == "TranslateXRel":
        return _affine(img, (1, 0, _signed(m / MAX_LEVEL * 0.45, negate) * w, 0, 1, 0), fill)
    if name == "TranslateYRel":
        return _affine(img, (1, 0, 0, 0, 1, _signed(m / MAX_LEVEL * 0.45, negate) * h), fill)
    raise ValueError(f"unknown op {name!r}")


def run_op_pillow(clip: Tensor, name: str, m: float, negate: bool, fill: Sequence[int]) -> Tensor:
    """One op on every frame of a uint8 (3, T, H, W) clip, through Pillow; uint8 (3, T, H, W)."""
    frames = clip.permute(1, 2, 3, 0).contiguous().numpy()
    out = [np.asarray(pillow_op(Image.fromarray(f), name, m, negate, fill)) for f in frames]
    return torch.from_numpy(np.stack(out)).permute(3, 0, 1, 2).contiguous()

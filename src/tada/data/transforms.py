"""Spatial transforms: short-side resize + crop + flip + normalise, computed only where needed.

The official pipeline converts the whole clip to float, resizes every frame (bilinear,
``align_corners=False``, no antialias) and then crops. The same numbers come out of
far less work if one first asks, for every output row and column of the crop, which two source
rows/columns the bilinear resize would read and with what weight (a :class:`CropPlan`), then
gathers just those on the uint8 clip and interpolates: the float clip is only ever crop-sized,
and the result equals resize-then-crop to float rounding (tested against ``F.interpolate``).

A horizontal flip is the same plan with its columns reversed. The plan splits into a uint8
source box (what a worker must ship) and box-relative indices, so the resize and normalisation
can also run on the GPU (:func:`gpu_transform`) with identical arithmetic.

The random resized crop that feeds RandAugment (:func:`resized_crop_uint8`) is instead the
official computation itself: the box alone goes through ``F.interpolate`` on [0, 1] floats and
is truncated to uint8, so its 8-bit values are the official ones, not merely equal to rounding.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "CropPlan",
    "plan_train_crop",
    "plan_resized_crop",
    "plan_test_crop",
    "resized_size",
    "apply_plan",
    "extract_box",
    "resize_boxes",
    "resized_crop_uint8",
    "normalize_",
]


@dataclass(frozen=True)
class CropPlan:
    """For each output row/column: the two source rows/columns read and the weight of the second.

    Indices are relative to the source box ``(y0, y1, x0, x1)`` (half-open), the smallest region
    of the frame the crop reads.
    """

    box: tuple[int, int, int, int]
    rows0: Tensor
    rows1: Tensor
    row_w: Tensor
    cols0: Tensor
    cols1: Tensor
    col_w: Tensor

    @property
    def out_size(self) -> tuple[int, int]:
        return int(self.rows0.numel()), int(self.cols0.numel())

    def flipped(self) -> CropPlan:
        """The same crop mirrored left-right."""
        return replace(self, cols0=self.cols0.flip(0), cols1=self.cols1.flip(0), col_w=self.col_w.flip(0))


def resized_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """Short side to ``short_side``, long side ``int(long / short * short_side)`` (official rounding)."""
    if height <= width:
        return short_side, int(width / height * short_side)
    return int(height / width * short_side), short_side


def _axis(src: int, dst: int, offset: int, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source taps of a bilinear resize src->dst (align_corners False) for outputs offset..offset+size.

    Mirrors PyTorch's CPU kernel: s = max(scale * (d + 0.5) - 0.5, 0) with the float32
    scale = src / dst and one rounding (a fused multiply-add, emulated exactly in float64),
    i0 = min(floor(s), src - 1), i1 = i0 + (i0 < src - 1), w = s - i0.
    """
    scale = np.float64(np.float32(src) / np.float32(dst))
    d = np.arange(offset, offset + size, dtype=np.float64)
    s = np.maximum((scale * (d + 0.5) - 0.5).astype(np.float32), np.float32(0))
    i0 = np.minimum(np.floor(s).astype(np.int64), src - 1)
    i1 = i0 + (i0 < src - 1)
    w = np.clip(s - i0.astype(np.float32), 0, 1).astype(np.float32)
    return i0, i1, w


def _plan(height: int, width: int, resized: tuple[int, int], y: int, x: int, crop: int) -> CropPlan:
    rh, rw = resized
    if crop > rh or crop > rw:
        raise ValueError(f"crop {crop} larger than the resized frame {rw}x{rh}")
    r0, r1, rw_ = _axis(height, rh, y, crop)
    c0, c1, cw = _axis(width, rw, x, crop)
    y0, y1 = int(r0.min()), int(r1.max()) + 1
    x0, x1 = int(c0.min()), int(c1.max()) + 1
    t = torch.from_numpy
    return CropPlan((y0, y1, x0, x1), t(r0 - y0), t(r1 - y0), t(rw_), t(c0 - x0), t(c1 - x0), t(cw))


def plan_resized_crop(height: int, width: int, *, box: tuple[int, int, int, int], size: int,
                      hflip: bool = False) -> CropPlan:
    """The region ``box`` = (top, left, h, w) of the frame resized to ``size`` x ``size`` (bilinear,
    ``align_corners=False``, as crop-then-interpolate), optionally mirrored: a random resized crop."""
    top, left, h, w = box
    if not (0 <= top and 0 <= left and 0 < h and 0 < w and top + h <= height and left + w <= width):
        raise ValueError(f"crop box {box} outside the {width}x{height} frame")
    r0, r1, rw_ = _axis(h, size, 0, size)
    c0, c1, cw = _axis(w, size, 0, size)
    y0, y1 = top + int(r0.min()), top + int(r1.max()) + 1
    x0, x1 = left + int(c0.min()), left + int(c1.max()) + 1
    t = torch.from_numpy
    plan = CropPlan((y0, y1, x0, x1), t(r0 + top - y0), t(r1 + top - y0), t(rw_),
                    t(c0 + left - x0), t(c1 + left - x0), t(cw))
    return plan.flipped() if hflip else plan


def plan_train_crop(height: int, width: int, *, scales: Sequence[int], crop: int,
                    rng: np.random.Generator, hflip: bool = False) -> CropPlan:
    """Random short side ``int(U(lo, hi))``, random ``crop``-square position, optional mirror (official)."""
    lo, hi = scales
    if lo < crop:
        raise ValueError(f"TRAIN_JITTER_SCALES {list(scales)} must be >= TRAIN_CROP_SIZE {crop}")
    short = int(rng.uniform(lo, hi))
    rh, rw = resized_size(height, width, short)
    x = int(rng.uniform(0, rw - crop))
    y = int(rng.uniform(0, rh - crop))
    plan = _plan(height, width, (rh, rw), y, x, crop)
    return plan.flipped() if hflip else plan


def plan_test_crop(height: int, width: int, *, scale: int, crop: int, spatial_index: int,
                   num_crops: int) -> CropPlan:
    """Short side ``scale``; 1 crop = centre; 3 crops = left/centre/right (landscape) or
    top/centre/bottom (portrait and square), as the official controlled crop."""
    if num_crops not in (1, 3):
        raise ValueError(f"TEST.NUM_SPATIAL_CROPS must be 1 or 3, got {num_crops}")
    if not 0 <= spatial_index < num_crops:
        raise ValueError(f"spatial crop {spatial_index} outside [0, {num_crops})")
    if crop > scale:
        raise ValueError(f"TEST_CROP_SIZE {crop} must be <= TEST_SCALE {scale}")
    rh, rw = resized_size(height, width, scale)
    x_max, y_max = rw - crop, rh - crop
    x, y = x_max // 2, y_max // 2
    if num_crops == 3 and spatial_index != 1:
        end = spatial_index == 2
        if width > height:
            x = x_max if end else 0
        else:
            y = y_max if end else 0
    return _plan(height, width, (rh, rw), y, x, crop)


def extract_box(clip: Tensor, plan: CropPlan) -> Tensor:
    """The uint8 source region a plan reads, as (C, T, h, w) from a (T, H, W, C) clip (a copy)."""
    y0, y1, x0, x1 = plan.box
    return clip[:, y0:y1, x0:x1, :].permute(3, 0, 1, 2).contiguous()


def apply_plan(clip: Tensor, plan: CropPlan) -> Tensor:
    """Resize+crop(+flip) a uint8 (T, H, W, C) clip to float (C, T, h, w) on the 0..255 scale."""
    return _lerp_taps(extract_box(clip, plan), plan.rows0, plan.rows1, plan.row_w,
                      plan.cols0, plan.cols1, plan.col_w)


def _lerp_taps(box: Tensor, rows0: Tensor, rows1: Tensor, row_w: Tensor,
               cols0: Tensor, cols1: Tensor, col_w: Tensor) -> Tensor:
    """Bilinear taps on a uint8 (..., Hb, Wb) box: rows (index_select + lerp), then columns.

    Columns are taken with index_select on a 2-D view, measured faster on the CPU than gather
    or an index_select on the last of four dims.
    """
    lead = box.shape[:-2]
    rows = box.index_select(-2, rows0).float()
    rows.lerp_(box.index_select(-2, rows1).float(), row_w.view(-1, 1))
    flat = rows.view(-1, rows.shape[-1])
    out = flat.index_select(1, cols0).lerp_(flat.index_select(1, cols1), col_w)
    return out.view(*lead, rows0.numel(), cols0.numel())


def resized_crop_uint8(clip: Tensor, box: tuple[int, int, int, int], *, size: int, hflip: bool = False) -> Tensor:
    """The official random resized crop of a uint8 (T, H, W, C) clip, truncated to uint8 (C, T, size, size).

    Officially the whole clip becomes floats ``x / 255`` (C, T, H, W), is mirrored, cropped to
    the box and resized by ``F.interpolate`` (bilinear, ``align_corners=False``, no antialias);
    RandAugment then takes ``floor(255 x)``. Only the box is converted here (its mirror image
    when ``hflip``, the box read in mirrored coordinates), with the same float32 division,
    interpolate call and truncation, so the result is bit for bit the official one.
    """
    top, left, h, w = box
    frames, height, width, channels = clip.shape
    if not (0 <= top and 0 <= left and 0 < h and 0 < w and top + h <= height and left + w <= width):
        raise ValueError(f"crop box {box} outside the {width}x{height} frame")
    region = clip.numpy()[:, top:top + h, left:left + w]
    if hflip:
        region = region[:, :, ::-1]
    unit = np.empty((channels, frames, h, w), dtype=np.float32)
    unit[...] = region.transpose(3, 0, 1, 2)  # numpy converts and transposes in one pass
    np.divide(unit, np.float32(255.0), out=unit)  # x / 255 in float32, as torch divides
    resized = torch.nn.functional.interpolate(torch.from_numpy(unit), size=(size, size), mode="bilinear",
                                              align_corners=False)
    return torch.from_numpy(resized.mul_(255.0).numpy().astype(np.uint8))  # values in [0, 255]: truncation


def resize_boxes(boxes: Tensor, rows0: Tensor, rows1: Tensor, row_w: Tensor,
                 cols0: Tensor, cols1: Tensor, col_w: Tensor) -> Tensor:
    """Batched :func:`apply_plan` on padded uint8 boxes (B, C, T, Hb, Wb) with per-sample taps (B, h)/(B, w).

    Each sample runs the per-clip arithmetic, so the GPU route gives the CPU route's numbers.
    """
    return torch.stack([
        _lerp_taps(boxes[i], rows0[i], rows1[i], row_w[i], cols0[i], cols1[i], col_w[i])
        for i in range(boxes.shape[0])
    ])


def normalize_(video: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """In place: (x / 255 - mean) / std per channel, for a 0..255 float video with channels at dim -4."""
    if len(mean) != video.shape[-4] or len(std) != video.shape[-4]:
        raise ValueError(f"DATA.MEAN/STD need {video.shape[-4]} values, got {list(mean)} / {list(std)}")
    if any(not math.isfinite(s) or s <= 0 for s in std):
        raise ValueError(f"DATA.STD must be positive, got {list(std)}")
    shape = (-1, 1, 1, 1)
    scale = torch.tensor([1.0 / (255.0 * s) for s in std], dtype=video.dtype, device=video.device).view(shape)
    shift = torch.tensor([m / s for m, s in zip(mean, std)], dtype=video.dtype, device=video.device).view(shape)
    return video.mul_(scale).sub_(shift)

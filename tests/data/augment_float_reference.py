"""The float32 implementation of the RandAugment ops that tada.data.augment replaced with uint8
arithmetic: kept as the slow reference that the uint8 ops must equal bit for bit.

A clip is (C, T, H, W) of 8-bit values held as float32 exact integers; every op yields integers.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from tada.data.augment import (
    INCREASING_OPS,
    MAX_LEVEL,
    _enhance_factor,
    _rotate_matrix,
    _signed,
)


def _lut(x: Tensor, table: np.ndarray) -> Tensor:
    """A 256-entry lookup table applied to every value (one gather: cheaper than compare-and-select)."""
    flat = torch.from_numpy(np.ascontiguousarray(table, dtype=np.float32))
    return flat.index_select(0, x.reshape(-1).to(torch.int32)).view(x.shape)


def _planes_lut(x: Tensor, tables: np.ndarray) -> Tensor:
    """One 256-entry table per (channel, frame) plane; ``tables`` is (C*T, 256)."""
    c, t, h, w = x.shape
    index = x.reshape(c * t, h * w).to(torch.int32)
    index += (torch.arange(c * t, dtype=torch.int32) * 256).view(-1, 1)
    flat = torch.from_numpy(np.ascontiguousarray(tables, dtype=np.float32).reshape(-1))
    return flat.index_select(0, index.view(-1)).view(c, t, h, w)


def _auto_contrast(x: Tensor) -> Tensor:
    planes = x.flatten(2).flatten(0, 1)
    lo = planes.amin(1).to(torch.int64).numpy()
    hi = planes.amax(1).to(torch.int64).numpy()
    tables = np.tile(np.arange(256, dtype=np.float64), (len(lo), 1))
    for k in np.flatnonzero(hi > lo):  # Pillow, in Python floats: int(ix * scale + offset), clipped
        scale = 255.0 / (hi[k] - lo[k])
        offset = -lo[k] * scale
        tables[k] = np.clip(np.trunc(np.arange(256) * scale + offset), 0, 255)
    return _planes_lut(x, tables)


def _equalize(x: Tensor) -> Tensor:
    c, t, h, w = x.shape
    n = c * t * 256
    # Plane k's value v counted in bin 256 k + v: unit-width bins centred on the integers, exact in float32.
    index = x.reshape(c * t, h * w) + (torch.arange(c * t, dtype=torch.float32) * 256).view(-1, 1)
    hist = torch.histc(index, bins=n, min=-0.5, max=n - 0.5).to(torch.int64).view(c * t, 256).numpy()
    tables = np.tile(np.arange(256, dtype=np.int64), (c * t, 1))
    for k, counts in enumerate(hist):
        nonzero = counts[counts > 0]
        if len(nonzero) <= 1:
            continue
        step = (int(nonzero.sum()) - int(nonzero[-1])) // 255
        if not step:
            continue
        below = np.concatenate([[0], np.cumsum(counts)[:-1]])
        tables[k] = np.minimum((step // 2 + below) // step, 255)  # Image.point clips to 255
    flat = torch.from_numpy(tables.astype(np.float32).reshape(-1))
    return flat.index_select(0, index.view(-1).to(torch.int32)).view(c, t, h, w)


def _grey_l(x: Tensor) -> Tensor:
    """Pillow's RGB -> L, (19595 R + 38470 G + 7471 B + 0x8000) >> 16, as (T, H, W); exact in float32
    (every partial sum stays below 2^24)."""
    return (x[0] * 19595 + x[1] * 38470 + x[2] * 7471 + 0x8000).div_(65536).floor_()


def _blend(degenerate: Tensor, x: Tensor, factor: float) -> Tensor:
    """Pillow's blend(degenerate, x, factor) in float32: d + factor * (x - d), clamped, truncated."""
    return (x - degenerate).mul_(np.float32(factor)).add_(degenerate).clamp_(0, 255).floor_()


_SMOOTH = torch.tensor([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]]).div_(13).view(1, 1, 3, 3)


def _sharpness(x: Tensor, factor: float) -> Tensor:
    """Pillow's Sharpness: blend with SMOOTH (3x3, centre 5, others 1, /13, rounded), whose border
    rows and columns are the image's own, so the border stays as it is.

    A smoothed value is an integer over 13, never within 1/26 of a rounding tie, so the float
    summation order does not matter."""
    c, t, h, w = x.shape
    kernel = _SMOOTH.expand(c * t, 1, 3, 3).contiguous()  # depthwise: one pass over all planes
    smooth = torch.nn.functional.conv2d(x.reshape(1, c * t, h, w), kernel, groups=c * t).view(c, t, h - 2, w - 2)
    out = x.clone()
    out[..., 1:-1, 1:-1] = _blend(smooth.add_(0.5).floor_().clamp_(0, 255), x[..., 1:-1, 1:-1], factor)
    return out


def _cubic_weights(d: np.ndarray) -> np.ndarray:
    """Pillow's affine-transform cubic (a = -1) weights of taps x-1..x+2 at fraction ``d``; (4, N)."""
    d2, d3 = d * d, d * d * d
    return np.stack([-d + 2 * d2 - d3, 1 - 2 * d2 + d3, d + d2 - d3, -d2 + d3])


def _affine(x: Tensor, matrix: Sequence[float], fill: Sequence[int]) -> Tensor:
    """Pillow's ``transform(AFFINE, matrix, BICUBIC, fillcolor=fill)`` of every frame.

    Output pixel (x, y) reads the source at (a, b, c) . (x + .5, y + .5, 1), (d, e, f) . (...);
    a source point outside the frame gives ``fill``. The taps are shared by all planes, so each
    output pixel is one row of a sparse tap matrix, applied to all planes at once; taps whose
    weight is zero everywhere (shears, shifts) are left out.
    """
    c, t, h, w = x.shape
    a, b, cc, d, e, f = (float(v) for v in matrix)
    ys, xs = np.mgrid[0:h, 0:w]
    xo, yo = xs.ravel() + 0.5, ys.ravel() + 0.5
    xin = a * xo + b * yo + cc
    yin = d * xo + e * yo + f
    inside = (xin >= 0) & (xin < w) & (yin >= 0) & (yin < h)
    xin, yin = xin - 0.5, yin - 0.5
    x0, y0 = np.floor(xin), np.floor(yin)
    wx, wy = _cubic_weights(xin - x0), _cubic_weights(yin - y0)
    x0, y0 = x0.astype(np.int64) - 1, y0.astype(np.int64) - 1
    colour = torch.tensor([float(v) for v in fill]).repeat_interleave(t)
    if not inside.any():
        return colour.view(-1, 1).expand(c * t, h * w).reshape(c, t, h, w)
    used_x = [k for k in range(4) if np.any(wx[k][inside] != 0)]
    used_y = [k for k in range(4) if np.any(wy[k][inside] != 0)]
    # One sparse (H*W, H*W) matrix of taps (rows: output pixels inside the frame), applied to the
    # (H*W, C*T) pixel rows by one sparse-dense product.
    cols, weights = [], []
    for ky in used_y:
        yy = np.clip(y0 + ky, 0, h - 1) * w
        for kx in used_x:
            cols.append((yy + np.clip(x0 + kx, 0, w - 1))[inside])
            weights.append((wy[ky] * wx[kx])[inside])
    taps = len(cols)
    col_index = torch.from_numpy(np.stack(cols, axis=1).reshape(-1))
    values = torch.from_numpy(np.stack(weights, axis=1).reshape(-1).astype(np.float32))
    row_start = np.zeros(h * w + 1, dtype=np.int64)
    row_start[1:] = np.cumsum(inside * taps)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
        matrix = torch.sparse_csr_tensor(torch.from_numpy(row_start), col_index, values, size=(h * w, h * w))
        acc = matrix @ x.reshape(c * t, h * w).t().contiguous()  # (H*W, C*T); rows outside are 0
    outside = torch.from_numpy((~inside).astype(np.float32)).view(-1, 1)
    acc.clamp_(0, 255).floor_().addcmul_(outside, colour.view(1, -1))
    return acc.t().contiguous().view(c, t, h, w)








def _contrast(x: Tensor, factor: float) -> Tensor:
    """Blend with each frame's mean grey level, int(mean(L) + 0.5)."""
    mean = (_grey_l(x).flatten(1).to(torch.float64).mean(1) + 0.5).floor()
    return _blend(mean.to(torch.float32).view(1, -1, 1, 1), x, factor)


def run_op_float(x: Tensor, name: str, m: float, negate: bool, fill: Sequence[int]) -> Tensor:
    """One op on an integer-valued float32 (3, T, H, W) clip."""
    _, _, h, w = x.shape
    if name == "AutoContrast":
        return _auto_contrast(x)
    if name == "Equalize":
        return _equalize(x)
    if name == "Invert":
        return torch.sub(255.0, x)
    ramp = np.arange(256)
    if name == "PosterizeIncreasing":
        bits = 4 - int(m / MAX_LEVEL * 4)
        return x if bits >= 8 else _lut(x, ramp & (~(2 ** (8 - bits) - 1) & 0xFF))
    if name == "SolarizeIncreasing":
        return _lut(x, np.where(ramp < 256 - int(m / MAX_LEVEL * 256), ramp, 255 - ramp))
    if name == "SolarizeAdd":
        return _lut(x, np.where(ramp < 128, np.minimum(ramp + int(m / MAX_LEVEL * 110), 255), ramp))
    if name == "ColorIncreasing":
        return _blend(_grey_l(x).unsqueeze(0), x, _enhance_factor(m, negate))
    if name == "ContrastIncreasing":
        return _contrast(x, _enhance_factor(m, negate))
    if name == "BrightnessIncreasing":
        return x.mul(np.float32(_enhance_factor(m, negate))).clamp_(0, 255).floor_()
    if name == "SharpnessIncreasing":
        return _sharpness(x, _enhance_factor(m, negate))
    if name == "Rotate":
        return _affine(x, _rotate_matrix(_signed(m / MAX_LEVEL * 30.0, negate), w, h), fill)
    if name == "ShearX":
        return _affine(x, (1, _signed(m / MAX_LEVEL * 0.3, negate), 0, 0, 1, 0), fill)
    if name == "ShearY":
        return _affine(x, (1, 0, 0, _signed(m / MAX_LEVEL * 0.3, negate), 1, 0), fill)
    if name == "TranslateXRel":
        return _affine(x, (1, 0, _signed(m / MAX_LEVEL * 0.45, negate) * w, 0, 1, 0), fill)
    if name == "TranslateYRel":
        return _affine(x, (1, 0, 0, 0, 1, _signed(m / MAX_LEVEL * 0.45, negate) * h), fill)
    raise ValueError(f"unknown RandAugment op {name!r}; known: {', '.join(INCREASING_OPS)}")

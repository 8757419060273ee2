"""Clip augmentations of the TAdaConvV2 recipes, on uint8 clips: RandAugment, grayscale, erasing.

Every function takes its random draws from the ``numpy.random.Generator`` it is given (the
dataset's per-item generator), so an item's augmentation is a function of its seed alone.

RandAugment (``rand-m9-n4-mstd0.5-inc1``) works as the official video RandAugment: the clip, a
uint8 (C, T, H, W) tensor, gets ``n`` ops drawn with replacement from the 15 "increasing" ops;
each fires with probability 0.5 and then draws one magnitude ``clip(N(m, mstd), 0, 10)`` and one
sign for the whole clip, so every frame gets the same op with the same arguments. Statistics
that an op computes from the image (AutoContrast's range, Equalize's histogram, Contrast's mean
grey) are computed per frame, as the official per-frame image ops do. The ops reproduce the
Pillow image operations the official code calls, in integer or float arithmetic as Pillow does:
lookup tables for the point ops, ``L = (19595 R + 38470 G + 7471 B + 2^15) >> 16`` for grey,
blends truncated toward zero and clamped, the 3x3 SMOOTH filter rounded with borders kept, and
the affine ops (rotate, shear, translate) sampled with Pillow's cubic (a = -1) at pixel centres,
clamped at the borders, truncated, and filled where the source point leaves the frame; every
value whose truncation the float32 arithmetic could get wrong is recomputed in Pillow's float64
order. The tests compare every op with Pillow itself, frame by frame.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "INCREASING_OPS",
    "RandAugment",
    "RandomErasing",
    "apply_op",
    "grayscale_",
    "parse_rand_augment",
    "random_resized_box",
]

MAX_LEVEL = 10.0

INCREASING_OPS = (
    "AutoContrast", "Equalize", "Invert", "Rotate", "PosterizeIncreasing", "SolarizeIncreasing",
    "SolarizeAdd", "ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing",
    "SharpnessIncreasing", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel",
)
_SIGNED = {"Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel", "ColorIncreasing",
           "ContrastIncreasing", "BrightnessIncreasing", "SharpnessIncreasing"}


# ------------------------------------------------------------------------------------------
# RandAugment policy
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RandAugment:
    """A parsed ``rand-...`` policy: ``num_ops`` ops at ``magnitude`` (+- ``magnitude_std`` noise)."""

    magnitude: float = MAX_LEVEL
    num_ops: int = 2
    magnitude_std: float = 0.0
    magnitude_max: float = MAX_LEVEL
    prob: float = 0.5
    ops: tuple[str, ...] = INCREASING_OPS

    def draw(self, rng: np.random.Generator) -> list[tuple[str, float, bool]]:
        """The (op, magnitude, negate) triples that fire for one clip, in order."""
        chosen = rng.integers(len(self.ops), size=self.num_ops)
        fired = []
        for k in chosen:
            if rng.random() > self.prob:
                continue
            m = self.magnitude
            if self.magnitude_std == math.inf:
                m = rng.uniform(0.0, m)
            elif self.magnitude_std > 0:
                m = rng.normal(m, self.magnitude_std)
            m = float(max(0.0, min(m, self.magnitude_max)))
            name = self.ops[int(k)]
            negate = bool(rng.random() > 0.5) if name in _SIGNED else False
            fired.append((name, m, negate))
        return fired

    def __call__(self, clip: Tensor, rng: np.random.Generator, *, fill: Sequence[int]) -> Tensor:
        """The augmented (3, T, H, W) clip of 8-bit values (uint8, or float32 holding integers; the
        result has the input's dtype and is a new tensor when an op fires)."""
        _check_clip(clip)
        fired = self.draw(rng)
        if not fired:
            return clip
        x = clip.to(torch.uint8)  # exact: a float32 clip holds integers 0..255
        for name, m, negate in fired:
            x = _run_op(x, name, m, negate, fill)
        return x.to(clip.dtype)


_KEY_RE = re.compile(r"^([a-z]+)(.*)$")


def parse_rand_augment(text: str) -> RandAugment:
    """``rand-m9-n4-mstd0.5-inc1`` -> :class:`RandAugment` (keys m, n, mstd, mmax, inc).

    Only the increasing op set exists here: ``inc0`` is an error rather than the official code's
    reading of any ``inc`` value as true.
    """
    parts = text.split("-")
    if parts[0] != "rand":
        raise ValueError(f"AUGMENTATION.AUTOAUGMENT.TYPE {text!r}: only RandAugment ('rand-...') is supported")
    kw: dict = {}
    increasing = False
    for part in parts[1:]:
        match = _KEY_RE.match(part)
        if not match or not match.group(2):
            raise ValueError(f"AUGMENTATION.AUTOAUGMENT.TYPE {text!r}: cannot read {part!r}")
        key, value = match.groups()
        try:
            if key == "m":
                kw["magnitude"] = float(value)
            elif key == "n":
                kw["num_ops"] = int(value)
            elif key == "mstd":
                kw["magnitude_std"] = float(value)
            elif key == "mmax":
                kw["magnitude_max"] = float(value)
            elif key == "inc":
                increasing = bool(int(value))
            else:
                raise ValueError(f"unknown key {key!r}")
        except ValueError as err:
            raise ValueError(f"AUGMENTATION.AUTOAUGMENT.TYPE {text!r}: {part!r}: {err}") from None
    if not increasing:
        raise ValueError(f"AUGMENTATION.AUTOAUGMENT.TYPE {text!r}: only the increasing ops ('inc1') are implemented")
    return RandAugment(**kw)


# ------------------------------------------------------------------------------------------
# The ops. A clip is uint8 (C, T, H, W). Each op computes exactly what Pillow's float or integer
# arithmetic gives: a point op (one value in, one out) is a 256-entry table built by that
# arithmetic on the 256 possible inputs and applied by one gather; a blend of a pixel with a
# degenerate value (grey, mean, smoothed) is a 256 x 256 table of (degenerate, value). Only the
# affine ops, whose result depends on 4 to 16 source pixels, run in float32.
# ------------------------------------------------------------------------------------------
_RAMP = torch.arange(256, dtype=torch.float32)


def _lut(x: Tensor, table: Tensor) -> Tensor:
    """A uint8 256-entry ``table`` applied to every value of a uint8 tensor (one gather)."""
    return table.index_select(0, x.reshape(-1).to(torch.int32)).view(x.shape)


def _planes_lut(x: Tensor, tables: Tensor) -> Tensor:
    """One uint8 256-entry table per (channel, frame) plane; ``tables`` is (C*T, 256)."""
    c, t, h, w = x.shape
    index = x.reshape(c * t, h * w).to(torch.int32)
    index += (torch.arange(c * t, dtype=torch.int32) * 256).view(-1, 1)
    return tables.reshape(-1).index_select(0, index.view(-1)).view(c, t, h, w)


def _as_uint8_tables(tables: np.ndarray) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(tables, dtype=np.uint8))


def _auto_contrast(x: Tensor) -> Tensor:
    planes = x.flatten(2).flatten(0, 1)
    lo = planes.amin(1).to(torch.int64).numpy()
    hi = planes.amax(1).to(torch.int64).numpy()
    tables = np.tile(np.arange(256, dtype=np.float64), (len(lo), 1))
    for k in np.flatnonzero(hi > lo):  # Pillow, in Python floats: int(ix * scale + offset), clipped
        scale = 255.0 / (hi[k] - lo[k])
        offset = -lo[k] * scale
        tables[k] = np.clip(np.trunc(np.arange(256) * scale + offset), 0, 255)
    return _planes_lut(x, _as_uint8_tables(tables))


def _equalize(x: Tensor) -> Tensor:
    c, t, h, w = x.shape
    index = x.reshape(c * t, h * w).to(torch.int32)
    index += (torch.arange(c * t, dtype=torch.int32) * 256).view(-1, 1)
    hist = torch.bincount(index.view(-1), minlength=c * t * 256).view(c * t, 256).numpy()
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
    flat = _as_uint8_tables(tables).view(-1)
    return flat.index_select(0, index.view(-1)).view(c, t, h, w)


def _grey_l(x: Tensor) -> Tensor:
    """Pillow's RGB -> L, (19595 R + 38470 G + 7471 B + 0x8000) >> 16, as int32 (T, H, W)."""
    r, g, b = (x[k].to(torch.int32) for k in range(3))
    return (r.mul_(19595).add_(g.mul_(38470)).add_(b.mul_(7471)).add_(0x8000)).bitwise_right_shift_(16)


def _blend_table(factor: float) -> Tensor:
    """Pillow's blend(degenerate, x, factor) for every (degenerate, x) pair, as uint8 (256, 256):
    d + factor * (x - d) in float32, clamped, truncated."""
    d, v = _RAMP.view(-1, 1), _RAMP.view(1, -1)
    return (v - d).mul_(np.float32(factor)).add_(d).clamp_(0, 255).floor_().to(torch.uint8)


def _blend_with(degenerate: Tensor, x: Tensor, factor: float) -> Tensor:
    """Blend uint8 ``x`` with an integer ``degenerate`` (0..255, broadcastable to ``x``)."""
    index = torch.add(x.to(torch.int32), degenerate.to(torch.int32), alpha=256)
    return _blend_table(factor).view(-1).index_select(0, index.view(-1)).view(index.shape)


_SMOOTH = torch.tensor([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]]).div_(13).view(1, 1, 3, 3)


def _sharpness(x: Tensor, factor: float) -> Tensor:
    """Pillow's Sharpness: blend with SMOOTH (3x3, centre 5, others 1, /13, rounded), whose border
    rows and columns are the image's own, so the border stays as it is.

    A smoothed value is an integer over 13, never within 1/26 of a rounding tie, so the float
    summation order does not matter. (A depthwise float convolution is faster here than integer
    sums of shifted slices.)"""
    c, t, h, w = x.shape
    out = x.clone()
    if h < 3 or w < 3:
        return out
    planes = x.to(torch.float32)
    kernel = _SMOOTH.expand(c * t, 1, 3, 3).contiguous()  # depthwise: one pass over all planes
    smooth = torch.nn.functional.conv2d(planes.view(1, c * t, h, w), kernel, groups=c * t).view(c, t, h - 2, w - 2)
    smooth.add_(0.5).floor_().clamp_(0, 255)
    inner = planes[..., 1:-1, 1:-1]  # blend in float32: d + factor * (x - d), clamped, truncated
    out[..., 1:-1, 1:-1] = inner.sub(smooth).mul_(np.float32(factor)).add_(smooth).clamp_(0, 255).to(torch.uint8)
    return out


def _cubic_weights(d: np.ndarray) -> np.ndarray:
    """The cubic (a = -1) weights of taps x-1..x+2 at fraction ``d``; (4, N)."""
    d2, d3 = d * d, d * d * d
    return np.stack([-d + 2 * d2 - d3, 1 - 2 * d2 + d3, d + d2 - d3, -d2 + d3])


def _pillow_cubic(v1: np.ndarray, v2: np.ndarray, v3: np.ndarray, v4: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Pillow's cubic of four samples at fraction ``d`` in its float64 operation order (Horner form)."""
    p2 = -v1 + v3
    p3 = 2 * (v1 - v2) + v3 - v4
    p4 = -v1 + v2 - v3 + v4
    return v2 + d * (p2 + d * (p3 + d * p4))


def _tie_margin(used_taps: int) -> float:
    """How far a float32 tap sum may lie from Pillow's float64 cubic, with room to spare: weights
    of total magnitude at most 1.5 (4 taps) or 2.25 (16), each within 3 float32 roundings of its
    value (x and y factors rounded, then their product), times values up to 255, and each of the
    2 x taps products and sums rounded at magnitudes below 512 (4 taps: error < 1.6e-4) or 1024
    (16 taps: < 1.1e-3), in whatever order they are summed."""
    return 2e-4 if used_taps <= 4 else 1.5e-3


@dataclass(frozen=True)
class _AffineTaps:
    """Pillow's source point of each output pixel inside the frame, and the taps it reads."""

    rows: np.ndarray  # output pixels (flat indices) whose source point lies inside the frame
    x0: np.ndarray  # first of the 4 x taps, floor(x - 0.5) - 1, unclamped (>= -2)
    y0: np.ndarray
    dx: np.ndarray  # float64 fractions, as Pillow computes them
    dy: np.ndarray
    used_x: list[int]  # taps (0..3) whose weight is non-zero for some pixel
    used_y: list[int]


def _affine_taps(matrix: Sequence[float], h: int, w: int) -> _AffineTaps:
    a, b, c, d, e, f = (float(v) for v in matrix)
    ys, xs = np.mgrid[0:h, 0:w]
    xo, yo = xs.ravel() + 0.5, ys.ravel() + 0.5
    xin = a * xo + b * yo + c
    yin = d * xo + e * yo + f
    rows = np.flatnonzero((xin >= 0) & (xin < w) & (yin >= 0) & (yin < h))
    xin, yin = xin[rows] - 0.5, yin[rows] - 0.5
    x0, y0 = np.floor(xin), np.floor(yin)
    dx, dy = xin - x0, yin - y0
    used_x = [1] if not np.any(dx) else [0, 1, 2, 3]  # a zero fraction reads tap 1 alone
    used_y = [1] if not np.any(dy) else [0, 1, 2, 3]
    return _AffineTaps(rows, x0.astype(np.int64) - 1, y0.astype(np.int64) - 1, dx, dy, used_x, used_y)


def _pillow_affine_values(pixels: np.ndarray, taps: _AffineTaps, where: np.ndarray, planes: np.ndarray,
                          h: int, w: int) -> np.ndarray:
    """Pillow's bicubic value, clamped and truncated, of output pixels ``taps.rows[where]`` in
    ``planes``, from (H*W, planes) uint8 ``pixels``: per source row a cubic along x, then one
    along y (rows and columns clamped at the border), all in float64. A zero fraction makes
    Pillow's cubic return its second sample exactly, so taps that are never used are not read."""
    cols = np.clip(taps.x0[where] + np.array(taps.used_x).reshape(-1, 1), 0, w - 1)  # (nx, S)
    lines = np.clip(taps.y0[where] + np.array(taps.used_y).reshape(-1, 1), 0, h - 1) * w  # (ny, S)
    values = np.take(pixels, (lines[:, None, :] + cols[None, :, :]) * pixels.shape[1] + planes)  # (ny, nx, S)
    values = values.astype(np.float64)
    if len(taps.used_x) == 4:
        across = _pillow_cubic(values[:, 0], values[:, 1], values[:, 2], values[:, 3], taps.dx[where])
    else:
        across = values[:, 0]
    if len(taps.used_y) == 4:
        out = _pillow_cubic(across[0], across[1], across[2], across[3], taps.dy[where])
    else:
        out = across[0]
    return np.clip(out, 0, 255).astype(np.uint8)  # v <= 0 -> 0, v >= 255 -> 255, else truncated


def _equal_taps(pixels: np.ndarray, taps: _AffineTaps, h: int, w: int) -> np.ndarray:
    """(N, planes) bool: whether all the taps that each output pixel inside the frame reads in
    each plane of the (H*W, P) uint8 ``pixels`` (clamped at the border) are equal; there
    Pillow's cubics return that value exactly. One pass of comparisons over the frame, in the
    (pixel, plane) layout of the tap sums, then one row gather."""
    pad = 2  # the taps reach 2 pixels beyond each border, clamped: edge padding is the clamping
    count = pixels.shape[1]
    padded = np.pad(pixels.reshape(h, w, count), ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    ny, nx = len(taps.used_y), len(taps.used_x)
    hp, wp, _ = padded.shape
    hn, wn = hp - ny + 1, wp - nx + 1
    along = np.ones((hp, wn, count), dtype=bool)  # runs of nx equal values along x
    for j in range(1, nx):
        along &= padded[:, j:j + wn] == padded[:, :wn]
    equal = along[:hn].copy()
    for i in range(1, ny):
        equal &= along[i:i + hn] & (padded[i:i + hn, :wn] == padded[:hn, :wn])
    origin = (taps.y0 + taps.used_y[0] + pad) * wn + taps.x0 + taps.used_x[0] + pad
    return equal.reshape(-1, count)[origin]


def _affine(x: Tensor, matrix: Sequence[float], fill: Sequence[int]) -> Tensor:
    """Pillow's ``transform(AFFINE, matrix, BICUBIC, fillcolor=fill)`` of every frame of a uint8 clip.

    Output pixel (x, y) reads the source at (a, b, c) . (x + .5, y + .5, 1), (d, e, f) . (...);
    a source point outside the frame gives ``fill``. Pillow evaluates a cubic (a = -1) along x
    on each of 4 source rows, then one along y, in float64, and truncates. Here the same taps
    are summed with their weights in float32 for all planes at once (one ``embedding_bag``
    over pixel rows; taps whose weight is zero everywhere are left out). A value that lands
    within rounding distance of an integer, where truncation could go either way (equal taps
    give exactly such values), is recomputed in Pillow's own float64 order: the result is
    Pillow's, bit for bit.
    """
    c, t, h, w = x.shape
    colour = np.array([int(v) for v in fill], dtype=np.uint8).repeat(t)
    taps = _affine_taps(matrix, h, w)
    out = np.empty((c * t, h * w), dtype=np.uint8)
    out[:] = colour.reshape(-1, 1)
    if len(taps.rows):
        # numpy transposes uint8 planes several times faster than torch's strided copy
        pixels = np.ascontiguousarray(x.contiguous().numpy().reshape(c * t, h * w).T)  # (H*W, planes)
        out[:, taps.rows] = _affine_inside(pixels, taps, h, w).T
    return torch.from_numpy(out).view(c, t, h, w)


def _affine_inside(pixels: np.ndarray, taps: _AffineTaps, h: int, w: int) -> np.ndarray:
    """The (N, planes) uint8 values of the output pixels whose source point is inside the frame,
    from the (H*W, planes) uint8 source ``pixels``."""
    count = pixels.shape[1]
    ny, nx = len(taps.used_y), len(taps.used_x)
    n = nx * ny
    wx = _cubic_weights(taps.dx)[taps.used_x].T.astype(np.float32).reshape(-1, 1, nx)  # (N, 1, nx)
    wy = _cubic_weights(taps.dy)[taps.used_y].T.astype(np.float32).reshape(-1, ny, 1)
    tap_y = np.clip(taps.y0.reshape(-1, 1, 1) + np.array(taps.used_y).reshape(1, -1, 1), 0, h - 1) * w  # (N, ny, 1)
    tap_x = np.clip(taps.x0.reshape(-1, 1, 1) + np.array(taps.used_x).reshape(1, 1, -1), 0, w - 1)  # (N, 1, nx)
    index = (tap_y + tap_x).reshape(-1, n)  # (N, taps), y-major
    weights = (wy * wx).reshape(-1, n)  # float32 products of float32 factors: within the tie margin
    table = pixels.astype(np.float32)
    acc = torch.nn.functional.embedding_bag(torch.from_numpy(index), torch.from_numpy(table),
                                            per_sample_weights=torch.from_numpy(weights), mode="sum")
    # Clamped to [0.5, 255.5], every value truncates as Pillow's clamp-and-truncate does, and the
    # values near 0 (truncated to 0 whichever side they lie) stop looking like ties. Shifted up
    # by the margin, a value within it of an integer has a fraction below twice the margin.
    margin = _tie_margin(n)
    acc.clamp_(0.5, 255.5).add_(margin)
    values = acc.numpy().astype(np.uint8)  # truncation (the ties among them are recomputed)
    near = acc.sub_(torch.from_numpy(values)).numpy() < 2 * margin  # the fraction, in place
    if np.count_nonzero(near) * 100 > near.size:
        # Flat regions (upscaled crops): where all taps are equal Pillow's value is that integer,
        # which the sum lies within the margin of, so after the shift it truncates right already.
        near &= ~_equal_taps(pixels, taps, h, w)
    where, which = np.divmod(np.flatnonzero(near), count)
    if len(where):
        values[where, which] = _pillow_affine_values(pixels, taps, where, which, h, w)
    return values


def _rotate_matrix(degrees: float, w: int, h: int) -> list[float]:
    """Pillow's ``rotate(degrees)`` about the frame centre, as the inverse affine matrix."""
    angle = -math.radians(degrees)
    m = [round(math.cos(angle), 15), round(math.sin(angle), 15), 0.0,
         round(-math.sin(angle), 15), round(math.cos(angle), 15), 0.0]
    cx, cy = w / 2.0, h / 2.0
    m[2] = m[0] * -cx + m[1] * -cy + m[2] + cx
    m[5] = m[3] * -cx + m[4] * -cy + m[5] + cy
    return m


def _signed(value: float, negate: bool) -> float:
    return -value if negate else value


def _enhance_factor(m: float, negate: bool) -> float:
    return max(0.1, 1.0 + _signed(m / MAX_LEVEL * 0.9, negate))


def _contrast(x: Tensor, factor: float) -> Tensor:
    """Blend with each frame's mean grey level, int(mean(L) + 0.5) (the integer sum, divided in float64)."""
    grey = _grey_l(x).flatten(1)
    mean = (grey.sum(1, dtype=torch.int64).to(torch.float64) / grey.shape[1] + 0.5).floor()
    c = x.shape[0]
    tables = _blend_table(factor).index_select(0, mean.to(torch.int32)).repeat(c, 1)  # (C*T, 256)
    return _planes_lut(x, tables)


def _point_table(values: np.ndarray) -> Tensor:
    return torch.from_numpy(values.astype(np.uint8))


def _run_op(x: Tensor, name: str, m: float, negate: bool, fill: Sequence[int]) -> Tensor:
    """One op on a uint8 (3, T, H, W) clip; returns a new uint8 clip."""
    _, _, h, w = x.shape
    if name == "AutoContrast":
        return _auto_contrast(x)
    if name == "Equalize":
        return _equalize(x)
    if name == "Invert":
        return torch.bitwise_not(x)  # 255 - x
    ramp = np.arange(256)
    if name == "PosterizeIncreasing":
        bits = 4 - int(m / MAX_LEVEL * 4)
        return x.clone() if bits >= 8 else torch.bitwise_and(x, ~(2 ** (8 - bits) - 1) & 0xFF)
    if name == "SolarizeIncreasing":
        return _lut(x, _point_table(np.where(ramp < 256 - int(m / MAX_LEVEL * 256), ramp, 255 - ramp)))
    if name == "SolarizeAdd":
        return _lut(x, _point_table(np.where(ramp < 128, np.minimum(ramp + int(m / MAX_LEVEL * 110), 255), ramp)))
    if name == "ColorIncreasing":
        return _blend_with(_grey_l(x).unsqueeze(0), x, _enhance_factor(m, negate))
    if name == "ContrastIncreasing":
        return _contrast(x, _enhance_factor(m, negate))
    if name == "BrightnessIncreasing":  # blend with black: factor * x in float32, clamped, truncated
        return _lut(x, _RAMP.mul(np.float32(_enhance_factor(m, negate))).clamp_(0, 255).floor_().to(torch.uint8))
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


def _check_clip(clip: Tensor) -> None:
    if clip.dtype not in (torch.uint8, torch.float32) or clip.dim() != 4 or clip.shape[0] != 3:
        raise ValueError(f"expected a uint8 or integer-valued float32 (3, T, H, W) clip, got "
                         f"{tuple(clip.shape)} {clip.dtype}")


def apply_op(clip: Tensor, name: str, magnitude: float, *, negate: bool = False,
             fill: Sequence[int] = (128, 128, 128)) -> Tensor:
    """One RandAugment op at ``magnitude`` (0..10) on a (3, T, H, W) RGB clip of 8-bit values; the
    result has the input's dtype (uint8, or float32 holding integers)."""
    _check_clip(clip)
    out = _run_op(clip.to(torch.uint8), name, magnitude, negate, fill)
    return out.to(clip.dtype)


# ------------------------------------------------------------------------------------------
# Grayscale, random resized crop box, random erasing
# ------------------------------------------------------------------------------------------
_GREY = (0.299, 0.587, 0.114)


def grayscale_(video: Tensor) -> Tensor:
    """In place: every channel of a float (3, T, H, W) clip becomes 0.299 R + 0.587 G + 0.114 B."""
    grey = video[0] * _GREY[0] + video[1] * _GREY[1] + video[2] * _GREY[2]
    video.copy_(grey.unsqueeze(0).expand_as(video))
    return video


def random_resized_box(height: int, width: int, *, scale: Sequence[float], ratio: Sequence[float],
                       rng: np.random.Generator) -> tuple[int, int, int, int]:
    """(top, left, h, w) of a random resized crop: up to 10 tries of an area fraction U(scale) and a
    log-uniform aspect w/h in ``ratio`` at a uniform position, else the centre crop with the aspect
    clamped to ``ratio`` (torchvision's RandomResizedCrop)."""
    area = height * width
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_lo, log_hi))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


@dataclass(frozen=True)
class RandomErasing:
    """Erase ``count`` boxes of a normalised clip with probability ``prob``; one box for all frames.

    Each box: up to 10 tries of an area fraction U(area_range) / count and a log-uniform aspect
    in [min_aspect, 1 / min_aspect]; it is kept if it fits strictly inside the frame. ``mode``:
    'const' writes 0 (the mean colour after normalisation), 'rand' one N(0, 1) value per channel,
    'pixel' N(0, 1) per element.
    """

    prob: float = 0.25
    mode: str = "const"
    count: tuple[int, int] = (1, 1)
    area_range: tuple[float, float] = (0.02, 1 / 3)
    min_aspect: float = 0.3

    def __post_init__(self) -> None:
        if self.mode not in ("const", "rand", "pixel"):
            raise ValueError(f"AUGMENTATION.RANDOM_ERASING.MODE must be const, rand or pixel, got {self.mode!r}")
        if not 1 <= self.count[0] <= self.count[1]:
            raise ValueError(f"AUGMENTATION.RANDOM_ERASING.COUNT must be [min, max] with 1 <= min <= max, "
                             f"got {list(self.count)}")

    def __call__(self, video: Tensor, rng: np.random.Generator) -> Tensor:
        """In place on a float (C, T, H, W) clip; returns it."""
        if rng.random() > self.prob:
            return video
        c, t, height, width = video.shape
        count = self.count[0] if self.count[0] == self.count[1] else int(rng.integers(self.count[0], self.count[1] + 1))
        log_aspect = (math.log(self.min_aspect), math.log(1 / self.min_aspect))
        for _ in range(count):
            for _attempt in range(10):
                target = rng.uniform(*self.area_range) * height * width / count
                aspect = math.exp(rng.uniform(*log_aspect))
                h = int(round(math.sqrt(target * aspect)))
                w = int(round(math.sqrt(target / aspect)))
                if w < width and h < height:
                    top = int(rng.integers(0, height - h + 1))
                    left = int(rng.integers(0, width - w + 1))
                    video[:, :, top:top + h, left:left + w] = self._pixels(c, t, h, w, rng, video.dtype)
                    break
        return video

    def _pixels(self, c: int, t: int, h: int, w: int, rng: np.random.Generator, dtype: torch.dtype) -> Tensor:
        if self.mode == "const":
            return torch.zeros((), dtype=dtype)
        if self.mode == "rand":
            return torch.from_numpy(rng.standard_normal((c, 1, 1, 1))).to(dtype)
        return torch.from_numpy(rng.standard_normal((c, t, h, w))).to(dtype)

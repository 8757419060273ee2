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
clamped at the borders, truncated, and filled where the source point leaves the frame.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Callable, Sequence

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
        """The augmented uint8 (C, T, H, W) clip (a new tensor when an op fires)."""
        for name, m, negate in self.draw(rng):
            clip = apply_op(clip, name, m, negate=negate, fill=fill)
        return clip


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
# The ops, on uint8 (C, T, H, W)
# ------------------------------------------------------------------------------------------
def _lut(clip: Tensor, table: np.ndarray) -> Tensor:
    return torch.from_numpy(table.astype(np.uint8)[clip.numpy()])


def _per_plane_lut(clip: Tensor, tables: np.ndarray) -> Tensor:
    """Apply one 256-entry table per (channel, frame) plane; ``tables`` is (C*T, 256)."""
    c, t, h, w = clip.shape
    flat = clip.reshape(c * t, h * w).numpy().astype(np.intp)
    flat += (np.arange(c * t, dtype=np.intp) * 256)[:, None]
    return torch.from_numpy(tables.astype(np.uint8).reshape(-1)[flat].reshape(c, t, h, w))


def _histograms(clip: Tensor) -> np.ndarray:
    """(C*T, 256) histograms, one per plane."""
    c, t, h, w = clip.shape
    flat = clip.reshape(c * t, h * w).numpy().astype(np.intp)
    flat += (np.arange(c * t, dtype=np.intp) * 256)[:, None]
    return np.bincount(flat.ravel(), minlength=c * t * 256).reshape(c * t, 256)


def _auto_contrast(clip: Tensor) -> Tensor:
    hist = _histograms(clip)
    present = hist > 0
    lo = present.argmax(axis=1)
    hi = 255 - present[:, ::-1].argmax(axis=1)
    ix = np.arange(256, dtype=np.float64)
    tables = np.tile(ix, (hist.shape[0], 1))
    stretch = hi > lo
    scale = 255.0 / np.maximum(hi - lo, 1)
    stretched = np.clip((ix[None, :] * scale[:, None] - lo[:, None] * scale[:, None]).astype(np.int64), 0, 255)
    tables[stretch] = stretched[stretch]
    return _per_plane_lut(clip, tables)


def _equalize(clip: Tensor) -> Tensor:
    hist = _histograms(clip)
    tables = np.tile(np.arange(256, dtype=np.int64), (hist.shape[0], 1))
    for k, h in enumerate(hist):
        nonzero = h[h > 0]
        if len(nonzero) <= 1:
            continue
        step = (int(nonzero.sum()) - int(nonzero[-1])) // 255
        if not step:
            continue
        cum = np.concatenate([[0], np.cumsum(h)[:-1]])
        tables[k] = np.minimum((step // 2 + cum) // step, 255)
    return _per_plane_lut(clip, tables)


def _grey_l(clip: Tensor) -> Tensor:
    """Pillow's RGB -> L, integer: (19595 R + 38470 G + 7471 B + 0x8000) >> 16, as (T, H, W) int32."""
    c = clip.to(torch.int32)
    return (c[0] * 19595 + c[1] * 38470 + c[2] * 7471 + 0x8000) >> 16


def _blend(degenerate: Tensor, clip: Tensor, factor: float) -> Tensor:
    """Pillow's blend(degenerate, clip, factor): truncated toward zero and clamped to 0..255."""
    d = degenerate.to(torch.float32)
    out = clip.to(torch.float32).sub_(d).mul_(np.float32(factor)).add_(d)
    return out.clamp_(0, 255).to(torch.uint8)


def _smooth(clip: Tensor) -> Tensor:
    """Pillow's SMOOTH (3x3, centre 5, others 1, /13), rounded; the border rows/columns stay."""
    c, t, h, w = clip.shape
    x = clip.to(torch.float32)
    k = np.float32(1.0 / 13.0)
    inner = x[..., :-2, :-2] + x[..., :-2, 1:-1] + x[..., :-2, 2:] + x[..., 1:-1, :-2] + x[..., 1:-1, 2:]
    inner += x[..., 2:, :-2] + x[..., 2:, 1:-1] + x[..., 2:, 2:]
    inner = inner.mul_(k).add_(x[..., 1:-1, 1:-1] * np.float32(5.0 / 13.0)).add_(0.5)
    out = clip.clone()
    out[..., 1:-1, 1:-1] = inner.clamp_(0, 255).to(torch.uint8)
    return out


def _cubic_weights(d: np.ndarray) -> np.ndarray:
    """Pillow's affine-transform cubic (a = -1) weights of taps x-1..x+2 at fraction ``d``; (4, N)."""
    d2, d3 = d * d, d * d * d
    return np.stack([-d + 2 * d2 - d3, 1 - 2 * d2 + d3, d + d2 - d3, -d2 + d3])


def _affine(clip: Tensor, matrix: Sequence[float], fill: Sequence[int]) -> Tensor:
    """Pillow's ``transform(AFFINE, matrix, BICUBIC, fillcolor=fill)`` of every frame.

    Output pixel (x, y) reads the source at (a, b, c) . (x + .5, y + .5, 1), (d, e, f) . (...);
    a source point outside the frame gives ``fill``. The taps are shared by all planes, so the
    clip is gathered as (H*W, C*T) rows.
    """
    c, t, h, w = clip.shape
    a, b, cc, d, e, f = (float(v) for v in matrix)
    ys, xs = np.mgrid[0:h, 0:w]
    xo, yo = xs.ravel() + 0.5, ys.ravel() + 0.5
    xin = a * xo + b * yo + cc
    yin = d * xo + e * yo + f
    inside = (xin >= 0) & (xin < w) & (yin >= 0) & (yin < h)
    xin, yin = xin[inside] - 0.5, yin[inside] - 0.5
    x0, y0 = np.floor(xin), np.floor(yin)
    wx, wy = _cubic_weights(xin - x0), _cubic_weights(yin - y0)
    x0, y0 = x0.astype(np.int64) - 1, y0.astype(np.int64) - 1
    rows = clip.permute(2, 3, 0, 1).reshape(h * w, c * t)
    # Taps whose weight is zero for every pixel (pure shears and shifts) are skipped.
    used_x = [k for k in range(4) if np.any(wx[k] != 0)]
    used_y = [k for k in range(4) if np.any(wy[k] != 0)]
    acc = torch.zeros(int(inside.sum()), c * t, dtype=torch.float32)
    for ky in used_y:
        yy = np.clip(y0 + ky, 0, h - 1) * w
        for kx in used_x:
            index = torch.from_numpy(yy + np.clip(x0 + kx, 0, w - 1))
            weight = torch.from_numpy((wy[ky] * wx[kx]).astype(np.float32)).unsqueeze(1)
            acc.addcmul_(rows.index_select(0, index).to(torch.float32), weight)
    out = torch.empty(h * w, c, t, dtype=torch.uint8)
    out[:] = torch.tensor(list(fill), dtype=torch.uint8).view(1, c, 1)
    out.view(h * w, c * t)[torch.from_numpy(inside)] = acc.clamp_(0, 255).to(torch.uint8)
    return out.view(h, w, c, t).permute(2, 3, 0, 1).contiguous()


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


def apply_op(clip: Tensor, name: str, magnitude: float, *, negate: bool = False,
             fill: Sequence[int] = (128, 128, 128)) -> Tensor:
    """One RandAugment op at ``magnitude`` (0..10) on a uint8 (C, T, H, W) RGB clip."""
    if clip.dtype != torch.uint8 or clip.dim() != 4 or clip.shape[0] != 3:
        raise ValueError(f"expected a uint8 (3, T, H, W) clip, got {tuple(clip.shape)} {clip.dtype}")
    _, _, h, w = clip.shape
    m = magnitude
    ramp = np.arange(256)
    ops: dict[str, Callable[[], Tensor]] = {
        "AutoContrast": lambda: _auto_contrast(clip),
        "Equalize": lambda: _equalize(clip),
        "Invert": lambda: _lut(clip, 255 - ramp),
        "PosterizeIncreasing": lambda: _posterize(clip, 4 - int(m / MAX_LEVEL * 4)),
        "SolarizeIncreasing": lambda: _lut(clip, _solarize_table(256 - int(m / MAX_LEVEL * 256))),
        "SolarizeAdd": lambda: _lut(clip, np.where(ramp < 128, np.minimum(255, ramp + int(m / MAX_LEVEL * 110)),
                                                   ramp)),
        "ColorIncreasing": lambda: _blend(_grey_l(clip).unsqueeze(0).expand_as(clip), clip,
                                          _enhance_factor(m, negate)),
        "ContrastIncreasing": lambda: _contrast(clip, _enhance_factor(m, negate)),
        "BrightnessIncreasing": lambda: _blend(torch.zeros_like(clip), clip, _enhance_factor(m, negate)),
        "SharpnessIncreasing": lambda: _blend(_smooth(clip), clip, _enhance_factor(m, negate)),
        "Rotate": lambda: _affine(clip, _rotate_matrix(_signed(m / MAX_LEVEL * 30.0, negate), w, h), fill),
        "ShearX": lambda: _affine(clip, (1, _signed(m / MAX_LEVEL * 0.3, negate), 0, 0, 1, 0), fill),
        "ShearY": lambda: _affine(clip, (1, 0, 0, _signed(m / MAX_LEVEL * 0.3, negate), 1, 0), fill),
        "TranslateXRel": lambda: _affine(clip, (1, 0, _signed(m / MAX_LEVEL * 0.45, negate) * w, 0, 1, 0), fill),
        "TranslateYRel": lambda: _affine(clip, (1, 0, 0, 0, 1, _signed(m / MAX_LEVEL * 0.45, negate) * h), fill),
    }
    if name not in ops:
        raise ValueError(f"unknown RandAugment op {name!r}; known: {', '.join(ops)}")
    return ops[name]()


def _posterize(clip: Tensor, bits: int) -> Tensor:
    if bits >= 8:
        return clip
    mask = ~(2 ** (8 - bits) - 1) & 0xFF
    return clip & mask


def _solarize_table(threshold: int) -> np.ndarray:
    ramp = np.arange(256)
    return np.where(ramp < threshold, ramp, 255 - ramp)


def _contrast(clip: Tensor, factor: float) -> Tensor:
    """Blend with each frame's mean grey level, int(mean(L) + 0.5)."""
    grey = _grey_l(clip)
    mean = (grey.flatten(1).to(torch.float64).mean(1) + 0.5).to(torch.int64)
    degenerate = mean.to(torch.uint8).view(1, -1, 1, 1).expand_as(clip)
    return _blend(degenerate, clip, factor)


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

"""The TAdaConvV2 training augmentations against their formulas: random resized crop, RandAugment
(op draws, magnitude noise, each op's arithmetic), grayscale and random erasing, all per clip."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from augment_pillow_reference import run_op_pillow

from tada.data.augment import (
    INCREASING_OPS,
    RandAugment,
    RandomErasing,
    _affine,
    _rotate_matrix,
    apply_op,
    grayscale_,
    parse_rand_augment,
    random_resized_box,
)
from tada.data.transforms import apply_plan, plan_resized_crop, resized_crop_uint8


def random_clip(seed: int, shape=(3, 4, 24, 32)) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8))


# ---------------------------------------------------------------- random resized crop
def test_random_resized_box_draws_area_and_log_aspect_uniformly():
    rng = np.random.default_rng(0)
    boxes = [random_resized_box(1000, 1000, scale=(0.08, 0.2), ratio=(3 / 4, 4 / 3), rng=rng) for _ in range(4000)]
    area = np.array([h * w / 1e6 for _, _, h, w in boxes])
    log_aspect = np.array([math.log(w / h) for _, _, h, w in boxes])
    assert area.min() > 0.079 and area.max() < 0.201
    assert area.mean() == pytest.approx(0.14, abs=0.003)  # U(0.08, 0.2): every first try fits
    lo, hi = math.log(3 / 4), math.log(4 / 3)
    assert log_aspect.min() > lo - 0.01 and log_aspect.max() < hi + 0.01
    assert log_aspect.var() == pytest.approx((hi - lo) ** 2 / 12, rel=0.08)
    tops = np.array([t for t, _, h, _ in boxes]) / np.array([1000 - h for _, _, h, _ in boxes])
    assert tops.mean() == pytest.approx(0.5, abs=0.02)  # uniform position


def test_random_resized_box_falls_back_to_the_clamped_centre_crop():
    rng = np.random.default_rng(0)
    # An aspect of 2..3 never fits a square frame at full area: centre crop at the nearest aspect.
    assert random_resized_box(100, 100, scale=(1.0, 1.0), ratio=(2.0, 3.0), rng=rng) == (25, 0, 50, 100)
    assert random_resized_box(100, 400, scale=(1.0, 1.0), ratio=(0.5, 1.0), rng=rng) == (0, 150, 100, 100)


@pytest.mark.parametrize("box, size", [((3, 5, 40, 30), 24), ((0, 0, 48, 64), 32), ((10, 20, 7, 9), 16)])
def test_resized_crop_plan_equals_crop_then_interpolate(box, size):
    clip = torch.from_numpy(np.random.default_rng(1).integers(0, 256, (2, 48, 64, 3), dtype=np.uint8))
    top, left, h, w = box
    want = F.interpolate(clip.permute(3, 0, 1, 2)[:, :, top:top + h, left:left + w].float() / 255, size=(size, size),
                         mode="bilinear", align_corners=False) * 255
    plan = plan_resized_crop(48, 64, box=box, size=size)
    torch.testing.assert_close(apply_plan(clip, plan), want, atol=2e-4, rtol=0)
    torch.testing.assert_close(apply_plan(clip, plan_resized_crop(48, 64, box=box, size=size, hflip=True)),
                               want.flip(-1), atol=2e-4, rtol=0)
    with pytest.raises(ValueError, match="outside"):
        plan_resized_crop(48, 64, box=(10, 0, 48, 64), size=size)


def official_crop_for_rand_augment(clip: torch.Tensor, box, size: int, flip: bool) -> torch.Tensor:
    """The official chain, literally: float / 255 as (C, T, H, W), flip of the whole clip, the box
    (drawn in the mirrored frame), interpolate, then RandAugment's uint8 conversion x * 255, truncated."""
    x = clip.float().permute(3, 0, 1, 2) / 255.0
    top, left, h, w = box
    if flip:
        x, left = x.flip(-1), x.shape[-1] - left - w
    x = F.interpolate(x[..., top:top + h, left:left + w], size=(size, size), mode="bilinear", align_corners=False)
    return x.mul(255).to(torch.uint8)


def test_uint8_resized_crop_is_the_official_crop_bit_for_bit():
    g = np.random.default_rng(3)
    differs = total = 0
    for k in range(16):
        height, width = int(g.integers(20, 90)), int(g.integers(20, 90))
        clip = torch.from_numpy(g.integers(0, 256, (3, height, width, 3), dtype=np.uint8))
        if k % 4 == 0:  # flat patches: an equal-valued neighbourhood is where rounding decides
            clip[:, : height // 2] = int(g.integers(0, 256))
        size = int(g.integers(8, 64))
        box = random_resized_box(height, width, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), rng=g)
        for flip in (False, True):
            got = resized_crop_uint8(clip, box, size=size, hflip=flip)
            assert got.dtype == torch.uint8 and got.shape == (3, 3, size, size)
            assert torch.equal(got, official_crop_for_rand_augment(clip, box, size, flip)), (k, box, flip)
            # the crop plan (bilinear on the 0..255 scale) agrees to rounding: at most one level, rarely
            planned = apply_plan(clip, plan_resized_crop(height, width, box=box, size=size, hflip=flip)).floor()
            assert (planned - got.float()).abs().max() <= 1
            differs += int((planned != got.float()).sum())
            total += got.numel()
    assert 0 < differs < 0.03 * total  # flat patches: the official float / 255 route truncates some a level lower
    with pytest.raises(ValueError, match="outside"):
        resized_crop_uint8(clip, (0, 0, height + 1, 4), size=8)


# ---------------------------------------------------------------- RandAugment policy
def test_policy_string_is_read_as_the_official_one():
    ra = parse_rand_augment("rand-m9-n4-mstd0.5-inc1")
    assert (ra.magnitude, ra.num_ops, ra.magnitude_std, ra.prob) == (9.0, 4, 0.5, 0.5)
    assert ra.ops == INCREASING_OPS and len(ra.ops) == 15
    for bad, why in [("rand-m9-n4-mstd0.5-inc0", "increasing"), ("augmix-m9", "RandAugment"),
                     ("rand-m9-x3-inc1", "unknown key"), ("rand-mx-inc1", "cannot read")]:
        with pytest.raises(ValueError, match=why):
            parse_rand_augment(bad)


def test_draws_follow_choice_with_replacement_probability_and_magnitude_noise():
    ra = parse_rand_augment("rand-m9-n4-mstd0.5-inc1")
    rng = np.random.default_rng(0)
    fired, mags, negated, signed = [], [], 0, 0
    clips = 6000
    for _ in range(clips):
        for name, m, neg in ra.draw(rng):
            fired.append(name)
            mags.append(m)
            if name in ("Rotate", "ShearX", "ColorIncreasing"):
                signed += 1
                negated += neg
    assert len(fired) / (4 * clips) == pytest.approx(0.5, abs=0.01)  # each op fires with p 0.5
    counts = np.array([fired.count(op) for op in INCREASING_OPS]) / len(fired)
    assert np.abs(counts - 1 / 15).max() < 0.008  # uniform over the 15 ops
    mags = np.array(mags)
    assert mags.mean() == pytest.approx(9.0, abs=0.02) and mags.std() == pytest.approx(0.5, abs=0.02)
    assert mags.max() <= 10.0 and mags.min() >= 0.0
    assert negated / signed == pytest.approx(0.5, abs=0.03)
    # With replacement: the same op twice in one clip happens (1 - 15*14*13*12/15^4 of the time).
    rng = np.random.default_rng(1)
    repeats = sum(len(set(np.asarray(rng.integers(15, size=4)))) < 4 for _ in range(4000)) / 4000
    assert repeats == pytest.approx(1 - 15 * 14 * 13 * 12 / 15 ** 4, abs=0.03)


def test_magnitude_is_clipped_to_ten():
    ra = RandAugment(magnitude=9.9, num_ops=1, magnitude_std=5.0, prob=1.0)
    rng = np.random.default_rng(0)
    mags = np.array([ra.draw(rng)[0][1] for _ in range(2000)])
    assert mags.max() == 10.0 and mags.min() == 0.0
    assert (mags == 10.0).mean() == pytest.approx(1 - 0.5078, abs=0.04)  # P(N(9.9, 5) > 10)


@pytest.mark.parametrize("name", INCREASING_OPS)
def test_every_op_treats_all_frames_alike(name):
    frame = random_clip(3, (3, 1, 20, 28))
    clip = frame.expand(3, 5, 20, 28).contiguous()
    out = apply_op(clip, name, 8.7, negate=True, fill=(115, 115, 115))
    assert out.dtype == torch.uint8 and out.shape == clip.shape
    assert all(torch.equal(out[:, 0], out[:, t]) for t in range(5))


# ---------------------------------------------------------------- op arithmetic
def test_point_ops_at_magnitude_nine():
    clip = random_clip(0)
    x = clip.to(torch.int64)
    assert torch.equal(apply_op(clip, "Invert", 9.0), (255 - x).to(torch.uint8))
    assert torch.equal(apply_op(clip, "PosterizeIncreasing", 9.0), (x & 0x80).to(torch.uint8))  # 4 - 3 = 1 bit
    assert torch.equal(apply_op(clip, "PosterizeIncreasing", 10.0), torch.zeros_like(clip))  # 0 bits: black
    threshold = 256 - int(0.9 * 256)  # 26
    solarized = torch.where(x < threshold, x, 255 - x).to(torch.uint8)
    assert torch.equal(apply_op(clip, "SolarizeIncreasing", 9.0), solarized)
    add = int(0.9 * 110)  # 99
    added = torch.where(x < 128, (x + add).clamp(max=255), x).to(torch.uint8)
    assert torch.equal(apply_op(clip, "SolarizeAdd", 9.0), added)


def test_enhance_ops_blend_toward_their_degenerate_images():
    clip = random_clip(1)
    x = clip.to(torch.float64)
    for negate, factor in ((False, 1 + 0.9 * 0.7), (True, 1 - 0.9 * 0.7)):
        bright = apply_op(clip, "BrightnessIncreasing", 7.0, negate=negate)
        # Pillow's blend in C float arithmetic: 0 + factor * (x - 0), truncated and clamped.
        assert torch.equal(bright, (clip.float() * np.float32(factor)).clamp(0, 255).floor().to(torch.uint8))
    grey = ((x[0] * 19595 + x[1] * 38470 + x[2] * 7471 + 0x8000).to(torch.int64) >> 16).to(torch.float64)
    color = apply_op(clip, "ColorIncreasing", 10.0, negate=True)  # factor max(0.1, 1 - 0.9) = 0.1
    want = (grey + 0.1 * (x - grey)).clamp(0, 255).floor()
    assert (color.to(torch.float64) - want).abs().max() <= 1  # float32 truncation may differ by one
    mean = (grey.flatten(1).mean(1) + 0.5).floor().view(1, -1, 1, 1)  # per frame
    contrast = apply_op(clip, "ContrastIncreasing", 5.0)
    want = (mean + 1.45 * (x - mean)).clamp(0, 255).floor()
    assert (contrast.to(torch.float64) - want).abs().max() <= 1


def test_sharpness_blends_with_the_rounded_smooth_filter_and_keeps_borders():
    clip = random_clip(2, (3, 2, 9, 11))
    x = clip.to(torch.float64)
    kernel = torch.tensor([[1.0, 1, 1], [1, 5, 1], [1, 1, 1]], dtype=torch.float64) / 13
    smooth = F.conv2d(x.reshape(6, 1, 9, 11), kernel.view(1, 1, 3, 3)).reshape(3, 2, 7, 9)
    degenerate = x.clone()
    degenerate[..., 1:-1, 1:-1] = (smooth + 0.5).floor()
    out = apply_op(clip, "SharpnessIncreasing", 10.0)  # factor 1.9
    want = (degenerate + 1.9 * (x - degenerate)).clamp(0, 255).floor()
    assert (out.to(torch.float64) - want).abs().max() <= 1
    assert torch.equal(out[..., 0, :], clip[..., 0, :]) and torch.equal(out[..., :, -1], clip[..., :, -1])


def test_auto_contrast_and_equalize_work_per_frame_and_channel():
    g = np.random.default_rng(4)
    clip = torch.from_numpy(g.integers(50, 101, (3, 2, 16, 16), dtype=np.uint8))
    clip[1, 1] = 7  # a flat plane stays as it is
    out = apply_op(clip, "AutoContrast", 9.0)
    for c, t in ((0, 0), (2, 1), (1, 0)):
        values = clip[c, t].flatten().tolist()
        lo, hi = min(values), max(values)
        scale = 255.0 / (hi - lo)  # Pillow, in Python floats: int(ix * scale + offset), offset = -lo * scale
        assert out[c, t].flatten().tolist() == [int(v * scale + (-lo * scale)) for v in values]
    assert torch.equal(out[1, 1], clip[1, 1])
    clip = torch.from_numpy(g.integers(50, 101, (3, 2, 64, 64), dtype=np.uint8))
    eq = apply_op(clip, "Equalize", 9.0)
    for c, t in ((0, 0), (2, 1)):  # Pillow's equalize: lut[i] = (step // 2 + #values below i) // step
        values = clip[c, t].flatten().tolist()
        hist = np.bincount(values, minlength=256)
        step = int(hist.sum() - hist[hist > 0][-1]) // 255
        assert step > 0
        lut = [min(255, (step // 2 + int(hist[:i].sum())) // step) for i in range(256)]  # point() clips
        assert eq[c, t].flatten().tolist() == [lut[v] for v in values]
    spread = np.bincount(eq[0, 0].flatten().numpy(), minlength=256)
    assert spread.nonzero()[0].max() - spread.nonzero()[0].min() > 200  # stretched over the range


def test_affine_ops_move_pixels_and_fill_what_comes_in():
    clip = random_clip(5, (3, 2, 10, 12))
    fill = (11, 22, 33)
    shifted = _affine(clip, (1, 0, 3, 0, 1, 0), fill)  # reads x + 3: moves the image left by 3
    assert torch.equal(shifted[..., :9], clip[..., 3:])
    assert (shifted[..., 9:] == torch.tensor(fill, dtype=torch.uint8).view(3, 1, 1, 1)).all()
    square = random_clip(6, (3, 1, 8, 8))
    rotated = _affine(square, _rotate_matrix(90.0, 8, 8), fill)  # counter-clockwise, as Pillow
    assert torch.equal(rotated, torch.rot90(square, 1, dims=(-2, -1)))
    flat = torch.full((3, 2, 16, 16), 77, dtype=torch.uint8)
    out = apply_op(flat, "Rotate", 9.0, fill=fill)
    inside = (out == 77).all(0)
    assert inside[:, 8, 8].all() and not inside.all()  # a constant stays constant where it is sampled
    sheared = apply_op(flat, "ShearX", 10.0, fill=fill)  # x reads x + 0.3 (y + .5): the right side fills
    assert (sheared[:, :, 0, :] == 77).all()
    assert (sheared[:, :, -1, -4:] == torch.tensor(fill, dtype=torch.uint8).view(3, 1, 1)).all()
    gone = _affine(flat, (1, 0, 100, 0, 1, 0), fill)  # every source point outside: all fill
    assert torch.equal(gone, torch.tensor(fill, dtype=torch.uint8).view(3, 1, 1, 1).expand_as(gone))


def test_translate_magnitude_is_a_fraction_of_the_frame():
    clip = random_clip(7, (3, 1, 10, 20))
    out = apply_op(clip, "TranslateXRel", 10.0 / 0.45 * 0.1, negate=True)  # -0.1 * 20 = 2 pixels right
    assert torch.equal(out[..., 2:], clip[..., :-2])


def test_grayscale_uses_the_luma_weights():
    video = torch.rand(3, 2, 4, 4, dtype=torch.float64)
    want = 0.299 * video[0] + 0.587 * video[1] + 0.114 * video[2]
    grayscale_(video)
    assert all(torch.allclose(video[c], want) for c in range(3))


# ---------------------------------------------------------------- random erasing
def test_random_erasing_probability_area_and_one_box_per_clip():
    er = RandomErasing(prob=0.25, mode="const", count=(1, 1), area_range=(0.02, 1 / 3), min_aspect=0.3)
    rng = np.random.default_rng(0)
    erased, areas = 0, []
    for _ in range(1500):
        video = torch.ones(3, 3, 40, 40)
        er(video, rng)
        zero = video == 0
        if zero.any():
            erased += 1
            assert all(torch.equal(zero[:, 0], zero[:, t]) for t in range(3))  # the same box on every frame
            areas.append(zero[0, 0].float().mean().item())
    assert erased / 1500 == pytest.approx(0.25, abs=0.03)
    assert min(areas) >= 0.015 and max(areas) <= 0.36
    assert np.mean(areas) == pytest.approx((0.02 + 1 / 3) / 2, abs=0.03)
    with pytest.raises(ValueError, match="MODE"):
        RandomErasing(mode="noise")
    noisy = RandomErasing(prob=1.0, mode="pixel")(torch.full((3, 2, 30, 30), 100.0), np.random.default_rng(1))
    assert (noisy.abs() < 10).sum() > 0


# ---------------------------------------------------------------- the ops == Pillow, frame by frame
def reference_clips(seed: int) -> list[torch.Tensor]:
    """Random, smooth (photo-like), low-contrast and flat-patched clips of odd sizes. Flat
    patches matter: there a cubic lands exactly on an integer, where truncation is decided by
    the last bit of Pillow's float64 arithmetic."""
    g = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:37, 0:53]
    smooth = (128 + 100 * np.sin(xx / 7.0)[None, None] * np.cos(yy / 5.0 + np.arange(3)[:, None, None, None]))
    smooth = (smooth + np.arange(4)[None, :, None, None] * 9).clip(0, 255).astype(np.uint8)
    patched = g.integers(0, 256, (3, 2, 31, 29), dtype=np.uint8)
    patched[:, :, 5:20, 3:17] = g.integers(0, 256, (3, 2, 1, 1), dtype=np.uint8)
    patched[:, 1, :, 20:] = 255
    blocks = np.repeat(np.repeat(g.integers(0, 256, (3, 2, 6, 7), dtype=np.uint8), 5, axis=2), 4, axis=3)
    return [random_clip(seed, (3, 4, 37, 53)), torch.from_numpy(smooth),
            torch.from_numpy(g.integers(60, 90, (3, 2, 24, 24), dtype=np.uint8)), torch.from_numpy(patched),
            torch.from_numpy(np.ascontiguousarray(blocks))]


@pytest.mark.parametrize("name", INCREASING_OPS)
def test_every_op_equals_pillow_frame_by_frame(name):
    """Every op, at magnitudes over the whole range (and drawn as the policy draws them) with
    both signs, equals the Pillow call the official code makes on each frame, bit for bit."""
    g = np.random.default_rng(sum(map(ord, name)))
    for clip in reference_clips(11):
        for m in (0.0, 0.37, 4.5, 9.0, 9.62, 10.0, *np.clip(g.normal(9, 0.5, 2), 0, 10)):
            for negate in (False, True):
                fill = tuple(int(v) for v in g.integers(0, 256, 3))
                want = run_op_pillow(clip, name, float(m), negate, fill)
                got = apply_op(clip, name, float(m), negate=negate, fill=fill)
                assert got.dtype == torch.uint8
                assert torch.equal(got, want), (name, m, negate, int((got != want).sum()))
                assert torch.equal(apply_op(clip.float(), name, float(m), negate=negate, fill=fill), want.float())


def test_rand_augment_equals_pillow_op_after_op():
    ra = parse_rand_augment("rand-m9-n4-mstd0.5-inc1")
    for seed in range(12):
        clip = reference_clips(seed)[seed % 5]
        got = ra(clip.float(), np.random.default_rng(seed), fill=(124, 116, 104))
        want = clip
        for name, m, negate in ra.draw(np.random.default_rng(seed)):
            want = run_op_pillow(want, name, m, negate, (124, 116, 104))
        assert got.dtype == torch.float32 and torch.equal(got, want.float())
        assert torch.equal(ra(clip, np.random.default_rng(seed), fill=(124, 116, 104)), want)

"""Crop plans equal the official resize-then-crop; test crops sit where the official code puts them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tada.data.transforms import (
    _plan,
    apply_plan,
    extract_box,
    normalize_,
    plan_test_crop,
    plan_train_crop,
    resize_boxes,
    resized_size,
)


def official(clip: torch.Tensor, size: tuple[int, int], y: int, x: int, crop: int) -> torch.Tensor:
    """The official test transform: float/255, bilinear resize of the whole (C,T,H,W) clip, then crop;
    back to 0..255."""
    v = clip.permute(3, 0, 1, 2).float() / 255
    v = F.interpolate(v, size=size, mode="bilinear", align_corners=False)
    return v[:, :, y:y + crop, x:x + crop] * 255


@pytest.mark.parametrize("h, w", [(256, 340), (340, 256), (37, 51), (90, 160), (64, 64)])
def test_plan_equals_resize_then_crop(h, w):
    rng = np.random.default_rng(h * w)
    clip = torch.from_numpy(rng.integers(0, 256, (3, h, w, 3), dtype=np.uint8))
    crop = min(h, w, 224) - 3
    for short in (crop, crop + 5, 2 * crop + 1):
        size = resized_size(h, w, short)
        for y, x in ((0, 0), (size[0] - crop, size[1] - crop), ((size[0] - crop) // 2, (size[1] - crop) // 3)):
            got = apply_plan(clip, _plan(h, w, size, y, x, crop))
            torch.testing.assert_close(got, official(clip, size, y, x, crop), atol=2e-4, rtol=0)


def test_flip_mirrors_the_same_crop():
    clip = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (2, 40, 60, 3), dtype=np.uint8))
    plan = _plan(40, 60, (40, 60), 3, 7, 32)
    torch.testing.assert_close(apply_plan(clip, plan.flipped()), apply_plan(clip, plan).flip(-1))


def test_train_plan_draws_scale_and_position():
    rng = np.random.default_rng(0)
    boxes = {plan_train_crop(256, 340, scales=(224, 340), crop=224, rng=rng).box for _ in range(50)}
    assert len(boxes) > 40
    with pytest.raises(ValueError, match="TRAIN_CROP_SIZE"):
        plan_train_crop(256, 340, scales=(200, 340), crop=224, rng=rng)


def test_three_test_crops_left_centre_right_and_top_centre_bottom():
    # Landscape 256x340 at scale 256 -> 256x340: x in {0, 42, 84}.
    xs = [plan_test_crop(256, 340, scale=256, crop=256, spatial_index=i, num_crops=3) for i in range(3)]
    ref = [_plan(256, 340, (256, 340), 0, x, 256) for x in (0, 42, 84)]
    assert [p.box for p in xs] == [p.box for p in ref]
    # Portrait 340x256: y in {0, 42, 84}; square frames follow the portrait branch.
    ys = [plan_test_crop(340, 256, scale=256, crop=256, spatial_index=i, num_crops=3) for i in range(3)]
    assert [p.box for p in ys] == [_plan(340, 256, (340, 256), y, 0, 256).box for y in (0, 42, 84)]
    centre = plan_test_crop(256, 340, scale=256, crop=224, spatial_index=0, num_crops=1)
    assert centre.box == _plan(256, 340, (256, 340), 16, 58, 224).box
    with pytest.raises(ValueError, match="1 or 3"):
        plan_test_crop(256, 340, scale=256, crop=256, spatial_index=0, num_crops=2)


def test_batched_boxes_equal_per_clip_path_with_padding():
    rng = np.random.default_rng(3)
    clips = [torch.from_numpy(rng.integers(0, 256, (4, h, w, 3), dtype=np.uint8)) for h, w in ((48, 64), (70, 50))]
    plans = [plan_train_crop(c.shape[1], c.shape[2], scales=(40, 56), crop=40, rng=rng, hflip=i == 1)
             for i, c in enumerate(clips)]
    boxes = [extract_box(c, p) for c, p in zip(clips, plans)]
    hb, wb = max(b.shape[-2] for b in boxes), max(b.shape[-1] for b in boxes)
    padded = torch.zeros(2, 3, 4, hb, wb, dtype=torch.uint8)
    for i, b in enumerate(boxes):
        padded[i, ..., : b.shape[-2], : b.shape[-1]] = b
    taps = [torch.stack([getattr(p, k) for p in plans]) for k in ("rows0", "rows1", "row_w", "cols0", "cols1", "col_w")]
    out = resize_boxes(padded, *taps)
    for i in range(2):
        torch.testing.assert_close(out[i], apply_plan(clips[i], plans[i]), atol=0, rtol=0)


def test_normalize():
    v = torch.full((3, 2, 4, 4), 255.0)
    normalize_(v, [0.45] * 3, [0.225] * 3)
    torch.testing.assert_close(v, torch.full_like(v, (1 - 0.45) / 0.225))
    with pytest.raises(ValueError, match="MEAN/STD"):
        normalize_(v, [0.45], [0.225])

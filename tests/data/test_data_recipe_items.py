"""Training items with the TAdaConvV2 recipe augmentations: config mapping, order, per-clip draws."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tada.config import ConfigError, load_config
from tada.data import build_dataset
from tada.data.annotations import VideoEntry
from tada.data.augment import RandomErasing, parse_rand_augment
from tada.data.datasets import ClipSpec, VideoDataset
from tada.data.synthetic import generate_dataset

V2_AUG = ["DATA.TRAIN_JITTER_SCALES", [0.08, 1.0], "AUGMENTATION.RATIO", [0.75, 1.333],
          "AUGMENTATION.AUTOAUGMENT.ENABLE", True, "AUGMENTATION.AUTOAUGMENT.TYPE", "rand-m9-n4-mstd0.5-inc1",
          "AUGMENTATION.COLOR_AUG", True, "AUGMENTATION.GRAYSCALE", 0.2]


class FrameReader:
    """An in-memory 'video': frame k is a fixed colour texture shifted by k (no decoding)."""

    def __init__(self, path: str, frames: int = 20, height: int = 48, width: int = 64):
        seed = int(path.split("_")[-1])
        base = np.random.default_rng(seed).integers(0, 256, (height, width + frames, 3), dtype=np.uint8)
        self.clip = np.stack([base[:, k:k + width] for k in range(frames)])
        self.num_frames, self.fps, self.height, self.width = frames, 30.0, height, width

    def get_frames(self, indices):
        return self.clip[np.asarray(indices)]

    def close(self):
        pass


def spec(**kw) -> ClipSpec:
    base = dict(sampling_mode="segment_based", num_input_frames=4, sampling_rate=1, target_fps=30,
                train_scales=(0.08, 1.0), train_crop=32, test_scale=32, test_crop=32,
                mean=(0.45, 0.45, 0.45), std=(0.225, 0.225, 0.225))
    base.update(kw)
    return ClipSpec(**base)


def dataset(**kw) -> VideoDataset:
    entries = [VideoEntry(f"video_{k}", k % 3) for k in range(6)]
    return VideoDataset(entries, split="train", spec=spec(**kw), open_reader=FrameReader, name="mem")


def item(ds: VideoDataset, index: int, seed: int) -> torch.Tensor:
    torch.manual_seed(seed)
    return ds[index]["video"]


def test_same_seed_same_item_with_every_augmentation_on():
    ds = dataset(rand_augment=parse_rand_augment("rand-m9-n4-mstd0.5-inc1"), grayscale_prob=0.2,
                 erasing=RandomErasing(prob=0.5), hflip=True)
    a, b = item(ds, 2, 11), item(ds, 2, 11)
    assert torch.equal(a, b)
    assert a.shape == (3, 4, 32, 32) and a.dtype == torch.float32
    assert len({item(ds, 2, s).sum().item() for s in range(8)}) == 8  # the seed drives the draws


def test_grayscale_fires_with_its_probability_on_whole_clips():
    ds = dataset(grayscale_prob=0.2)
    grey = 0
    for s in range(800):
        v = item(ds, s % 6, s)
        grey += torch.allclose(v[0], v[1]) and torch.allclose(v[1], v[2])
    assert grey / 800 == pytest.approx(0.2, abs=0.045)  # 3 standard deviations


def test_rand_augment_sees_the_crop_quantised_to_uint8():
    """Without ops firing the crop is still truncated to integers, as the official uint8 round trip
    (the official crop itself: tests/data/test_data_augment.py compares it bit for bit)."""
    ra = parse_rand_augment("rand-m9-n1-mstd0-inc1")
    never = type(ra)(magnitude=9, num_ops=1, prob=0.0)
    ds = dataset(rand_augment=never, mean=(0.0, 0.0, 0.0), std=(1 / 255, 1 / 255, 1 / 255))
    v = item(ds, 1, 5)
    assert torch.equal(v, v.round()) and v.min() >= 0 and v.max() <= 255
    plain = item(dataset(mean=(0.0, 0.0, 0.0), std=(1 / 255, 1 / 255, 1 / 255)), 1, 5)
    assert not torch.equal(plain, plain.round())  # bilinear crops are fractional otherwise
    assert (v - plain.floor()).abs().max() <= 1  # same crop, truncated (computed as officially: to rounding)


def test_random_resized_crop_covers_scales_and_the_fill_follows_the_mean():
    ds = dataset()
    assert ds.spec.resized_crop and ds.spec.fill == (115, 115, 115)
    assert spec(mean=(0.48145466, 0.4578275, 0.40821073)).fill == (123, 117, 104)
    assert not spec(train_scales=(32, 40)).resized_crop


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    generate_dataset(root, seed=0, videos_per_class={"train": 1, "val": 1, "test": 1}, sizes=(32, 48),
                     lengths=(16, 24), workers=1)
    return root


def synth_cfg(tmp_path, root, *overrides):
    f = tmp_path / "cfg.yaml"
    f.write_text("TRAIN:\n  DATASET: synthetic\nTEST:\n  DATASET: synthetic\n")
    return load_config(f, overrides=["DATA.DATA_ROOT_DIR", str(root), "DATA.ANNO_DIR", str(root),
                                     "DATA.NUM_INPUT_FRAMES", 4, "DATA.TRAIN_CROP_SIZE", 32, "DATA.TEST_SCALE", 32,
                                     "DATA.TEST_CROP_SIZE", 32, "DATA.SAMPLING_MODE", "segment_based",
                                     "VIDEO.HEAD.NUM_CLASSES", 7, *overrides])


def test_config_keys_reach_the_clip_spec(tmp_path, synth):
    cfg = synth_cfg(tmp_path, synth, *V2_AUG, "AUGMENTATION.RANDOM_ERASING.ENABLE", True,
                    "AUGMENTATION.RANDOM_ERASING.MODE", "pixel")
    train = build_dataset(cfg, "train")
    s = train.spec
    assert s.resized_crop and s.crop_ratio == (0.75, 1.333) and s.grayscale_prob == 0.2
    assert s.rand_augment == parse_rand_augment("rand-m9-n4-mstd0.5-inc1")
    assert s.erasing == RandomErasing(prob=0.25, mode="pixel", count=(1, 1), area_range=(0.02, 0.33), min_aspect=0.3)
    torch.manual_seed(0)
    assert train[0]["video"].shape == (3, 4, 32, 32)
    torch.manual_seed(0)
    val = build_dataset(cfg, "val")[0]["video"]  # val/test: no training augmentation
    torch.manual_seed(1)
    assert torch.equal(val, build_dataset(cfg, "val")[0]["video"])


@pytest.mark.parametrize("overrides, message", [
    (["AUGMENTATION.AUTOAUGMENT.TYPE", "rand-m9-inc0"], "increasing"),
    (["DATA.TRAIN_JITTER_SCALES", [0.5, 2]], "area fractions"),
    (["AUGMENTATION.USE_GPU", True], "USE_GPU"),
    (["AUGMENTATION.RANDOM_ERASING.ENABLE", True, "AUGMENTATION.RANDOM_ERASING.NUM_SPLITS", 2], "NUM_SPLITS"),
])
def test_bad_recipe_settings_name_their_key(tmp_path, synth, overrides, message):
    with pytest.raises(ConfigError, match=message):  # at load, or at the latest when the dataset is built
        build_dataset(synth_cfg(tmp_path, synth, *V2_AUG, *overrides), "train")

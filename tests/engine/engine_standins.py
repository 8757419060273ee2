"""Tiny in-memory stand-ins for the data layer and configs, shared by the engine tests and workers.

The dataset yields the same item dicts as tada.data's VideoDataset (video, label, index,
video_index, view, path, failed, error, failures). Train items draw their augmentation from the
global torch RNG, as the real dataset does, so the engine's per-sample seeding is what makes them
reproducible. A clip's content depends on its label, so a model can learn the task.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from torch import nn

from tada.config import load_config

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "projects" / "tada" / "synthetic" / "tada2d.yaml"
NUM_CLASSES = 4


class TinyVideos(torch.utils.data.Dataset):
    def __init__(self, split, *, num_videos, frames=4, size=32, num_views=1, fail=(), delay=0.0):
        self.split, self.num_videos, self.frames, self.size = split, num_videos, frames, size
        self.num_views = num_views if split == "test" else 1
        self.fail, self.delay = set(fail), delay
        self.class_names = [f"class_{c}" for c in range(NUM_CLASSES)]
        self.name = "tiny"

    def __len__(self):
        return self.num_videos * self.num_views

    def _clip(self, video_index, view):
        g = torch.Generator().manual_seed(1000 * video_index + view)
        label = video_index % NUM_CLASSES
        base = torch.randn(3, self.frames, self.size, self.size, generator=g) * 0.5
        ramp = torch.linspace(-1, 1, self.frames).view(1, -1, 1, 1)
        base[label % 3] += ramp[0] * (1.0 if label < 2 else -1.0) * (1 + label)
        return base, label

    def __getitem__(self, index):
        if self.delay:
            time.sleep(self.delay)
        video_index, view = divmod(index, self.num_views)
        video, label = self._clip(video_index, view)
        item = {"index": index, "video_index": video_index, "view": torch.tensor([view, 0]),
                "path": f"video_{video_index:03d}.mp4", "label": label, "failed": False, "error": "",
                "failures": []}
        if self.split == "train":  # random augmentation from the global generator
            video = video + 0.1 * torch.randn(video.shape)
            if torch.rand(()) < 0.5:
                video = video.flip(-1)
        if video_index in self.fail and self.split != "train":
            item.update(video=torch.zeros_like(video), failed=True, error="cannot decode (test)")
            return item
        item["video"] = video
        return item


def dataset_fn_factory(num_train=24, num_val=8, num_test=6, fail=(), delay=0.0):
    def dataset_fn(cfg, split):
        n = {"train": num_train, "val": num_val, "test": num_test}[split]
        views = cfg.TEST.NUM_ENSEMBLE_VIEWS * cfg.TEST.NUM_SPATIAL_CROPS
        return TinyVideos(split, num_videos=n, frames=cfg.DATA.NUM_INPUT_FRAMES, size=cfg.DATA.TRAIN_CROP_SIZE,
                          num_views=views, fail=fail, delay=delay)

    return dataset_fn


def tiny_cfg(out_dir, *extra):
    """The synthetic TAda2D config shrunk to seconds: depth 26 at 1/8 width, 4 frames of 32x32."""
    return load_config(CONFIG, tiny_overrides(out_dir, *extra))


def tiny_overrides(out_dir, *extra) -> list[str]:
    """The command-line overrides of :func:`tiny_cfg` (for `tada train --cfg CONFIG ...`)."""
    return [
        "OUTPUT_DIR", str(out_dir), "DATA.DATA_ROOT_DIR", str(out_dir), "NUM_GPUS", "0",
        "VIDEO.BACKBONE.DEPTH", "26", "VIDEO.BACKBONE.NUM_FILTERS", "[8, 16, 32, 64, 128]",
        "VIDEO.BACKBONE.NUM_OUT_FEATURES", "128",
        "VIDEO.HEAD.NUM_CLASSES", str(NUM_CLASSES), "VIDEO.HEAD.DROPOUT_RATE", "0.2",
        "DATA.NUM_INPUT_FRAMES", "4", "DATA.TRAIN_CROP_SIZE", "32", "DATA.TEST_CROP_SIZE", "32",
        "DATA.TEST_SCALE", "32", "DATA.TRAIN_JITTER_SCALES", "[32, 40]",
        "TRAIN.BATCH_SIZE", "4", "TEST.BATCH_SIZE", "8", "OPTIMIZER.MAX_EPOCH", "2",
        "OPTIMIZER.WARMUP_EPOCHS", "1", "OPTIMIZER.BASE_LR", "0.05", "LOG_PERIOD", "2",
        "DATA_LOADER.NUM_WORKERS", "0", "LOG_MODEL_INFO", "false", "TRAIN.CHANNELS_LAST", "false",
        "TEST.MULTI_VIEW_ENSEMBLE_VIEWS", "2", "TEST.MULTI_VIEW_SPATIAL_CROPS", "3",
        *extra,
    ]


class NoBNNet(nn.Module):
    """A BN-free video classifier: per-process BN statistics cannot blur a DDP equality check."""

    def __init__(self, cfg):
        super().__init__()
        self.conv = nn.Conv3d(3, 8, (3, 3, 3), padding=1)
        self.head = nn.Linear(8, cfg.VIDEO.HEAD.NUM_CLASSES)

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)).mean(dim=(2, 3, 4)))


class NoBNNet64(NoBNNet):
    """NoBNNet in float64: for comparing runs that sum in different orders (1 vs N processes).

    In float32, a pre-activation within one rounding step of 0 lands on either side of the ReLU
    under another summation order and switches a whole term of the conv gradient, so two correct
    runs differ by ~1e-4 after a few steps on some CPUs. In float64 they agree to ~1e-15, far below
    what a wrong shard, a missing division by the world size or a doubled LR change (~1e-2).
    """

    def __init__(self, cfg):
        super().__init__(cfg)
        self.double()

    def forward(self, x):
        return super().forward(x.double())


def max_weight_difference(a: dict, b: dict) -> float:
    """The largest |a - b| over two state dicts, relative to the largest |a| of that tensor."""
    if a.keys() != b.keys():
        raise AssertionError(f"different keys: {sorted(set(a) ^ set(b))}")
    return max(float((a[k] - b[k]).abs().max() / a[k].abs().max().clamp_min(1e-30)) for k in a)

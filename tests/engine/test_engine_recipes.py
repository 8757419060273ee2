"""A run with every TAdaConvV2 recipe feature on: AdamW with layer groups and LR_REDUCE, cosine_v2,
label smoothing, random resized crop, RandAugment, grayscale, random erasing, mixup/cutmix and
model EMA. Killed mid-epoch and restarted with the same command, it ends bit-identical; the EMA
weights are saved under the official key, validated and tested."""

import json

import numpy as np
import torch
from engine_standins import NUM_CLASSES, tiny_cfg

from tada.data.annotations import VideoEntry
from tada.data.augment import RandomErasing, parse_rand_augment
from tada.data.datasets import ClipSpec, VideoDataset
from tada.engine import latest_checkpoint, run_pipeline, train
from tada.engine.checkpointing import read_checkpoint

RECIPE = [
    "OPTIMIZER.OPTIM_METHOD", "adamw", "OPTIMIZER.BASE_LR", "0.002", "OPTIMIZER.WEIGHT_DECAY", "0.05",
    "OPTIMIZER.LR_POLICY", "cosine_v2", "OPTIMIZER.COSINE_END_LR", "1e-5", "OPTIMIZER.COSINE_AFTER_WARMUP", "true",
    "OPTIMIZER.WARMUP_START_LR", "1e-5", "TRAIN.LR_REDUCE", "true",
    "AUGMENTATION.LABEL_SMOOTHING", "0.1", "AUGMENTATION.MIXUP.ENABLE", "true", "AUGMENTATION.MIXUP.ALPHA", "0.8",
    "AUGMENTATION.CUTMIX.ENABLE", "true", "AUGMENTATION.CUTMIX.ALPHA", "1.0",
    "MODEL.EMA.ENABLE", "true", "MODEL.EMA.DECAY", "0.9",
]


class MemoryVideo:
    """A 20-frame 40x56 'video' whose texture depends on its label and drifts with time (no decoding)."""

    def __init__(self, path):
        seed = int(path.rsplit("_", 1)[-1])
        rng = np.random.default_rng(seed)
        base = rng.integers(0, 256, (40, 76, 3), dtype=np.uint8)
        base[..., seed % 3] //= 2 + seed % NUM_CLASSES
        self.frames = np.stack([base[:, k:k + 56] for k in range(20)])
        self.num_frames, self.fps, self.height, self.width = 20, 30.0, 40, 56

    def get_frames(self, indices):
        return self.frames[np.asarray(indices)]

    def close(self):
        pass


def recipe_dataset_fn(cfg, split):
    """Real VideoDatasets with the V2 training augmentations on in-memory videos."""
    n = {"train": 24, "val": 8, "test": 4}[split]
    spec = ClipSpec(
        sampling_mode="segment_based", num_input_frames=cfg.DATA.NUM_INPUT_FRAMES, sampling_rate=1, target_fps=30,
        train_scales=(0.08, 1.0), train_crop=32, test_scale=32, test_crop=32, mean=(0.45,) * 3, std=(0.225,) * 3,
        num_temporal_views=cfg.TEST.NUM_ENSEMBLE_VIEWS, num_spatial_crops=cfg.TEST.NUM_SPATIAL_CROPS, hflip=True,
        crop_ratio=(0.75, 1.333), rand_augment=parse_rand_augment("rand-m9-n4-mstd0.5-inc1"), grayscale_prob=0.2,
        erasing=RandomErasing(prob=0.5),
    )
    entries = [VideoEntry(f"{split}_{k}", k % NUM_CLASSES) for k in range(n)]
    return VideoDataset(entries, split=split, spec=spec, open_reader=MemoryVideo, name="memory")


def test_every_recipe_feature_resumes_bit_identically(tmp_path):
    ref_dir, cut_dir = tmp_path / "ref", tmp_path / "cut"
    ref = train(tiny_cfg(ref_dir, "TEST.ENABLE", "false", *RECIPE), dataset_fn=recipe_dataset_fn)
    cfg = tiny_cfg(cut_dir, "TEST.ENABLE", "false", "TRAIN.CHECKPOINT_ITER_PERIOD", "4", *RECIPE)
    train(cfg, dataset_fn=recipe_dataset_fn, stop_after_steps=9)
    assert latest_checkpoint(cut_dir).path.name == "checkpoint_epoch_00001_iter_000002.pyth"
    resumed = train(cfg, dataset_fn=recipe_dataset_fn)
    assert "auto-resume" in resumed.start
    a, b = read_checkpoint(ref.last_checkpoint), read_checkpoint(resumed.last_checkpoint)
    for key in ("model_state", "model_ema_state"):
        assert a[key].keys() == b[key].keys()
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), f"{key}.{name}"
    for sa, sb in zip(a["optimizer_state"]["state"].values(), b["optimizer_state"]["state"].values(), strict=True):
        assert torch.equal(sa["exp_avg"], sb["exp_avg"]) and torch.equal(sa["exp_avg_sq"], sb["exp_avg_sq"])
    # The EMA lags the weights and the optimizer is AdamW with the LR_REDUCE groups.
    assert any(not torch.equal(a["model_state"][k], a["model_ema_state"][k]) for k in a["model_state"])
    groups = {g["name"]: g["lr_mult"] for g in a["optimizer_state"]["param_groups"]}
    assert groups["rf_weight"] == 5.0 and groups["head_bias"] == 10.0
    vals = [json.loads(x) for x in (ref_dir / "stats.jsonl").read_text().splitlines()]
    val = [x for x in vals if x["_type"] == "val_epoch"][-1]
    assert {"ema_top1", "ema_loss", "top1"} <= val.keys()


def test_the_test_is_repeated_with_the_ema_weights(tmp_path):
    cfg = tiny_cfg(tmp_path, "OPTIMIZER.MAX_EPOCH", "1", "TEST.AUTOMATIC_MULTI_SCALE_TEST", "false", *RECIPE)
    final = run_pipeline(cfg, dataset_fn=recipe_dataset_fn)
    assert final["weights"] == "model"
    ema = json.loads((tmp_path / "test_1x1_ema" / "results.json").read_text())
    assert ema["weights"] == "ema" and ema["num_videos"] == 4
    assert json.loads((tmp_path / "results.json").read_text())["weights"] == "model"

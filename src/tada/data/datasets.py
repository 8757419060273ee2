"""Video datasets: Kinetics-400, Something-Something-V2, a generic list, the synthetic set.

:class:`VideoDataset` is config-free: it takes the video entries, a reader factory and a
:class:`ClipSpec`. :func:`build_dataset` turns a config into those.

Items are dicts:

- ``video``: float (C, T, H, W), normalised; with ``gpu_resize`` the uint8 source box
  (C, T, h, w) plus its bilinear taps (``rows0`` ... ``col_w``) instead, resized by
  :func:`tada.data.gpu_transform`;
- ``label`` (int), ``index`` (dataset index), ``video_index``, ``view`` (LongTensor
  [temporal clip, spatial crop]), ``path``;
- ``failed`` (bool), ``error`` (str): at val/test a video that cannot be decoded is never
  replaced; its item has ``failed=True``, the reason, and a zero video of the right shape;
- ``failures`` (list of "path: reason"): at train a failed video is logged and replaced by
  another random video; the failures met on the way are carried by the replacement's item, so
  the loader can count them across worker processes (see :class:`tada.data.loader.VideoLoader`).

Index layout at test (as the official code): ``index = video_index * num_views + view``,
``view = temporal * num_spatial_crops + spatial``.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from tada.config import ConfigError
from tada.data.annotations import (
    AnnotationError,
    VideoEntry,
    mirrored_pairs,
    read_class_names,
    read_ssv2_labels,
    read_ssv2_split,
    read_video_list,
)
from tada.data.augment import RandAugment, RandomErasing, grayscale_, parse_rand_augment, random_resized_box
from tada.data.decode import DecodeError, VideoReader, open_video
from tada.data.frame_indices import sample_indices
from tada.data.frames import failed_jpeg_clip_fields, jpeg_clip_fields
from tada.data.transforms import (
    apply_plan,
    extract_box,
    normalize_,
    plan_resized_crop,
    plan_test_crop,
    plan_train_crop,
    resized_crop_uint8,
)
from tada.errors import TadaError

__all__ = [
    "ClipSpec",
    "DataFailureError",
    "VideoDataset",
    "build_dataset",
    "dataset_kind",
    "SPLITS",
    "SSV2_OFFICIAL_FLIP_PAIRS",
]

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
# The official SSv2 mirror swap table; used only when the labels file is not available.
SSV2_OFFICIAL_FLIP_PAIRS = {86: 87, 87: 86, 93: 94, 94: 93, 166: 167, 167: 166}
_MAX_TRAIN_ATTEMPTS = 20  # consecutive failed videos before one training item gives up


class DataFailureError(TadaError, RuntimeError):
    """Too many videos failed to decode (or every replacement failed)."""


@dataclass(frozen=True)
class ClipSpec:
    """How one item is cut from a video: sampling, spatial transform, views, normalisation."""

    sampling_mode: str
    num_input_frames: int
    sampling_rate: int
    target_fps: float
    train_scales: tuple[int, int]
    train_crop: int
    test_scale: int
    test_crop: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    num_temporal_views: int = 1
    num_spatial_crops: int = 1
    minus_interval: bool = False
    hflip: bool = False
    flip_pairs: dict[int, int] = field(default_factory=dict)
    gpu_resize: bool = False
    gpu_decode: bool = False  # frame folders + USE_GPU: ship JPEG bytes, decode on the GPU (tada.data.frames)
    # Training augmentations of the TAdaConvV2 recipes (tada.data.augment). ``train_scales`` at
    # most 1 are area fractions of a random resized crop with aspect range ``crop_ratio``.
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    rand_augment: RandAugment | None = None
    grayscale_prob: float = 0.0
    erasing: RandomErasing | None = None

    @property
    def resized_crop(self) -> bool:
        """Whether training crops are random resized crops (TRAIN_JITTER_SCALES[0] <= 1, as officially)."""
        return self.train_scales[0] <= 1

    @property
    def uint8_augment(self) -> bool:
        """Whether a training clip goes through augmentations after its crop."""
        return self.rand_augment is not None or self.grayscale_prob > 0 or self.erasing is not None

    @property
    def fill(self) -> tuple[int, ...]:
        """RandAugment's fill colour for pixels a geometric op brings in: round(255 * MEAN)."""
        return tuple(min(255, round(255 * m)) for m in self.mean)


class VideoDataset(Dataset):
    """Clips from a list of videos; ``split`` 'train' is random, 'val'/'test' deterministic views."""

    def __init__(
        self,
        entries: Sequence[VideoEntry],
        *,
        split: str,
        spec: ClipSpec,
        open_reader: Callable[[str], VideoReader],
        class_names: Sequence[str] | None = None,
        name: str = "videos",
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got '{split}'")
        if not entries:
            raise ValueError(f"{name}/{split}: no videos")
        self.entries = list(entries)
        self.split = split
        self.spec = spec
        self.open_reader = open_reader
        self.class_names = list(class_names) if class_names is not None else None
        self.name = name
        self.num_views = spec.num_temporal_views * spec.num_spatial_crops if split == "test" else 1

    @property
    def num_videos(self) -> int:
        return len(self.entries)

    @property
    def labels(self) -> list[int]:
        return [e.label for e in self.entries]

    def __len__(self) -> int:
        return len(self.entries) * self.num_views

    def __repr__(self) -> str:
        return (f"VideoDataset({self.name}/{self.split}: {self.num_videos} videos x {self.num_views} views, "
                f"{self.spec.num_input_frames} frames {self.spec.sampling_mode})")

    # ------------------------------------------------------------------ items
    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} outside [0, {len(self)})")
        if self.split == "train":
            return self._train_item(index)
        video_index, v = divmod(index, self.num_views)
        temporal, spatial = divmod(v, self.spec.num_spatial_crops) if self.split == "test" else (0, 0)
        entry = self.entries[video_index]
        item = self._base(index, video_index, entry, temporal, spatial)
        try:
            item.update(self._clip(entry, rng=None, temporal=temporal, spatial=spatial))
        except DecodeError as exc:
            log.warning("%s/%s: cannot decode %s: %s (excluded, not replaced)", self.name, self.split,
                        exc.path, exc.reason)
            item.update(self._failed_video(), failed=True, error=exc.reason)
        return item

    def _base(self, index: int, video_index: int, entry: VideoEntry, temporal: int, spatial: int) -> dict:
        return {
            "index": index,
            "video_index": video_index,
            "view": torch.tensor([temporal, spatial], dtype=torch.long),
            "path": entry.path,
            "label": entry.label,
            "failed": False,
            "error": "",
            "failures": [],
        }

    def _train_item(self, index: int) -> dict:
        # One draw from torch's generator seeds the item: the DataLoader seeds it in each worker,
        # and the engine per sample (tada.engine.samplers.SeededDataset), so runs are reproducible.
        rng = np.random.default_rng(int(torch.randint(0, 2**62, ()).item()))
        failures: list[str] = []
        video_index = index
        for _ in range(_MAX_TRAIN_ATTEMPTS):
            entry = self.entries[video_index]
            try:
                clip = self._clip(entry, rng=rng, temporal=None, spatial=None)
            except DecodeError as exc:
                log.warning("%s/train: cannot decode %s: %s (replaced by another random video)",
                            self.name, exc.path, exc.reason)
                failures.append(f"{exc.path}: {exc.reason}")
                video_index = int(rng.integers(len(self.entries)))
                continue
            item = self._base(video_index, video_index, entry, 0, 0)
            item.update(clip, failures=failures)
            return item
        raise DataFailureError(
            f"{self.name}/train: {_MAX_TRAIN_ATTEMPTS} videos in a row failed to decode; the last: "
            f"{failures[-1]}. Check DATA.DATA_ROOT_DIR and the videos."
        )

    def _clip(self, entry: VideoEntry, *, rng: np.random.Generator | None, temporal: int | None,
              spatial: int | None) -> dict:
        """Decode, sample and transform one clip; returns the video fields (and a new label after a flip)."""
        spec = self.spec
        reader = self.open_reader(entry.path)
        try:
            idx = sample_indices(
                spec.sampling_mode, reader.num_frames, reader.fps,
                num_input_frames=spec.num_input_frames, sampling_rate=spec.sampling_rate,
                target_fps=spec.target_fps, view=temporal,
                num_views=spec.num_temporal_views if self.split == "test" else 1,
                rng=rng, minus_interval=spec.minus_interval,
            )
            if spec.gpu_decode:
                jpegs = reader.get_jpeg_bytes(idx)
                height, width = reader.height, reader.width
            else:
                clip = torch.from_numpy(reader.get_frames(idx))
                height, width = clip.shape[1], clip.shape[2]
        finally:
            reader.close()
        out: dict = {}
        if rng is not None:
            flip = spec.hflip and bool(rng.random() < 0.5)
            if flip and entry.label in spec.flip_pairs:
                out["label"] = spec.flip_pairs[entry.label]
            if spec.resized_crop:
                box = random_resized_box(height, width, scale=spec.train_scales, ratio=spec.crop_ratio, rng=rng)
                if spec.rand_augment is not None and not (spec.gpu_decode or spec.gpu_resize):
                    # RandAugment reads the official 8-bit crop: computed as officially, box only
                    crop = resized_crop_uint8(clip, box, size=spec.train_crop, hflip=flip)
                    out["video"] = self._augmented(crop, rng)
                    return out
                plan = plan_resized_crop(height, width, box=box, size=spec.train_crop, hflip=flip)
            else:
                plan = plan_train_crop(height, width, scales=spec.train_scales, crop=spec.train_crop,
                                       rng=rng, hflip=flip)
        else:
            plan = plan_test_crop(height, width, scale=spec.test_scale, crop=spec.test_crop,
                                  spatial_index=spatial,
                                  num_crops=spec.num_spatial_crops if self.split == "test" else 1)
        if spec.gpu_decode:
            out.update(jpeg_clip_fields(jpegs, plan))
        elif spec.gpu_resize:
            out.update(video=extract_box(clip, plan), rows0=plan.rows0, rows1=plan.rows1, row_w=plan.row_w,
                       cols0=plan.cols0, cols1=plan.cols1, col_w=plan.col_w)
        elif rng is not None and spec.uint8_augment:
            out["video"] = self._augmented(apply_plan(clip, plan), rng)
        else:
            out["video"] = normalize_(apply_plan(clip, plan), spec.mean, spec.std)
        return out

    def _augmented(self, video: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """RandAugment on the crop as uint8 (truncated, as officially), grayscale, normalise, erase.

        ``video`` is the (C, T, H, W) crop: uint8, or float on the 0..255 scale."""
        spec = self.spec
        if spec.rand_augment is not None:
            # The 8-bit crop: the bilinear values lie in 0..255, so the conversion truncates = floors.
            crop = video if video.dtype == torch.uint8 else video.to(torch.uint8)
            video = torch.empty(crop.shape).copy_(spec.rand_augment(crop, rng, fill=spec.fill))
        if spec.grayscale_prob > 0 and rng.random() < spec.grayscale_prob:
            grayscale_(video)
        normalize_(video, spec.mean, spec.std)
        if spec.erasing is not None:
            spec.erasing(video, rng)
        return video

    def _failed_video(self) -> dict:
        """A zero video with the shape a good item of this split has, so batches still collate."""
        spec = self.spec
        size = spec.train_crop if self.split == "train" else spec.test_crop
        if spec.gpu_decode:
            return failed_jpeg_clip_fields(spec.num_input_frames, size)
        if spec.gpu_resize:
            zeros = torch.zeros(size, dtype=torch.long)
            return {"video": torch.zeros(3, spec.num_input_frames, 1, 1, dtype=torch.uint8),
                    "rows0": zeros, "rows1": zeros, "row_w": torch.zeros(size),
                    "cols0": zeros, "cols1": zeros, "col_w": torch.zeros(size)}
        return {"video": torch.zeros(3, spec.num_input_frames, size, size)}


# ---------------------------------------------------------------------------------------------
# From a config
# ---------------------------------------------------------------------------------------------
_KINDS = {"kinetics400": "kinetics400", "k400": "kinetics400", "kinetics": "kinetics400",
          "ssv2": "ssv2", "something-something-v2": "ssv2", "list": "list", "synthetic": "synthetic"}


def dataset_kind(name: str) -> str:
    """The canonical dataset kind of a TRAIN.DATASET / TEST.DATASET value (case-insensitive)."""
    try:
        return _KINDS[name.strip().lower()]
    except KeyError:
        raise ValueError(
            f"unknown dataset '{name}'; choose one of kinetics400 (k400), ssv2, list, synthetic"
        ) from None


def _anno_dir(cfg) -> str:
    return cfg.DATA.ANNO_DIR or cfg.DATA.DATA_ROOT_DIR


def _anno_path(cfg, name: str) -> Path:
    path = Path(os.path.expanduser(name))
    return path if path.is_absolute() else Path(_anno_dir(cfg)) / path


def _split_list_key(split: str) -> str:
    return {"train": "TRAIN_LIST", "val": "VAL_LIST", "test": "TEST_LIST"}[split]


def _list_entries(cfg, split: str, kind: str, class_names: list[str] | None) -> list[VideoEntry]:
    custom = getattr(cfg.DATA, _split_list_key(split))
    if custom:
        name = custom
    elif kind == "kinetics400":
        name = f"kinetics400_{split}_list.txt"
    elif kind == "synthetic":
        name = f"{split}_list.txt"
    else:
        raise AnnotationError(f"dataset 'list' needs DATA.{_split_list_key(split)} (a file in DATA.ANNO_DIR)")
    path = _anno_path(cfg, name)
    if not path.is_file():
        where = f"DATA.ANNO_DIR {cfg.DATA.ANNO_DIR}" if cfg.DATA.ANNO_DIR else \
            f"DATA.ANNO_DIR, which defaults to DATA.DATA_ROOT_DIR {cfg.DATA.DATA_ROOT_DIR}"
        raise AnnotationError(f"{split} video list not found: {path} (looked in {where}; set DATA.ANNO_DIR to "
                              f"the folder of the lists, or DATA.{_split_list_key(split)} to the file)")
    return read_video_list(path, root=cfg.DATA.DATA_ROOT_DIR,
                           num_classes=cfg.VIDEO.HEAD.NUM_CLASSES, class_names=class_names)


def _class_names(cfg, kind: str) -> list[str] | None:
    if cfg.DATA.CLASS_NAMES_FILE:
        names = read_class_names(_anno_path(cfg, cfg.DATA.CLASS_NAMES_FILE))
    elif kind == "synthetic":
        names = read_class_names(_anno_path(cfg, "classes.txt"))
    elif kind == "ssv2":
        labels = _anno_path(cfg, "something-something-v2-labels.json")
        names = read_ssv2_labels(labels) if labels.is_file() else None
    else:
        names = None
    if names is not None and len(names) != cfg.VIDEO.HEAD.NUM_CLASSES:
        raise AnnotationError(
            f"{len(names)} class names but VIDEO.HEAD.NUM_CLASSES is {cfg.VIDEO.HEAD.NUM_CLASSES}"
        )
    return names


def _ssv2_entries(cfg, split: str, labels: list[str] | None) -> list[VideoEntry]:
    """Preprocessed ``-with-label.json`` (mp4 re-encodes) if present, else the dataset's own JSON (webm)."""
    part = "train" if split == "train" else "validation"
    custom = getattr(cfg.DATA, _split_list_key(split))
    pre = _anno_path(cfg, custom or f"something-something-v2-{part}-with-label.json")
    raw = _anno_path(cfg, f"something-something-v2-{part}.json")
    common = dict(root=cfg.DATA.DATA_ROOT_DIR, num_classes=cfg.VIDEO.HEAD.NUM_CLASSES, labels=labels)
    if pre.is_file():
        return read_ssv2_split(pre, extension=".mp4", **common)
    if raw.is_file():
        if labels is None:
            raise AnnotationError(f"{raw} needs something-something-v2-labels.json in {_anno_dir(cfg)}")
        return read_ssv2_split(raw, extension=".webm", **common)
    raise AnnotationError(f"SSv2 {split} annotations not found: neither {pre} nor {raw}")


def _open_frame_folder(path: str, *, root: str, frames_dir: str) -> VideoReader:
    """The frame folder of a listed video (``DATA.FORMAT frames``), named by its path under ``root``."""
    from tada.data.frames import folder_for_video, open_frames

    return open_frames(folder_for_video(frames_dir, os.path.relpath(path, root)))


def _reader_factory(cfg) -> Callable[[str], VideoReader]:
    if cfg.DATA.FORMAT == "frames":
        from tada.data.frames import frames_dir_from_config

        return functools.partial(_open_frame_folder, root=cfg.DATA.DATA_ROOT_DIR,
                                 frames_dir=frames_dir_from_config(cfg))
    if cfg.DATA.DECODER != "pyav":
        _check_backend(cfg.DATA.DECODER)
    return functools.partial(open_video, backend=cfg.DATA.DECODER, threads=cfg.DATA.DECODER_THREADS)


def _check_backend(backend: str) -> None:
    """Fail at start-up, not in a worker, when an optional decoder is not installed."""
    import importlib

    module = {"decord": "decord", "torchcodec": "torchcodec.decoders"}[backend]
    try:
        importlib.import_module(module)
    except (ImportError, OSError, RuntimeError) as exc:
        raise ImportError(
            f"DATA.DECODER '{backend}' is not usable here ({exc}); install it with "
            f"`pip install {backend}` (a build matching torch for torchcodec) or set DATA.DECODER pyav"
        ) from exc


def _recipe_augmentations(cfg) -> dict:
    """ClipSpec fields for the crop aspect range, RandAugment, grayscale and random erasing."""
    a = cfg.AUGMENTATION
    if len(a.RATIO) != 2 or not 0 < a.RATIO[0] <= a.RATIO[1]:
        raise ConfigError(f"AUGMENTATION.RATIO needs [min, max] aspect ratios, got {list(a.RATIO)}")
    out: dict = {"crop_ratio": (float(a.RATIO[0]), float(a.RATIO[1]))}
    if a.AUTOAUGMENT.ENABLE:
        try:
            out["rand_augment"] = parse_rand_augment(a.AUTOAUGMENT.TYPE)
        except ValueError as err:
            raise ConfigError(str(err)) from None
    if a.COLOR_AUG:
        if not 0 <= a.GRAYSCALE <= 1:
            raise ConfigError(f"AUGMENTATION.GRAYSCALE is a probability, got {a.GRAYSCALE}")
        out["grayscale_prob"] = float(a.GRAYSCALE)
    er = a.RANDOM_ERASING
    if er.ENABLE:
        if er.NUM_SPLITS not in (0, 1):
            raise ConfigError(f"AUGMENTATION.RANDOM_ERASING.NUM_SPLITS {er.NUM_SPLITS}: only 0 is supported")
        try:
            out["erasing"] = RandomErasing(prob=float(er.PROB), mode=er.MODE, count=tuple(int(c) for c in er.COUNT),
                                           area_range=tuple(float(v) for v in er.AREA_RANGE),
                                           min_aspect=float(er.MIN_ASPECT))
        except (ValueError, TypeError) as err:
            raise ConfigError(str(err)) from None
    return out


def build_dataset(cfg, split: str) -> VideoDataset:
    """The dataset of ``split`` ('train', 'val', 'test') as the config describes it.

    train and val read TRAIN.DATASET, test reads TEST.DATASET. val is a single deterministic
    view (centre clip, centre crop) of the val list; test has TEST.NUM_ENSEMBLE_VIEWS x
    TEST.NUM_SPATIAL_CROPS views per video of the test list (SSv2: the validation JSON).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got '{split}'")
    kind = dataset_kind(cfg.TRAIN.DATASET if split in ("train", "val") else cfg.TEST.DATASET)
    if not cfg.DATA.DATA_ROOT_DIR:
        raise AnnotationError("DATA.DATA_ROOT_DIR is not set (the directory holding the videos)")
    if not os.path.isdir(cfg.DATA.DATA_ROOT_DIR):
        raise AnnotationError(f"DATA.DATA_ROOT_DIR {cfg.DATA.DATA_ROOT_DIR}: no such directory (the videos' root)")
    class_names = _class_names(cfg, kind)
    if kind == "ssv2":
        entries = _ssv2_entries(cfg, split, class_names)
        flip = cfg.AUGMENTATION.SSV2_FLIP
        if class_names is not None:
            pairs = mirrored_pairs(class_names)
        else:
            pairs = dict(SSV2_OFFICIAL_FLIP_PAIRS)
            if flip and split == "train":
                log.warning("SSv2 labels file not found in %s: using the official left/right swap table %s",
                            _anno_dir(cfg), SSV2_OFFICIAL_FLIP_PAIRS)
    else:
        entries = _list_entries(cfg, split, kind, class_names)
        flip = cfg.AUGMENTATION.HFLIP
        pairs = mirrored_pairs(class_names) if class_names else {}
    if flip and pairs and split == "train":
        log.info("horizontal flip swaps the mirrored classes %s", sorted((a, b) for a, b in pairs.items() if a < b))
    d, a = cfg.DATA, cfg.AUGMENTATION
    spec = ClipSpec(
        sampling_mode=d.SAMPLING_MODE,
        num_input_frames=d.NUM_INPUT_FRAMES,
        sampling_rate=d.SAMPLING_RATE,
        target_fps=d.TARGET_FPS,
        train_scales=tuple(d.TRAIN_JITTER_SCALES),
        train_crop=d.TRAIN_CROP_SIZE,
        test_scale=d.TEST_SCALE,
        test_crop=d.TEST_CROP_SIZE,
        mean=tuple(d.MEAN),
        std=tuple(d.STD),
        num_temporal_views=cfg.TEST.NUM_ENSEMBLE_VIEWS,
        num_spatial_crops=cfg.TEST.NUM_SPATIAL_CROPS,
        minus_interval=d.MINUS_INTERVAL,
        hflip=bool(flip),
        flip_pairs=pairs,
        gpu_resize=a.USE_GPU,
        gpu_decode=a.USE_GPU and d.FORMAT == "frames",
    )
    spec = replace(spec, **_recipe_augmentations(cfg))
    if a.USE_GPU and split == "train" and spec.uint8_augment:
        raise ConfigError("AUGMENTATION.USE_GPU resizes on the GPU, after the worker: it cannot be combined with "
                          "AUTOAUGMENT, COLOR_AUG or RANDOM_ERASING (set AUGMENTATION.USE_GPU false)")
    if d.FORMAT == "frames":  # every listed video must name a frame folder: fail now, not mid-epoch
        from tada.data.frames import folder_for_video, frames_dir_from_config

        frames_dir = frames_dir_from_config(cfg)
        for k, entry in enumerate(entries, 1):
            try:
                folder_for_video(frames_dir, os.path.relpath(entry.path, cfg.DATA.DATA_ROOT_DIR))
            except AnnotationError as err:
                raise AnnotationError(f"{split} list, video {k} ({entry.path}): {err}") from None
    if len(spec.train_scales) != 2:
        raise ConfigError(f"DATA.TRAIN_JITTER_SCALES needs [min, max], got {list(spec.train_scales)}")
    if split == "test" and spec.num_spatial_crops not in (1, 3):
        raise ConfigError(f"TEST.NUM_SPATIAL_CROPS must be 1 or 3, got {spec.num_spatial_crops}")
    if split != "train" and spec.test_crop > spec.test_scale:
        raise ConfigError(f"DATA.TEST_CROP_SIZE {spec.test_crop} must be <= DATA.TEST_SCALE {spec.test_scale}")
    return VideoDataset(entries, split=split, spec=spec, open_reader=_reader_factory(cfg),
                        class_names=class_names, name=kind)

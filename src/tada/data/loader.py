"""DataLoaders for video datasets: batching, sampling, seeding, failure accounting, GPU resize.

:func:`build_loader` returns a :class:`VideoLoader`, a DataLoader that also counts the videos
that failed to decode in each pass over the data. Failures travel inside the batches
(``batch["failures"]``: per item, the "path: reason" of each video replaced before it;
``batch["failed"]``: items that could not be decoded at val/test), so counting works with any
number of worker processes. After a pass, ``loader.last_stats`` holds the counts; a training pass
stops with :class:`~tada.data.datasets.DataFailureError` as soon as the clips that met a broken
video exceed ``DATA.MAX_FAILURE_RATIO`` of the pass (a clip counts once, however many of its
random replacements failed too, so the ratio estimates the share of broken videos).

With ``AUGMENTATION.USE_GPU`` the workers only decode and cut the uint8 source region of each
crop; :func:`gpu_transform` resizes and normalises the batch on the device.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler, Sampler, SequentialSampler

from tada.data.datasets import DataFailureError, build_dataset
from tada.data.transforms import normalize_, resize_boxes

__all__ = ["VideoLoader", "PassStats", "build_loader", "collate", "gpu_transform"]

log = logging.getLogger(__name__)

_TAP_KEYS = ("rows0", "rows1", "row_w", "cols0", "cols1", "col_w")


def collate(items: Sequence[dict]) -> dict:
    """Stack tensors (padding uint8 source boxes of different sizes), numbers -> tensors, rest -> lists."""
    out: dict = {}
    for key in items[0]:
        values = [item[key] for item in items]
        first = values[0]
        if isinstance(first, torch.Tensor):
            if any(v.shape != first.shape for v in values):
                out[key] = _pad_stack(key, values)
            else:
                out[key] = torch.stack(values)
        elif isinstance(first, bool):
            out[key] = torch.tensor(values, dtype=torch.bool)
        elif isinstance(first, int):
            out[key] = torch.tensor(values, dtype=torch.long)
        elif isinstance(first, float):
            out[key] = torch.tensor(values, dtype=torch.float32)
        else:
            out[key] = values
    return out


def _pad_stack(key: str, values: list[torch.Tensor]) -> torch.Tensor:
    """Zero-pad the last two dims to the batch maximum (only the GPU route's uint8 boxes differ)."""
    if key != "video" or any(v.dim() != values[0].dim() or v.shape[:-2] != values[0].shape[:-2] for v in values):
        raise ValueError(f"cannot batch '{key}': shapes {[tuple(v.shape) for v in values]}")
    h = max(v.shape[-2] for v in values)
    w = max(v.shape[-1] for v in values)
    out = values[0].new_zeros((len(values), *values[0].shape[:-2], h, w))
    for i, v in enumerate(values):
        out[i, ..., : v.shape[-2], : v.shape[-1]] = v
    return out


def gpu_transform(batch: dict, cfg, device: torch.device | str) -> dict:
    """Finish a USE_GPU batch on ``device``: bilinear resize+crop of the uint8 boxes, then normalise.

    Returns the batch with ``video`` float (B, C, T, H, W) on ``device`` and the tap tensors
    removed; a batch that is already float (USE_GPU off) is only moved.
    """
    if "jpegs" in batch:  # frame folders with USE_GPU: the JPEGs are decoded on the device first
        from tada.data.frames import gpu_decode_transform

        return gpu_decode_transform(batch, mean=cfg.DATA.MEAN, std=cfg.DATA.STD, device=device)
    video = batch["video"]
    out = {k: v for k, v in batch.items() if k not in _TAP_KEYS}
    if video.dtype != torch.uint8:
        out["video"] = video.to(device, non_blocking=True)
        return out
    taps = [batch[k].to(device, non_blocking=True) for k in _TAP_KEYS]
    resized = resize_boxes(video.to(device, non_blocking=True), *taps)
    out["video"] = normalize_(resized, cfg.DATA.MEAN, cfg.DATA.STD)
    return out


@dataclass
class PassStats:
    """Failure counts of one pass over a loader."""

    items: int = 0
    failed_items: int = 0          # val/test: items with failed=True (excluded, never replaced)
    replaced: int = 0              # train: clips whose video failed and was replaced (once per clip, however
                                   # many of its replacements failed too)
    failures: list[str] = field(default_factory=list)  # "path: reason" of each failure

    @property
    def failure_ratio(self) -> float:
        return (self.failed_items + self.replaced) / max(self.items, 1)


class VideoLoader(DataLoader):
    """A DataLoader that accounts for undecodable videos in every pass (see the module docstring)."""

    def __init__(self, dataset: Dataset, *, max_failure_ratio: float, **kwargs) -> None:
        super().__init__(dataset, **kwargs)
        self.max_failure_ratio = max_failure_ratio
        self.last_stats = PassStats()

    def __iter__(self):
        stats = PassStats()
        self.last_stats = stats
        expected = len(self.batch_sampler.sampler) if self.batch_sampler is not None else len(self.dataset)
        budget = self.max_failure_ratio * expected
        name = getattr(self.dataset, "name", "data")
        split = getattr(self.dataset, "split", "")
        for batch in super().__iter__():
            stats.items += len(batch["index"])
            for per_item in batch["failures"]:
                stats.replaced += bool(per_item)
                stats.failures.extend(per_item)
            failed = batch["failed"]
            if bool(failed.any()):
                stats.failed_items += int(failed.sum())
                stats.failures.extend(f"{p}: {e}" for p, e, f in zip(batch["path"], batch["error"], failed) if f)
            if split == "train" and stats.replaced > budget:
                raise DataFailureError(
                    f"{name}/train: {stats.replaced} of {stats.items} clips met a video that failed to decode (more "
                    f"than DATA.MAX_FAILURE_RATIO={self.max_failure_ratio} of the {expected} clips of this epoch). "
                    f"First failures: {stats.failures[:5]}"
                )
            yield batch
        if stats.replaced or stats.failed_items:
            what = (f"{stats.replaced} failed videos replaced" if split == "train"
                    else f"{stats.failed_items} failed items excluded")
            log.warning("%s/%s pass: %d items, %s (%.2f%%)", name, split, stats.items, what,
                        100 * stats.failure_ratio)


def build_loader(cfg, split: str, *, rank: int = 0, world_size: int = 1, seed: int | None = None,
                 sampler: Sampler | None = None, dataset: Dataset | None = None,
                 pin_memory: bool | None = None) -> VideoLoader:
    """The loader of ``split`` for one process of ``world_size``.

    Per-process batch = global batch (TRAIN.BATCH_SIZE or TEST.BATCH_SIZE) // world_size.
    ``sampler`` chooses the items of this process; several processes need one that shards the
    data (the engine's :mod:`tada.engine.samplers` over a ``SeededDataset``). Without it, one
    process reads train in a random order (seeded) and val/test in order. Train drops the last
    partial batch. ``seed`` (default RANDOM_SEED) seeds the shuffling and the workers' augmentation RNG.
    The loader has its own generator, so creating an iterator never draws from the global torch
    generator (which a training loop's dropout uses). ``pin_memory`` (default
    DATA_LOADER.PIN_MEMORY) pins batches for asynchronous copies when CUDA is available.
    """
    dataset = build_dataset(cfg, split) if dataset is None else dataset
    train = split == "train"
    global_batch = cfg.TRAIN.BATCH_SIZE if train else cfg.TEST.BATCH_SIZE
    batch_size = global_batch // world_size
    if batch_size < 1:
        key = "TRAIN.BATCH_SIZE" if train else "TEST.BATCH_SIZE"
        raise ValueError(f"{key}={global_batch} is the global batch; it is smaller than world_size={world_size}")
    seed = cfg.RANDOM_SEED if seed is None else seed
    generator = torch.Generator().manual_seed(seed + 1_000_003 * rank)
    if sampler is None:
        if world_size > 1:
            raise ValueError(f"{split}: a loader for one of {world_size} processes needs a sampler that shards the "
                             f"data (tada.engine.samplers.TrainSampler or EvalSampler over a SeededDataset)")
        sampler = RandomSampler(dataset, generator=generator) if train else SequentialSampler(dataset)
    if train and len(sampler) < batch_size:
        raise ValueError(f"{split}: {len(sampler)} clips per process, fewer than one batch of {batch_size}")
    workers = cfg.DATA_LOADER.NUM_WORKERS
    extra = {}
    if workers > 0:
        extra = dict(persistent_workers=cfg.DATA_LOADER.PERSISTENT_WORKERS,
                     prefetch_factor=cfg.DATA_LOADER.PREFETCH_FACTOR)
    return VideoLoader(
        dataset,
        max_failure_ratio=cfg.DATA.MAX_FAILURE_RATIO,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate,
        pin_memory=(cfg.DATA_LOADER.PIN_MEMORY if pin_memory is None else pin_memory) and torch.cuda.is_available(),
        drop_last=train,
        generator=generator,
        **extra,
    )

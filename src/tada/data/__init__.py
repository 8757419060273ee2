"""Video data: frame-exact decoding, the official samplers, transforms, datasets and loaders.

Public entry points::

    from tada.data import build_dataset, build_loader, gpu_transform
    ds = build_dataset(cfg, "train")          # items: video (C,T,H,W) float, label, index, path, ...
    loader = build_loader(cfg, "train", rank=0, world_size=1)

Layers, each usable alone: :mod:`~tada.data.decode` (readers), :mod:`~tada.data.frame_indices`
(frame indices), :mod:`~tada.data.transforms` (crop plans), :mod:`~tada.data.annotations`
(list/JSON files), :mod:`~tada.data.datasets`, :mod:`~tada.data.loader`,
:mod:`~tada.data.synthetic` (the generated dataset).
"""

from tada.data.annotations import AnnotationError, VideoEntry, mirrored_pairs, read_class_names
from tada.data.datasets import ClipSpec, DataFailureError, VideoDataset, build_dataset, dataset_kind
from tada.data.decode import DecodeError, VideoReader, open_video
from tada.data.frame_indices import interval_indices, sample_indices, segment_indices
from tada.data.loader import PassStats, VideoLoader, build_loader, collate, gpu_transform

__all__ = [
    "AnnotationError",
    "ClipSpec",
    "DataFailureError",
    "DecodeError",
    "PassStats",
    "VideoDataset",
    "VideoEntry",
    "VideoLoader",
    "VideoReader",
    "build_dataset",
    "build_loader",
    "collate",
    "dataset_kind",
    "gpu_transform",
    "interval_indices",
    "mirrored_pairs",
    "open_video",
    "read_class_names",
    "sample_indices",
    "segment_indices",
]

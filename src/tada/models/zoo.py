"""The official model zoo (TAda2D, TAdaFormer) as data: how each checkpoint must be fed, and what it reported.

A checkpoint is useless without its preprocessing and view protocol, so each entry carries both
(torchvision-style weights metadata). Figures are the official README / MODEL_ZOO values
(spec section 7); checkpoint files are not shipped (Google Drive / Baidu) and never downloaded:
pass a local file to ``create_model(..., checkpoint_path=...)``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

__all__ = ["ZOO", "ZooEntry", "get_weights", "list_weights"]


@dataclass(frozen=True)
class ZooEntry:
    """One zoo checkpoint: architecture, input protocol, test views and reported accuracy."""

    name: str
    model: str
    dataset: str
    num_classes: int
    num_frames: int
    sampling_mode: str  # interval_based (rate in frames at TARGET_FPS 30) | segment_based
    sampling_rate: int | None
    train_crop: int
    test_scale: int  # short side before the test crops
    test_crop: int
    views: tuple[int, int]  # (temporal clips, spatial crops) of the reported accuracy
    top1: float | None  # None: the release reports no accuracy (pre-training checkpoints)
    top5: float | None
    config: str
    mean: tuple[float, float, float] = (0.45, 0.45, 0.45)
    std: tuple[float, float, float] = (0.225, 0.225, 0.225)
    init: str = "in1k"
    notes: str = ""
    extra: dict = field(default_factory=dict)
    model_kwargs: dict = field(default_factory=dict)  # architecture options the checkpoint was built with

    def as_dict(self) -> dict:
        return asdict(self)


_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
_TADAFORMER_CONFIGS = "configs/projects/tadaformer/tadaformer_{}_{}_16f.yaml"
_SSV2_ARCH = dict(temp_enhance=True, double_tada=True)


def _tadaformer(size: str, tag: str, dataset: str, classes: int, frames: int, views: tuple[int, int],
                top1: float | None, *, notes: str = "", **model_kwargs) -> ZooEntry:
    """A TAdaFormer release: CLIP normalisation, segment sampling, 224 test scale and crops, top-1 only."""
    config = _TADAFORMER_CONFIGS.format(size, "ssv2" if dataset == "ssv2" else "k400")
    if frames != 16 or classes not in (400, 174):
        notes = (notes + "; " if notes else "") + (
            f"no official config for this checkpoint: use {config} with DATA.NUM_INPUT_FRAMES {frames}"
            + (f" and VIDEO.HEAD.NUM_CLASSES {classes}" if classes not in (400, 174) else ""))
    return ZooEntry(f"tadaformer_{size}.{tag}", f"tadaformer_{size}", dataset, classes, frames, "segment_based", None,
                    224, 224, 224, views, top1, None, config, _CLIP_MEAN, _CLIP_STD, "clip", notes,
                    model_kwargs={"num_frames": frames, **model_kwargs})


_K710 = "CLIP, then Kinetics-710 pre-training"
_ARCH_ASSUMED = "architecture of the K400 models assumed (the release names no config)"
# TAdaConvV2 model zoo, TAdaFormer rows: per-view GMACs 153.6 (B/16) / 702.6 (L/14) at 16x224, 187.0 /
# 857.7 with the SSv2 branches; accuracy from the official MODEL_ZOO, K400 with 4 clips x 3 crops
# (the official run.py itself tests 10 x 3), SSv2 with 2 clips x 3 crops; no top-5 is published.
TADAFORMER_ZOO: tuple[ZooEntry, ...] = (
    _tadaformer("b16", "k400_16f", "kinetics400", 400, 16, (4, 3), 84.5),
    _tadaformer("b16", "k400_k710_16f", "kinetics400", 400, 16, (4, 3), 86.6, notes=_K710),
    _tadaformer("l14", "k400_16f", "kinetics400", 400, 16, (4, 3), 87.6),
    _tadaformer("l14", "k400_k710_16f", "kinetics400", 400, 16, (4, 3), 88.9, notes=_K710),
    _tadaformer("l14", "k400_k710_32f", "kinetics400", 400, 32, (4, 3), 89.5, notes=_K710),
    _tadaformer("l14", "k400_k710_64f", "kinetics400", 400, 64, (4, 3), 89.9, notes=_K710),
    _tadaformer("b16", "ssv2_16f", "ssv2", 174, 16, (2, 3), 70.4, notes="SSv1: 59.2", **_SSV2_ARCH),
    _tadaformer("b16", "ssv2_32f", "ssv2", 174, 32, (2, 3), 71.3, notes="SSv1: 61.2", **_SSV2_ARCH),
    _tadaformer("l14", "ssv2_16f", "ssv2", 174, 16, (2, 3), 72.4, notes="SSv1: 62.0", **_SSV2_ARCH),
    _tadaformer("l14", "ssv2_32f", "ssv2", 174, 32, (2, 3), 73.6, notes="SSv1: 63.7", **_SSV2_ARCH),
    _tadaformer("b16", "k710_16f", "kinetics710", 710, 16, (4, 3), None, notes=f"{_K710}; {_ARCH_ASSUMED}"),
    _tadaformer("l14", "k710_16f", "kinetics710", 710, 16, (4, 3), None, notes=f"{_K710}; {_ARCH_ASSUMED}"),
    _tadaformer("l14", "k710_32f", "kinetics710", 710, 32, (4, 3), None, notes=f"{_K710}; {_ARCH_ASSUMED}"),
    _tadaformer("l14", "k710_64f", "kinetics710", 710, 64, (4, 3), None, notes=f"{_K710}; {_ARCH_ASSUMED}"),
)

ZOO: dict[str, ZooEntry] = {
    e.name: e
    for e in (
        ZooEntry("tada2d_r50.k400_8x8", "tada2d_r50", "kinetics400", 400, 8, "interval_based", 8, 224, 256, 256,
                 (10, 3), 76.7, 92.6, "configs/projects/tada/k400/tada2d_8x8.yaml"),
        ZooEntry("tada2d_r50.k400_16x5", "tada2d_r50", "kinetics400", 400, 16, "interval_based", 5, 224, 256, 256,
                 (10, 3), 77.4, 93.1, "configs/projects/tada/k400/tada2d_16x5.yaml"),
        ZooEntry("tada2d_r50.ssv2_8f", "tada2d_r50", "ssv2", 174, 8, "segment_based", None, 224, 256, 256,
                 (2, 3), 64.2, 88.0, "configs/projects/tada/ssv2/tada2d_8f.yaml",
                 notes="README says 64.0 top-1, MODEL_ZOO.md 64.2"),
        ZooEntry("tada2d_r50.ssv2_16f", "tada2d_r50", "ssv2", 174, 16, "segment_based", None, 224, 256, 256,
                 (2, 3), 65.6, 89.1, "configs/projects/tada/ssv2/tada2d_16f.yaml"),
        *TADAFORMER_ZOO,
    )
}


def list_weights() -> list[str]:
    return sorted(ZOO)


def get_weights(name: str) -> ZooEntry:
    """The zoo entry ``"<model>.<tag>"``; an unknown name is an error listing the known ones."""
    if name not in ZOO:
        raise KeyError(f"unknown zoo entry {name!r}; known: {list_weights()}")
    return ZOO[name]

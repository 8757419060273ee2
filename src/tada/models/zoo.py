"""The official TAda2D model zoo as data: how each checkpoint must be fed, and what it reported.

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
    views: tuple[int, int]  # (temporal clips, spatial crops)
    top1: float
    top5: float
    config: str
    mean: tuple[float, float, float] = (0.45, 0.45, 0.45)
    std: tuple[float, float, float] = (0.225, 0.225, 0.225)
    init: str = "in1k"
    notes: str = ""
    extra: dict = field(default_factory=dict)
    model_kwargs: dict = field(default_factory=dict)  # architecture options the checkpoint was built with

    def as_dict(self) -> dict:
        return asdict(self)


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
    )
}


def list_weights() -> list[str]:
    return sorted(ZOO)


def get_weights(name: str) -> ZooEntry:
    """The zoo entry ``"<model>.<tag>"``; an unknown name is an error listing the known ones."""
    if name not in ZOO:
        raise KeyError(f"unknown zoo entry {name!r}; known: {list_weights()}")
    return ZOO[name]

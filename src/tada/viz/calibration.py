""""What a TAdaConv sees": calibration weights of a trained TAda2D against a TSN's per-frame features.

One test clip and its exact time-reversal (the same frames, played backwards) go through both
trained models. A TSN computes each frame on its own and averages the frame features: the
reversal's per-frame features are the video's in reverse order, their average is the same, and so
is the prediction. A TAda2D calibrates each frame's convolution weights (alpha) from its temporal
context, so the same picture gets another alpha when its neighbours come in the other order, and
the prediction can differ. The figure puts both side by side:

* TAda2D: alpha over the clip's frames for a few channels of one block, and the per-frame mean of
  alpha over all channels of that block, for the video and its reversal. The block and channels are
  those whose alpha depends most on frame order: the largest ``|alpha_video[t] -
  alpha_reversed[T-1-t]|`` (the same picture, calibrated in the two orders); a frame-order-blind
  model would give 0 there.
* TSN: the per-frame pooled backbone features (projected on their first principal component) for
  the video and its reversal, and their clip average: what TSN's head classifies.

Each panel title gives the model's prediction (class name, probability) for both clips.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from tada.config import Config, load_config
from tada.errors import TadaError
from tada.fileio import atomic_open
from tada.ops.routing import RouteFuncMLP

__all__ = [
    "CalibrationFigure",
    "Prediction",
    "calibration_figure_data",
    "first_principal_component",
    "frame_features",
    "load_trained_run",
    "most_order_sensitive",
    "plot_calibration",
    "route_alphas",
    "write_calibration_figure",
]


@dataclass(frozen=True)
class Prediction:
    """The top class of one clip."""

    name: str
    prob: float

    def __str__(self) -> str:
        return f"{self.name} ({self.prob:.2f})"

    def as_dict(self) -> dict[str, Any]:
        return {"class": self.name, "prob": self.prob}


@dataclass
class CalibrationFigure:
    """Everything the figure draws; arrays are (T, ...) over the clip's frames as played."""

    video: str
    label: str
    block: str
    channels: list[int]
    alpha_video: np.ndarray  # (T, C) alpha of ``block`` for the video
    alpha_reversed: np.ndarray  # (T, C) for the reversed clip
    order_sensitivity: float  # max |alpha_video[t] - alpha_reversed[T-1-t]| over the chosen channels
    tsn_video: np.ndarray  # (T,) per-frame TSN features on their first principal component
    tsn_reversed: np.ndarray  # (T,)
    tsn_mirror_error: float  # max |f_video[t] - f_reversed[T-1-t]| over all feature channels
    tada_pred: tuple[Prediction, Prediction]  # (video, reversed)
    tsn_pred: tuple[Prediction, Prediction]

    def summary(self) -> dict[str, Any]:
        """The JSON-friendly facts of the figure (for a report next to it)."""
        return {
            "video": self.video, "label": self.label, "block": self.block, "channels": self.channels,
            "order_sensitivity": self.order_sensitivity, "tsn_mirror_error": self.tsn_mirror_error,
            "tada2d": {"video": self.tada_pred[0].as_dict(), "reversed": self.tada_pred[1].as_dict()},
            "tsn": {"video": self.tsn_pred[0].as_dict(), "reversed": self.tsn_pred[1].as_dict()},
        }


# ---------------------------------------------------------------------------------------------
# What the models compute on one clip
# ---------------------------------------------------------------------------------------------
def route_alphas(model: nn.Module, clip: Tensor) -> tuple[Tensor, dict[str, np.ndarray]]:
    """Logits of one clip (1, C, T, H, W) and the alpha (T, C') of every routing function, by module name.

    Forward hooks on the :class:`RouteFuncMLP` modules read their outputs, which come either as
    (1, C', T, 1, 1) or, for frame-layout callers, as (T, C', 1, 1); the hooks are removed afterwards.
    """
    if clip.dim() != 5 or clip.shape[0] != 1:
        raise ValueError(f"route_alphas takes one clip (1, C, T, H, W), got shape {tuple(clip.shape)}")
    num_frames = clip.shape[2]
    alphas: dict[str, np.ndarray] = {}

    def keep(name: str):
        def hook(module: nn.Module, inputs: Any, output: Tensor) -> None:
            a = output.detach().to(torch.float64)
            a = a[0, :, :, 0, 0].transpose(0, 1) if a.dim() == 5 else a.reshape(num_frames, -1)
            alphas[name] = a.cpu().numpy()
        return hook

    handles = [m.register_forward_hook(keep(name)) for name, m in model.named_modules()
               if isinstance(m, RouteFuncMLP)]
    if not handles:
        raise ValueError(f"{type(model).__name__} has no RouteFuncMLP: no calibration weights to show")
    try:
        with torch.no_grad():
            logits = model(clip)
    finally:
        for handle in handles:
            handle.remove()
    return logits[0], alphas


def frame_features(model: nn.Module, clip: Tensor) -> tuple[Tensor, np.ndarray]:
    """Logits of one clip (1, C, T, H, W) and its per-frame pooled backbone features (T, C).

    The head classifies the mean of these over frames (``forward_head`` pools T, H and W).
    """
    with torch.no_grad():
        feats = model.forward_features(clip)  # (1, C, T, h, w)
        logits = model.forward_head(feats)
    per_frame = feats[0].mean(dim=(2, 3)).transpose(0, 1)  # (T, C)
    return logits[0], per_frame.to(torch.float64).cpu().numpy()


def most_order_sensitive(alpha_video: dict[str, np.ndarray], alpha_reversed: dict[str, np.ndarray], *,
                         channels: int = 3) -> tuple[str, list[int], float]:
    """The block and channels whose alpha depends most on frame order, and that dependence.

    Frame t of the reversed clip is the picture of frame T-1-t of the video, so
    ``alpha_reversed[::-1]`` is what a frame-order-blind calibration would equal ``alpha_video`` to.
    Score per channel: max over t of ``|alpha_video - alpha_reversed[::-1]|`` (non-finite values
    score 0). The block with the highest channel score wins; ties go to the first block in module
    order and to the lowest channel index, so the choice is deterministic.
    """
    if set(alpha_video) != set(alpha_reversed) or not alpha_video:
        raise ValueError("alpha of the video and of its reversal must come from the same routing functions")
    best: tuple[str, list[int], float] | None = None
    for name, a in alpha_video.items():
        diff = np.abs(a - alpha_reversed[name][::-1])
        score = np.nan_to_num(diff, nan=0.0, posinf=0.0, neginf=0.0).max(axis=0)  # (C,)
        order = np.argsort(-score, kind="stable")[:channels]
        top = float(score[order[0]])
        if best is None or top > best[2]:
            best = (name, [int(c) for c in order], top)
    assert best is not None
    return best


def first_principal_component(features: np.ndarray) -> np.ndarray:
    """Projections of the rows of ``features`` (N, C) on their first principal component.

    The component is the top right-singular vector of the centred rows, its sign fixed so that its
    largest-magnitude loading is positive (SVD leaves it arbitrary). The rows themselves are
    projected, not centred: the projection is linear, so the projection of a clip's average
    feature (what a TSN head classifies) is the average of its frames' projections.
    """
    centred = features - features.mean(axis=0, keepdims=True)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    component = vt[0]
    if component[np.argmax(np.abs(component))] < 0:
        component = -component
    return features @ component


def _prediction(logits: Tensor, class_names: list[str]) -> Prediction:
    probs = torch.softmax(logits.to(torch.float64), dim=-1)
    top = int(torch.argmax(probs))
    prob = float(probs[top])
    return Prediction(class_names[top] if top < len(class_names) else str(top), prob)


def calibration_figure_data(tada: nn.Module, tsn: nn.Module, clip: Tensor, *, class_names: list[str],
                            video: str = "", label: str = "", channels: int = 3) -> CalibrationFigure:
    """Run the clip (1, C, T, H, W) and its time-reversal (frames in reverse order) through both models.

    The models should be in eval mode (as :func:`load_trained_run` gives them): in train mode their
    BNs would normalise with the clip's own statistics and update their running ones.
    """
    reversed_clip = clip.flip(2)
    tada_logits, tada_alpha = route_alphas(tada, clip)
    tada_logits_r, tada_alpha_r = route_alphas(tada, reversed_clip)
    block, chosen, sensitivity = most_order_sensitive(tada_alpha, tada_alpha_r, channels=channels)
    tsn_logits, feats = frame_features(tsn, clip)
    tsn_logits_r, feats_r = frame_features(tsn, reversed_clip)
    t = feats.shape[0]
    projected = first_principal_component(np.concatenate([feats, feats_r]))
    return CalibrationFigure(
        video=video, label=label, block=block, channels=chosen,
        alpha_video=tada_alpha[block], alpha_reversed=tada_alpha_r[block], order_sensitivity=sensitivity,
        tsn_video=projected[:t], tsn_reversed=projected[t:],
        tsn_mirror_error=float(np.abs(feats - feats_r[::-1]).max()),
        tada_pred=(_prediction(tada_logits, class_names), _prediction(tada_logits_r, class_names)),
        tsn_pred=(_prediction(tsn_logits, class_names), _prediction(tsn_logits_r, class_names)),
    )


# ---------------------------------------------------------------------------------------------
# The figure
# ---------------------------------------------------------------------------------------------
def plot_calibration(data: CalibrationFigure, path: str | Path) -> Path:
    """Three panels, written atomically as a PNG: TAda2D alpha (a few channels), its per-frame channel
    mean, and TSN's per-frame features with their clip average. Solid: the video; dashed: its reversal."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frames = np.arange(data.alpha_video.shape[0])
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    ax = axes[0]
    for k, c in enumerate(data.channels):
        colour = colours[k % len(colours)]
        ax.plot(frames, data.alpha_video[:, c], "-o", color=colour, ms=3, label=f"channel {c}, video")
        ax.plot(frames, data.alpha_reversed[:, c], "--s", color=colour, ms=3, label=f"channel {c}, reversed")
    ax.set(title=f"TAda2D alpha in {data.block}\nvideo: {data.tada_pred[0]}   reversed: {data.tada_pred[1]}",
           xlabel=f"frame t of the clip (as played)\nsame picture, other order: "
                  f"max |alpha(t) - alpha_rev(T-1-t)| = {data.order_sensitivity:.3g}",
           ylabel="calibration weight alpha")
    ax.legend(fontsize=7, ncol=2)

    ax = axes[1]
    ax.plot(frames, data.alpha_video.mean(axis=1), "-o", color="black", ms=3, label="video")
    ax.plot(frames, data.alpha_reversed.mean(axis=1), "--s", color="tab:red", ms=3, label="reversed")
    ax.plot(frames, data.alpha_reversed.mean(axis=1)[::-1], ":", color="grey", lw=1.5,
            label="reversed, read backwards (the video's picture at each frame)")
    ax.set(title=f"TAda2D: per-frame mean of alpha over the {data.alpha_video.shape[1]} channels",
           xlabel="frame t of the clip (as played)", ylabel="mean alpha")
    ax.legend(fontsize=7)

    ax = axes[2]
    ax.plot(frames, data.tsn_video, "-o", color="black", ms=3, label="video, per frame")
    ax.plot(frames, data.tsn_reversed, "--s", color="tab:red", ms=3, label="reversed, per frame")
    ax.axhline(float(data.tsn_video.mean()), color="black", lw=2, label="video, clip average (classified)")
    ax.axhline(float(data.tsn_reversed.mean()), color="tab:red", lw=1.2, ls=":",
               label="reversed, clip average (classified)")
    ax.set(title=f"TSN per-frame features (1st principal component)\nvideo: {data.tsn_pred[0]}   "
                 f"reversed: {data.tsn_pred[1]}",
           xlabel=f"frame t of the clip (as played)\nsame picture, other order: "
                  f"max |f(t) - f_rev(T-1-t)| = {data.tsn_mirror_error:.1g}",
           ylabel="feature projection")
    ax.legend(fontsize=7)
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.set_xticks(frames)
    where = f"{Path(data.video).name} ({data.label})" if data.video else "one test clip"
    fig.suptitle(f"What a TAdaConv sees: {where} and its time-reversal", fontsize=11)
    fig.tight_layout()
    path = Path(path)
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=110)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------------
# From two finished runs
# ---------------------------------------------------------------------------------------------
def load_trained_run(run_dir: str | Path) -> tuple[Config, nn.Module]:
    """The config a run trained with (its OUTPUT_DIR/config.yaml) and its model, with the checkpoint
    its test reads (:func:`tada.engine.evaluate.resolve_test_checkpoint`) loaded strictly, in eval mode.

    Building from the run's own config keeps what changes the model's state dict or function
    (e.g. MODEL.CALIBRATION_CLAMP and its buffers).
    """
    from tada.checkpoint import load_checkpoint
    from tada.engine.evaluate import resolve_test_checkpoint
    from tada.models import build_model

    saved = Path(run_dir) / "config.yaml"
    if not saved.is_file():
        raise TadaError(f"{run_dir}: no config.yaml: not the folder of a finished training run")
    cfg = load_config(saved)
    model = build_model(cfg)
    path, _ = resolve_test_checkpoint(cfg)
    load_checkpoint(model, path)
    return cfg, model.eval()


def _first_clip(cfg: Config, classes: list[int]) -> tuple[Tensor, str, int]:
    """The single centre view (1, C, T, H, W) of the first test-list video whose label is in ``classes``."""
    from tada.data import build_dataset

    dataset = build_dataset(cfg.with_overrides({"TEST.NUM_ENSEMBLE_VIEWS": 1, "TEST.NUM_SPATIAL_CROPS": 1}), "test")
    for index, entry in enumerate(dataset.entries):
        if entry.label in classes:
            item = dataset[index]
            if item["failed"]:
                raise TadaError(f"cannot decode the test video {entry.path}: {item['error']}")
            return item["video"].unsqueeze(0), entry.path, entry.label
    raise TadaError(f"the test list of {cfg.DATA.ANNO_DIR} has no video of the classes {classes}")


def write_calibration_figure(*, tada_dir: str | Path, tsn_dir: str | Path, manifest: dict, out: str | Path,
                             channels: int = 3) -> CalibrationFigure:
    """The figure for two finished runs on the synthetic dataset, written to ``out``.

    The clip: the first test video of the first class of the dataset's first time-reversal pair,
    as the TAda2D run's test reads it (one centre clip, centre crop).
    """
    tada_cfg, tada = load_trained_run(tada_dir)
    tsn_cfg, tsn = load_trained_run(tsn_dir)
    if tada_cfg.DATA.NUM_INPUT_FRAMES != tsn_cfg.DATA.NUM_INPUT_FRAMES:
        raise TadaError(f"{tada_dir} and {tsn_dir} read different clips (DATA.NUM_INPUT_FRAMES "
                        f"{tada_cfg.DATA.NUM_INPUT_FRAMES} vs {tsn_cfg.DATA.NUM_INPUT_FRAMES})")
    pairs = manifest.get("pairs") or []
    if not pairs:
        raise TadaError("the dataset manifest names no time-reversal pairs: nothing to reverse")
    classes = list(manifest["classes"])
    first_class = int(pairs[0][0])
    clip, path, label = _first_clip(tada_cfg, [first_class])
    clip = clip.to(next(tada.parameters()).dtype)
    data = calibration_figure_data(tada, tsn, clip, class_names=classes, video=path, label=classes[label],
                                   channels=channels)
    plot_calibration(data, out)
    return data

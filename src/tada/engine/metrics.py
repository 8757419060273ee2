"""Accuracy counting and the multi-view test aggregation.

Training and validation count correct predictions exactly (sums over samples, not averages of
per-batch averages, which the official meters weight by channels instead of batch size). The test
aggregates the views of each video by ``prob``/``sum`` (sum of softmax, official), ``score`` (sum
of logits) or ``max`` (element-wise max of softmax), checks that every video got each of its views
exactly once, and excludes videos with a failed view from the scores, listing them instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

__all__ = ["VideoAggregator", "aggregate_views", "summarise_videos", "topk_correct"]

AGGREGATIONS = {"sum": "prob", "prob": "prob", "score": "score", "max": "max"}


def topk_correct(logits: torch.Tensor, labels: torch.Tensor, *, ks: Sequence[int] = (1, 5)) -> torch.Tensor:
    """Counts of samples whose label is in the top-k, one per k (a tensor on the logits' device)."""
    kmax = min(max(ks), logits.shape[1])
    top = logits.topk(kmax, dim=1).indices
    hit = top.eq(labels.view(-1, 1))
    return torch.stack([hit[:, : min(k, kmax)].any(dim=1).sum() for k in ks])


def aggregate_views(logits: torch.Tensor, method: str) -> torch.Tensor:
    """Per-view contribution to a video's score: softmax for prob/max, logits for score (float64)."""
    kind = AGGREGATIONS[method]
    x = logits.double()
    return x if kind == "score" else torch.softmax(x, dim=1)


@dataclass
class _Video:
    label: int
    path: str
    scores: np.ndarray | None = None
    views: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


class VideoAggregator:
    """Accumulates view predictions of the videos one rank saw; merge ranks with :meth:`merge`."""

    def __init__(self, num_views: int, method: str):
        if method not in AGGREGATIONS:
            raise ValueError(f"unknown aggregation {method!r}; choose from {sorted(AGGREGATIONS)}")
        self.num_views = num_views
        self.method = method
        self.videos: dict[int, _Video] = {}

    def _combine(self, old: np.ndarray | None, new: np.ndarray) -> np.ndarray:
        if old is None:
            return new.copy()
        return np.maximum(old, new) if AGGREGATIONS[self.method] == "max" else old + new

    def _video(self, video_index: int, *, label: int, path: str) -> _Video:
        entry = self.videos.get(video_index)
        if entry is None:
            entry = self.videos[video_index] = _Video(label=label, path=path)
        elif entry.label != label:
            raise RuntimeError(
                f"video {video_index} ({path}) has label {label} in one view and {entry.label} in another"
            )
        return entry

    def add(
        self,
        *,
        video_index: Sequence[int],
        view: Sequence[int],
        label: Sequence[int],
        path: Sequence[str],
        contribution: np.ndarray | None,
        failed: Sequence[bool],
        error: Sequence[str],
    ) -> None:
        """Add one batch. ``contribution`` (B, classes) comes from :func:`aggregate_views`."""
        for i in range(len(video_index)):
            entry = self._video(int(video_index[i]), label=int(label[i]), path=str(path[i]))
            entry.views.append(int(view[i]))
            if failed[i]:
                entry.errors.append(f"view {int(view[i])}: {error[i]}")
            else:
                entry.scores = self._combine(entry.scores, contribution[i])

    def state(self) -> dict[int, _Video]:
        return self.videos

    def merge(self, parts: Sequence[dict[int, _Video]]) -> None:
        """Fold other ranks' videos in (a video's views may be split across ranks)."""
        for part in parts:
            for idx, other in part.items():
                entry = self._video(idx, label=other.label, path=other.path)
                if entry is other:
                    continue
                entry.views += other.views
                entry.errors += other.errors
                if other.scores is not None:
                    entry.scores = self._combine(entry.scores, other.scores)


def _reason(errors: list[str], num_views: int) -> str:
    """'view 3: why; view 5: why', or 'all N views: why' when every view failed the same way."""
    reasons = {e.split(": ", 1)[-1] for e in errors}
    if len(errors) == num_views and len(reasons) == 1:
        return f"all {num_views} views: {reasons.pop()}" if num_views > 1 else reasons.pop()
    return "; ".join(sorted(errors))


def summarise_videos(
    agg: VideoAggregator,
    *,
    num_videos: int,
    class_names: Sequence[str],
    topk: int = 5,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(results dict, per-video prediction rows) from merged views.

    A video is scored only if all its views decoded; otherwise it is listed in ``failed_videos``
    with the reasons. A scored video whose scores are not finite (the model overflowed) counts as
    wrong and is listed in ``nonfinite_videos``. Each video must have been seen exactly
    ``num_views`` times, once per view.
    """
    if len(agg.videos) != num_videos:
        missing = sorted(set(range(num_videos)) - set(agg.videos))[:10]
        raise RuntimeError(f"the test saw {len(agg.videos)} of {num_videos} videos (missing e.g. {missing})")
    wanted = list(range(agg.num_views))
    for idx, v in agg.videos.items():
        if sorted(v.views) != wanted:
            raise RuntimeError(
                f"video {idx} ({v.path}) got views {sorted(v.views)}, expected each of 0..{agg.num_views - 1} once"
            )
    num_classes = len(class_names)
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    correct1 = correct5 = 0
    failed: list[dict[str, Any]] = []
    nonfinite: list[dict[str, Any]] = []
    unranked = np.zeros(num_classes, dtype=np.int64)  # per true class: videos with non-finite scores
    rows: list[dict[str, Any]] = []
    for idx in sorted(agg.videos):
        v = agg.videos[idx]
        if v.errors or v.scores is None:
            failed.append({"path": v.path, "label": v.label, "reason": _reason(v.errors, agg.num_views)})
            continue
        if not np.isfinite(v.scores).all():  # the model gave non-finite logits: a wrong answer, not a class
            nonfinite.append({"path": v.path, "label": v.label})
            unranked[v.label] += 1
            rows.append({"video_index": idx, "path": v.path, "label": v.label, "label_name": class_names[v.label],
                         "top_ids": [], "top_names": [], "top_scores": [], "correct": False})
            continue
        order = np.argsort(-v.scores, kind="stable")[:topk]
        pred = int(order[0])
        confusion[v.label, pred] += 1
        correct1 += int(pred == v.label)
        correct5 += int(v.label in order.tolist())
        rows.append(
            {
                "video_index": idx,
                "path": v.path,
                "label": v.label,
                "label_name": class_names[v.label],
                "top_ids": [int(c) for c in order],
                "top_names": [class_names[int(c)] for c in order],
                "top_scores": [float(v.scores[int(c)]) for c in order],
                "correct": pred == v.label,
            }
        )
    scored = len(rows)
    per_class_total = confusion.sum(axis=1) + unranked
    per_class = confusion.diagonal() / np.maximum(per_class_total, 1)
    present = per_class_total > 0
    results = {
        "top1": 100.0 * correct1 / scored if scored else None,
        "top5": 100.0 * correct5 / scored if scored else None,
        "num_videos": scored,
        "num_videos_total": num_videos,
        "failed_videos": failed,
        "nonfinite_videos": nonfinite,
        "mean_class_accuracy": float(100.0 * per_class[present].mean()) if present.any() else None,
        "per_class_accuracy": [float(100.0 * a) if p else None for a, p in zip(per_class, present)],
        "confusion_matrix": confusion.tolist(),
        "class_names": list(class_names),
    }
    return results, rows

"""Which frames a clip uses: the two official samplers, with deterministic evaluation views.

Both functions return int64 frame indices in [0, num_frames). ``view`` is None for a random
(training) clip, drawn from ``rng``; otherwise it is the temporal view number ``0 .. num_views-1``
and the result is deterministic:

- one view: the centre clip (interval_based) or the segment midpoints (segment_based), as the
  official single-view test;
- several views: spread so that the first view starts at the first frame and the last view ends
  at the last frame (the official multi-view starts at ``max_start * k / num_views``, so the end
  of a video is never seen; see ``docs/design.md``).

Videos shorter than a clip repeat their last frame, as in the official samplers.
"""

from __future__ import annotations

import numpy as np

__all__ = ["interval_indices", "segment_indices", "sample_indices"]


def _check(num_frames: int, num_input_frames: int, view: int | None, num_views: int,
           rng: np.random.Generator | None) -> None:
    if num_frames < 1:
        raise ValueError(f"a video needs at least one frame, got num_frames={num_frames}")
    if num_input_frames < 1:
        raise ValueError(f"NUM_INPUT_FRAMES must be >= 1, got {num_input_frames}")
    if num_views < 1:
        raise ValueError(f"num_views must be >= 1, got {num_views}")
    if view is None:
        if rng is None:
            raise ValueError("a random clip (view=None) needs an rng")
    elif not 0 <= view < num_views:
        raise ValueError(f"view {view} outside [0, {num_views})")


def interval_indices(
    num_frames: int,
    fps: float,
    *,
    num_input_frames: int,
    sampling_rate: int,
    target_fps: float,
    view: int | None,
    num_views: int = 1,
    rng: np.random.Generator | None = None,
    minus_interval: bool = False,
) -> np.ndarray:
    """Official ``interval_based`` frames: ``N`` frames spanning ``N*rate`` frames at ``target_fps``.

    The span is normalised by the video's own fps, so a 25 fps and a 30 fps video cover the same
    seconds. Training draws a continuous uniform start; the indices are ``linspace(start, end, N)``
    truncated to int, as in the official code.
    """
    _check(num_frames, num_input_frames, view, num_views, rng)
    if not fps > 0:
        raise ValueError(f"interval_based sampling needs a positive fps, got {fps}")
    if num_input_frames == 1:
        # Official: a random frame even at test. Here: evaluation is deterministic.
        if view is None:
            pos = rng.uniform(0, num_frames)
        else:
            pos = (num_frames - 1) * (0.5 if num_views == 1 else view / (num_views - 1))
        return np.array([min(int(pos), num_frames - 1)], dtype=np.int64)
    clip_len = num_input_frames * sampling_rate * fps / target_fps
    max_start = max(num_frames - clip_len, 0.0)
    if view is None:
        start = rng.uniform(0, max_start)
    elif num_views == 1:
        start = max_start / 2
    else:
        start = max_start * view / (num_views - 1)
    # MINUS_INTERVAL: the span ends one sampling interval (not one frame) before start + clip_len
    end = start + clip_len - (sampling_rate if minus_interval else 1)
    idx = np.linspace(start, end, num_input_frames)
    return np.clip(idx, 0, num_frames - 1).astype(np.int64)


def segment_indices(
    num_frames: int,
    *,
    num_input_frames: int,
    view: int | None,
    num_views: int = 1,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """One frame from each of ``N`` equal segments of the whole video (official ``segment_based``); fps is ignored.

    Training draws uniformly inside each segment; one view takes the midpoints; view ``v`` of
    ``V`` views takes ``lo + (hi - lo) * (v + 1) / V`` in each segment [lo, hi), as the official
    test does (with 2 views: the midpoints, then the segment ends), so the zoo's SSv2 2x3 numbers
    are measured on the frames they were reported on.
    """
    _check(num_frames, num_input_frames, view, num_views, rng)
    edges = np.linspace(0, num_frames, num_input_frames + 1)
    lo, hi = edges[:-1], edges[1:]
    if view is None:
        pos = rng.uniform(lo, hi)
    elif num_views == 1:
        pos = (lo + hi) / 2
    else:
        pos = lo + (hi - lo) * ((view + 1) / num_views)
    return np.clip(np.round(pos), 0, num_frames - 1).astype(np.int64)


def sample_indices(
    mode: str,
    num_frames: int,
    fps: float,
    *,
    num_input_frames: int,
    sampling_rate: int,
    target_fps: float,
    view: int | None,
    num_views: int = 1,
    rng: np.random.Generator | None = None,
    minus_interval: bool = False,
) -> np.ndarray:
    """Dispatch on DATA.SAMPLING_MODE (``interval_based`` or ``segment_based``)."""
    if mode == "interval_based":
        return interval_indices(
            num_frames, fps, num_input_frames=num_input_frames, sampling_rate=sampling_rate,
            target_fps=target_fps, view=view, num_views=num_views, rng=rng, minus_interval=minus_interval,
        )
    if mode == "segment_based":
        return segment_indices(num_frames, num_input_frames=num_input_frames, view=view,
                               num_views=num_views, rng=rng)
    raise ValueError(f"unknown DATA.SAMPLING_MODE '{mode}'; choose interval_based or segment_based")

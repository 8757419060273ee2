"""The official samplers (interval_based, segment_based), with deterministic evaluation views that reach both ends."""

from __future__ import annotations

import numpy as np
import pytest

from tada.data.frame_indices import interval_indices, sample_indices, segment_indices

K400 = dict(num_input_frames=8, sampling_rate=8, target_fps=30)


def test_interval_single_view_is_the_official_centre_clip():
    # 300 frames at 30 fps: clip_len 64, start (300-64)/2 = 118, step 63/7 = 9.
    idx = interval_indices(300, 30.0, view=0, num_views=1, **K400)
    np.testing.assert_array_equal(idx, 118 + 9 * np.arange(8))


def test_interval_span_is_normalised_by_fps():
    # At 15 fps the same 64/30 s span is 32 frames: step 31/7, truncated like the official code.
    idx = interval_indices(300, 15.0, view=0, num_views=1, **K400)
    start = (300 - 32) / 2
    np.testing.assert_array_equal(idx, np.linspace(start, start + 31, 8).astype(np.int64))


def test_minus_interval_ends_one_sampling_interval_early():
    # DATA.MINUS_INTERVAL true: the span is start .. start + clip_len - rate (not - 1), i.e. 118 .. 174.
    idx = interval_indices(300, 30.0, view=0, num_views=1, minus_interval=True, **K400)
    np.testing.assert_array_equal(idx, 118 + 8 * np.arange(8))
    # at 15 fps the rate stays in the video's frames of the config: clip_len 32, end start + 32 - 8
    idx = interval_indices(300, 15.0, view=0, num_views=1, minus_interval=True, **K400)
    np.testing.assert_array_equal(idx, np.linspace(134, 134 + 24, 8).astype(np.int64))


def test_interval_multi_view_reaches_first_and_last_frame():
    views = [interval_indices(300, 30.0, view=v, num_views=10, **K400) for v in range(10)]
    assert views[0][0] == 0 and views[-1][-1] == 299
    starts = [v[0] for v in views]
    assert starts == sorted(starts) and len(set(starts)) == 10


def test_interval_train_is_random_within_the_video():
    rng = np.random.default_rng(0)
    starts = set()
    for _ in range(200):
        idx = interval_indices(300, 30.0, view=None, rng=rng, **K400)
        assert 0 <= idx[0] and idx[-1] <= 299 and np.all(np.diff(idx) >= 8)
        starts.add(int(idx[0]))
    assert min(starts) < 20 and max(starts) > 210


def test_short_video_repeats_its_last_frame():
    idx = interval_indices(20, 30.0, view=0, num_views=1, **K400)
    assert idx[0] == 0 and idx[-1] == 19 and np.sum(idx == 19) >= 5
    idx = segment_indices(3, num_input_frames=8, view=0)
    assert idx.min() == 0 and idx.max() == 2 and np.all(np.diff(idx) >= 0)


def test_one_frame_clips_are_deterministic_at_evaluation():
    kw = dict(num_input_frames=1, sampling_rate=8, target_fps=30)
    assert interval_indices(101, 30.0, view=0, **kw).tolist() == [50]
    assert [interval_indices(101, 30.0, view=v, num_views=3, **kw)[0] for v in range(3)] == [0, 50, 100]


def test_segment_single_view_is_the_midpoint_of_each_segment():
    # 40 frames, 8 segments of 5: midpoints 2.5, 7.5, ... rounded half to even like torch.round.
    idx = segment_indices(40, num_input_frames=8, view=0)
    np.testing.assert_array_equal(idx, np.round(np.arange(8) * 5 + 2.5).astype(np.int64))


def test_segment_multi_view_is_the_official_test_protocol():
    # The official segment test views: view v of V at lo + (hi - lo) (v + 1) / V;
    # with 2 views the midpoints, then the ends.
    a = segment_indices(40, num_input_frames=8, view=0, num_views=2)
    b = segment_indices(40, num_input_frames=8, view=1, num_views=2)
    np.testing.assert_array_equal(a, [2, 8, 12, 18, 22, 28, 32, 38])
    np.testing.assert_array_equal(b, [5, 10, 15, 20, 25, 30, 35, 39])
    np.testing.assert_array_equal(a, segment_indices(40, num_input_frames=8, view=0))


def test_segment_views_equal_the_official_float32_formula():
    import torch

    for n in (8, 16):
        for length in list(range(1, 200)) + [237, 411, 1000, 2999]:
            edges = torch.linspace(0, length, n + 1)  # float32, as the official sampler
            for views in (1, 2, 3):
                for v in range(views):
                    frac = 0.5 if views == 1 else (v + 1) / views
                    want = torch.round(torch.clamp(edges[:-1] + (edges[1:] - edges[:-1]) * frac, 0, length - 1))
                    got = segment_indices(length, num_input_frames=n, view=v, num_views=views)
                    assert got.tolist() == want.long().tolist(), (n, length, views, v)


def test_segment_train_draws_inside_each_segment():
    rng = np.random.default_rng(1)
    for _ in range(100):
        idx = segment_indices(40, num_input_frames=8, view=None, rng=rng)
        assert np.all(idx >= np.arange(8) * 5) and np.all(idx <= np.arange(8) * 5 + 5)


def test_errors_and_dispatch():
    with pytest.raises(ValueError, match="rng"):
        segment_indices(10, num_input_frames=4, view=None)
    with pytest.raises(ValueError, match="view 2 outside"):
        segment_indices(10, num_input_frames=4, view=2, num_views=2)
    with pytest.raises(ValueError, match="fps"):
        interval_indices(10, 0.0, view=0, **K400)
    with pytest.raises(ValueError, match="SAMPLING_MODE"):
        sample_indices("dense", 10, 30.0, view=0, **K400)
    np.testing.assert_array_equal(
        sample_indices("segment_based", 40, 30.0, view=0, **K400), segment_indices(40, num_input_frames=8, view=0)
    )

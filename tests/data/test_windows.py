"""Sliding windows over a video stream: positions, one conversion per frame, bounded state, broken files."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from media_helpers import coded_frames, sequential_decode, write_video

from tada.data.decode import DecodeError
from tada.data.frame_indices import interval_indices, segment_indices
from tada.data.windows import SEGMENT_WINDOW_SECONDS, FrameStream, WindowSpec, stream_windows

FPS = 30


def _identity(rgb: np.ndarray) -> torch.Tensor:
    """A frame as the (crops=1, 3, H, W) tensor a window stacks."""
    return torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None]


def _spec(**kw) -> WindowSpec:
    args = dict(sampling_mode="interval_based", num_input_frames=4, sampling_rate=3, target_fps=FPS,
                seconds=4 * 3 / FPS, stride=0.25)
    args.update(kw)
    return WindowSpec(**args)


def _windows(source, spec, *, fps=None, transform=_identity):
    return list(stream_windows(FrameStream(source, name="v", fps=fps), spec, transform=transform))


def test_interval_windows_are_test_clips_cut_every_stride():
    clip = coded_frames(70, 24, 32)
    spec = _spec()
    windows = _windows(clip, spec, fps=FPS)
    starts = [round(k * spec.stride * FPS) for k in range(len(windows))]
    assert len(windows) == math.ceil(70 / (spec.stride * FPS)) and starts[-1] < 70  # until the video ends
    for w, start in zip(windows, starts):
        assert w.error is None and w.clip.shape == (1, 3, 4, 24, 32)
        local = interval_indices(12, FPS, num_input_frames=4, sampling_rate=3, target_fps=FPS, view=0)
        want = np.minimum(start + local, 69)  # past the end: the last frame, as a short video's clip
        assert torch.equal(w.clip[0].permute(1, 2, 3, 0), torch.from_numpy(clip[want]))
        assert math.isclose(w.start, start / FPS)
        assert math.isclose(w.end, min(start / FPS + spec.seconds, 70 / FPS))


def test_segment_windows_take_segment_midpoints_of_a_window_in_seconds():
    spec = WindowSpec.from_config(_Cfg("segment_based"), stride=1.0)
    assert spec.seconds == SEGMENT_WINDOW_SECONDS and spec.stride == 1.0
    assert np.array_equal(spec.indices(2, FPS), 60 + segment_indices(120, num_input_frames=8, view=0))
    assert WindowSpec.from_config(_Cfg("segment_based"), seconds=2.0).stride == 2.0  # default: tile the video
    interval = WindowSpec.from_config(_Cfg("interval_based"))
    assert math.isclose(interval.seconds, 8 * 8 / 30) and interval.stride == interval.seconds
    with pytest.raises(ValueError, match="segment_based"):
        WindowSpec.from_config(_Cfg("interval_based"), seconds=3.0)
    with pytest.raises(ValueError, match="stride"):
        WindowSpec.from_config(_Cfg("interval_based"), stride=0)


class _Cfg:
    """The DATA keys a window reads."""

    def __init__(self, mode: str) -> None:
        self.DATA = type("D", (), dict(SAMPLING_MODE=mode, NUM_INPUT_FRAMES=8, SAMPLING_RATE=8, TARGET_FPS=30,
                                       MINUS_INTERVAL=False))


def test_an_encoded_file_streams_the_frames_of_a_full_decode_each_converted_once(tmp_path):
    path = write_video(tmp_path / "v.mp4", coded_frames(64, 32, 48, seed=1), fps=FPS)
    decoded = sequential_decode(path)
    spec = _spec(stride=0.4)
    converted: list[int] = []

    def counting(rgb):
        converted.append(1)
        return _identity(rgb)

    from_file = _windows(path, spec, transform=counting)
    from_array = _windows(decoded, spec, fps=FPS)
    assert len(from_file) == len(from_array) == math.ceil(64 / 12)
    for a, b in zip(from_file, from_array):
        assert torch.equal(a.clip, b.clip) and (a.start, a.end) == (b.start, b.end)
    needed = {min(int(i), 63) for k in range(len(from_file)) for i in spec.indices(k, FPS)}
    assert len(converted) == len(needed)  # only frames a window uses, each once


def test_state_is_bounded_by_the_windows_in_flight():
    """A long stream: the converted frames alive at any time do not grow with its length."""
    import weakref

    spec = _spec(stride=0.1)
    alive: weakref.WeakSet = weakref.WeakSet()

    def tracking(rgb):
        t = _identity(rgb).float()
        alive.add(t)
        return t

    clip = np.zeros((600, 8, 8, 3), np.uint8)
    clip[:, 0, 0, 0] = np.arange(600) % 256
    held = []
    for w in stream_windows(FrameStream(clip, name="long", fps=FPS), spec, transform=tracking):
        del w  # the consumer is done with it; what stays alive is what the stream keeps
        held.append(len(alive))
    assert len(held) == 200
    in_flight = math.ceil(spec.seconds / spec.stride) + 1
    assert max(held) <= in_flight * spec.num_input_frames and max(held[100:-in_flight]) <= max(held[:100])


def test_a_truncated_file_scores_what_decodes_and_reports_the_rest(tmp_path):
    path = write_video(tmp_path / "v.mkv", coded_frames(150, 32, 48, seed=2), fps=FPS, options={"g": "10"})
    data = path.read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    spec = _spec(stride=0.5)
    full = _windows(path, spec)
    part = _windows(cut, spec)
    assert [w.index for w in part] == [w.index for w in full] == list(range(10))  # the declared 5 s
    good = [w for w in part if w.error is None]
    bad = [w for w in part if w.error is not None]
    assert 3 <= len(good) < 10 and bad and part[: len(good)] == good  # decoded first, then the failures
    for g in good:
        assert torch.equal(g.clip, full[g.index].clip)
    assert all("truncated" in w.error and w.end > w.start for w in bad)
    assert bad[-1].start == 4.5


def test_undecodable_inputs_raise_a_decode_error(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    text = tmp_path / "text.mp4"
    text.write_text("not a video\n" * 20)
    for path, reason in ((empty, "empty"), (text, "cannot open"), (tmp_path / "none.mp4", "cannot open")):
        with pytest.raises(DecodeError, match=reason):
            _windows(path, _spec())
    with pytest.raises(ValueError, match="fps"):
        FrameStream(np.zeros((3, 4, 4, 3), np.uint8), name="a")


class _Events:
    """A stream with chosen gaps and decode errors: what FrameStream yields for a damaged file."""

    name = "damaged"
    declared_seconds = None
    rgb = staticmethod(FrameStream.rgb)
    size = staticmethod(FrameStream.size)

    def __init__(self, clip: np.ndarray, *, fps: float, missing: range, error: bool) -> None:
        self.clip, self.fps, self.missing, self.error = clip, fps, missing, error

    def __iter__(self):
        for i, frame in enumerate(self.clip):
            if i in self.missing:
                if self.error == "stop":
                    yield ("stop", "cannot read past this point: End of file")
                    return
                if self.error and i == self.missing.start:
                    yield ("error", "a packet does not decode: Invalid data")
                continue
            yield ("frame", i, frame)


def test_a_packet_that_does_not_decode_fails_only_the_windows_needing_its_frames():
    clip = coded_frames(60, 8, 8, seed=3)
    spec = _spec(stride=0.2)  # windows of 12 frames every 6
    damaged = list(stream_windows(_Events(clip, fps=FPS, missing=range(20, 30), error=True), spec,
                                  transform=_identity))
    whole = _windows(clip, spec, fps=FPS)
    assert [w.index for w in damaged] == [w.index for w in whole]
    for d, w in zip(damaged, whole):
        needs = set(np.minimum(spec.indices(w.index, FPS), 59).tolist())
        if needs & set(range(20, 30)):
            assert d.clip is None and "do not decode" in d.error and "Invalid data" in d.error
            assert f"{d.start:.2f}-{d.end:.2f} s" in d.error
        else:
            assert d.error is None and torch.equal(d.clip, w.clip)
    # the same gap without a decode error is a variable frame rate: the frame on screen is used
    held = list(stream_windows(_Events(clip, fps=FPS, missing=range(20, 30), error=False), spec,
                               transform=_identity))
    assert all(w.error is None for w in held)
    k = next(w.index for w in held if 25 in spec.indices(w.index, FPS))
    position = list(spec.indices(k, FPS)).index(25)
    assert torch.equal(held[k].clip[0, :, position], _identity(clip[19])[0])

    # a file that cannot be read on: the windows not complete by then fail, the earlier ones stand
    stopped = list(stream_windows(_Events(clip, fps=FPS, missing=range(40, 60), error="stop"), spec,
                                  transform=_identity))
    assert [w.error is None for w in stopped] == [True] * 5 + [False] * 2
    assert all("decoding stops at 1.30 s" in w.error for w in stopped[5:])


def test_prefetched_keeps_order_raises_the_producers_error_and_stops_when_closed():
    import threading

    from tada.data.windows import prefetched

    assert list(prefetched(iter(range(50)), depth=3)) == list(range(50))
    assert list(prefetched(iter(range(5)), depth=0)) == list(range(5))

    def failing():
        yield 1
        raise DecodeError("v.mp4", "cannot read the stream")

    got = []
    with pytest.raises(DecodeError, match="cannot read"):
        for x in prefetched(failing(), depth=2):
            got.append(x)
    assert got == [1]

    closed = threading.Event()

    def endless():
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            closed.set()

    gen = prefetched(endless(), depth=2)
    assert [next(gen) for _ in range(3)] == [0, 1, 2]
    gen.close()  # the consumer stops early: the producer thread ends and closes its source
    assert closed.wait(5)
    assert not any(t.name == "tada-window-decoder" for t in threading.enumerate())

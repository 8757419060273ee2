"""The PyAV reader is frame-exact, reports length/fps reliably, and fails clearly on broken files."""

from __future__ import annotations

import av
import numpy as np
import pytest
from media_helpers import coded_frames, sequential_decode, write_video

from tada.data.decode import DecodeError, PyAVReader, open_video


@pytest.mark.parametrize("name", ["gop_mp4", "x264_defaults", "odd_webm", "vfr_mp4", "portrait_mp4", "raw_h264",
                                  "edit_list_mp4", "cut_mkv", "cut_mp4", "bframes_avi", "bframes_mpeg4_avi"])
def test_frames_equal_a_full_sequential_decode(media, name):
    path = media[name]
    full = sequential_decode(path)
    rng = np.random.default_rng(0)
    with open_video(path) as reader:
        assert reader.num_frames == len(full)
        assert (reader.height, reader.width) == full.shape[1:3]
        for _ in range(12):
            idx = rng.integers(0, len(full), size=8)  # unsorted, with repeats
            np.testing.assert_array_equal(reader.get_frames(idx), full[idx])
            run = np.arange(rng.integers(0, len(full) - 8), len(full))[:8]  # consecutive frames
            np.testing.assert_array_equal(reader.get_frames(run), full[run])
        np.testing.assert_array_equal(reader.get_frames([len(full) - 1, 0]), full[[-1, 0]])


def test_fps_and_length(media):
    with open_video(media["gop_mp4"]) as r:
        assert r.num_frames == 75 and r.fps == 25.0
    with open_video(media["odd_webm"]) as r:  # webm stores milliseconds; the rate stays exact
        assert r.num_frames == 40 and r.fps == 24.0
        assert (r.height, r.width) == (37, 51)
    with open_video(media["vfr_mp4"]) as r:  # variable rate: the declared mean, frames / duration (as decord)
        span_s = sum(33 if i % 3 else 80 for i in range(29)) / 1000  # the timestamps of conftest
        assert r.num_frames == 30
        with av.open(str(media["vfr_mp4"])) as c:
            assert r.fps == float(c.streams.video[0].average_rate)
        assert r.fps == pytest.approx(29 / span_s, rel=0.1) and r.fps != pytest.approx(29 / span_s, rel=1e-3)


@pytest.mark.parametrize("ext", ["mkv", "webm", "mp4"])
def test_a_declared_rate_far_from_the_timestamps_is_not_trusted(tmp_path, ext):
    """Frames 100 ms apart in a file whose header says 30 fps (mkv, webm): the timestamps' 10 fps wins."""
    frames = coded_frames(20, 32, 48)
    codec = "libvpx-vp9" if ext == "webm" else "libx264"
    path = write_video(tmp_path / f"slow.{ext}", frames, fps=30, codec=codec, pts_ms=[100 * i for i in range(20)])
    with av.open(str(path)) as c:
        declared = float(c.streams.video[0].average_rate)
    with open_video(path) as r:
        if abs(declared - 10) > 2.5:
            assert declared == 30 and r.fps == pytest.approx(10.0)
        else:  # mp4 declares frames / duration, close to 10: kept, as decord reports it
            assert r.fps == declared


def test_stream_without_timestamps_is_counted_by_decoding(media):
    """A raw H.264 stream has no timestamps and cannot seek: frames are counted and read in order."""
    with open_video(media["raw_h264"]) as r:
        assert not r._exact and r.num_frames == 40 and r.fps == 25.0


def test_seeks_instead_of_decoding_everything(media, monkeypatch):
    """Frames near the end cost about one GOP, not the whole video."""
    reader = PyAVReader(media["gop_mp4"])
    decoded = []
    real = reader._decode

    def counting(**kwargs):
        for frame in real(**kwargs):
            decoded.append(frame.pts)
            yield frame

    monkeypatch.setattr(reader, "_decode", counting)
    reader.get_frames([62, 66, 70])
    assert len(decoded) <= 15 + 4  # keyframe at 60, B-frame reorder delay
    assert reader._disposable is not None and len(decoded) < 11  # unreferenced pictures skipped
    decoded.clear()
    reader.get_frames([2, 70])  # far apart: two seeks, not 70 frames
    assert len(decoded) <= 2 * (15 + 4)
    reader.close()


@pytest.mark.parametrize("name, reason", [
    ("empty", "empty file"),
    ("text", "cannot open"),
    ("truncated", "cannot open"),
    ("audio_only", "no video stream"),
    ("cover_art", "still image (cover art)"),
    ("missing", "file not found"),
])
def test_broken_files_raise_decode_error(media, name, reason):
    with pytest.raises(DecodeError) as info:
        open_video(media[name])
    assert reason in str(info.value)
    assert info.value.path == str(media[name])


def test_hidden_leading_frames_are_not_indexed(media):
    """Frames an edit list trims, and frames of a GOP whose keyframe was cut off, are not frames
    of the video: they are not counted, and the first shown frame decodes."""
    with open_video(media["edit_list_mp4"]) as r:
        assert r.num_frames == 25 and not r.truncated
        np.testing.assert_array_equal(r.get_frames([0, 1]), sequential_decode(media["edit_list_mp4"])[:2])
    with open_video(media["cut_mp4"]) as r:
        assert r.num_frames == 75 - 15 and not r.truncated  # the first GOP (15 frames) is gone


def test_truncated_faststart_file_keeps_its_complete_frames(media):
    """moov at the front, data cut: the frames before the cut are usable, the cut packet is dropped."""
    with open_video(media["truncated_faststart"]) as r:
        assert r.truncated and 0 < r.num_frames < 60
        frames = r.get_frames(range(r.num_frames))
    assert frames.shape[0] == r.num_frames


def test_index_errors_are_value_errors(media):
    with open_video(media["short_mp4"]) as r:
        with pytest.raises(ValueError, match="outside"):
            r.get_frames([5])


def test_unknown_and_missing_backends(media):
    with pytest.raises(ValueError, match="unknown video decoder"):
        open_video(media["gop_mp4"], backend="opencv")
    for backend in ("decord", "torchcodec"):
        try:
            reader = open_video(media["gop_mp4"], backend=backend)
        except ImportError as exc:
            assert "pip install" in str(exc)
        else:  # installed: it must agree with PyAV
            full = sequential_decode(media["gop_mp4"])
            assert reader.num_frames == len(full)
            np.testing.assert_array_equal(reader.get_frames([3, 40]), full[[3, 40]])


def test_decode_order_timestamps_are_confirmed_by_decoding(media):
    """Only a stream whose decoder output goes back in pts is read in output order: a reordering codec
    whose packets merely arrive in pts order (no B-frames used) keeps the fast indexed path."""
    with PyAVReader(media["bframes_avi"]) as avi, PyAVReader(media["gop_mp4"]) as mp4:
        assert avi._output_is_reordered() and not avi._exact and avi.num_frames == 36
        assert not mp4._output_is_reordered() and mp4._exact

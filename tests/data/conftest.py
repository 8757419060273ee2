"""Fixtures of the data tests: tiny real media files, good and broken, made once per session."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from media_helpers import (
    X264_BFRAMES,
    coded_frames,
    remux_without_first_packets,
    write_audio_only,
    write_audio_with_cover,
    write_trimmed_mp4,
    write_video,
)


@pytest.fixture(scope="session")
def media(tmp_path_factory) -> dict[str, Path]:
    """Good and broken files, made once per test session."""
    d = tmp_path_factory.mktemp("media")
    out: dict[str, Path] = {}
    out["gop_mp4"] = write_video(d / "gop.mp4", coded_frames(75, 48, 64), fps=25, options=X264_BFRAMES)
    out["portrait_mp4"] = write_video(d / "portrait.mp4", coded_frames(20, 64, 40, seed=1), fps=30)
    out["odd_webm"] = write_video(d / "odd.webm", coded_frames(40, 37, 51, seed=2), fps=24, codec="libvpx-vp9",
                                  options={"deadline": "realtime", "cpu-used": "8", "g": "10"})
    vfr = np.cumsum([0] + [33 if i % 3 else 80 for i in range(29)]).tolist()
    out["vfr_mp4"] = write_video(d / "vfr.mp4", coded_frames(30, 32, 32, seed=3), options=X264_BFRAMES,
                                 pts_ms=vfr)
    out["x264_defaults"] = write_video(d / "defaults.mp4", coded_frames(120, 48, 64, seed=6), fps=30)
    out["raw_h264"] = write_video(d / "raw.h264", coded_frames(40, 32, 48, seed=5), fps=25, options=X264_BFRAMES)
    out["short_mp4"] = write_video(d / "short.mp4", coded_frames(5, 32, 48, seed=4), fps=30)
    (d / "empty.mp4").write_bytes(b"")
    out["empty"] = d / "empty.mp4"
    (d / "text.mp4").write_text("this is not a video\n" * 20)
    out["text"] = d / "text.mp4"
    data = out["gop_mp4"].read_bytes()
    (d / "truncated.mp4").write_bytes(data[: len(data) // 2])
    out["truncated"] = d / "truncated.mp4"
    fast = write_video(d / "faststart.mp4", coded_frames(60, 48, 64), fps=25, options=X264_BFRAMES,
                       container_options={"movflags": "faststart"})
    data = fast.read_bytes()
    (d / "truncated_faststart.mp4").write_bytes(data[: int(len(data) * 0.8)])
    out["truncated_faststart"] = d / "truncated_faststart.mp4"
    out["audio_only"] = write_audio_only(d / "audio.m4a")
    out["missing"] = d / "does_not_exist.mp4"
    out["edit_list_mp4"] = write_trimmed_mp4(d / "trimmed.mp4", coded_frames(30, 32, 48, seed=7), trimmed=5)
    gops = write_video(d / "gops.mkv", coded_frames(60, 32, 48, seed=8), fps=30, options=X264_BFRAMES)
    out["cut_mkv"] = remux_without_first_packets(gops, d / "cut.mkv", 5)
    out["cut_mp4"] = remux_without_first_packets(out["gop_mp4"], d / "cut.mp4", 5)
    out["cover_art"] = write_audio_with_cover(d / "song.mp4")
    # AVI has no reordering timestamps: with B-frames its packets count in decode order
    out["bframes_avi"] = write_video(d / "bframes.avi", coded_frames(36, 32, 48, seed=9), options=X264_BFRAMES)
    out["bframes_mpeg4_avi"] = write_video(d / "bframes_mpeg4.avi", coded_frames(36, 32, 48, seed=10), codec="mpeg4",
                                           options={"bf": "2", "g": "12"})
    return out

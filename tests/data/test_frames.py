"""Frame folders: extraction (resumable, failures listed) and the reader (same frames as the video)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from tada.data.decode import DecodeError, PyAVReader
from tada.data.extract import ExtractSettings, extract_video, extract_videos, find_videos, read_video_list
from tada.data.frame_indices import sample_indices
from tada.data.frames import (
    FrameFolderReader,
    FrameListEntry,
    decode_jpegs_gpu,
    folder_for_video,
    open_frames,
    read_frame_list,
    read_meta,
    write_frame_list,
)
from tada.errors import TadaError

HEIGHT, WIDTH, FRAMES, FPS = 48, 64, 45, 25


def make_video(path: Path, *, frames: int = FRAMES, fps: int = FPS, height: int = HEIGHT, width: int = WIDTH,
               seed: int = 0) -> Path:
    """H.264 with B-frames and short GOPs; every frame differs clearly from its neighbours."""
    import av

    rng = np.random.default_rng(seed)
    coarse = rng.integers(30, 90, (height // 8 + 1, width // 8 + 1, 3)).astype(np.uint8)
    background = np.kron(coarse, np.ones((8, 8, 1), np.uint8))[:height, :width]
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"g": "12", "bf": "2", "crf": "12"}
        for t in range(frames):
            img = background.copy()
            # a bright bar whose position encodes the frame number, and a brightness ramp
            x0 = (t * 7) % (width - 8)
            img[:, x0:x0 + 8] = (255, 255 - 4 * t % 200, 40)
            img[: height // 4] = np.uint8(min(t * 5, 250))
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture(scope="module")
def video_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("videos")
    make_video(root / "class_a" / "v0.mp4", seed=0)
    make_video(root / "class_b" / "v1.mp4", frames=30, fps=30, seed=1)
    (root / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 200)
    return root


@pytest.fixture(scope="module")
def extracted(video_root, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("frames")
    report = extract_videos([("class_a/v0.mp4", 3), ("class_b/v1.mp4", 5)], root=video_root, out=out,
                            name="train", settings=ExtractSettings(quality=95, subsampling="444"),
                            progress=False)
    assert [r.status for r in report.results] == ["done", "done"]
    return out


def test_folder_layout_meta_and_list(extracted: Path) -> None:
    folder = extracted / "class_a" / "v0"
    names = sorted(os.listdir(folder))
    assert names[0] == "img_00001.jpg" and names[FRAMES - 1] == f"img_{FRAMES:05d}.jpg"
    assert names[-1] == "meta.json" and len(names) == FRAMES + 1
    meta = read_meta(folder)
    assert meta["num_frames"] == FRAMES and meta["fps"] == pytest.approx(FPS)
    assert (meta["height"], meta["width"], meta["quality"], meta["step"]) == (HEIGHT, WIDTH, 95, 1)
    assert meta["bytes"] == sum(os.path.getsize(folder / n) for n in names if n.endswith(".jpg"))
    entries = read_frame_list(extracted / "train.frames.txt")
    assert entries == [FrameListEntry("class_a/v0", FRAMES, meta["fps"], 3),
                       FrameListEntry("class_b/v1", 30, read_meta(extracted / "class_b" / "v1")["fps"], 5)]
    assert not (extracted / "train.failed.txt").exists()
    assert not [p for p in extracted.rglob(".*")]  # no temporary folders left


def _nearest_frame(frame: np.ndarray, all_frames: np.ndarray) -> int:
    err = np.abs(all_frames.astype(np.int16) - frame.astype(np.int16)).mean(axis=(1, 2, 3))
    return int(err.argmin())


@pytest.mark.parametrize("rel", ["class_a/v0.mp4", "class_b/v1.mp4"])
def test_same_indices_and_pixels_as_the_video(video_root: Path, extracted: Path, rel: str) -> None:
    video = PyAVReader(video_root / rel)
    frames = open_frames(folder_for_video(extracted, rel))
    assert (frames.num_frames, frames.fps, frames.height, frames.width) == \
        (video.num_frames, video.fps, video.height, video.width)
    everything = video.get_frames(range(video.num_frames))
    rng = np.random.default_rng(0)
    for mode, view, views in [("interval_based", None, 1), ("interval_based", 3, 4), ("segment_based", 1, 2),
                              ("segment_based", None, 1)]:
        kw = dict(num_input_frames=8, sampling_rate=2, target_fps=30, view=view, num_views=views)
        idx_v = sample_indices(mode, video.num_frames, video.fps, rng=np.random.default_rng(1), **kw)
        idx_f = sample_indices(mode, frames.num_frames, frames.fps, rng=np.random.default_rng(1), **kw)
        np.testing.assert_array_equal(idx_v, idx_f)
        a, b = video.get_frames(idx_v), frames.get_frames(idx_f)
        assert a.shape == b.shape and b.dtype == np.uint8
        diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
        assert diff.mean() < 1.5, diff.mean()  # JPEG error at quality 95, 4:4:4
        # every JPEG frame is closest to the video frame of the same index: no shift
        assert [_nearest_frame(f, everything) for f in b] == idx_v.tolist()
    # order and repeats are kept, as the video reader does
    idx = [5, 2, 2, 40 % frames.num_frames]
    np.testing.assert_array_equal(frames.get_frames(idx)[1], frames.get_frames([2])[0])
    assert [_nearest_frame(f, everything) for f in frames.get_frames(idx)] == idx
    del rng


def test_step_and_short_side(video_root: Path, tmp_path: Path) -> None:
    settings = ExtractSettings(short_side=24, step=3, quality=95)
    status, reason, meta = extract_video(video_root / "class_a/v0.mp4", tmp_path / "v0", settings=settings)
    assert (status, reason) == ("done", "")
    assert meta["num_frames"] == -(-FRAMES // 3) and meta["source_num_frames"] == FRAMES
    assert meta["fps"] == pytest.approx(FPS / 3) and meta["source_fps"] == pytest.approx(FPS)
    reader = open_frames(tmp_path / "v0")
    assert (reader.height, reader.width) == (24, 32)
    # stored frame k is source frame 3k (compared at the stored size)
    import av

    with av.open(str(video_root / "class_a/v0.mp4")) as c:
        small = np.stack([f.to_ndarray(format="rgb24", width=32, height=24, interpolation="AREA")
                          for f in c.decode(video=0)])
    got = reader.get_frames(range(reader.num_frames))
    assert [_nearest_frame(f, small) for f in got] == list(range(0, FRAMES, 3))


def test_a_broken_video_is_listed_with_its_reason(video_root: Path, tmp_path: Path) -> None:
    videos = [("class_a/v0.mp4", 1), ("broken.mp4", 2), ("missing.mp4", 3)]
    report = extract_videos(videos, root=video_root, out=tmp_path, name="val", progress=False)
    assert [r.status for r in report.results] == ["done", "failed", "failed"]
    assert report.failed_path == str(tmp_path / "val.failed.txt")
    lines = (tmp_path / "val.failed.txt").read_text().splitlines()
    assert [ln.split("\t")[0] for ln in lines] == ["broken.mp4", "missing.mp4"]
    assert "not found" in lines[1] and all(ln.split("\t")[1] for ln in lines)
    assert not (tmp_path / "broken").exists() and not (tmp_path / ".broken.partial").exists()
    assert [e.relpath for e in read_frame_list(tmp_path / "val.frames.txt")] == ["class_a/v0"]
    summary = report.summary()
    assert "2 failed" in summary and "broken.mp4" in summary and "MB per video" in summary


def test_resume_after_a_kill(video_root: Path, tmp_path: Path) -> None:
    videos = [("class_a/v0.mp4", 0), ("class_b/v1.mp4", 1)]
    settings = ExtractSettings(quality=80)
    extract_videos(videos, root=video_root, out=tmp_path, name="t", settings=settings, progress=False)
    first = (tmp_path / "class_a/v0/img_00001.jpg").stat().st_mtime_ns
    # a killed run: one folder never published (a partial one lies around), the other finished
    shutil.rmtree(tmp_path / "class_b/v1")
    partial = tmp_path / "class_b" / ".v1.partial"
    partial.mkdir()
    (partial / "img_00001.jpg").write_bytes(b"half")
    report = extract_videos(videos, root=video_root, out=tmp_path, name="t", settings=settings, progress=False)
    assert [r.status for r in report.results] == ["skipped", "done"]
    assert (tmp_path / "class_a/v0/img_00001.jpg").stat().st_mtime_ns == first  # not redone
    assert not partial.exists() and open_frames(tmp_path / "class_b/v1").num_frames == 30
    assert len(read_frame_list(tmp_path / "t.frames.txt")) == 2
    # other settings never mix silently with a finished folder
    other = extract_videos(videos[:1], root=video_root, out=tmp_path, name="t2",
                           settings=ExtractSettings(quality=70), progress=False)
    assert other.results[0].status == "failed" and "--overwrite" in other.results[0].reason
    redo = extract_videos(videos[:1], root=video_root, out=tmp_path, name="t2",
                          settings=ExtractSettings(quality=70), overwrite=True, progress=False)
    assert redo.results[0].status == "done" and read_meta(tmp_path / "class_a/v0")["quality"] == 70
    # a finished folder that lost frames is not skipped as finished: the reader would refuse it
    (tmp_path / "class_a/v0/img_00045.jpg").unlink()
    again = extract_videos(videos[:1], root=video_root, out=tmp_path, name="t3",
                           settings=ExtractSettings(quality=70), progress=False)
    assert again.results[0].status == "failed"
    assert "damaged (truncated: img_00045.jpg missing" in again.results[0].reason
    assert "--overwrite" in again.results[0].reason


def test_parallel_extraction_via_the_cli(video_root: Path, tmp_path: Path, capsys) -> None:
    from tada.cli import main

    out = tmp_path / "out"
    rc = main(["extract-frames", "--root", str(video_root), "--out", str(out), "--workers", "2", "--no-progress"])
    assert rc == 1  # broken.mp4 fails, the others are extracted
    text = capsys.readouterr().out
    assert "2 extracted" in text and "1 failed" in text and "broken.mp4" in text
    assert [e.relpath for e in read_frame_list(out / "videos.frames.txt")] == ["class_a/v0", "class_b/v1"]
    listing = tmp_path / "list.txt"
    listing.write_text("class_b/v1.mp4 7\n\nclass_a/v0.mp4 2\n")
    rc = main(["extract-frames", "--videos", str(listing), "--root", str(video_root), "--out", str(out),
               "--workers", "1", "--no-progress"])
    assert rc == 0 and "2 already finished" in capsys.readouterr().out
    assert [(e.relpath, e.label) for e in read_frame_list(out / "list.frames.txt")] == \
        [("class_b/v1", 7), ("class_a/v0", 2)]


def test_extract_jobs_reports_each_list_as_it_finishes(video_root: Path, tmp_path: Path) -> None:
    from tada.data.extract import extract_jobs

    videos = [v for v in find_videos(video_root) if "broken" not in v[0]]
    jobs = [("first", videos[:1], str(video_root), str(tmp_path)), ("second", videos, str(video_root), str(tmp_path))]
    seen = []
    reports = extract_jobs(jobs, settings=ExtractSettings(quality=70), workers=2, progress=False, on_report=seen.append)
    assert seen == reports and [Path(r.list_path).name for r in reports] == ["first.frames.txt", "second.frames.txt"]
    assert [r.status for r in reports[0].results] == ["done"]
    assert [r.status for r in reports[1].results] == ["skipped", "done"]  # the first list's video is finished
    with pytest.raises(TadaError, match="--workers must be >= 1"):
        extract_jobs(jobs, settings=ExtractSettings(), workers=0)


def test_cli_input_errors(tmp_path: Path, capsys) -> None:
    from tada.cli import main

    bad = tmp_path / "bad.txt"
    bad.write_text("a.mp4 1\nb.mp4 x\n")
    with pytest.raises(TadaError, match=r"bad.txt:2: the label must be an integer"):
        read_video_list(bad)
    spaced = tmp_path / "spaced.txt"
    spaced.write_text("my clips/a b.mp4 3\nc.mp4\n")
    assert read_video_list(spaced) == [("my clips/a b.mp4", 3), ("c.mp4", -1)]
    for argv, message in [
        (["--out", str(tmp_path)], "--root DIR and --out DIR"),
        (["--root", str(tmp_path), "--out", str(tmp_path), "--quality", "0"], "JPEG quality"),
        (["--root", str(tmp_path), "--out", str(tmp_path / "o")], "no video files"),
        (["--videos", str(bad), "--root", str(tmp_path), "--out", str(tmp_path / "o")], "bad.txt:2"),
        (["--videos", str(tmp_path / "nolist.txt"), "--root", str(tmp_path), "--out", str(tmp_path / "o")],
         "cannot read the video list"),
        (["--root", str(tmp_path), "--out", str(bad)], "exists and is not a directory"),
    ]:
        assert main(["extract-frames", *argv]) == 2
        assert message in capsys.readouterr().err


def test_two_videos_never_share_a_folder(video_root: Path, tmp_path: Path) -> None:
    with pytest.raises(TadaError, match="share the frame folder"):
        extract_videos([("class_a/v0.mp4", 0), ("class_a/v0.webm", 0)], root=video_root, out=tmp_path,
                       name="x", progress=False)


def test_a_video_listed_twice_is_extracted_once(video_root: Path, tmp_path: Path) -> None:
    videos = [("class_b/v1.mp4", 4), ("class_a/v0.mp4", 1), ("class_b/v1.mp4", 5)]
    report = extract_videos(videos, root=video_root, out=tmp_path, name="d", progress=False)
    assert [(r.relpath, r.status) for r in report.results] == [("class_b/v1.mp4", "done"), ("class_a/v0.mp4", "done")]
    assert [(e.relpath, e.label) for e in read_frame_list(tmp_path / "d.frames.txt")] == \
        [("class_b/v1", 4), ("class_a/v0", 1), ("class_b/v1", 5)]


def test_find_videos(video_root: Path) -> None:
    assert [rel for rel, _ in find_videos(video_root)] == ["broken.mp4", "class_a/v0.mp4", "class_b/v1.mp4"]


# --------------------------------------------------------------------------------------------
# broken folders fail by path, like broken videos
# --------------------------------------------------------------------------------------------
@pytest.fixture
def copy_of(extracted: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "v0"
    shutil.copytree(extracted / "class_a" / "v0", dst)
    return dst


def test_missing_folder_and_missing_meta(tmp_path: Path, copy_of: Path) -> None:
    with pytest.raises(DecodeError, match="frame folder not found") as err:
        open_frames(tmp_path / "nope")
    assert err.value.path == str(tmp_path / "nope")
    (copy_of / "meta.json").unlink()
    with pytest.raises(DecodeError, match="no meta.json"):
        open_frames(copy_of)
    # a frame list may supply what meta.json would
    assert FrameFolderReader(copy_of, num_frames=FRAMES, fps=25.0, template="img_{:05d}.jpg").num_frames == FRAMES


def test_truncated_folder_fails_on_open(copy_of: Path) -> None:
    (copy_of / f"img_{FRAMES:05d}.jpg").unlink()
    with pytest.raises(DecodeError, match=f"truncated: img_{FRAMES:05d}.jpg missing") as err:
        open_frames(copy_of)
    assert err.value.path == str(copy_of)


def test_missing_empty_or_corrupt_frame_fails_on_read(copy_of: Path) -> None:
    reader = open_frames(copy_of)
    (copy_of / "img_00004.jpg").unlink()
    (copy_of / "img_00005.jpg").write_bytes(b"")
    data = (copy_of / "img_00006.jpg").read_bytes()
    (copy_of / "img_00006.jpg").write_bytes(data[: len(data) // 3])
    (copy_of / "img_00007.jpg").write_bytes(b"not a jpeg at all")
    reader.get_frames([0, 1])  # untouched frames still read
    with pytest.raises(DecodeError, match="img_00004.jpg missing"):
        reader.get_frames([1, 3])
    with pytest.raises(DecodeError, match="img_00005.jpg is empty"):
        reader.get_frames([4])
    with pytest.raises(DecodeError, match="frame 6"):
        reader.get_frames([5])
    with pytest.raises(DecodeError, match="frame 7"):
        reader.get_frames([6])
    with pytest.raises(ValueError, match="outside"):
        reader.get_frames([FRAMES])


def test_bad_meta(copy_of: Path) -> None:
    meta = json.loads((copy_of / "meta.json").read_text())
    (copy_of / "meta.json").write_text(json.dumps({**meta, "num_frames": "many"}))
    with pytest.raises(DecodeError, match="invalid 'num_frames'"):
        open_frames(copy_of)
    (copy_of / "meta.json").write_text("{")
    with pytest.raises(DecodeError, match="unreadable meta.json"):
        open_frames(copy_of)


def test_jpeg_bytes_for_gpu_decoding(extracted: Path) -> None:
    reader = open_frames(extracted / "class_a" / "v0")
    data = reader.get_jpeg_bytes([3, 1, 3])
    assert data[0] is data[2] and data[0] == (extracted / "class_a/v0/img_00004.jpg").read_bytes()


def test_gpu_decoding_says_what_is_missing(extracted: Path) -> None:
    data = open_frames(extracted / "class_a" / "v0").get_jpeg_bytes([0, 1])
    try:
        import torchvision  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="needs torchvision with CUDA"):
            decode_jpegs_gpu(data)
        return
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    out = decode_jpegs_gpu(data)
    assert out[0].shape == (3, HEIGHT, WIDTH) and out[0].is_cuda


def test_frame_list_format(tmp_path: Path) -> None:
    path = tmp_path / "x.frames.txt"
    entries = [FrameListEntry("a b/c", 10, 29.97002997002997, -1), FrameListEntry("d", 1, 30.0, 4)]
    write_frame_list(path, entries)
    assert read_frame_list(path) == entries  # fps round-trips exactly; paths may hold spaces
    path.write_text("a 10 30.0\n")
    with pytest.raises(ValueError, match="x.frames.txt:1: expected"):
        read_frame_list(path)
    path.write_text("a 10 30.0 1\nb 0 30.0 1\n")
    with pytest.raises(ValueError, match="x.frames.txt:2"):
        read_frame_list(path)


def test_folder_for_video_rejects_escaping_paths(tmp_path: Path) -> None:
    assert folder_for_video(tmp_path, "k/a.b.mp4") == str(tmp_path / "k" / "a.b")
    for bad in ("/abs/x.mp4", "../x.mp4"):
        with pytest.raises(ValueError, match="must lie under the video root"):
            folder_for_video(tmp_path, bad)


@pytest.mark.parametrize("name", ["truncated_faststart", "edit_list_mp4", "cut_mp4"])
def test_extraction_keeps_exactly_the_readers_frames(media, tmp_path: Path, name: str) -> None:
    """A file the video route reads (a cut-off last packet, trimmed or undecodable leading frames)
    extracts to the same frames, not to a count mismatch."""
    with PyAVReader(media[name]) as reader:
        expected = reader.get_frames(range(reader.num_frames))
    status, reason, meta = extract_video(media[name], tmp_path / "f", settings=ExtractSettings(quality=100,
                                                                                                subsampling="444"))
    assert status == "done", reason
    assert meta["num_frames"] == len(expected)
    frames = open_frames(tmp_path / "f").get_frames(range(len(expected)))
    assert np.abs(frames.astype(int) - expected.astype(int)).mean() < 2  # JPEG at quality 100


# --------------------------------------------------------------------------------------------
# a frame folder is tied to its video
# --------------------------------------------------------------------------------------------
def test_a_replaced_video_is_extracted_again(tmp_path: Path) -> None:
    root = tmp_path / "videos"
    make_video(root / "a" / "clip.mp4", frames=20, seed=3)
    videos, out = [("a/clip.mp4", 0)], tmp_path / "frames"
    assert extract_videos(videos, root=root, out=out, name="t", progress=False).results[0].status == "done"
    meta = read_meta(out / "a" / "clip")
    assert meta["source"] == "a/clip.mp4" and meta["source_size"] == (root / "a" / "clip.mp4").stat().st_size
    assert extract_videos(videos, root=root, out=out, name="t", progress=False).results[0].status == "skipped"
    make_video(root / "a" / "clip.mp4", frames=30, seed=4)  # another video under the same name
    report = extract_videos(videos, root=root, out=out, name="t", progress=False)
    assert report.results[0].status == "done" and open_frames(out / "a" / "clip").num_frames == 30
    with PyAVReader(str(root / "a" / "clip.mp4")) as video:
        want = video.get_frames([7])
    assert np.abs(open_frames(out / "a" / "clip").get_frames([7]).astype(int) - want.astype(int)).mean() < 3
    # replaced by a broken file: the stale frames go, so they are never read as this video
    (root / "a" / "clip.mp4").write_bytes(b"not a video any more")
    report = extract_videos(videos, root=root, out=out, name="t", progress=False)
    assert report.results[0].status == "failed" and "earlier version were removed" in report.results[0].reason
    assert not (out / "a" / "clip").exists()


def test_a_folder_of_another_video_with_the_same_stem_is_an_error(video_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "videos"
    shutil.copytree(video_root / "class_a", root / "class_a")
    shutil.copy(video_root / "class_b" / "v1.mp4", root / "class_a" / "v0.mkv")
    out = tmp_path / "frames"
    extract_videos([("class_a/v0.mp4", 0)], root=root, out=out, name="train", progress=False)
    report = extract_videos([("class_a/v0.mkv", 0)], root=root, out=out, name="val", progress=False)
    (result,) = report.results
    assert result.status == "failed"
    assert "holds the frames of 'class_a/v0.mp4', not of 'class_a/v0.mkv'" in result.reason
    assert read_frame_list(out / "val.frames.txt") == []


def test_two_lists_of_one_run_never_share_a_folder(video_root: Path, tmp_path: Path, capsys) -> None:
    from tada.cli import main

    root = tmp_path / "videos"
    shutil.copytree(video_root / "class_a", root / "class_a")
    shutil.copy(video_root / "class_b" / "v1.mp4", root / "class_a" / "v0.mkv")
    (root / "kinetics400_train_list.txt").write_text("class_a/v0.mp4 0\n")
    (root / "kinetics400_val_list.txt").write_text("class_a/v0.mkv 1\n")
    cfg = tmp_path / "k400.yaml"
    cfg.write_text("TRAIN: {DATASET: kinetics400}\nTEST: {DATASET: kinetics400}\nVIDEO: {HEAD: {NUM_CLASSES: 2}}\n")
    rc = main(["extract-frames", "--cfg", str(cfg), "--splits", "train,val", "--workers", "1", "--no-progress",
               "DATA.DATA_ROOT_DIR", str(root)])
    assert rc == 2
    err = capsys.readouterr().err
    assert "'class_a/v0.mp4' (train list) and 'class_a/v0.mkv' (val list) would share the frame folder" in err
    assert not (root / "frames" / "class_a").exists()  # refused before anything was extracted


def test_video_lists_with_a_byte_order_mark_or_latin1(tmp_path: Path) -> None:
    listing = tmp_path / "list.txt"
    listing.write_text("\ufeffa/first.mp4 0\nb.mp4 1\n", encoding="utf-8")
    assert read_video_list(listing) == [("a/first.mp4", 0), ("b.mp4", 1)]
    listing.write_bytes("a.mp4 0\ncaf\xe9.mp4 1\n".encode("latin-1"))
    with pytest.raises(TadaError, match=rf"{listing}:2: not UTF-8"):
        read_video_list(listing)

"""The synthetic dataset: time-reversal pairs with identical frame sets, deterministic, cached, CLI."""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import numpy as np
import pytest

from tada.cli.synth import add_arguments, run
from tada.data.decode import open_video
from tada.data.synthetic import (
    CLASSES,
    DEFAULT_CLASSES,
    GENERATOR_VERSION,
    VideoParams,
    ensure_dataset,
    generate_dataset,
    read_manifest,
    render_video,
)

TINY = dict(videos_per_class={"train": 1, "val": 1, "test": 1}, sizes=(32, 40), lengths=(12, 16), workers=1)


def _digest(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != "manifest.json"}


def test_reversed_class_is_the_same_video_played_backwards():
    params = VideoParams(num_frames=20, fps=25, height=40, width=56)
    for forward, backward in (("grows", "shrinks"), ("fades in", "fades out"),
                              ("turns red to blue", "turns blue to red"),
                              ("moves left to right", "moves right to left")):
        a = render_video(CLASSES[forward], np.random.default_rng(5), params)
        b = render_video(CLASSES[backward], np.random.default_rng(5), params)
        np.testing.assert_array_equal(a[::-1], b)
        assert a.shape == (20, 40, 56, 3) and a.dtype == np.uint8
        assert np.abs(a[0].astype(int) - a[-1].astype(int)).mean() > 3  # the change is visible


def test_changes_move_the_per_frame_mean():
    """The default temporal classes change the spatial mean of a frame (what the routing function sees)."""
    params = VideoParams(num_frames=16, fps=25, height=48, width=48)
    for name in ("grows", "fades in", "turns red to blue"):
        v = render_video(CLASSES[name], np.random.default_rng(1), params).astype(float)
        means = v.mean(axis=(1, 2))  # (T, 3)
        assert np.abs(means[-1] - means[0]).max() > 2.0
    static = render_video(CLASSES["static ring"], np.random.default_rng(1), params).astype(float).mean(axis=(1, 2))
    assert np.abs(static[-1] - static[0]).max() < 1.5


def test_generate_is_deterministic_and_describes_itself(tmp_path):
    m1 = generate_dataset(tmp_path / "a", seed=3, **TINY)
    generate_dataset(tmp_path / "b", seed=3, **TINY)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert m1["generator_version"] == GENERATOR_VERSION
    assert m1["classes"] == list(DEFAULT_CLASSES)
    assert m1["pairs"] == [[0, 1], [2, 3], [4, 5]] and m1["appearance_classes"] == [6]
    assert m1["counts"] == {"train": 7, "val": 7, "test": 7}
    lines = (tmp_path / "a" / "train_list.txt").read_text().splitlines()
    rel, label = lines[1].rsplit(" ", 1)
    assert label == "1" and "shrinks" in rel
    with open_video(tmp_path / "a" / rel) as r:
        assert 12 <= r.num_frames <= 16 and 24 <= r.fps <= 30 and min(r.height, r.width) >= 32
    generate_dataset(tmp_path / "c", seed=4, **TINY)
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")


def test_ensure_dataset_reuses_a_complete_folder(tmp_path):
    m = ensure_dataset(tmp_path, seed=0, **TINY)
    video = tmp_path / "videos" / "train" / "grows_0000.mp4"
    stamp = video.stat().st_mtime_ns
    assert ensure_dataset(tmp_path, seed=0, **TINY) == m and video.stat().st_mtime_ns == stamp
    (tmp_path / "manifest.json").unlink()  # an interrupted generation has no manifest
    ensure_dataset(tmp_path, seed=0, **TINY)
    assert read_manifest(tmp_path)["params"]["seed"] == 0


def test_never_overwrites_a_folder_it_did_not_write(tmp_path):
    from tada.errors import TadaError

    (tmp_path / "videos" / "abseiling").mkdir(parents=True)
    (tmp_path / "videos" / "abseiling" / "clip.mp4").write_bytes(b"user data")
    (tmp_path / "train_list.txt").write_text("abseiling/clip.mp4 0\n")
    with pytest.raises(TadaError, match="not empty and holds no synthetic dataset"):
        generate_dataset(tmp_path, **TINY)
    assert (tmp_path / "videos" / "abseiling" / "clip.mp4").read_bytes() == b"user data"
    assert (tmp_path / "train_list.txt").read_text() == "abseiling/clip.mp4 0\n"


@pytest.mark.parametrize("manifest", ['{"version": 3, "files": ["clip.mp4"]}\n', "not json at all\n"])
def test_refuses_a_folder_whose_manifest_someone_else_wrote(tmp_path, manifest):
    from tada.errors import TadaError

    (tmp_path / "videos").mkdir()
    (tmp_path / "videos" / "clip.mp4").write_bytes(b"user data")
    (tmp_path / "manifest.json").write_text(manifest)
    with pytest.raises(TadaError, match="holds no synthetic dataset.*manifest.json it did not write"):
        generate_dataset(tmp_path, **TINY)
    with pytest.raises(TadaError, match="holds no synthetic dataset"):
        ensure_dataset(tmp_path, **TINY)
    assert (tmp_path / "videos" / "clip.mp4").read_bytes() == b"user data"
    assert (tmp_path / "manifest.json").read_text() == manifest


def test_regenerates_its_own_folder_identified_by_its_manifest(tmp_path):
    """A folder whose marker was lost (copied without hidden files) is still recognised by its manifest."""
    m = generate_dataset(tmp_path, seed=1, **TINY)
    assert m["generator"] == "tada.data.synthetic"
    (tmp_path / ".tada-synthetic").unlink()
    assert generate_dataset(tmp_path, seed=2, **TINY)["params"]["seed"] == 2
    assert (tmp_path / ".tada-synthetic").is_file()


def test_class_sets_and_errors(tmp_path):
    m = generate_dataset(tmp_path, classes=("moves left to right", "moves right to left", "static cross"), **TINY)
    assert m["pairs"] == [[0, 1]] and m["appearance_classes"] == [2]
    with pytest.raises(ValueError, match="partner"):
        generate_dataset(tmp_path, classes=("grows", "static ring"), **TINY)
    with pytest.raises(ValueError, match="unknown synthetic classes"):
        generate_dataset(tmp_path, classes=("spins",), **TINY)


def test_cli(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--out", str(tmp_path), "--videos-per-class", "1,0,1", "--classes",
                              "grows,shrinks", "--workers", "1"])
    assert run(args) == 0
    assert "2 classes" in capsys.readouterr().out
    assert (tmp_path / "classes.txt").read_text() == "grows\nshrinks\n"
    assert (tmp_path / "val_list.txt").read_text() == ""


def test_reversal6_classes_are_pairs_played_backwards():
    params = VideoParams(num_frames=24, fps=25, height=48, width=64)
    for forward, backward in (("slides right", "slides left"), ("square grows", "square shrinks"),
                              ("bar turns clockwise", "bar turns anticlockwise")):
        a = render_video(CLASSES[forward], np.random.default_rng(7), params)
        b = render_video(CLASSES[backward], np.random.default_rng(7), params)
        np.testing.assert_array_equal(a[::-1], b)
        assert np.abs(a[0].astype(int) - a[-1].astype(int)).mean() > 2  # the change is visible


def _object_mask(frame: np.ndarray) -> np.ndarray:
    """Pixels far from the frame's median colour: the (saturated) object, not the muted background."""
    return np.abs(frame.astype(float) - np.median(frame, axis=(0, 1))).sum(axis=2) > 60


def _centroid_x(frame: np.ndarray) -> float:
    return float(np.nonzero(_object_mask(frame))[1].mean())


def _second_moments(frame: np.ndarray) -> tuple[float, float, float]:
    """(xx, yy, xy) moments of the object mask: the orientation of a bar."""
    ys, xs = np.nonzero(_object_mask(frame))
    xs, ys = xs - xs.mean(), ys - ys.mean()
    return float((xs * xs).mean()), float((ys * ys).mean()), float((xs * ys).mean())


def test_reversal6_motions_go_the_named_way():
    """A slide goes right, a square grows, a bar turns clockwise on screen (image y points down)."""
    params = VideoParams(num_frames=30, fps=25, height=96, width=128)
    slide = render_video(CLASSES["slides right"], np.random.default_rng(2), params)
    assert _centroid_x(slide[-1]) - _centroid_x(slide[0]) > 0.3 * params.width
    grow = render_video(CLASSES["square grows"], np.random.default_rng(2), params)
    area = [_object_mask(f).sum() for f in grow[[0, -1]]]
    assert area[1] > 4 * area[0]
    bar = render_video(CLASSES["bar turns clockwise"], np.random.default_rng(2), params)
    angles = []
    for frame in bar[::3]:
        xx, yy, xy = _second_moments(frame)
        angles.append(0.5 * np.arctan2(2 * xy, xx - yy))  # the long axis, in screen coordinates
    steps = np.angle(np.exp(2j * np.diff(angles))) / 2  # modulo pi (a bar has no head)
    # Clockwise on screen = a growing angle with y pointing down; the turn may end before the clip does.
    assert (steps > -0.02).all() and steps.sum() > np.radians(80)


def test_reversal6_preset_and_cli(tmp_path, capsys):
    from tada.data.synthetic import PRESETS

    preset = PRESETS["reversal6"]
    assert preset.videos_per_class == {"train": 40, "val": 12, "test": 12} and preset.lengths == (36, 90)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--out", str(tmp_path), "--preset", "reversal6", "--videos-per-class", "1,0,0",
                              "--workers", "1"])
    assert run(args) == 0
    assert "6 classes" in capsys.readouterr().out
    manifest = read_manifest(tmp_path)
    assert manifest["pairs"] == [[0, 1], [2, 3], [4, 5]] and manifest["appearance_classes"] == []
    assert manifest["params"]["lengths"] == [36, 90] and manifest["params"]["sizes"] == [96, 160]
    with open_video(tmp_path / "videos" / "train" / "bar_turns_clockwise_0000.mp4") as r:
        assert 36 <= r.num_frames <= 90 and 96 <= min(r.height, r.width)

"""DATA.FORMAT frames: the dataset of a config gives the video route's items, within JPEG error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tada.config import load_config
from tada.data.datasets import build_dataset


def _sibling(name: str):
    """Import a sibling test module by path (works with or without a tests package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"_tada_{name}", Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_video = _sibling("test_frames").make_video


@pytest.fixture(scope="module")
def k400_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("k400")
    make_video(root / "train" / "a" / "v0.mp4", frames=45, fps=25, seed=0)
    make_video(root / "train" / "b" / "v1.mp4", frames=36, fps=30, height=64, width=48, seed=1)  # portrait
    make_video(root / "val" / "v2.mp4", frames=30, fps=30, seed=2)
    (root / "kinetics400_train_list.txt").write_text("train/a/v0.mp4 0\ntrain/b/v1.mp4 1\n")
    (root / "kinetics400_val_list.txt").write_text("val/v2.mp4 1\ntrain/a/v0.mp4 0\n")
    (root / "kinetics400_test_list.txt").write_text("val/v2.mp4 1\nval/missing.mp4 0\n")
    cfg = root / "k400.yaml"
    cfg.write_text(
        "TRAIN: {DATASET: kinetics400, BATCH_SIZE: 2}\n"
        "TEST: {DATASET: kinetics400, NUM_ENSEMBLE_VIEWS: 2, NUM_SPATIAL_CROPS: 3}\n"
        "DATA: {NUM_INPUT_FRAMES: 4, SAMPLING_RATE: 2, TRAIN_JITTER_SCALES: [32, 40], TRAIN_CROP_SIZE: 32,\n"
        "       TEST_SCALE: 40, TEST_CROP_SIZE: 40}\n"
        "VIDEO: {HEAD: {NUM_CLASSES: 2}}\n"
        "DATA_LOADER: {NUM_WORKERS: 0}\n"
    )
    return root


def _cfg(root: Path, *overrides):
    return load_config(root / "k400.yaml", overrides=["DATA.DATA_ROOT_DIR", str(root), *overrides])


@pytest.fixture(scope="module")
def extracted(k400_root: Path) -> Path:
    from tada.cli import main

    rc = main(["extract-frames", "--cfg", str(k400_root / "k400.yaml"), "--workers", "1", "--no-progress",
               "--subsampling", "444", "--quality", "95", "DATA.DATA_ROOT_DIR", str(k400_root)])
    assert rc == 1  # the test list names a missing video: listed, the rest extracted
    return k400_root / "frames"


def test_extract_from_a_config(extracted: Path) -> None:
    assert (extracted / "train" / "a" / "v0" / "meta.json").is_file()
    assert (extracted / "train.frames.txt").read_text().splitlines() == [
        "train/a/v0 45 25.0 0", "train/b/v1 36 30.0 1"]
    assert (extracted / "val.frames.txt").read_text().splitlines()[0] == "val/v2 30 30.0 1"
    failed = (extracted / "test.failed.txt").read_text()
    assert failed.startswith("val/missing.mp4\t") and "not found" in failed


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_frames_items_equal_video_items(k400_root: Path, extracted: Path, split: str) -> None:
    video_ds = build_dataset(_cfg(k400_root), split)
    frames_ds = build_dataset(_cfg(k400_root, "DATA.FORMAT", "frames"), split)
    assert len(video_ds) == len(frames_ds)
    for i in range(len(video_ds)):
        torch.manual_seed(i)  # the train item's random draws: identical for both routes
        a = video_ds[i]
        torch.manual_seed(i)
        b = frames_ds[i]
        assert (a["label"], a["index"], a["path"], a["failed"]) == (b["label"], b["index"], b["path"], b["failed"])
        assert a["video"].shape == b["video"].shape
        if a["failed"]:  # the missing video fails by path in both formats
            assert "not found" in a["error"] and "not found" in b["error"]
            continue
        # normalised with std 0.225: 1/255 of the range is 0.017; JPEG q95 4:4:4 stays well under 3 levels
        err = (a["video"] - b["video"]).abs().mean().item() * 0.225 * 255
        assert err < 2.0, (split, i, err)


def test_a_truncated_folder_is_a_failed_item_by_path(k400_root: Path, extracted: Path, tmp_path: Path) -> None:
    import shutil

    frames_dir = tmp_path / "frames"
    shutil.copytree(extracted, frames_dir)
    (frames_dir / "val" / "v2" / "img_00030.jpg").unlink()
    ds = build_dataset(_cfg(k400_root, "DATA.FORMAT", "frames", "DATA.FRAMES_DIR", str(frames_dir)), "val")
    item = ds[0]
    assert item["failed"] and "truncated: img_00030.jpg missing" in item["error"]
    assert not ds[1]["failed"]


def test_a_listed_video_outside_the_root_fails_at_build_time(k400_root: Path, extracted: Path,
                                                             tmp_path: Path) -> None:
    """Its frame folder has no name: the list is refused up front, not the item mid-epoch."""
    from tada.data.annotations import AnnotationError

    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "kinetics400_val_list.txt").write_text("val/v2.mp4 1\n../elsewhere/v9.mp4 0\n")
    cfg = _cfg(k400_root, "DATA.FORMAT", "frames", "DATA.ANNO_DIR", str(lists))
    with pytest.raises(AnnotationError, match=r"val list, video 2 .*elsewhere/v9.mp4.*must lie under the video root"):
        build_dataset(cfg, "val")


def test_frames_through_the_loader_with_workers(k400_root: Path, extracted: Path) -> None:
    from tada.data.loader import build_loader

    cfg = _cfg(k400_root, "DATA.FORMAT", "frames", "DATA_LOADER.NUM_WORKERS", 1, "DATA_LOADER.PERSISTENT_WORKERS",
               False)
    batch = next(iter(build_loader(cfg, "train")))
    assert batch["video"].shape == (2, 3, 4, 32, 32) and batch["video"].dtype == torch.float32
    assert np.isfinite(batch["video"].numpy()).all()


@pytest.mark.parametrize("split", ["train", "test"])
def test_gpu_decoding_route_gives_the_cpu_route_numbers(k400_root: Path, extracted: Path, split: str) -> None:
    """USE_GPU with frames: workers ship JPEG bytes + taps; decoding then resizing gives the CPU numbers.

    Run on the CPU with the CPU decoder in place of nvjpeg, so the plumbing (fields, collation,
    failed items, padding of boxes of several sizes) is checked everywhere.
    """
    from tada.data.frames import decode_jpegs_cpu, gpu_decode_transform
    from tada.data.loader import collate

    cpu_ds = build_dataset(_cfg(k400_root, "DATA.FORMAT", "frames"), split)
    gpu_ds = build_dataset(_cfg(k400_root, "DATA.FORMAT", "frames", "AUGMENTATION.USE_GPU", True), split)
    items_cpu, items_gpu = [], []
    for i in range(len(cpu_ds)):
        torch.manual_seed(i)
        items_cpu.append(cpu_ds[i])
        torch.manual_seed(i)
        items_gpu.append(gpu_ds[i])
    assert all(len(it["jpegs"]) == (0 if it["failed"] else 4) for it in items_gpu)
    assert all(isinstance(j, bytes) for it in items_gpu for j in it["jpegs"])
    batch = collate(items_gpu)
    out = gpu_decode_transform(batch, mean=[0.45] * 3, std=[0.225] * 3, device="cpu", decode=decode_jpegs_cpu)
    expected = torch.stack([it["video"] for it in items_cpu])
    assert out["video"].shape == expected.shape
    ok = ~batch["failed"]
    torch.testing.assert_close(out["video"][ok], expected[ok], atol=1e-4, rtol=0)
    assert set(out) >= {"label", "index", "path"} and not {"jpegs", "box", "rows0"} & set(out)
    if split == "test":
        assert bool(batch["failed"].any())  # val/missing.mp4


def test_gpu_decoding_names_the_bad_frame(k400_root: Path, extracted: Path, tmp_path: Path) -> None:
    import shutil

    from tada.data.decode import DecodeError
    from tada.data.frames import gpu_decode_transform
    from tada.data.loader import collate, gpu_transform

    frames_dir = tmp_path / "frames"
    shutil.copytree(extracted, frames_dir)
    cfg = _cfg(k400_root, "DATA.FORMAT", "frames", "DATA.FRAMES_DIR", str(frames_dir), "AUGMENTATION.USE_GPU", True)
    ds = build_dataset(cfg, "val")
    batch = collate([ds[0], ds[1]])
    try:
        import torchvision  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="needs torchvision with CUDA"):
            gpu_transform(batch, cfg, "cpu")

    def flaky(jpegs, device):
        if any(j == batch["jpegs"][1][2] for j in jpegs):
            raise RuntimeError("nvjpeg: bad bitstream")
        return [torch.zeros(3, 48, 64, dtype=torch.uint8) for _ in jpegs]

    with pytest.raises(DecodeError, match="frame 2 of the clip") as err:
        gpu_decode_transform(batch, mean=[0.45] * 3, std=[0.225] * 3, device="cpu", decode=flaky)
    assert err.value.path == batch["path"][1]
    # a truncated JPEG is caught in the worker already, as a failed item by path
    for jpg in (frames_dir / "val" / "v2").glob("*.jpg"):
        jpg.write_bytes(jpg.read_bytes()[:-200])
    item = ds[0]
    assert item["failed"] and "truncated JPEG" in item["error"] and item["jpegs"] == []


@pytest.mark.parametrize("kind", ["ssv2", "list"])
def test_ssv2_and_generic_lists_read_frame_folders(tmp_path: Path, kind: str) -> None:
    """The same frame-folder route for SSv2 (JSON, segment sampling) and the generic list format."""
    import json

    from tada.cli import main

    root = tmp_path / kind
    make_video(root / "101.mp4", frames=40, fps=12, seed=3)
    make_video(root / "202.mp4", frames=25, fps=12, seed=4)
    if kind == "ssv2":
        entries = [{"id": "101", "label_idx": 1}, {"id": "202", "label_idx": 0}]
        for part in ("train", "validation"):
            (root / f"something-something-v2-{part}-with-label.json").write_text(json.dumps(entries))
        extra = "DATA: {SAMPLING_MODE: segment_based, NUM_INPUT_FRAMES: 4, TRAIN_JITTER_SCALES: [32, 40],\n" \
                "       TRAIN_CROP_SIZE: 32, TEST_SCALE: 40, TEST_CROP_SIZE: 40}\n"
    else:
        (root / "my_train.txt").write_text("101.mp4 1\n202.mp4 0\n")
        (root / "my_val.txt").write_text("202.mp4 0\n")
        extra = "DATA: {TRAIN_LIST: my_train.txt, VAL_LIST: my_val.txt, NUM_INPUT_FRAMES: 4, SAMPLING_RATE: 2,\n" \
                "       TRAIN_JITTER_SCALES: [32, 40], TRAIN_CROP_SIZE: 32, TEST_SCALE: 40, TEST_CROP_SIZE: 40}\n"
    (root / "c.yaml").write_text(
        f"TRAIN: {{DATASET: {kind}, BATCH_SIZE: 2}}\nVIDEO: {{HEAD: {{NUM_CLASSES: 2}}}}\n{extra}")
    assert main(["extract-frames", "--cfg", str(root / "c.yaml"), "--splits", "train,val", "--no-progress",
                 "--workers", "1", "--subsampling", "444", "--quality", "95", "DATA.DATA_ROOT_DIR", str(root)]) == 0
    assert sorted(p.name for p in (root / "frames").iterdir() if p.is_dir()) == ["101", "202"]
    for split in ("train", "val"):
        cfg = load_config(root / "c.yaml", overrides=["DATA.DATA_ROOT_DIR", str(root)])
        video_ds = build_dataset(cfg, split)
        frames_ds = build_dataset(cfg.with_overrides(["DATA.FORMAT", "frames"]), split)
        for i in range(len(video_ds)):
            torch.manual_seed(i)
            a = video_ds[i]
            torch.manual_seed(i)
            b = frames_ds[i]
            assert a["label"] == b["label"] and not a["failed"] and not b["failed"]
            assert (a["video"] - b["video"]).abs().mean().item() * 0.225 * 255 < 2.0


def _claim_size(jpeg: bytes, height: int, width: int) -> bytes:
    """The JPEG with its frame header (SOF0/SOF2) claiming another size; the pixel data stays small."""
    for marker in (b"\xff\xc0", b"\xff\xc2"):
        at = jpeg.find(marker)
        if at >= 0:
            return jpeg[:at + 5] + height.to_bytes(2, "big") + width.to_bytes(2, "big") + jpeg[at + 9:]
    raise AssertionError("no SOF marker")


@pytest.mark.parametrize("side", [9000, 65500])
def test_a_jpeg_claiming_a_huge_size_is_a_failed_item_not_an_allocation(k400_root: Path, extracted: Path,
                                                                        tmp_path: Path, side: int) -> None:
    """65500x65500 would be 12 GiB a frame: refused from the header, before anything is allocated."""
    import shutil

    from tada.data.decode import DecodeError
    from tada.data.frames import open_frames

    frames_dir = tmp_path / "frames"
    shutil.copytree(extracted, frames_dir)
    folder = frames_dir / "val" / "v2"
    for jpg in folder.glob("img_*.jpg"):
        jpg.write_bytes(_claim_size(jpg.read_bytes(), side, side))
    with pytest.raises(DecodeError, match=f"frame 1: frame size {side}x{side} is above the limit"):
        open_frames(folder).get_frames([0, 1])
    with pytest.raises(DecodeError, match="above the limit"):
        open_frames(folder).get_jpeg_bytes([0])
    ds = build_dataset(_cfg(k400_root, "DATA.FORMAT", "frames", "DATA.FRAMES_DIR", str(frames_dir)), "val")
    item = ds[0]
    assert item["failed"] and f"{side}x{side} is above the limit" in item["error"]
    assert not ds[1]["failed"]


def test_a_video_above_the_frame_size_limit_is_a_failed_item(k400_root: Path, monkeypatch) -> None:
    """The same bound for video files, from the stream header (a real 8192+ px video is too slow to make
    here, so the limit is lowered below the test video's 64x48)."""
    from tada.data import decode

    monkeypatch.setattr(decode, "MAX_FRAME_PIXELS", 64 * 48 - 1)
    ds = build_dataset(_cfg(k400_root), "val")
    item = ds[0]
    assert item["failed"] and "frame size 64x48 is above the limit of 3071 pixels" in item["error"]
    monkeypatch.setattr(decode, "MAX_FRAME_PIXELS", 64 * 48)
    assert not build_dataset(_cfg(k400_root), "val")[0]["failed"]

"""Datasets and loaders from a config: items, views, determinism, broken videos, SSv2, GPU route."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from media_helpers import coded_frames, write_video

from tada.config import load_config
from tada.data import DataFailureError, build_dataset, build_loader, gpu_transform
from tada.data.annotations import AnnotationError
from tada.data.synthetic import generate_dataset

FIXTURES = Path(__file__).parent / "fixtures"
SMALL = ["DATA.NUM_INPUT_FRAMES", 4, "DATA.TRAIN_JITTER_SCALES", [32, 40], "DATA.TRAIN_CROP_SIZE", 32,
         "DATA.TEST_SCALE", 32, "DATA.TEST_CROP_SIZE", 32, "DATA_LOADER.NUM_WORKERS", 0,
         "TRAIN.BATCH_SIZE", 4, "TEST.BATCH_SIZE", 4, "DATA.SAMPLING_MODE", "segment_based"]


def make_cfg(tmp_path: Path, root: Path, dataset: str, *overrides):
    f = tmp_path / "cfg.yaml"
    f.write_text(f"TRAIN:\n  DATASET: {dataset}\nTEST:\n  DATASET: {dataset}\n")
    return load_config(f, overrides=["DATA.DATA_ROOT_DIR", str(root), "DATA.ANNO_DIR", str(root), *SMALL,
                                     *overrides])


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    generate_dataset(root, seed=0, videos_per_class={"train": 2, "val": 1, "test": 1}, sizes=(32, 48),
                     lengths=(16, 24), workers=1)
    return root


@pytest.fixture()
def synth_cfg(tmp_path, synth):
    return make_cfg(tmp_path, synth, "synthetic", "VIDEO.HEAD.NUM_CLASSES", 7)


def test_train_item(synth_cfg):
    ds = build_dataset(synth_cfg, "train")
    assert len(ds) == ds.num_videos == 14 and ds.num_views == 1
    assert ds.class_names[:2] == ["grows", "shrinks"]
    torch.manual_seed(0)
    item = ds[3]
    assert item["video"].shape == (3, 4, 32, 32) and item["video"].dtype == torch.float32
    assert item["label"] == 1 and item["index"] == 3 and Path(item["path"]).is_file()
    assert not item["failed"] and item["failures"] == []
    assert -3 < float(item["video"].mean()) < 3  # normalised
    torch.manual_seed(0)
    torch.testing.assert_close(ds[3]["video"], item["video"])  # torch's seed fixes the augmentation


def test_val_and_test_views_are_deterministic(synth_cfg):
    val = build_dataset(synth_cfg.with_overrides(["TEST.NUM_ENSEMBLE_VIEWS", 2, "TEST.NUM_SPATIAL_CROPS", 3]), "val")
    assert len(val) == 7 and val.num_views == 1
    torch.testing.assert_close(val[2]["video"], val[2]["video"])
    test = build_dataset(synth_cfg.with_overrides(["TEST.NUM_ENSEMBLE_VIEWS", 2, "TEST.NUM_SPATIAL_CROPS", 3]), "test")
    assert test.num_views == 6 and len(test) == 6 * test.num_videos
    items = [test[i] for i in range(6, 12)]  # all views of video 1
    assert {it["video_index"] for it in items} == {1}
    assert [tuple(it["view"].tolist()) for it in items] == [(t, s) for t in range(2) for s in range(3)]
    assert len({float(it["video"].sum()) for it in items}) == 6  # six different views
    torch.testing.assert_close(test[7]["video"], items[1]["video"])


def test_loader_batches_and_collation(synth_cfg):
    loader = build_loader(synth_cfg, "train", seed=0)
    batches = list(loader)
    assert len(batches) == 3  # 14 clips, batch 4, drop_last
    b = batches[0]
    assert b["video"].shape == (4, 3, 4, 32, 32) and b["label"].dtype == torch.long
    assert b["failed"].dtype == torch.bool and len(b["path"]) == 4 and b["view"].shape == (4, 2)
    assert loader.last_stats.items == 12 and loader.last_stats.replaced == 0
    torch.manual_seed(0)
    first = next(iter(build_loader(synth_cfg, "train", seed=0)))
    torch.manual_seed(0)
    again = next(iter(build_loader(synth_cfg, "train", seed=0)))
    torch.testing.assert_close(again["video"], first["video"])  # same seeds, same clips
    test = build_loader(synth_cfg, "test")
    assert list(test.sampler) == list(range(len(test.dataset)))  # one process: val/test in order
    with pytest.raises(ValueError, match="needs a sampler that shards"):  # several: the engine's samplers shard
        build_loader(synth_cfg, "test", world_size=2, rank=1)


@pytest.fixture()
def broken_root(tmp_path, synth) -> Path:
    root = tmp_path / "videos"
    shutil.copytree(synth / "videos", root / "videos")
    (root / "videos" / "bad.mp4").write_text("not a video")
    (root / "videos" / "empty.mp4").write_bytes(b"")
    return root


def _list(root: Path, name: str, lines: list[str]) -> None:
    (root / name).write_text("\n".join(lines) + "\n")


def test_train_failures_are_replaced_logged_and_counted(tmp_path, synth, broken_root, caplog):
    good = [f"videos/train/grows_{i:04d}.mp4 0" for i in range(2)] + \
           [f"videos/train/shrinks_{i:04d}.mp4 1" for i in range(2)]
    _list(broken_root, "train.txt", good * 4 + ["videos/bad.mp4 0", "videos/missing.mp4 1"])
    cfg = make_cfg(tmp_path, broken_root, "list", "VIDEO.HEAD.NUM_CLASSES", 2, "DATA.TRAIN_LIST", "train.txt",
                   "DATA.MAX_FAILURE_RATIO", 0.5, "TRAIN.BATCH_SIZE", 18)
    ds = build_dataset(cfg, "train")
    item = ds[16]
    assert item["failures"] and "bad.mp4" in item["failures"][0] and "cannot open" in item["failures"][0]
    assert item["path"] != str(broken_root / "videos/bad.mp4") and not item["failed"]
    assert "replaced by another random video" in caplog.text and "bad.mp4" in caplog.text
    loader = build_loader(cfg, "train")
    (batch,) = list(loader)
    assert sum(1 for f in batch["failures"] if f) == loader.last_stats.replaced >= 2
    assert any("missing.mp4: file not found" in f for f in loader.last_stats.failures)
    strict = build_loader(cfg.with_overrides(["DATA.MAX_FAILURE_RATIO", 0.05]), "train")
    with pytest.raises(DataFailureError, match="MAX_FAILURE_RATIO=0.05"):
        list(strict)


def test_the_failure_ratio_counts_each_clip_once_not_each_failed_replacement(tmp_path, synth, broken_root):
    """13 of 25 videos broken: a pass meets each once (52%), under a ratio of 0.9; failed replacements
    of the same clip (each broken clip tries ~1 more broken video on average) do not count again."""
    for i in range(13):
        (broken_root / "videos" / f"bad_{i}.mp4").write_text("not a video")
    good = [f"videos/train/grows_{i:04d}.mp4 0" for i in range(2)] + \
           [f"videos/train/shrinks_{i:04d}.mp4 1" for i in range(2)]
    _list(broken_root, "train.txt", good * 3 + [f"videos/bad_{i}.mp4 0" for i in range(13)])
    cfg = make_cfg(tmp_path, broken_root, "list", "VIDEO.HEAD.NUM_CLASSES", 2, "DATA.TRAIN_LIST", "train.txt",
                   "DATA.MAX_FAILURE_RATIO", 0.9, "TRAIN.BATCH_SIZE", 25)
    torch.manual_seed(0)
    loader = build_loader(cfg, "train")
    (batch,) = list(loader)
    stats = loader.last_stats
    assert stats.items == 25 and stats.replaced == 13 and stats.failure_ratio == pytest.approx(0.52)
    assert len(stats.failures) > 13  # every failed attempt is still listed
    with pytest.raises(DataFailureError, match=r"of \d+ clips met a video that failed.*MAX_FAILURE_RATIO=0.5"):
        torch.manual_seed(0)
        list(build_loader(cfg.with_overrides(["DATA.MAX_FAILURE_RATIO", 0.5]), "train"))


def test_test_failures_are_flagged_not_replaced(tmp_path, broken_root):
    _list(broken_root, "test.txt", ["videos/test/grows_0000.mp4 0", "videos/empty.mp4 1", "videos/bad.mp4 1"])
    cfg = make_cfg(tmp_path, broken_root, "list", "VIDEO.HEAD.NUM_CLASSES", 2, "DATA.TEST_LIST", "test.txt",
                   "TEST.NUM_ENSEMBLE_VIEWS", 2)
    loader = build_loader(cfg, "test")
    (batch,) = [b for b in loader][:1]
    assert batch["failed"].tolist() == [False, False, True, True]
    assert batch["video"].shape == (4, 3, 4, 32, 32) and float(batch["video"][2].abs().sum()) == 0
    assert batch["path"][2].endswith("empty.mp4") and "empty file" in batch["error"][2]
    assert batch["video_index"].tolist() == [0, 0, 1, 1]  # never a neighbour's index or label
    assert loader.last_stats.failed_items == 4


@pytest.mark.parametrize("device", [
    "cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"))])
def test_gpu_route_equals_cpu_route(synth_cfg, device):
    cfg = synth_cfg.with_overrides(["TEST.NUM_SPATIAL_CROPS", 3])
    cpu = next(iter(build_loader(cfg, "test")))
    raw = next(iter(build_loader(cfg.with_overrides(["AUGMENTATION.USE_GPU", True]), "test")))
    assert raw["video"].dtype == torch.uint8
    out = gpu_transform(raw, cfg, device)
    assert "rows0" not in out and out["video"].device.type == device
    torch.testing.assert_close(out["video"].cpu(), cpu["video"], atol=1e-5, rtol=0)
    # Train items with different box sizes are padded by the collate function.
    train = build_loader(cfg.with_overrides(["AUGMENTATION.USE_GPU", True, "DATA.TRAIN_JITTER_SCALES", [32, 64]]),
                         "train", seed=1)
    assert gpu_transform(next(iter(train)), cfg, device)["video"].shape == (4, 3, 4, 32, 32)


def test_worker_processes(synth_cfg):
    loader = build_loader(synth_cfg.with_overrides(["DATA_LOADER.NUM_WORKERS", 1]), "val")
    assert sum(len(b["index"]) for b in loader) == 7


def _ssv2_root(tmp_path: Path) -> Path:
    """Three original-style webm videos and the dataset's own JSON files (templates, labels)."""
    root = tmp_path / "ssv2"
    root.mkdir()
    shutil.copy(FIXTURES / "something-something-v2-labels.json", root)
    for vid in (1, 2, 3):
        write_video(root / f"{vid}.webm", coded_frames(12, 33, 45, seed=vid), fps=12, codec="libvpx-vp9",
                    options={"deadline": "realtime", "cpu-used": "8"})
    entries = [{"id": "1", "template": "Pulling [something] from left to right"},
               {"id": "2", "template": "Pushing [something] from right to left"},
               {"id": "3", "template": "Opening [something]"}]
    (root / "something-something-v2-train.json").write_text(json.dumps(entries))
    (root / "something-something-v2-validation.json").write_text(json.dumps(entries[:2]))
    return root


def test_ssv2_original_files_and_label_aware_flip(tmp_path):
    root = _ssv2_root(tmp_path)
    cfg = make_cfg(tmp_path, root, "ssv2", "VIDEO.HEAD.NUM_CLASSES", 174, "AUGMENTATION.SSV2_FLIP", True)
    ds = build_dataset(cfg, "train")
    assert ds.labels == [86, 94, 46] and ds.entries[0].path.endswith("1.webm")
    assert ds.spec.flip_pairs[86] == 87 and ds.spec.hflip
    labels = {i: {ds[i]["label"] for _ in range(12)} for i in range(3)}
    assert labels == {0: {86, 87}, 1: {93, 94}, 2: {46}}
    test = build_dataset(cfg.with_overrides(["TEST.NUM_ENSEMBLE_VIEWS", 2, "TEST.NUM_SPATIAL_CROPS", 3]), "test")
    assert test.num_videos == 2 and len(test) == 12 and test.class_names[46] == "Opening something"
    # No flip unless SSV2_FLIP: AUGMENTATION.HFLIP (default true) does not apply to SSv2.
    plain = build_dataset(cfg.with_overrides(["AUGMENTATION.SSV2_FLIP", False]), "train")
    assert not plain.spec.hflip


def test_ssv2_preprocessed_json_uses_mp4(tmp_path):
    root = tmp_path / "pre"
    root.mkdir()
    (root / "something-something-v2-train-with-label.json").write_text(json.dumps([{"id": "5", "label_idx": 3}]))
    cfg = make_cfg(tmp_path, root, "ssv2", "VIDEO.HEAD.NUM_CLASSES", 174)
    ds = build_dataset(cfg, "train")
    assert ds.entries[0].path == str(root / "5.mp4") and ds.class_names is None


def test_kinetics_lists_and_class_names(tmp_path, synth):
    anno = tmp_path / "anno"
    anno.mkdir()
    (anno / "kinetics400_train_list.txt").write_text("videos/train/grows_0000.mp4   0\n# c\n")
    (anno / "kinetics400_test_list.txt").write_text("videos/test/grows_0000.mp4 0\nvideos/test/shrinks_0000.mp4 5\n")
    (anno / "names.txt").write_text("a\nb\n")
    cfg = make_cfg(tmp_path, synth, "k400", "DATA.ANNO_DIR", str(anno), "VIDEO.HEAD.NUM_CLASSES", 2,
                   "DATA.CLASS_NAMES_FILE", "names.txt")
    ds = build_dataset(cfg, "train")
    assert ds.class_names == ["a", "b"] and ds.name == "kinetics400"
    with pytest.raises(AnnotationError, match=r"kinetics400_test_list.txt:2: label 5 outside \[0, 2\)"):
        build_dataset(cfg, "test")
    with pytest.raises(AnnotationError, match="2 class names but VIDEO.HEAD.NUM_CLASSES is 3"):
        build_dataset(cfg.with_overrides(["VIDEO.HEAD.NUM_CLASSES", 3]), "train")
    with pytest.raises(ValueError, match="unknown dataset 'ucf101'"):
        build_dataset(cfg.with_overrides(["TRAIN.DATASET", "ucf101"]), "train")


def test_missing_root_and_missing_list_say_which_key_to_set(tmp_path):
    from tada.data.annotations import AnnotationError

    k400 = Path(__file__).resolve().parents[2] / "configs/projects/tada/k400/tada2d_8x8.yaml"
    cfg = load_config(k400, ["DATA.DATA_ROOT_DIR", str(tmp_path / "nope")])
    with pytest.raises(AnnotationError, match="DATA.DATA_ROOT_DIR .*nope: no such directory"):
        build_dataset(cfg, "train")
    cfg = load_config(k400, ["DATA.DATA_ROOT_DIR", str(tmp_path)])
    with pytest.raises(AnnotationError, match=r"train video list not found: .*kinetics400_train_list.txt "
                                              r"\(looked in DATA.ANNO_DIR, which defaults to DATA.DATA_ROOT_DIR"):
        build_dataset(cfg, "train")

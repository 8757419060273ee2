"""The Predictor API and `tada predict` on real encoded videos, with a tiny TAda2D model.

The model is a random-init quarter-of-a-quarter TAda2D-R26 (fast on one CPU thread); scores are
compared in float32 only where the same operations run on the same inputs (bit-identical).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from tada import cli
from tada.checkpoint import save_checkpoint
from tada.config import load_config
from tada.deploy.predictor import open_source
from tada.fileio import file_sha256
from tada.models import build_model

REPO = Path(__file__).resolve().parents[2]
SYNTH_CFG = REPO / "configs/projects/tada/synthetic/tada2d.yaml"
CLASSES = ["left", "right", "up", "down", "still"]
TINY = [
    "NUM_GPUS", "0", "VIDEO.BACKBONE.DEPTH", "26", "VIDEO.BACKBONE.NUM_FILTERS", "[8, 16, 32, 64, 128]",
    "VIDEO.BACKBONE.NUM_OUT_FEATURES", "128", "VIDEO.HEAD.NUM_CLASSES", str(len(CLASSES)),
    "DATA.NUM_INPUT_FRAMES", "4", "DATA.TEST_SCALE", "32", "DATA.TEST_CROP_SIZE", "32",
    "TEST.BATCH_SIZE", "4", "TRAIN.CHANNELS_LAST", "false",
]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def frames(num: int, height: int = 40, width: int = 56, seed: int = 0) -> np.ndarray:
    """Frames that differ from each other, uint8 (T, H, W, 3)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 60, size=(height, width, 3))
    xx = np.arange(width)[None, :]
    out = np.empty((num, height, width, 3), np.uint8)
    for i in range(num):
        img = base.copy()
        img[..., 0] += (xx * 3 + i * 9) % 180
        img[..., 2] += (i * 31) % 180
        out[i] = np.clip(img, 0, 255)
    return out


def write_video(path: Path, clip: np.ndarray, *, fps: int = 30, gop: int = 12) -> Path:
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.height, s.width = clip.shape[1:3]
        s.pix_fmt = "yuv420p"
        s.options = {"g": str(gop), "bf": "0"}
        for img in clip:
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A config (with a class-names file), a checkpoint of its model and three short videos."""
    d = tmp_path_factory.mktemp("predictor")
    (d / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    opts = [*TINY, "DATA.DATA_ROOT_DIR", str(d), "DATA.ANNO_DIR", str(d), "DATA.CLASS_NAMES_FILE",
            str(d / "classes.txt"), "OUTPUT_DIR", str(d / "run")]
    cfg = load_config(SYNTH_CFG, opts)
    torch.manual_seed(0)
    model = build_model(cfg)
    with torch.no_grad():
        model.head.out.weight.mul_(5)  # spread the scores so that the ranking is clear
    ckpt = save_checkpoint(d / "model.pyth", model=model, epoch=0)
    videos = [write_video(d / f"v{i}.mp4", frames(24 + 8 * i, seed=i)) for i in range(3)]
    return cfg, opts, ckpt, videos


def _predict(args: list[str], capsys) -> tuple[int, str, str]:
    capsys.readouterr()
    code = cli.main(["predict", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


# ------------------------------------------------------------------------------------------------
# Serving findings of the audit
# ------------------------------------------------------------------------------------------------
def test_nan_scores_are_a_failed_video_with_valid_json(setup, tmp_path, capsys):
    cfg, opts, _, videos = setup
    model = build_model(cfg)
    with torch.no_grad():
        model.head.out.bias.fill_(float("nan"))
    ckpt = save_checkpoint(tmp_path / "nan.pyth", model=model, epoch=0)
    code, out, _ = _predict([str(videos[0]), "--checkpoint", str(ckpt), "--views", "1x1", "--device", "cpu",
                             "--json", "--cfg", str(SYNTH_CFG), *opts], capsys)
    assert code == 1
    record = json.loads(out, parse_constant=lambda c: pytest.fail(f"invalid JSON constant {c}"))
    assert "top" not in record and "not finite" in record["error"]
    code, out, _ = _predict([str(videos[0]), "--checkpoint", str(ckpt), "--views", "1x1", "--device", "cpu",
                             "--cfg", str(SYNTH_CFG), *opts], capsys)
    assert code == 1 and "not finite" in out and "1. " not in out


def test_views_go_through_the_model_in_batches_of_test_batch_size(setup, monkeypatch, capsys):
    """15 views with TEST.BATCH_SIZE 4: batches of at most 4, and the scores of one big batch."""
    import tada.models

    _cfg, opts, ckpt, videos = setup
    seen: list[int] = []
    real_build = tada.models.build_model

    def spying_build(c):
        model = real_build(c)
        model.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[0]))
        return model

    monkeypatch.setattr(tada.models, "build_model", spying_build)
    args = [str(videos[1]), "--checkpoint", str(ckpt), "--views", "5x3", "--device", "cpu", "--json",
            "--cfg", str(SYNTH_CFG), *opts]
    code, out, _ = _predict(args, capsys)
    assert code == 0 and max(seen) <= 4 and sum(seen) == 15
    seen.clear()
    code, big, _ = _predict([*args, "TEST.BATCH_SIZE", "32"], capsys)
    assert code == 0 and seen == [15]
    small, large = json.loads(out)["top"], json.loads(big)["top"]
    assert [t["id"] for t in small] == [t["id"] for t in large]  # other kernels for other batch sizes: close
    np.testing.assert_allclose([t["score"] for t in small], [t["score"] for t in large], rtol=1e-3, atol=1e-6)


def test_a_filename_with_a_comment_sign_is_read_as_given(setup, tmp_path, capsys):
    _cfg, opts, ckpt, videos = setup
    odd = tmp_path / "clip #2 final.mp4"
    odd.write_bytes(videos[2].read_bytes())
    decoy = tmp_path / "clip"  # what a list parser that cuts at ' #' would open
    decoy.write_bytes(videos[0].read_bytes())
    runs = {}
    for name in (odd, videos[2], decoy):
        code, out, _ = _predict([str(name), "--checkpoint", str(ckpt), "--views", "1x1", "--device", "cpu",
                                 "--json", "--cfg", str(SYNTH_CFG), *opts], capsys)
        assert code == 0
        runs[name] = json.loads(out)
    assert runs[odd]["top"] == runs[videos[2]]["top"] != runs[decoy]["top"]


# ------------------------------------------------------------------------------------------------
# The Python API
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def predictor(setup):
    from tada import Predictor

    cfg, _, ckpt, _ = setup
    return Predictor(cfg, ckpt, class_names=CLASSES, device="cpu", views=(2, 3))


def _decoded(path: Path) -> np.ndarray:
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def test_views_are_those_of_the_test_dataset(setup, predictor):
    """The predictor's views are, bit for bit, the items `tada test` feeds the model."""
    from tada.data import build_dataset
    from tada.deploy.predictor import open_source

    cfg, _, _, videos = setup
    listing = videos[1].parent / "one.txt"
    listing.write_text(f"{videos[1].name} 0\n")
    dataset = build_dataset(cfg.with_overrides(["TEST.DATASET", "list", "DATA.TEST_LIST", str(listing),
                                                "TEST.NUM_ENSEMBLE_VIEWS", 2, "TEST.NUM_SPATIAL_CROPS", 3]), "test")
    with open_source(videos[1], name="v", fps=None) as reader:
        ours = list(predictor.view_clips(reader))
    assert len(ours) == len(dataset) == 6
    for view, item in zip(ours, dataset):
        assert torch.equal(view, item["video"])


def test_paths_arrays_pipes_and_file_objects_score_alike(setup, predictor):
    _, _, _, videos = setup
    by_path = predictor.predict(videos[0], topk=3)
    assert [t["label"] for t in by_path] == [CLASSES[t["id"]] for t in by_path] and len(by_path) == 3
    assert by_path[0]["score"] >= by_path[1]["score"] >= by_path[2]["score"]
    assert predictor.predict(str(videos[0]), topk=3) == by_path
    with open(videos[0], "rb") as fh:
        assert predictor.predict(fh, topk=3) == by_path  # remuxed: the same packets, the same frames
    assert predictor.predict(f"file:{videos[0]}", topk=3) == by_path  # an FFmpeg URL
    assert predictor.predict(_decoded(videos[0]), topk=3, fps=30) == by_path
    with pytest.raises(ValueError, match="needs its fps"):
        predictor.predict(_decoded(videos[0]))
    with pytest.raises(ValueError, match="uint8"):
        predictor.predict(_decoded(videos[0]).astype(np.float32), fps=30)


def test_several_videos_share_batches_and_failures_stay_per_video(setup, predictor, tmp_path):
    _, _, _, videos = setup
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 64)
    calls: list[int] = []
    handle = predictor.model.register_forward_pre_hook(lambda m, args: calls.append(args[0].shape[0]))
    try:
        results = predictor.predict_many([videos[0], broken, videos[1], videos[2]], topk=2)
    finally:
        handle.remove()
    assert calls == [4, 4, 4, 4, 2]  # 3 videos x 6 views in batches of TEST.BATCH_SIZE 4
    assert [("error" in r) for r in results] == [False, True, False, False]
    assert results[1]["path"] == str(broken) and results[1]["error"]
    for r, video in zip([results[0], results[2], results[3]], [videos[0], videos[1], videos[2]]):
        alone = predictor.predict(video, topk=2)
        assert [t["id"] for t in r["top"]] == [t["id"] for t in alone]
        np.testing.assert_allclose([t["score"] for t in r["top"]], [t["score"] for t in alone], rtol=1e-4)
    with pytest.raises(ValueError, match="broken.mp4"):
        predictor.predict(broken)


def test_from_run_reads_the_config_best_checkpoint_and_names(setup, tmp_path):
    from tada import Predictor
    from tada.config import save_config

    cfg, _, ckpt, videos = setup
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    save_config(cfg, run / "config.yaml")
    (run / "checkpoints" / "best.pyth").write_bytes(ckpt.read_bytes())
    (run / "results.json").write_text(json.dumps({"class_names": [c.upper() for c in CLASSES]}))
    loaded = Predictor.from_run(run, device="cpu", views=(1, 1))
    assert loaded.checkpoint == run / "checkpoints" / "best.pyth"
    direct = Predictor(cfg, ckpt, class_names=CLASSES, device="cpu", views=(1, 1)).predict(videos[0])
    from_run = loaded.predict(videos[0])
    assert [t["label"] for t in from_run] == [t["label"].upper() for t in direct]
    assert [t["score"] for t in from_run] == [t["score"] for t in direct]
    with pytest.raises(ValueError, match="config.yaml"):
        Predictor.from_run(tmp_path / "nothing")


def test_precision_and_bad_arguments(setup, predictor):
    from tada import Predictor

    cfg, _, ckpt, videos = setup
    bf16 = Predictor(cfg, ckpt, device="cpu", precision="bf16", views=(1, 1))
    fp32 = Predictor(cfg, ckpt, device="cpu", views=(1, 1))
    low, full = bf16.predict(videos[0]), fp32.predict(videos[0])
    assert low[0]["id"] == full[0]["id"] and bf16.class_names is None and low[0]["label"] == str(low[0]["id"])
    assert math.isclose(low[0]["score"], full[0]["score"], rel_tol=0.1)
    for kwargs, message in (({"precision": "fp8"}, "precision"), ({"views": (0, 1)}, "views"),
                            ({"batch_size": 0}, "batch size"), ({"class_names": ["a"]}, "1 class names")):
        with pytest.raises(ValueError, match=message):
            Predictor(cfg, ckpt, device="cpu", **kwargs)
    with pytest.raises(ValueError, match="checkpoint not found"):
        Predictor(cfg, ckpt.with_name("nope.pyth"))


# ------------------------------------------------------------------------------------------------
# Timelines
# ------------------------------------------------------------------------------------------------
INTERVAL = ["DATA.SAMPLING_MODE", "interval_based", "DATA.SAMPLING_RATE", "5"]  # windows of 4 x 5 frames at 30 fps


@pytest.fixture(scope="module")
def long_video(setup):
    _, _, _, videos = setup
    return write_video(videos[0].parent / "long.mkv", frames(120, seed=7), gop=10)


def test_timeline_windows_are_the_clips_of_their_time_span(setup, long_video):
    from tada import Predictor

    cfg, _, ckpt, _ = setup
    predictor = Predictor(cfg.with_overrides(INTERVAL), ckpt, class_names=CLASSES, device="cpu", batch_size=3)
    timeline = predictor.timeline(long_video, stride=0.5, topk=2)
    windows = timeline["windows"]
    assert timeline["window_seconds"] == pytest.approx(20 / 30) and len(windows) == 8  # starts 0, 0.5, ... 3.5
    assert [w["start"] for w in windows] == [0.5 * k for k in range(8)]
    assert windows[0]["end"] == pytest.approx(20 / 30, abs=1e-4) and windows[-1]["end"] == 4.0  # the video's end
    decoded = _decoded(long_video)
    for k in (0, 3):  # a window's scores are those of the clip cut at its start
        clip = decoded[15 * k: 15 * k + 20]
        alone = Predictor(cfg.with_overrides(INTERVAL), ckpt, class_names=CLASSES, device="cpu", views=(1, 1))
        top = alone.predict(clip, fps=30, topk=2)
        assert [t["id"] for t in windows[k]["top"]] == [t["id"] for t in top]
        np.testing.assert_allclose([t["score"] for t in windows[k]["top"]], [t["score"] for t in top], rtol=1e-4)
    smooth = predictor.timeline(long_video, stride=0.5, topk=len(CLASSES), smooth=1)["windows"]
    raw = predictor.timeline(long_video, stride=0.5, topk=len(CLASSES))["windows"]

    def probs(w):
        return np.array([next(t["score"] for t in w["top"] if t["id"] == c) for c in range(len(CLASSES))])

    np.testing.assert_allclose(probs(smooth[1]), (probs(raw[0]) + probs(raw[1]) + probs(raw[2])) / 3, rtol=1e-9)
    np.testing.assert_allclose(probs(smooth[0]), (probs(raw[0]) + probs(raw[1])) / 2, rtol=1e-9)


def test_cli_timeline_json_csv_and_a_truncated_video(setup, long_video, tmp_path, capsys):
    _cfg, opts, ckpt, _ = setup
    cut = tmp_path / "cut.mkv"
    data = long_video.read_bytes()
    cut.write_bytes(data[: int(len(data) * 0.55)])
    flags = ["--checkpoint", str(ckpt), "--device", "cpu", "--timeline", "--window-stride", "0.5", "--topk", "2"]
    config = ["--cfg", str(SYNTH_CFG), *opts, *INTERVAL]
    out_json = tmp_path / "t.json"
    code, printed, err = _predict([str(long_video), str(cut), *flags, "--output", str(out_json), *config], capsys)
    assert code == 1 and "1 of 2 videos" in err and str(out_json) in printed
    full, part = json.loads(out_json.read_text())
    assert len(full["windows"]) == len(part["windows"]) == 8 and all("top" in w for w in full["windows"])
    good = [w for w in part["windows"] if "top" in w]
    failed = [w for w in part["windows"] if "error" in w]
    assert good and failed and good == full["windows"][: len(good)]
    assert all("truncated" in w["error"] and w["end"] > w["start"] for w in failed)

    out_csv = tmp_path / "t.csv"
    code, _, _ = _predict([str(long_video), *flags, "--output", str(out_csv), *config], capsys)
    lines = out_csv.read_text().splitlines()
    assert code == 0 and lines[0] == "path,start,end,rank,id,label,score,error" and len(lines) == 1 + 8 * 2
    top = full["windows"][0]["top"][0]
    assert lines[1].split(",")[:6] == [str(long_video), "0.0", "0.6667", "1", str(top["id"]), top["label"]]
    code, printed, _ = _predict([str(long_video), *flags, *config], capsys)
    assert code == 0 and printed.count(" s  ") == 8
    code, _, err = _predict([str(long_video), *flags, "--views", "2x3", *config], capsys)
    assert code == 2 and "--crops" in err
    code, _, err = _predict([str(long_video), *flags, "--window-stride", "0", *config], capsys)
    assert code == 2 and "stride" in err


# ------------------------------------------------------------------------------------------------
# Features
# ------------------------------------------------------------------------------------------------
def _extract(args: list[str], capsys) -> tuple[int, str]:
    capsys.readouterr()
    code = cli.main(["extract-features", *args])
    return code, capsys.readouterr().err


def test_extract_features_files_index_failures_and_resume(setup, long_video, tmp_path, capsys):
    from tada import Predictor

    cfg, opts, ckpt, videos = setup
    cut = tmp_path / "cut.mkv"
    data = long_video.read_bytes()
    cut.write_bytes(data[: int(len(data) * 0.55)])
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 64)
    listing = tmp_path / "videos.txt"
    listing.write_text(f"{long_video}\ncut.mkv\n\n{broken}\n")
    out = tmp_path / "feats"
    args = ["--checkpoint", str(ckpt), "--videos", str(listing), str(videos[0]), "--out", str(out),
            "--window-stride", "0.5", "--crops", "3", "--pool", "none", "--device", "cpu",
            "--cfg", str(SYNTH_CFG), *opts, *INTERVAL]
    code, err = _extract(args, capsys)
    assert code == 1 and "broken.mp4" in err and "not decoded" in err
    index = json.loads((out / "index.json").read_text())
    assert index["dim"] == 128 * 3 and index["checkpoint_sha256"] == file_sha256(ckpt)
    assert index["config"]["DATA"]["SAMPLING_MODE"] == "interval_based" and index["pool"] == "none"
    assert [f["video"] for f in index["failed"]] == [str(broken)] and index["failed"][0]["error"]
    by_name = {Path(v["video"]).name: v for v in index["videos"]}
    assert set(by_name) == {"long.mkv", "cut.mkv", "v0.mp4"}
    full = np.load(out / "long.npy")
    assert full.shape == (8, 384) and full.dtype == np.float32 and by_name["long.mkv"]["fps"] == 30
    assert by_name["long.mkv"]["windows"][1] == [0.5, pytest.approx(0.5 + 20 / 30, abs=1e-4)]
    part = np.load(out / "cut.npy")
    assert 0 < len(part) < 8 and len(part) + len(by_name["cut.mkv"]["failed_windows"]) == 8
    np.testing.assert_array_equal(part, full[: len(part)])  # what decodes is what the whole file gives
    # a row is the model's features of that window's clip, its three crops concatenated
    predictor = Predictor(cfg.with_overrides(INTERVAL), ckpt, device="cpu", views=(1, 3))
    with open_source(_decoded(long_video)[15:35], name="w", fps=30) as r:
        crops = torch.stack(list(predictor.view_clips(r)))
    np.testing.assert_allclose(full[1], predictor.features(crops).reshape(-1).numpy(), rtol=1e-4, atol=1e-5)

    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*.npy")}
    (out / "v0.json").unlink()  # as if killed before v0's record was written
    (out / ".long.npy.abc.tmp").write_bytes(b"half")
    code, _ = _extract(args, capsys)
    again = json.loads((out / "index.json").read_text())
    assert code == 1 and again["reused"] == 2 and again["videos"] == index["videos"]
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.npy")}["long.npy"] == stamps["long.npy"]
    assert (out / "v0.npy").stat().st_mtime_ns != stamps["v0.npy"] and not list(out.glob(".*.tmp"))
    code, _ = _extract(["avg" if a == "none" else a for a in args], capsys)  # another pooling: all again
    assert json.loads((out / "index.json").read_text())["reused"] == 0 and np.load(out / "long.npy").shape == (8, 128)


def test_features_use_only_the_model_contract(setup, long_video):
    """A model of another family (tokens out of forward_features) works through the same path."""
    from tada import Predictor

    cfg, _, _, _ = setup

    class TokenModel(torch.nn.Module):
        num_features = 6

        def __init__(self):
            super().__init__()
            self.proj = torch.nn.Linear(3, 6)
            self.out = torch.nn.Linear(6, len(CLASSES))

        def forward_features(self, x):  # (B, 3, T, H, W) -> tokens (B, T*H*W, 6)
            return self.proj(x.flatten(2).transpose(1, 2))

        def forward_head(self, x, pre_logits=False):
            pooled = x.mean(1)
            return pooled if pre_logits else self.out(pooled)

        def forward(self, x):
            return self.forward_head(self.forward_features(x))

    torch.manual_seed(0)
    predictor = Predictor(cfg.with_overrides(INTERVAL), model=TokenModel(), device="cpu")
    result = predictor.window_features(long_video, stride=1.0, crops=3, pool="max")
    assert result["features"].shape == (4, 6) and result["failed"] == [] and result["fps"] == 30
    assert len(predictor.timeline(long_video, stride=1.0)["windows"]) == 4


@pytest.mark.slow  # two spawned processes each import torch: about 15 s
def test_extract_features_in_parallel_processes_gives_the_same_files(setup, tmp_path, capsys):
    _cfg, opts, ckpt, videos = setup
    outputs = {}
    for workers in ("1", "2"):
        out = tmp_path / f"w{workers}"
        code, _ = _extract(["--checkpoint", str(ckpt), "--videos", *map(str, videos), "--out", str(out),
                            "--workers", workers, "--device", "cpu", "--cfg", str(SYNTH_CFG), *opts, *INTERVAL], capsys)
        assert code == 0
        outputs[workers] = {p.name: np.load(p) for p in out.glob("*.npy")}
    assert sorted(outputs["2"]) == ["v0.npy", "v1.npy", "v2.npy"]
    for name, array in outputs["1"].items():
        np.testing.assert_allclose(outputs["2"][name], array, rtol=1e-5, atol=1e-6)


def test_segment_sampled_timeline_windows_last_the_given_seconds(setup, long_video):
    """The synthetic config samples segments: a window is --window-seconds long, its frames the midpoints."""
    from tada import Predictor

    cfg, _, ckpt, _ = setup
    assert cfg.DATA.SAMPLING_MODE == "segment_based"
    predictor = Predictor(cfg, ckpt, class_names=CLASSES, device="cpu")
    timeline = predictor.timeline(long_video, seconds=2.0, stride=1.0, topk=1)
    assert timeline["window_seconds"] == 2.0 and [w["start"] for w in timeline["windows"]] == [0.0, 1.0, 2.0, 3.0]
    assert [w["end"] for w in timeline["windows"]] == [2.0, 3.0, 4.0, 4.0]
    single = Predictor(cfg, ckpt, class_names=CLASSES, device="cpu", views=(1, 1))
    top = single.predict(_decoded(long_video)[30:90], fps=30, topk=1)  # window 1: frames 30-89, midpoints
    assert timeline["windows"][1]["top"][0]["id"] == top[0]["id"]
    assert timeline["windows"][1]["top"][0]["score"] == pytest.approx(top[0]["score"], rel=1e-4)

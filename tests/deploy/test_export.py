"""Export to ONNX / torch.export and serving with onnxruntime, on tiny TAda2D and TSN models."""

from __future__ import annotations

import builtins
import copy
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tada.bench.export import bench_export, calibrate, format_table
from tada.checkpoint import save_checkpoint
from tada.cli import main as cli_main
from tada.config import load_config
from tada.deploy.export import export_model, fold_batchnorm, prepare_for_export
from tada.deploy.serving import (
    OnnxPredictor,
    SidecarError,
    onnx_backend,
    read_sidecar,
    require,
    sidecar_path,
)
from tada.errors import TadaError
from tada.models import TAda2DBlock, build_model, create_model

onnx = pytest.importorskip("onnx", reason="pip install 'tada[export]'")
ort = pytest.importorskip("onnxruntime", reason="pip install 'tada[export]'")

REPO = Path(__file__).resolve().parents[2]
SYNTH_CFG = REPO / "configs/projects/tada/synthetic/tada2d.yaml"
TINY_WIDTHS = (8, 16, 32, 64, 128)
TINY_LAYERS = (1, 1, 1, 1)
FRAMES, CROP = 4, 32
TINY_OVERRIDES = [
    "VIDEO.BACKBONE.DEPTH", "26",
    "VIDEO.BACKBONE.NUM_FILTERS", "[8, 16, 32, 64, 128]",
    "VIDEO.BACKBONE.NUM_OUT_FEATURES", "128",
    "VIDEO.HEAD.NUM_CLASSES", "5",
    "DATA.NUM_INPUT_FRAMES", str(FRAMES),
    "DATA.TEST_SCALE", "36",
    "DATA.TEST_CROP_SIZE", str(CROP),
]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny models gain nothing from threads, and on a shared 2-core machine OpenMP barriers cost more."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _trained_like(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give the zero-initialised temporal parts (routing output, pool BN) weights and the BNs real
    statistics, so every path of the graph matters and eval-mode logits are finite."""
    return calibrate(model, frames=FRAMES, size=CROP, batches=2, batch=4, seed=seed,
                     routing_scale=0.05, pool_bn_scale=0.3)


@pytest.fixture(scope="module")
def tiny_tada() -> torch.nn.Module:
    torch.manual_seed(0)
    return _trained_like(create_model("tada2d_r26", num_classes=5, widths=TINY_WIDTHS, layers=TINY_LAYERS, dropout=0.0))


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory) -> tuple[Path, list[str]]:
    """A checkpoint of the tiny config's model (written by save_checkpoint, as training would)."""
    torch.manual_seed(1)
    model = _trained_like(build_model(load_config(SYNTH_CFG, overrides=TINY_OVERRIDES)), seed=1)
    path = tmp_path_factory.mktemp("ckpt") / "checkpoint_epoch_00001.pyth"
    save_checkpoint(path, model=model, epoch=0)
    return path, TINY_OVERRIDES


def _clips(batch: int, seed: int) -> torch.Tensor:
    return torch.randn(batch, 3, FRAMES, CROP, CROP, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------------------
# BN folding
# ------------------------------------------------------------------------------------------------
def test_fold_batchnorm_keeps_logits_and_leaves_tada_bn(tiny_tada):
    folded = prepare_for_export(tiny_tada, fold_bn=False)
    # the model's own TAda2D blocks are exported (no export-only twin of the block)
    assert sum(isinstance(m, TAda2DBlock) for m in folded.modules()) == 4
    x = _clips(2, 0)
    with torch.no_grad():
        assert torch.allclose(folded(x), tiny_tada(x), atol=1e-5, rtol=1e-5)
    n = fold_batchnorm(folded)
    # stem 1 + per block a_bn, c_bn (4 blocks) + 4 shortcuts; TAdaConv's b_bn and the pool BN stay.
    assert n == 1 + 2 * 4 + 4
    names = [k for k, m in folded.named_modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert names and all(k.endswith(("b_bn", "b_avgpool_bn")) for k in names)
    x = _clips(2, 0)
    with torch.no_grad():
        assert torch.allclose(folded(x), tiny_tada(x), atol=1e-5, rtol=1e-5)
    # the caller's model is untouched
    assert isinstance(tiny_tada.backbone.conv1.a_bn, torch.nn.BatchNorm2d)


def test_fold_batchnorm_refuses_training_mode():
    model = create_model("tsn_r26", num_classes=3, widths=TINY_WIDTHS).train()
    with pytest.raises(ValueError, match="eval-mode"):
        fold_batchnorm(model)


def test_fold_batchnorm_tsn_folds_the_3x3_bn_too():
    model = _trained_like(create_model("tsn_r26", num_classes=3, widths=TINY_WIDTHS, layers=TINY_LAYERS, dropout=0.0))
    ref = prepare_for_export(model, fold_bn=False)
    assert fold_batchnorm(ref) == 1 + 3 * 4 + 4
    x = _clips(1, 3)
    with torch.no_grad():
        assert torch.allclose(ref(x), model(x), atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------------------------------
# ONNX
# ------------------------------------------------------------------------------------------------
def test_onnx_dynamic_batch_matches_eager(tiny_tada, tmp_path):
    """The default (torch.export-based) exporter on TAda2D: routing function, TAdaConv, temporal pool."""
    pytest.importorskip("onnxscript", reason="pip install 'tada[export]'")
    out = tmp_path / "tada.onnx"
    report = export_model(tiny_tada, out, fmt="onnx", num_frames=FRAMES, crop_size=CROP, dynamic_batch=True)
    assert report.checked_batches == [1, 3] and report.max_abs_diff < 1e-4
    assert report.extra == {"exporter": "dynamo", "opset": 18, "bn_folded": True}
    assert [p.name for p in tmp_path.iterdir()] == ["tada.onnx"]  # weights inside, no external .data file
    proto = onnx.load(str(out))
    onnx.checker.check_model(proto, full_check=True)
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) == 18
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [3, FRAMES, CROP, CROP]
    # independent check with a plain onnxruntime session, at a batch the export never saw
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = _clips(5, 11)
    got = session.run(None, {"video": x.numpy()})[0]
    with torch.no_grad():
        want = tiny_tada(x).numpy()
    assert got.shape == (5, 5)
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


@pytest.fixture(scope="module")
def tiny_tsn() -> torch.nn.Module:
    torch.manual_seed(5)
    return _trained_like(create_model("tsn_r26", num_classes=3, widths=TINY_WIDTHS, layers=TINY_LAYERS,
                                      dropout=0.0), seed=5)


def test_torchscript_exporter_static_batch_and_predictor(tiny_tsn, tmp_path):
    """The legacy exporter (fast, no onnxscript) on the TSN baseline; the predictor's batch handling."""
    out = tmp_path / "static.onnx"
    report = export_model(tiny_tsn, out, fmt="onnx", num_frames=FRAMES, crop_size=CROP, batch=2,
                          exporter="torchscript", opset=17)
    assert report.input_shape == [2, 3, FRAMES, CROP, CROP] and report.max_abs_diff < 1e-4
    proto = onnx.load(str(out))
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) == 17
    predictor = OnnxPredictor(out, sidecar={"format": "onnx"})
    assert predictor.input_shape == (2, 3, FRAMES, CROP, CROP)
    x = _clips(2, 4)
    logits = predictor(x)  # torch in, torch out
    assert isinstance(logits, torch.Tensor)
    with torch.no_grad():
        assert torch.allclose(logits, tiny_tsn(x), atol=1e-4, rtol=0)
    assert isinstance(predictor(x.numpy()), np.ndarray)  # numpy in, numpy out
    x4 = _clips(4, 5)  # a multiple of the static batch runs in chunks
    with torch.no_grad():
        assert torch.allclose(predictor(x4), tiny_tsn(x4), atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match=r"\(2, 3, 4, 32, 32\).*multiple of 2"):
        predictor(_clips(3, 4))
    with pytest.raises(ValueError, match="shape"):
        predictor(torch.zeros(2, 3, FRAMES + 1, CROP, CROP))


def test_export_rejects_diff_above_tolerance(tiny_tsn, tmp_path):
    # BN folding changes rounding: a zero-ish tolerance must be refused loudly, not warned about.
    with pytest.raises(TadaError, match="differ from eager.*nothing was written"):
        export_model(tiny_tsn, tmp_path / "t.onnx", fmt="onnx", num_frames=FRAMES, crop_size=CROP,
                     exporter="torchscript", tolerance=1e-12)
    assert list(tmp_path.iterdir()) == []


def test_exact_exports_with_large_logits_pass_a_relative_tolerance(tiny_tsn, tmp_path):
    """Logits in the thousands: float32 rounding alone differs by more than 1e-4 in absolute terms."""
    big = copy.deepcopy(tiny_tsn)
    with torch.no_grad():
        big.head.out.weight.mul_(3e4)
        big.head.out.bias.fill_(5e3)
        assert float(big(_clips(1, 1)).abs().max()) > 1e3
    report = export_model(big, tmp_path / "big.onnx", fmt="onnx", num_frames=FRAMES, crop_size=CROP, opset=17,
                          exporter="torchscript", dynamic_batch=True)
    assert report.max_abs_diff > 1e-4  # what the absolute check refused
    # still a bound: below float32 precision the same export is refused, naming the logit it missed
    with pytest.raises(TadaError, match=r"more than tolerance x \(1 \+ \|logit\|\).* at a logit of"):
        export_model(big, tmp_path / "w.onnx", fmt="onnx", num_frames=FRAMES, crop_size=CROP, opset=17,
                     exporter="torchscript", tolerance=1e-9)


def test_a_failed_export_keeps_the_file_already_there(tiny_tsn, tmp_path):
    out = tmp_path / "m.onnx"
    export_model(tiny_tsn, out, fmt="onnx", num_frames=FRAMES, crop_size=CROP, opset=17)  # auto: torchscript
    good = out.read_bytes()
    other = copy.deepcopy(tiny_tsn)
    torch.nn.init.normal_(other.head.out.weight)
    with pytest.raises(TadaError, match="differ from eager.*existing file was kept"):
        export_model(other, out, fmt="onnx", num_frames=FRAMES, crop_size=CROP, opset=17, tolerance=1e-12)
    with pytest.raises(TadaError, match="wrote opset 18, not the requested 17"):
        export_model(other, out, fmt="onnx", num_frames=FRAMES, crop_size=CROP, opset=17, exporter="dynamo")
    assert out.read_bytes() == good and list(tmp_path.iterdir()) == [out]


def test_export_argument_errors(tiny_tada, tmp_path):
    with pytest.raises(TadaError, match=r"must end in \.onnx"):
        export_model(tiny_tada, tmp_path / "t.pt2", fmt="onnx", num_frames=FRAMES, crop_size=CROP)
    with pytest.raises(TadaError, match="opset"):
        export_model(tiny_tada, tmp_path / "t.onnx", fmt="onnx", num_frames=FRAMES, crop_size=CROP, opset=13)
    with pytest.raises(TadaError, match="format"):
        export_model(tiny_tada, tmp_path / "t.onnx", fmt="tflite", num_frames=FRAMES, crop_size=CROP)
    with pytest.raises(TadaError, match="batch"):
        export_model(tiny_tada, tmp_path / "t.onnx", fmt="onnx", num_frames=FRAMES, crop_size=CROP, batch=0)
    assert list(tmp_path.iterdir()) == []


def test_export_refuses_non_finite_reference(tiny_tada, tmp_path):
    # e.g. a random-init model in eval mode (default BN statistics) overflows: refused before exporting.
    broken = copy.deepcopy(tiny_tada)
    with torch.no_grad():
        broken.head.out.bias[0] = float("nan")
    with pytest.raises(TadaError, match="non-finite"):
        export_model(broken, tmp_path / "t.onnx", fmt="onnx", num_frames=FRAMES, crop_size=CROP)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------------
# The command and the sidecar
# ------------------------------------------------------------------------------------------------
def test_cli_export_program_dynamic_batch_and_class_name_count_error(tiny_ckpt, tmp_path, capsys):
    ckpt, overrides = tiny_ckpt
    out = tmp_path / "tiny.pt2"
    rc = cli_main(["export", "--cfg", str(SYNTH_CFG), "--checkpoint", str(ckpt), "--format", "exported-program",
                   "--output", str(out), "--dynamic-batch", *overrides, "TEST.DATASET", "kinetics400"])
    assert rc == 0  # kinetics has no default names file: class_names is null
    sidecar = json.loads(sidecar_path(out).read_text())
    assert sidecar["format"] == "exported-program" and sidecar["input_shape"][0] is None and sidecar["opset"] is None
    assert sidecar["class_names"] is None and sidecar["verified_max_abs_diff"] < 1e-4
    # the saved program runs at a batch size the export never saw and matches the checkpoint's model
    from tada.checkpoint import load_checkpoint

    model = build_model(load_config(SYNTH_CFG, overrides=overrides))
    load_checkpoint(model, ckpt)
    program = torch.export.load(str(out)).module()
    x = _clips(4, 2)
    with torch.no_grad():
        assert torch.allclose(program(x), model.eval()(x), atol=1e-4, rtol=0)
    dummy = tmp_path / "dummy.onnx"
    dummy.write_bytes(b"")
    with pytest.raises(SidecarError, match="OnnxPredictor runs 'onnx'"):
        OnnxPredictor(dummy, sidecar=sidecar)

    bad = tmp_path / "three.txt"
    bad.write_text("a\nb\nc\n")
    rc = cli_main(["export", "--cfg", str(SYNTH_CFG), "--checkpoint", str(ckpt), "--output", str(tmp_path / "x.onnx"),
                   "--class-names", str(bad), *overrides])
    assert rc == 2
    assert "3 class names" in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists()


def test_cli_export_missing_checkpoint(tmp_path, capsys):
    rc = cli_main(["export", "--cfg", str(SYNTH_CFG), "--checkpoint", str(tmp_path / "nope.pyth"),
                   "--output", str(tmp_path / "m.onnx"), *TINY_OVERRIDES])
    assert rc == 2
    assert "nope.pyth" in capsys.readouterr().err
    assert not (tmp_path / "m.onnx").exists()


def test_sidecar_errors(tmp_path):
    model_file = tmp_path / "m.onnx"
    with pytest.raises(SidecarError, match="sidecar not found"):
        read_sidecar(model_file)
    sidecar_path(model_file).write_text("{not json")
    with pytest.raises(SidecarError, match=":1: invalid JSON"):
        read_sidecar(model_file)
    sidecar_path(model_file).write_text(json.dumps({"sidecar_version": 2}))
    with pytest.raises(SidecarError, match="missing keys"):
        read_sidecar(model_file)


def test_missing_optional_dependency_gives_install_hint(monkeypatch, tmp_path):
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name.split(".")[0] == "onnxruntime":
            raise ImportError("No module named 'onnxruntime'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    monkeypatch.delitem(sys.modules, "onnxruntime", raising=False)
    with pytest.raises(TadaError, match=r"pip install 'tada\[export\]'") as info:
        require("onnxruntime")
    assert "\n" not in str(info.value)
    with pytest.raises(TadaError, match=r"tada\[export\]"):
        OnnxPredictor(tmp_path / "m.onnx")


def test_class_names_default_to_the_synthetic_datasets_file(tmp_path):
    from tada.deploy.export import resolve_class_names

    cfg = load_config(SYNTH_CFG, overrides=[*TINY_OVERRIDES, "DATA.ANNO_DIR", str(tmp_path)])
    with pytest.raises(TadaError, match="classes.txt"):
        resolve_class_names(cfg)
    (tmp_path / "classes.txt").write_text("".join(f"c{i}\n" for i in range(5)))
    assert resolve_class_names(cfg) == [f"c{i}" for i in range(5)]
    kinetics = cfg.with_overrides(["TEST.DATASET", "kinetics400"])
    assert resolve_class_names(kinetics) is None
    (tmp_path / "names.txt").write_text("".join(f"{i} n{i}\n" for i in range(5)))  # numbered lines
    named = kinetics.with_overrides(["DATA.CLASS_NAMES_FILE", "names.txt"])  # relative to DATA.ANNO_DIR
    assert resolve_class_names(named) == [f"n{i}" for i in range(5)]


def test_export_speed_benchmark_runs_on_a_tiny_model(tmp_path):
    results = bench_export(
        model_name="tsn_r26", model_kwargs=dict(widths=TINY_WIDTHS, layers=TINY_LAYERS), num_classes=5,
        frames=FRAMES, size=CROP, iters=1, threads=1, variants=("eager", "exported-program", "onnxruntime"),
        exporter="torchscript", workdir=tmp_path,
    )
    by_path = {r.path: r for r in results}
    assert list(by_path) == ["eager", "exported-program", "onnxruntime"]
    assert by_path["eager"].speedup == 1.0 and by_path["eager"].max_abs_diff == 0.0
    assert all(r.seconds > 0 and r.clips_per_s > 0 for r in results)
    assert by_path["onnxruntime"].max_abs_diff < 1e-4 and by_path["onnxruntime"].setup_s > 0
    assert by_path["exported-program"].max_abs_diff < 1e-4 and by_path["exported-program"].setup_s > 0
    assert "onnxruntime" in format_table(results)
    assert list(tmp_path.iterdir()) == []  # the exported file lived in a temporary folder


def _assert_same_ranking(want: list[dict], got: list[dict], *, atol: float) -> None:
    """The same scores rank by rank, and the same class at every rank but inside a near-tie.

    Two backends sum in different orders: classes whose scores differ by less than ``atol`` may
    swap places without either backend being wrong.
    """
    assert len(got) == len(want)
    scores = [x["score"] for x in want]
    np.testing.assert_allclose([x["score"] for x in got], scores, atol=atol)
    for rank, (w, g) in enumerate(zip(want, got)):
        tied = [abs(scores[rank] - scores[n]) < 2 * atol for n in (rank - 1, rank + 1) if 0 <= n < len(scores)]
        assert w["id"] == g["id"] or any(tied), f"rank {rank + 1}: class {g['id']} instead of {w['id']}"


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """A few real H.264 videos of the synthetic dataset (with its classes.txt), and matching overrides."""
    from tada.data.synthetic import generate_dataset

    root = tmp_path_factory.mktemp("synthetic")
    manifest = generate_dataset(root, videos_per_class={"train": 1, "val": 1, "test": 1}, lengths=(16, 20),
                                sizes=(40, 48), workers=1)
    opts = [*TINY_OVERRIDES, "VIDEO.HEAD.NUM_CLASSES", str(len(manifest["classes"])), "DATA.DATA_ROOT_DIR",
            str(root), "DATA.ANNO_DIR", str(root), "NUM_GPUS", "0"]
    return root, manifest["classes"], opts


def test_cli_export_then_predict_with_onnxruntime(synthetic, tmp_path, capsys):
    """`tada export` (defaults: ONNX, dynamo exporter) then `tada predict --backend onnxruntime` on real
    decoded videos gives the checkpoint's own scores and names."""
    pytest.importorskip("onnxscript", reason="pip install 'tada[export]'")
    root, classes, opts = synthetic
    torch.manual_seed(2)
    model = _trained_like(build_model(load_config(SYNTH_CFG, overrides=opts)), seed=2)
    ckpt = tmp_path / "checkpoint_epoch_00001.pyth"
    save_checkpoint(ckpt, model=model, epoch=0)
    out = tmp_path / "deploy" / "tiny.onnx"
    capsys.readouterr()
    assert cli_main(["export", "--cfg", str(SYNTH_CFG), "--checkpoint", str(ckpt), "--output", str(out),
                     "--dynamic-batch", *opts]) == 0
    printed = capsys.readouterr().out
    assert "verified" in printed and str(out) in printed

    sidecar = read_sidecar(out)
    assert sidecar_path(out).name == "tiny.onnx.json"
    assert sidecar["format"] == "onnx" and sidecar["model_file"] == "tiny.onnx"
    assert sidecar["exporter"] == "dynamo" and sidecar["opset"] >= 17 and sidecar["bn_folded"] is True
    assert sidecar["input_shape"] == [None, 3, FRAMES, CROP, CROP] and sidecar["dynamic_batch"] is True
    assert sidecar["input_layout"] == "BCTHW"
    assert sidecar["num_frames"] == FRAMES and sidecar["crop_size"] == CROP and sidecar["test_scale"] == 36
    assert sidecar["sampling_mode"] == "segment_based" and sidecar["target_fps"] == 30
    assert sidecar["mean"] == [0.45] * 3 and sidecar["std"] == [0.225] * 3
    assert sidecar["class_names"] == classes and sidecar["num_classes"] == len(classes)  # the dataset's classes.txt
    assert sidecar["checkpoint"] == str(ckpt) and sidecar["config"] == str(SYNTH_CFG)
    assert sidecar["verified_max_abs_diff"] < 1e-4 and sidecar["verified_batches"] == [1, 3]
    assert sidecar["tada_version"]

    # the sidecar's overrides turn any config into one whose test view is this model's input
    served, cfg = onnx_backend(load_config(SYNTH_CFG), out, threads=1)
    assert served.class_names == classes
    assert (cfg.DATA.NUM_INPUT_FRAMES, cfg.DATA.TEST_CROP_SIZE, cfg.DATA.TEST_SCALE) == (FRAMES, CROP, 36)
    assert cfg.VIDEO.HEAD.NUM_CLASSES == len(classes)
    x = _clips(2, 9)
    with torch.no_grad():
        assert torch.allclose(served({"video": x}), model(x), atol=1e-4, rtol=0)

    videos = sorted(str(p) for p in (root / "videos" / "test").glob("*.mp4"))[:2]
    outputs = {}
    for backend, weights in (("torch", ckpt), ("onnxruntime", out)):
        capsys.readouterr()
        code = cli_main(["predict", *videos, "--checkpoint", str(weights), "--backend", backend, "--views", "2x1",
                         "--device", "cpu", "--json", "--cfg", str(SYNTH_CFG), *opts])
        assert code == 0
        outputs[backend] = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert len(outputs["torch"]) == 2
    for t, o in zip(outputs["torch"], outputs["onnxruntime"]):
        _assert_same_ranking(t["top"], o["top"], atol=1e-4)
        assert [x["label"] for x in o["top"]] == [classes[x["id"]] for x in o["top"]]


def test_a_tadafied_image_model_exports_with_its_own_blocks(tmp_path):
    """tadafy's frames-layout blocks (routing, TAdaConv, pool branch) export as they are, with both exporters'
    graphs reproducing the eager logits."""
    from tada.models import create_image_model, tadafy

    torch.manual_seed(3)
    model = tadafy(create_image_model("resnet10_w16", num_classes=4), num_frames=FRAMES)
    gen = torch.Generator().manual_seed(4)
    with torch.no_grad():  # live routing and pool branches (zero at init)
        for name, p in model.named_parameters():
            if name.endswith(".rf.b.weight") or ".pool_bn." in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    model = calibrate(model, frames=FRAMES, size=CROP, batches=2, batch=4, seed=3)
    report = export_model(model, tmp_path / "tadafied.onnx", fmt="onnx", num_frames=FRAMES, crop_size=CROP,
                          exporter="torchscript", opset=17, dynamic_batch=True)
    assert report.checked_batches == [1, 3] and report.max_abs_diff < 1e-4
    report = export_model(model, tmp_path / "tadafied.pt2", fmt="exported-program", num_frames=FRAMES,
                          crop_size=CROP)
    assert report.max_abs_diff < 1e-4


def test_onnx_of_a_calibration_clamped_model_clamps_as_eager(tmp_path):
    """MODEL.CALIBRATION_CLAMP: the exported graph applies the tracked range, as the eager model does."""
    from tada.ops import track_calibration_range

    torch.manual_seed(2)
    model = create_model("tada2d_r26", num_classes=5, widths=TINY_WIDTHS, layers=TINY_LAYERS, dropout=0.0)
    track_calibration_range(model)
    model = _trained_like(model, seed=2)
    lows = [m.alpha_low for m in model.modules() if hasattr(m, "alpha_low")]
    assert lows and all(torch.isfinite(v).all() for v in lows)  # calibration (train mode) tracked a range
    out = tmp_path / "clamped.onnx"
    export_model(model, out, fmt="onnx", num_frames=FRAMES, crop_size=CROP, dynamic_batch=True)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = _clips(3, 5) * 8  # outside the tracked range, so the clamp acts
    with torch.no_grad():
        want = model(x).numpy()
    got = session.run(None, {"video": x.numpy()})[0]
    np.testing.assert_allclose(got, want, atol=1e-4 * max(1.0, float(np.abs(want).max())), rtol=0)

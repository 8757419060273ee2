"""The "what a TAdaConv sees" figure: alpha capture, the frame-order facts it shows, and the file from two runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tada.checkpoint import save_checkpoint
from tada.config import load_config, packaged_config_dir, save_config
from tada.data.synthetic import generate_dataset
from tada.engine.checkpointing import checkpoint_path
from tada.models import build_model
from tada.ops.routing import RouteFuncMLP
from tada.viz.calibration import (
    calibration_figure_data,
    first_principal_component,
    frame_features,
    most_order_sensitive,
    route_alphas,
    write_calibration_figure,
)

CONFIGS = packaged_config_dir() / "projects" / "tada" / "synthetic"
TINY = [
    "VIDEO.BACKBONE.DEPTH", "26", "VIDEO.BACKBONE.NUM_FILTERS", "[8, 16, 32, 64, 128]",
    "VIDEO.BACKBONE.NUM_OUT_FEATURES", "128", "DATA.NUM_INPUT_FRAMES", "4", "DATA.TRAIN_JITTER_SCALES", "[32, 40]",
    "DATA.TRAIN_CROP_SIZE", "32", "DATA.TEST_SCALE", "32", "DATA.TEST_CROP_SIZE", "32",
]


def _model(name: str, *extra: str, dtype=torch.float64) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(load_config(CONFIGS / name, [*TINY, *extra])).to(dtype)
    for m in model.modules():  # trained routing functions: alpha varies over frames (the init gives alpha == 1)
        if isinstance(m, RouteFuncMLP):
            torch.nn.init.normal_(m.b.weight, std=0.5)
    return model.eval()


def _clip(dtype=torch.float64) -> torch.Tensor:
    return torch.randn(1, 3, 4, 32, 32, generator=torch.Generator().manual_seed(1), dtype=dtype)


def test_route_alphas_reads_every_routing_function_and_removes_its_hooks() -> None:
    model = _model("tada2d.yaml")
    routes = {n: m for n, m in model.named_modules() if isinstance(m, RouteFuncMLP)}
    clip = _clip()
    logits, alphas = route_alphas(model, clip)
    assert list(alphas) == list(routes) and all(n.endswith("b_rf") for n in alphas)
    for name, a in alphas.items():
        assert a.shape == (4, routes[name].out_channels)
    # alpha as the routing function computes it on the block's input, frames in order
    first = next(iter(routes))
    assert not np.allclose(alphas[first], 1.0)
    torch.testing.assert_close(logits, model(clip)[0])
    assert all(not m._forward_hooks for m in routes.values())
    with pytest.raises(ValueError, match="no RouteFuncMLP"):
        route_alphas(_model("tsn.yaml"), clip)


def test_tsn_sees_a_permutation_and_tada2d_does_not() -> None:
    clip = _clip()
    tsn = _model("tsn.yaml")
    logits, feats = frame_features(tsn, clip)
    logits_r, feats_r = frame_features(tsn, clip.flip(2))
    np.testing.assert_allclose(feats_r, feats[::-1], rtol=0, atol=1e-12)  # the same frames, reversed
    torch.testing.assert_close(logits_r, logits, rtol=0, atol=1e-12)  # so the same average and prediction
    torch.testing.assert_close(logits, tsn(clip)[0])
    tada = _model("tada2d.yaml")
    _, a = route_alphas(tada, clip)
    _, a_r = route_alphas(tada, clip.flip(2))
    block, channels, score = most_order_sensitive(a, a_r)
    assert score > 1e-3 and len(channels) == 3 and len(set(channels)) == 3
    assert np.abs(a[block][:, channels] - a_r[block][::-1, channels]).max() == pytest.approx(score)


def test_most_order_sensitive_is_deterministic() -> None:
    flat = np.ones((4, 5))
    mirrored = flat.copy()
    bumped = flat.copy()
    bumped[1, 3] = 3.0  # channel 3 at frame 1: differs from the reversed clip's frame 2 by 2
    bumped[0, 1] = 2.0  # channel 1: by 1
    video = {"s1.b_rf": flat, "s2.b_rf": bumped, "s3.b_rf": bumped.copy()}
    reversed_ = {"s1.b_rf": mirrored, "s2.b_rf": flat, "s3.b_rf": flat}
    block, channels, score = most_order_sensitive(video, reversed_, channels=3)
    assert block == "s2.b_rf" and channels == [3, 1, 0] and score == 2.0  # ties: first block, lowest channel
    nan = bumped.copy()
    nan[2, 4] = np.nan
    assert most_order_sensitive({"b": nan}, {"b": flat}, channels=1)[1] == [3]  # non-finite scores 0
    with pytest.raises(ValueError, match="same routing functions"):
        most_order_sensitive(video, {"s1.b_rf": flat})


def test_first_principal_component_sign_and_average() -> None:
    direction = np.array([0.0, -3.0, 1.0]) / np.sqrt(10.0)
    coords = np.array([-2.0, -1.0, 0.5, 2.5])
    rows = coords[:, None] * direction[None, :] + np.array([1.0, 2.0, 3.0])
    projected = first_principal_component(rows)
    # largest loading (-3) made positive: minus the coordinates, plus the offset's projection
    component = -direction
    np.testing.assert_allclose(projected, -coords + np.array([1.0, 2.0, 3.0]) @ component, atol=1e-12)
    assert projected.mean() == pytest.approx(rows.mean(axis=0) @ component, abs=1e-12)  # the average's projection


def test_figure_data_reports_predictions_and_mirror_error() -> None:
    clip = _clip()
    names = [f"class {i}" for i in range(7)]
    data = calibration_figure_data(_model("tada2d.yaml"), _model("tsn.yaml"), clip, class_names=names)
    assert data.alpha_video.shape == data.alpha_reversed.shape and data.alpha_video.shape[0] == 4
    assert data.tsn_mirror_error < 1e-12
    np.testing.assert_allclose(data.tsn_reversed, data.tsn_video[::-1], atol=1e-10)
    assert data.tsn_pred[0].name == data.tsn_pred[1].name and data.tsn_pred[0].name in names
    assert data.tsn_pred[0].prob == pytest.approx(data.tsn_pred[1].prob, abs=1e-12)
    assert 0.0 < data.tada_pred[0].prob <= 1.0


def test_writes_the_figure_from_two_run_folders_with_the_calibration_clamp(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    manifest = generate_dataset(data_dir, seed=0, videos_per_class={"train": 0, "val": 0, "test": 2},
                                sizes=(32, 40), lengths=(12, 16), workers=1)
    dirs = {}
    for name, extra in (("tada2d.yaml", ["MODEL.CALIBRATION_CLAMP", "true"]), ("tsn.yaml", [])):
        run_dir = tmp_path / name.split(".")[0]
        cfg = load_config(CONFIGS / name, [*TINY, *extra, "OUTPUT_DIR", str(run_dir), "DATA.DATA_ROOT_DIR",
                                          str(data_dir), "DATA.ANNO_DIR", str(data_dir)])
        torch.manual_seed(0)
        model = build_model(cfg)
        for m in model.modules():
            if isinstance(m, RouteFuncMLP):
                torch.nn.init.normal_(m.b.weight, std=0.5)
        if extra:  # a few train-mode batches give the clamp its ranges
            model.train()
            with torch.no_grad():
                model(torch.randn(2, 3, 4, 32, 32))
        save_config(cfg, run_dir / "config.yaml")
        save_checkpoint(checkpoint_path(run_dir, 1), model=model, epoch=1)
        dirs[name] = run_dir
    out = tmp_path / "calibration.png"
    data = write_calibration_figure(tada_dir=dirs["tada2d.yaml"], tsn_dir=dirs["tsn.yaml"], manifest=manifest,
                                    out=out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    first_class = manifest["classes"][manifest["pairs"][0][0]]
    assert data.label == first_class and data.block.endswith("b_rf") and len(data.channels) == 3
    summary = data.summary()
    assert summary["tsn"]["video"]["class"] == summary["tsn"]["reversed"]["class"]
    assert summary["tsn"]["video"]["prob"] == pytest.approx(summary["tsn"]["reversed"]["prob"], abs=1e-5)
    assert np.isfinite(data.alpha_video).all()
    with pytest.raises(Exception, match="config.yaml"):
        write_calibration_figure(tada_dir=tmp_path / "nowhere", tsn_dir=dirs["tsn.yaml"], manifest=manifest,
                                 out=out)

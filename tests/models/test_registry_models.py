"""Every registered model, enrolled by the registry: build, forward, backward, state-dict round trip, ONNX.

The names come from ``list_models()``, so a new registration is tested without touching this file.
Each model is built at full size on the meta device (no memory, no compute), then small enough to
run here: the same family, with the width / depth / frame / resolution overrides its builder takes
(``_TINY``, looked up by the model's class: a family without an entry fails, naming it).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tada.deploy.export import export_model
from tada.models import VideoConvNeXt, VideoResNet, create_model, list_models
from tada.models.tadaformer import TAdaFormer

ort = pytest.importorskip("onnxruntime", reason="pip install 'tada[export]'")
pytest.importorskip("onnx", reason="pip install 'tada[export]'")

NUM_CLASSES = 5
BATCH = 2

# model class -> (builder overrides that make it tiny, clip shape (C, T, H, W) it takes)
_TINY: dict[type[nn.Module], tuple[dict, tuple[int, int, int, int]]] = {
    VideoResNet: (dict(widths=(8, 16, 32, 64, 128), layers=(1, 1, 1, 1)), (3, 4, 32, 32)),
    VideoConvNeXt: (dict(depths=(1, 1, 1, 1), widths=(8, 16, 32, 64), head_dim=4), (3, 4, 32, 32)),
    # routing width = width / reduction / ROUTE_FUNC_R must be a multiple of the 64-channel routing heads
    TAdaFormer: (dict(width=128, depth=1, heads=2, patch_size=8, input_res=16, num_frames=4, reduction=1),
                 (3, 4, 16, 16)),
}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny models gain nothing from threads, and on a shared machine OpenMP barriers cost more."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _tiny(name: str, seed: int) -> tuple[nn.Module, torch.Tensor]:
    """The registered model, made small, with every parameter and BN statistic non-trivial; and a clip."""
    with torch.device("meta"):
        family = type(create_model(name, num_classes=NUM_CLASSES))
    if family not in _TINY:
        raise AssertionError(f"{name} is a {family.__name__}: add its small-size overrides to _TINY")
    overrides, clip = _TINY[family]
    torch.manual_seed(seed)
    model = create_model(name, num_classes=NUM_CLASSES, dropout=0.0, **overrides)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # the zero-initialised temporal parts (routing output, pool norms, tada_proj) live
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
        model.train()
        model(torch.randn(4, *clip, generator=gen))  # BN running statistics from data
    return model.eval(), torch.randn(BATCH, *clip, generator=gen)


@pytest.mark.parametrize("name", list_models())
def test_builds_at_full_size(name):
    with torch.device("meta"):
        model = create_model(name)
    assert model.num_classes == 400 and sum(p.numel() for p in model.parameters()) > 1_000_000
    assert model.get_classifier().out_features == 400


@pytest.mark.parametrize("name", list_models())
def test_forward_is_forward_head_of_forward_features(name):
    model, x = _tiny(name, seed=0)
    with torch.no_grad():
        logits = model(x)
        features = model.forward_features(x)
        pooled = model.forward_head(features, pre_logits=True)
        assert torch.equal(model.forward_head(features), logits)
        assert torch.equal(model({"video": x}), logits)
    assert logits.shape == (BATCH, NUM_CLASSES) and torch.isfinite(logits).all()
    assert pooled.shape == (BATCH, model.num_features)
    torch.testing.assert_close(model.get_classifier()(pooled), logits, rtol=1e-6, atol=1e-6)
    model.reset_classifier(3)
    assert model.num_classes == 3 and model(x).shape == (BATCH, 3)
    model.reset_classifier(0)  # no classifier: the pooled features
    with torch.no_grad():
        assert torch.equal(model(x), pooled)


@pytest.mark.parametrize("name", list_models())
def test_backward_reaches_every_parameter(name):
    model, x = _tiny(name, seed=1)
    if hasattr(model, "channels_last"):
        model.channels_last = True  # the layout training uses
    model.train()
    loss = F.cross_entropy(model(x), torch.arange(BATCH) % NUM_CLASSES)
    loss.backward()
    for key, p in model.named_parameters():
        assert p.grad is not None, f"{name}: no gradient for {key}"
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, f"{name}: {key}"


@pytest.mark.parametrize("name", list_models())
def test_strict_state_dict_round_trip_gives_the_same_logits(name, tmp_path):
    model, x = _tiny(name, seed=2)
    model.double()
    torch.save(model.state_dict(), tmp_path / "weights.pth")
    fresh, _ = _tiny(name, seed=3)  # other values everywhere
    fresh.double()
    with torch.no_grad():
        want = model(x.double())
        assert not torch.allclose(fresh(x.double()), want)
        fresh.load_state_dict(torch.load(tmp_path / "weights.pth", weights_only=True), strict=True)
        assert torch.equal(fresh(x.double()), want)


@pytest.mark.parametrize("name", list_models())
def test_onnx_export_runs_in_onnxruntime_like_torch(name, tmp_path):
    model, x = _tiny(name, seed=4)
    path = tmp_path / f"{name}.onnx"
    _, frames, size = x.shape[1], x.shape[2], x.shape[3]
    export_model(model, path, fmt="onnx", num_frames=frames, crop_size=size, batch=BATCH, exporter="torchscript",
                 opset=17, verify=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"video": x.numpy()})[0]
    with torch.no_grad():
        want = model(x).numpy()
    assert np.abs(want).max() > 1e-3  # the logits carry signal
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * (1 + np.abs(want).max()))

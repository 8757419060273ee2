"""`tada benchmark model` pieces for TAdaConvNeXtV2: the official grouped form and a ConvNeXt reference."""

from __future__ import annotations

import torch

import tada.bench.model as speed
from tada.bench.model import GroupedTAdaConv2dV2, official_tadaconv_v2, run_suite
from tada.models import create_model

SMALL = dict(depths=(1, 1, 1, 1), widths=(8, 16, 32, 64), head_dim=4)


def test_official_grouped_form_gives_the_same_network():
    torch.manual_seed(0)
    fast = create_model("tadaconvnextv2_tiny", num_classes=4, dropout=0.0, **SMALL).double()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in fast.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64) * 0.3)
    grouped = official_tadaconv_v2(create_model("tadaconvnextv2_tiny", num_classes=4, dropout=0.0, **SMALL).double())
    grouped.load_state_dict(fast.state_dict())
    assert sum(isinstance(m, GroupedTAdaConv2dV2) for m in grouped.modules()) == 4
    x = torch.randn(2, 3, 6, 32, 32, dtype=torch.float64)
    out_fast, out_grouped = fast(x), grouped(x)
    torch.testing.assert_close(out_grouped, out_fast, rtol=1e-10, atol=1e-10)
    g_fast = torch.autograd.grad(out_fast.square().sum(), list(fast.parameters()))
    g_grouped = torch.autograd.grad(out_grouped.square().sum(), list(grouped.parameters()))
    for a, b in zip(g_grouped, g_fast, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


def test_run_suite_with_a_convnext_reference(monkeypatch):
    def small_build(name, num_classes=400):
        base = name.removesuffix(speed.GROUPED_SUFFIX)
        model = create_model(base, num_classes=num_classes, **SMALL)
        return official_tadaconv_v2(model) if base != name else model

    monkeypatch.setattr(speed, "build_named", small_build)
    results = run_suite(models=("tadaconvnextv2_tiny", "tadaconvnextv2_tiny+grouped"), reference="convnext_tiny_frames",
                        modes=("eval", "train"), precisions=("fp32",), channels_last=(True,), frames=4, size=32,
                        iters=1, warmup=0)
    assert [(r.model, r.mode) for r in results] == [
        (m, mode) for mode in ("eval", "train")
        for m in ("convnext_tiny_frames", "tadaconvnextv2_tiny", "tadaconvnextv2_tiny+grouped")]
    assert [r.ratio for r in results if r.model == "convnext_tiny_frames"] == [1.0, 1.0]
    assert all(r.ratio > 0 for r in results)
    assert "tadaconvnextv2_tiny+grouped" in speed.format_table(results)

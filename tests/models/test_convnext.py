"""TAdaConvNeXtV2: official layout (keys, shapes, counts), strict official-checkpoint load, logits
against an independent float64 forward written from the official definition, init, overrides."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tada.checkpoint import load_checkpoint
from tada.models import create_model, list_models

SMALL = dict(depths=(1, 1, 2, 1), widths=(16, 32, 64, 128), head_dim=4)  # routing heads 2, 4, 8, 16


# ------------------------------------------------------------------------------------------------
# An independent reference: the official computation on (B, C, T, H, W) tensors, float64
# ------------------------------------------------------------------------------------------------
def _ln_cf(x, w, b):
    u = x.mean(1, keepdim=True)
    s = (x - u).pow(2).mean(1, keepdim=True)
    shape = (1, -1) + (1,) * (x.dim() - 2)
    return w.view(shape) * (x - u) / torch.sqrt(s + 1e-6) + b.view(shape)


def _ln_cl(x, w, b):
    return _ln_cf(x.movedim(-1, 1), w, b).movedim(1, -1)


def _qgelu(x):
    return x * torch.sigmoid(1.702 * x)


def _routing(sd, p, x, head_dim):
    """RouteFuncwTransformer with zero_init_cal and bias calibration (the block's dwconv_rf)."""
    pooled = F.adaptive_avg_pool3d(x, (x.shape[2], 1, 1))
    h = F.conv3d(pooled, sd[p + "a.weight"], sd[p + "a.bias"], padding=(1, 0, 0))
    h = _qgelu(_ln_cf(h, sd[p + "norm.weight"], sd[p + "norm.bias"]))
    z = _ln_cf(h, sd[p + "norm_transformer.weight"], sd[p + "norm_transformer.bias"])
    qkv = F.conv3d(z, sd[p + "qkv_proj.weight"], sd[p + "qkv_proj.bias"])[..., 0, 0]  # (B, 3c, T)
    c = h.shape[1]
    heads = c // head_dim
    outs = []
    for j in range(heads):
        q, k, v = (qkv[:, [s * c + d * heads + j for d in range(head_dim)]].transpose(1, 2) for s in range(3))
        outs.append(torch.softmax(q @ k.transpose(1, 2) * c ** -0.5, dim=-1) @ v)
    o = torch.cat(outs, dim=2).transpose(1, 2)[..., None, None]
    h = h + F.conv3d(o, sd[p + "attn_out.weight"], sd[p + "attn_out.bias"])
    aw = F.conv3d(h, sd[p + "b.weight"], None, padding=(1, 0, 0)) + 1
    ab = F.conv3d(h, sd[p + "b_bias.weight"], None, padding=(1, 0, 0)) + 1
    return aw, ab


def _tada_dwconv(x, weight, bias, aw, ab):
    """Per (sample, frame): conv2d with kernel alpha_w * W (cout) and bias alpha_b * beta, one frame at a time."""
    b, c, t = x.shape[:3]
    out = torch.empty_like(x)
    for bi in range(b):
        for ti in range(t):
            kernel = weight[0, 0] * aw[bi, :, ti].view(c, 1, 1, 1)
            out[bi, :, ti] = F.conv2d(x[bi : bi + 1, :, ti], kernel, bias[0, 0] * ab[bi, :, ti, 0, 0],
                                      padding=3, groups=c)[0]
    return out


def _reference_logits(sd, x, depths, head_dim):
    sd = {k: v.double() for k, v in sd.items()}
    x = x.double()
    p = "backbone.downsample_layers.0."
    x = F.conv3d(x, sd[p + "0.weight"], sd[p + "0.bias"], stride=(2, 4, 4), padding=(1, 0, 0))
    x = _ln_cf(x, sd[p + "1.weight"], sd[p + "1.bias"])
    for i, depth in enumerate(depths):
        if i > 0:
            p = f"backbone.downsample_layers.{i}."
            x = _ln_cf(x, sd[p + "0.weight"], sd[p + "0.bias"])
            x = F.conv3d(x, sd[p + "1.weight"], sd[p + "1.bias"], stride=(1, 2, 2))
        for j in range(depth):
            p = f"backbone.stages.{i}.{j}."
            aw, ab = _routing(sd, p + "dwconv_rf.", x, head_dim)
            y = _tada_dwconv(x, sd[p + "dwconv.weight"], sd[p + "dwconv.bias"], aw, ab)
            pooled = F.avg_pool3d(y, (3, 1, 1), 1, (1, 0, 0), count_include_pad=True)
            z = _ln_cl(y.permute(0, 2, 3, 4, 1), sd[p + "norm.weight"], sd[p + "norm.bias"]) + _ln_cl(
                pooled.permute(0, 2, 3, 4, 1), sd[p + "norm_avgpool.weight"], sd[p + "norm_avgpool.bias"])
            z = F.linear(_qgelu(F.linear(z, sd[p + "pwconv1.weight"], sd[p + "pwconv1.bias"])),
                         sd[p + "pwconv2.weight"], sd[p + "pwconv2.bias"])
            x = x + (sd[p + "gamma"] * z).permute(0, 4, 1, 2, 3)
    feats = F.layer_norm(x.mean(dim=(2, 3, 4)), (x.shape[1],), sd["backbone.norm.weight"],
                         sd["backbone.norm.bias"], 1e-6)
    return F.linear(feats, sd["head.out.weight"], sd["head.out.bias"])


def _random_official_state(model, seed):
    """Every tensor random (gamma, norm_avgpool, b/b_bias non-zero), in the official checkpoint layout."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for k, v in model.state_dict().items():
        scale = 0.2 if v.dim() > 1 else 0.5
        state[k] = (torch.randn(v.shape, generator=gen) * scale + (1.0 if k.endswith("norm.weight") else 0.0)).float()
    return state


def test_official_checkpoint_loads_strictly_and_gives_the_reference_logits(tmp_path):
    torch.manual_seed(0)
    model = create_model("tadaconvnextv2_tiny", num_classes=7, **SMALL)
    state = _random_official_state(model, 1)
    path = tmp_path / "official.pyth"
    torch.save({"model_state": state, "epoch": 100}, path)
    fresh = create_model("tadaconvnextv2_tiny", num_classes=7, **SMALL).eval()
    loaded = load_checkpoint(fresh, path, strict=True)
    assert loaded.epoch == 100 and not loaded.missing_keys and not loaded.unexpected_keys
    x = torch.randn(2, 3, 8, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        logits32 = fresh(x)
        ref = _reference_logits(state, x, SMALL["depths"], SMALL["head_dim"])
        assert (logits32.double() - ref).abs().max().item() < 1e-4
        torch.testing.assert_close(fresh.double()(x.double()), ref, rtol=1e-10, atol=1e-10)
    assert ref.abs().max() > 1.0  # the random checkpoint is far from a trivial network


def test_gradients_equal_the_reference():
    torch.manual_seed(3)
    model = create_model("tadaconvnextv2_tiny", num_classes=5, depths=(1, 1, 1, 1), widths=(8, 16, 32, 64),
                         head_dim=4, dropout=0.0).double()
    model.load_state_dict({k: v.double() for k, v in _random_official_state(model, 4).items()})
    x = torch.randn(1, 3, 6, 32, 32, dtype=torch.float64)
    names = ["backbone.stages.1.0.dwconv_rf.qkv_proj.weight", "backbone.stages.2.0.dwconv.bias",
             "backbone.stages.0.0.norm_avgpool.weight", "backbone.downsample_layers.0.0.weight"]
    params = dict(model.named_parameters())
    got = torch.autograd.grad(model(x).square().sum(), [params[n] for n in names])
    sd = {k: (v.detach().clone().requires_grad_() if k in names else v.detach()) for k, v in model.state_dict().items()}
    want = torch.autograd.grad(_reference_logits(sd, x, (1, 1, 1, 1), 4).square().sum(), [sd[n] for n in names])
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-10)


def _official_keys(depths, widths, num_classes):
    """The official state dict's keys and shapes, written out from the checkpoint layout."""
    keys = {
        "backbone.downsample_layers.0.0.weight": (widths[0], 3, 3, 4, 4),
        "backbone.downsample_layers.0.0.bias": (widths[0],),
        "backbone.downsample_layers.0.1.weight": (widths[0],), "backbone.downsample_layers.0.1.bias": (widths[0],),
    }
    for i in range(1, 4):
        p = f"backbone.downsample_layers.{i}."
        keys.update({p + "0.weight": (widths[i - 1],), p + "0.bias": (widths[i - 1],),
                     p + "1.weight": (widths[i], widths[i - 1], 1, 2, 2), p + "1.bias": (widths[i],)})
    for i, (depth, d) in enumerate(zip(depths, widths, strict=True)):
        for j in range(depth):
            p = f"backbone.stages.{i}.{j}."
            h = d // 2
            keys.update({
                p + "gamma": (d,), p + "dwconv.weight": (1, 1, d, 1, 7, 7), p + "dwconv.bias": (1, 1, d),
                p + "dwconv_rf.a.weight": (h, d, 3, 1, 1), p + "dwconv_rf.a.bias": (h,),
                p + "dwconv_rf.norm.weight": (h,), p + "dwconv_rf.norm.bias": (h,),
                p + "dwconv_rf.norm_transformer.weight": (h,), p + "dwconv_rf.norm_transformer.bias": (h,),
                p + "dwconv_rf.qkv_proj.weight": (3 * h, h, 1, 1, 1), p + "dwconv_rf.qkv_proj.bias": (3 * h,),
                p + "dwconv_rf.attn_out.weight": (h, h, 1, 1, 1), p + "dwconv_rf.attn_out.bias": (h,),
                p + "dwconv_rf.b.weight": (d, h, 3, 1, 1), p + "dwconv_rf.b_bias.weight": (d, h, 3, 1, 1),
                p + "norm.weight": (d,), p + "norm.bias": (d,), p + "norm_avgpool.weight": (d,),
                p + "norm_avgpool.bias": (d,), p + "pwconv1.weight": (4 * d, d), p + "pwconv1.bias": (4 * d,),
                p + "pwconv2.weight": (d, 4 * d), p + "pwconv2.bias": (d,),
            })
    keys.update({"backbone.norm.weight": (widths[-1],), "backbone.norm.bias": (widths[-1],),
                 "head.out.weight": (num_classes, widths[-1]), "head.out.bias": (num_classes,)})
    return keys


@pytest.mark.parametrize(
    "name, depths, widths, n_keys, params_k400, params_ssv2",
    [
        ("tadaconvnextv2_tiny", (3, 3, 9, 3), (96, 192, 384, 768), 434, 45_971_488, 45_797_694),
        ("tadaconvnextv2_small", (3, 3, 27, 3), (96, 192, 384, 768), 848, 82_249_120, 82_075_326),
        ("tadaconvnextv2_base", (3, 3, 27, 3), (128, 256, 512, 1024), 848, 145_687_632, 145_455_982),
    ],
)
def test_full_size_keys_shapes_and_parameter_counts(name, depths, widths, n_keys, params_k400, params_ssv2):
    model = create_model(name, num_classes=400)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert len(shapes) == n_keys
    assert shapes == _official_keys(depths, widths, 400)
    assert sum(p.numel() for p in model.parameters()) == params_k400
    model.reset_classifier(174)
    assert sum(p.numel() for p in model.parameters()) == params_ssv2
    assert {k for k in model.state_dict()} == set(_official_keys(depths, widths, 174))


def test_initialisation_is_official():
    torch.manual_seed(0)
    model = create_model("tadaconvnextv2_tiny", num_classes=400, depths=(1, 1, 3, 1))
    block = model.backbone.stages[2][1]
    assert torch.count_nonzero(block.dwconv_rf.b.weight) == 0
    assert torch.count_nonzero(block.dwconv_rf.b_bias.weight) == 0
    assert torch.count_nonzero(block.norm_avgpool.weight) == 0 and torch.count_nonzero(block.norm_avgpool.bias) == 0
    assert torch.all(block.gamma == 1e-6) and torch.all(block.norm.weight == 1)
    assert torch.count_nonzero(block.dwconv.bias) == 0 and torch.count_nonzero(block.pwconv1.bias) == 0
    for w in (block.dwconv.weight, block.pwconv1.weight, block.dwconv_rf.a.weight,
              model.backbone.downsample_layers[1][1].weight):
        assert 0.017 < w.std().item() < 0.023, w.shape
    assert 0.015 < model.head.out.weight.std().item() < 0.025  # PyTorch default: uniform +-1/sqrt(768)
    assert model.head.out.weight.abs().max().item() <= 1 / 768 ** 0.5
    drop = [b.drop_path for s in model.backbone.stages for b in s]
    assert drop == [0.0] * 6  # create_model default; configs set DROP_PATH
    m = create_model("tadaconvnextv2_tiny", depths=(1, 1, 3, 1), drop_path=0.2)
    assert [round(b.drop_path, 6) for s in m.backbone.stages for b in s] == [0.0, 0.04, 0.08, 0.12, 0.16, 0.2]
    with torch.no_grad():  # the block's own init_weights() restores its start
        for p in block.parameters():
            p.add_(1.0)
    block.init_weights()
    assert torch.count_nonzero(block.norm_avgpool.weight) == 0 and torch.all(block.gamma == 1e-6)
    assert torch.count_nonzero(block.dwconv_rf.b.weight) == 0 and torch.count_nonzero(block.dwconv.bias) == 0
    assert 0.017 < block.pwconv1.weight.std().item() < 0.023


def test_at_init_the_block_is_a_per_frame_convnext_block():
    """alpha = 1 and norm_avgpool = 0: the TAda model equals its plain twin with the same weights."""
    torch.manual_seed(1)
    tada = create_model("tadaconvnextv2_tiny", num_classes=6, **SMALL).eval()
    plain = create_model("convnext_tiny_frames", num_classes=6, **SMALL).eval()
    own = tada.state_dict()
    plain_state = {}
    for k, v in plain.state_dict().items():
        src = own[k]
        plain_state[k] = src.view(v.shape) if src.numel() == v.numel() else None
    assert all(v is not None for v in plain_state.values())
    plain.load_state_dict(plain_state)
    x = torch.randn(2, 3, 6, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(tada(x), plain(x), rtol=1e-5, atol=1e-6)


def test_contract_and_size_overrides():
    model = create_model("tadaconvnextv2_small", num_classes=3, depths=(1, 1, 1, 1), widths=(8, 16, 32, 64),
                         head_dim=4, dropout=0.0).eval()
    expected = {"tadaconvnextv2_tiny", "tadaconvnextv2_small", "tadaconvnextv2_base", "convnext_tiny_frames"}
    assert expected <= set(list_models())
    x = torch.randn(2, 3, 5, 48, 40)  # odd frame count, non-square frames
    with torch.no_grad():
        feats = model.forward_features(x)
        assert feats.shape == (2, 64, 3, 1, 1)
        torch.testing.assert_close(model.forward_head(feats), model(x))
        assert model.forward_head(feats, pre_logits=True).shape == (2, 64)
        assert model({"video": x}).shape == (2, 3)
    model.reset_classifier(0)
    assert model.num_classes == 0 and model(x).shape == (2, 64)


def test_drop_path_per_video():
    from tada.models.convnext import drop_path_frames

    ones = torch.ones(40 * 4, 2, 2, 3)
    out = drop_path_frames(ones, 0.5, 4, True).view(40, 4, -1)
    assert set(out.unique().tolist()) <= {0.0, 2.0}
    assert torch.all(out == out[:, :1])  # one decision per clip, shared by its frames
    assert torch.equal(drop_path_frames(ones, 0.5, 4, False), ones)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(widths=(96, 192, 384, 768), head_dim=64), "multiple of head_dim"),
        (dict(depths=(1, 1, 1)), "four positive"),
        (dict(stem_t_kernel=2), "odd"),
    ],
)
def test_builder_errors(kwargs, match):
    from tada.models.convnext import video_convnext

    with pytest.raises(ValueError, match=match):
        video_convnext(**kwargs)

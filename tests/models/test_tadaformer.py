"""TAdaFormer: official key layout and sizes, exact logits against an independent reference forward.

The reference below is written from the description of the official model, in its own layout:
tokens (L, B*T', W), attention written out by hand (stacked q/k/v rows, contiguous heads), the
routing function's temporal attention with interleaved q/k/v heads, head-major output and the
c^-1/2 scale, and the TAdaConv as the official per-frame kernels in one grouped convolution.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tada.checkpoint import load_checkpoint
from tada.models import create_model
from tada.models.tadaformer import TokenTemporalConv, VideoDropPath, tadaformer

SMALL = dict(width=256, depth=2, heads=4, patch_size=8, input_res=32, num_frames=8)


# ------------------------------------------------------------------------------------------------
# Reference forward (float64, eval mode), from the official model's description
# ------------------------------------------------------------------------------------------------
def _qgelu(x):
    return x * torch.sigmoid(1.702 * x)


def _ln_channels_first(x, w, b, eps=1e-6):
    u = x.mean(1, keepdim=True)
    s = (x - u).pow(2).mean(1, keepdim=True)
    shape = (1, -1) + (1,) * (x.dim() - 2)
    return w.view(shape) * (x - u) / torch.sqrt(s + eps) + b.view(shape)


def _ref_route(p, x, head_dim=64):
    """x (B, C, T, H, W) -> alpha_w, alpha_b (B, C, T, 1, 1); no "+1" (internal routing)."""
    u = x.mean(dim=(3, 4), keepdim=True)
    ka, kb = p["a.weight"].shape[2], p["b.weight"].shape[2]
    h = F.conv3d(u, p["a.weight"], p["a.bias"], padding=(ka // 2, 0, 0))
    h = _qgelu(_ln_channels_first(h, p["norm.weight"], p["norm.bias"]))
    b, c, t = h.shape[:3]
    nh = c // head_dim
    qkv = F.conv3d(_ln_channels_first(h, p["norm_transformer.weight"], p["norm_transformer.bias"]),
                   p["qkv_proj.weight"], p["qkv_proj.bias"])[..., 0, 0]  # (B, 3c, T)
    qkv = qkv.view(b, 3, head_dim, nh, t)  # channel s*c + d*nh + j: heads interleaved
    q, k, v = qkv[:, 0], qkv[:, 1], qkv[:, 2]  # (B, d, j, T)
    att = (torch.einsum("bdjt,bdjs->bjts", q, k) * c ** -0.5).softmax(dim=-1)
    out = torch.einsum("bjts,bdjs->bjdt", att, v).reshape(b, c, t)[..., None, None]  # head-major
    h = h + F.conv3d(out, p["attn_out.weight"], p["attn_out.bias"])
    alpha_w = F.conv3d(h, p["b.weight"], padding=(kb // 2, 0, 0))
    alpha_b = F.conv3d(h, p["b_bias.weight"], padding=(kb // 2, 0, 0))
    return alpha_w, alpha_b


def _ref_bn(x, p, name):
    return F.batch_norm(x, p[f"{name}.running_mean"], p[f"{name}.running_var"], p[f"{name}.weight"],
                        p[f"{name}.bias"], False, 0.0, 1e-5)


def _ref_tadaconv(p, x):
    """Depthwise 3x3 TAdaConv2dV2, cal "cout", calibrated bias, BN temporal aggregation; x (B, C, T, H, W)."""
    rf = {k[len("rf_func."):]: v for k, v in p.items() if k.startswith("rf_func.")}
    alpha_w, alpha_b = _ref_route(rf, x)
    b, c, t, h, w = x.shape
    weight = p["weight"][0, 0]  # (C, 1, 3, 3)
    kernels = weight[None, None] * alpha_w.permute(0, 2, 1, 3, 4)[..., None]  # (B, T, C, 1, 3, 3)
    bias = (p["bias"].view(1, 1, c) * alpha_b[..., 0, 0].transpose(1, 2)).reshape(-1)
    frames = x.transpose(1, 2).reshape(1, b * t * c, h, w)
    y = F.conv2d(frames, kernels.reshape(b * t * c, 1, 3, 3), bias, padding=1, groups=b * t * c)
    y = y.view(b, t, c, h, w).transpose(1, 2)
    pooled = F.avg_pool3d(y, (3, 1, 1), 1, (1, 0, 0), count_include_pad=True)
    return _ref_bn(y, p, "bn_a") + _ref_bn(pooled, p, "bn_b")


def _sub(sd, prefix):
    return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}


def _ref_tada(p, patches, b, t, side, temp_enhance):
    """patches (h*w, B*T, W) -> the TAda branch output, same layout."""
    conv = _sub(p, "tadaconv.")
    hw, n, wd = patches.shape
    video = patches.permute(1, 2, 0).reshape(b, t, wd, side, side).transpose(1, 2)  # (B, W, T, h, w)
    if temp_enhance:
        y = F.conv3d(video, p["tada_pre_proj.weight"], p["tada_pre_proj.bias"], padding=(1, 0, 0))
        y = _qgelu(_ref_tadaconv(conv, y))
        y = F.conv3d(y, p["tada_proj.weight"], p["tada_proj.bias"])
    else:
        y = F.linear(video.permute(0, 2, 3, 4, 1), p["tada_pre_proj.weight"], p["tada_pre_proj.bias"])
        y = _qgelu(_ref_tadaconv(conv, y.permute(0, 4, 1, 2, 3)))
        y = F.linear(y.permute(0, 2, 3, 4, 1), p["tada_proj.weight"], p["tada_proj.bias"]).permute(0, 4, 1, 2, 3)
    return y.transpose(1, 2).reshape(n, -1, hw).permute(2, 0, 1)


def _ref_attention(p, x, heads):
    """Spatial MHA on (L, N, W): q/k/v stacked rows of in_proj, contiguous heads, scale hd^-1/2."""
    length, n, w = x.shape
    hd = w // heads
    q, k, v = F.linear(x, p["in_proj_weight"], p["in_proj_bias"]).chunk(3, dim=-1)
    q, k, v = (z.reshape(length, n, heads, hd).permute(1, 2, 0, 3) for z in (q, k, v))  # (N, heads, L, hd)
    att = (q @ k.transpose(-1, -2) * hd ** -0.5).softmax(dim=-1)
    out = (att @ v).permute(2, 0, 1, 3).reshape(length, n, w)
    return F.linear(out, p["out_proj.weight"], p["out_proj.bias"])


def reference_forward(sd, video, *, heads, patch, temp_enhance=False, double_tada=False):
    conv1 = sd["backbone.conv1.weight"]
    x = F.conv3d(video, conv1, stride=(2, patch, patch), padding=(conv1.shape[2] // 2, 0, 0))
    b, w, t, side, _ = x.shape
    x = x.permute(0, 2, 3, 4, 1).reshape(b * t, side * side, w)  # rows b*T' + t, patches row-major
    cls = sd["backbone.class_embedding"].expand(b * t, 1, w)
    x = torch.cat([cls, x], dim=1) + sd["backbone.positional_embedding"]
    x = F.layer_norm(x, (w,), sd["backbone.ln_pre.weight"], sd["backbone.ln_pre.bias"], 1e-5).transpose(0, 1)
    depth = 1 + max(int(k.split(".")[2]) for k in sd if k.startswith("backbone.layers."))
    for i in range(depth):
        p = _sub(sd, f"backbone.layers.{i}.")
        zero = torch.zeros_like(x[:1])
        x = x + torch.cat([zero, _ref_tada(_sub(p, "tada."), x[1:], b, t, side, temp_enhance)])
        h = F.layer_norm(x, (w,), p["ln_1.weight"], p["ln_1.bias"], 1e-5)
        x = x + _ref_attention(_sub(p, "attn."), h, heads)
        if double_tada:
            x = x + torch.cat([zero, _ref_tada(_sub(p, "tada2."), x[1:], b, t, side, temp_enhance)])
        h = F.layer_norm(x, (w,), p["ln_2.weight"], p["ln_2.bias"], 1e-5)
        x = x + F.linear(_qgelu(F.linear(h, p["mlp.c_fc.weight"], p["mlp.c_fc.bias"])),
                         p["mlp.c_proj.weight"], p["mlp.c_proj.bias"])
    pooled = x[0].view(b, t, w).mean(dim=1)
    pooled = F.layer_norm(pooled, (w,), sd["backbone.ln_post.weight"], sd["backbone.ln_post.bias"], 1e-5)
    return F.linear(pooled, sd["head.out.weight"], sd["head.out.bias"])


def random_official_state(model, seed: int) -> dict[str, torch.Tensor]:
    """Every tensor of the model's official-layout state dict, random (BN running stats positive)."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, value in model.state_dict().items():
        if key.endswith("num_batches_tracked"):
            out[key] = torch.tensor(7, dtype=torch.int64)
        elif key.endswith("running_var"):
            out[key] = torch.rand(value.shape, generator=gen) + 0.5
        elif key.endswith(("ln_1.weight", "ln_2.weight", "norm.weight", "norm_transformer.weight")):
            out[key] = 1 + 0.2 * torch.randn(value.shape, generator=gen)
        else:
            out[key] = 0.2 * torch.randn(value.shape, generator=gen)
    return out


# ------------------------------------------------------------------------------------------------
# Tests
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", [dict(), dict(temp_enhance=True, double_tada=True)], ids=["k400", "ssv2"])
def test_logits_match_the_reference_from_an_official_layout_file(tmp_path, variant):
    model = create_model("tadaformer_b16", num_classes=7, **SMALL, **variant)
    sd = random_official_state(model, seed=1)
    path = tmp_path / "official.pyth"
    torch.save({"model_state": sd, "epoch": 3}, path)
    loaded = load_checkpoint(model, path, strict=True)
    assert loaded.epoch == 3 and not loaded.missing_keys and not loaded.unexpected_keys
    video = torch.randn(2, 3, 8, 32, 32, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    ref = reference_forward({k: v.double() if v.is_floating_point() else v for k, v in sd.items()}, video,
                            heads=SMALL["heads"], patch=SMALL["patch_size"], **variant)
    model.eval()
    with torch.no_grad():
        out64 = model.double()(video)
        out32 = model.float()(video.float())
    assert ref.abs().max() > 1.0  # the TAda branches and every block contribute (random, non-zero weights)
    torch.testing.assert_close(out64, ref, rtol=0, atol=1e-10)
    assert (out32.double() - ref).abs().max() < 1e-4


def test_the_tada_branches_change_the_logits_and_mix_frames():
    model = create_model("tadaformer_b16", num_classes=5, **SMALL).double().eval()
    model.load_state_dict(random_official_state(model, seed=3))
    video = torch.randn(1, 3, 8, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        base = model(video)
        moved = video.clone()
        moved[:, :, 6:] = torch.randn_like(moved[:, :, 6:])  # only the last token frame sees frames 6, 7
        feats_a = model.forward_features(video)
        feats_b = model.forward_features(moved)
    # frame 0's class token depends on later frames only through the TAda branches' routing and pooling
    assert (feats_a[:, 0] - feats_b[:, 0]).abs().max() > 1e-6
    for block in model.backbone.layers:
        block.tada = None
    with torch.no_grad():
        plain_a, plain_b = model.forward_features(video), model.forward_features(moved)
        assert (model(video) - base).abs().max() > 1e-6
    torch.testing.assert_close(plain_a[:, 0], plain_b[:, 0], rtol=0, atol=0)


@pytest.mark.parametrize(
    "name, kwargs, keys, params",
    [
        ("tadaformer_b16", dict(num_classes=400), 489, 104_195_728),
        ("tadaformer_b16", dict(num_classes=174, temp_enhance=True, double_tada=True), 825, 135_086_766),
        ("tadaformer_l14", dict(num_classes=400), 969, 364_827_024),
        ("tadaformer_l14", dict(num_classes=174, temp_enhance=True, double_tada=True), 1641, 474_960_046),
    ],
)
def test_full_size_keys_and_parameter_counts_are_the_official_ones(name, kwargs, keys, params):
    with torch.device("meta"):
        model = create_model(name, **kwargs)
    sd = model.state_dict()
    assert len(sd) == keys
    assert sum(p.numel() for p in model.parameters()) == params
    w = 768 if name.endswith("b16") else 1024
    p = 16 if name.endswith("b16") else 14
    d = w // 2
    shapes = {
        "backbone.class_embedding": (w,),
        "backbone.positional_embedding": ((224 // p) ** 2 + 1, w),
        "backbone.conv1.weight": (w, 3, 3, p, p),
        "backbone.layers.0.attn.in_proj_weight": (3 * w, w),
        "backbone.layers.0.mlp.c_fc.weight": (4 * w, w),
        "backbone.layers.0.tada.tadaconv.weight": (1, 1, d, 1, 3, 3),
        "backbone.layers.0.tada.tadaconv.bias": (1, 1, d),
        "backbone.layers.0.tada.tadaconv.rf_func.a.weight": (d // 2, d, 3, 1, 1),
        "backbone.layers.0.tada.tadaconv.rf_func.qkv_proj.weight": (3 * d // 2, d // 2, 1, 1, 1),
        "backbone.layers.0.tada.tadaconv.rf_func.b_bias.weight": (d, d // 2, 3, 1, 1),
        "backbone.layers.0.tada.tadaconv.bn_b.num_batches_tracked": (),
        "backbone.ln_post.weight": (w,),
        "head.out.weight": (kwargs["num_classes"], w),
    }
    if kwargs.get("temp_enhance"):
        shapes["backbone.layers.0.tada2.tada_pre_proj.weight"] = (d, w, 3, 1, 1)
        shapes["backbone.layers.0.tada2.tada_proj.weight"] = (w, d, 1, 1, 1)
    else:
        shapes["backbone.layers.0.tada.tada_pre_proj.weight"] = (d, w)
        shapes["backbone.layers.0.tada.tada_proj.weight"] = (w, d)
    for key, shape in shapes.items():
        assert tuple(sd[key].shape) == shape, key
    assert "backbone.proj" not in sd
    per_layer = {k.split(".", 3)[3] for k in sd if k.startswith("backbone.layers.0.")}
    assert len(per_layer) == (keys - 8) // (12 if name.endswith("b16") else 24)


def test_at_init_the_tada_branches_add_nothing():
    model = create_model("tadaformer_b16", num_classes=5, **SMALL).eval()
    for block in model.backbone.layers:
        assert torch.count_nonzero(block.tada.tada_proj.weight) == 0
        assert torch.count_nonzero(block.tada.tada_proj.bias) == 0
    plain = tadaformer(**SMALL, num_classes=5, tada=False).eval()
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if ".tada." not in k})
    video = torch.randn(1, 3, 8, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(video), plain(video), rtol=0, atol=1e-6)


def test_drop_path_drops_whole_videos():
    drop = VideoDropPath(0.5).train()
    torch.manual_seed(0)
    x = torch.ones(8 * 4, 5, 3)  # 8 clips of 4 frames
    y = drop(x, 4).view(8, -1)
    per_clip = y[:, 0]
    assert set(per_clip.tolist()) <= {0.0, 2.0} and 0 < per_clip.count_nonzero() < 8
    assert torch.equal(y, per_clip[:, None].expand_as(y))
    assert torch.equal(drop.eval()(x, 4), x)


def test_token_temporal_conv_equals_conv3d():
    conv = TokenTemporalConv(6, 4, 3).double()
    x = torch.randn(2, 6, 5, 3, 3, dtype=torch.float64)  # (B, C, T, h, w)
    ref = F.conv3d(x, conv.weight, conv.bias, padding=(1, 0, 0))
    tokens = x.permute(0, 2, 3, 4, 1).reshape(2, 5, 9, 6)
    out = conv(tokens).view(2, 5, 3, 3, 4).permute(0, 4, 1, 2, 3)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)


def test_gradients_flow_to_every_parameter():
    model = create_model("tadaformer_b16", num_classes=5, **SMALL, temp_enhance=True, double_tada=True)
    model.load_state_dict(random_official_state(model, seed=4))
    model.train()
    model(torch.randn(2, 3, 8, 32, 32)).logsumexp(dim=1).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
    # the last block's second branch updates patch tokens after the last attention: only the class
    # token reaches the head, so it gets no gradient (as in the official model); every other TAda
    # parameter does
    last = f"backbone.layers.{SMALL['depth'] - 1}.tada2."
    grads = {n: p.grad.abs().sum().item() for n, p in model.named_parameters() if "tada" in n}
    assert all(g > 0 for n, g in grads.items() if not n.startswith(last))
    assert all(g == 0 for n, g in grads.items() if n.startswith(last))


def test_bad_sizes_are_clear_errors():
    with pytest.raises(ValueError, match="multiple of its attention head size 64"):
        tadaformer(width=128, depth=1, heads=2, patch_size=8, input_res=32)
    with pytest.raises(ValueError, match="not divisible by the number of heads"):
        tadaformer(width=256, depth=1, heads=3, patch_size=8, input_res=32)
    model = tadaformer(width=256, depth=1, heads=4, patch_size=8, input_res=32)
    with pytest.raises(ValueError, match="32x32"):
        model(torch.randn(1, 3, 8, 40, 40))


def test_forward_contract_and_reset_classifier():
    model = create_model("tadaformer_b16", num_classes=5, **SMALL).eval()
    video = torch.randn(2, 3, 8, 32, 32)
    with torch.no_grad():
        feats = model.forward_features({"video": video})
        assert feats.shape == (2, 4, 1 + 16, 256)
        torch.testing.assert_close(model.forward_head(feats), model(video))
        assert model.forward_head(feats, pre_logits=True).shape == (2, 256)
    model.reset_classifier(3)
    assert model.num_classes == 3 and model(video).shape == (2, 3)
    assert math.isclose(model.arch["width"], 256)


def test_the_plain_twin_is_the_model_without_tada_branches():
    with torch.device("meta"):
        plain = create_model("vit_b16_frames", num_classes=400)
        tada = create_model("tadaformer_b16", num_classes=400)
    plain_keys = set(plain.state_dict())
    assert plain_keys == {k for k in tada.state_dict() if ".tada." not in k}
    # CLIP ViT-B/16's image tower (86,192,640) without its projection, conv1 with 3 taps, the head
    assert sum(p.numel() for p in plain.parameters()) == 86_192_640 - 768 * 512 + 2 * 768 * 3 * 16 * 16 + 400 * 769


def test_zoo_tags_build_the_checkpoint_architecture():
    from pathlib import Path

    from tada.models import ZOO, get_weights

    with torch.device("meta"):
        ssv2 = create_model("tadaformer_b16.ssv2_16f")
        k710 = create_model("tadaformer_l14.k710_32f")
    assert ssv2.num_classes == 174 and len(ssv2.state_dict()) == 825
    assert k710.num_classes == 710 and k710.arch["num_frames"] == 32 and len(k710.state_dict()) == 969
    entry = get_weights("tadaformer_b16.k400_16f")
    assert (entry.top1, entry.top5, entry.views, entry.test_scale, entry.test_crop) == (84.5, None, (4, 3), 224, 224)
    assert entry.mean == (0.48145466, 0.4578275, 0.40821073) and entry.init == "clip"
    repo = Path(__file__).resolve().parents[2]
    former = [e for e in ZOO.values() if e.model.startswith("tadaformer")]
    assert len(former) == 14
    assert all((repo / e.config).is_file() for e in former)
    assert {e.name for e in former if e.top1 is None} == {
        "tadaformer_b16.k710_16f", "tadaformer_l14.k710_16f", "tadaformer_l14.k710_32f", "tadaformer_l14.k710_64f"}

"""The ResNet3D family: exact official keys/shapes/counts, official block semantics, the model contract."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from tada.models import create_model, is_model, list_models, video_resnet
from tada.models.layers import TemporalAvgPool
from tada.models.resnet import Base2DBlock, ResBlock, TAda2DBlock
from tada.ops import TAdaConv2d, tada_conv2d_grouped_reference

# Keys and shapes of the official TAda2D-R50 K400 checkpoint's state_dict, in its order.
SPEC = Path(__file__).resolve().parent / "fixtures" / "tada2d_r50_k400_state_dict.txt"
TINY = dict(widths=(8, 16, 32, 64, 128), layers=(1, 2, 1, 1))


def _spec_shapes() -> dict[str, tuple[int, ...]]:
    shapes = {}
    for line in SPEC.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, shape = line.split()
        shapes[key] = () if shape == "scalar" else tuple(int(v) for v in shape.split("x"))
    return shapes


def test_tada2d_r50_state_dict_equals_the_official_checkpoint_layout():
    with torch.device("meta"):
        model = create_model("tada2d_r50", num_classes=400)
    spec = _spec_shapes()
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert len(ours) == len(spec) == 560
    assert list(ours) == list(spec)  # same names, same order
    assert ours == spec
    assert sum(p.numel() for p in model.parameters()) == 27_485_472


def test_parameter_counts():
    with torch.device("meta"):
        assert sum(p.numel() for p in create_model("tada2d_r50", num_classes=174).parameters()) == 27_022_398
        tsn = create_model("tsn_r50", num_classes=400)
        # torchvision's ResNet-50 without fc is 23,508,032; plus a 2048x400 head
        assert sum(p.numel() for p in tsn.backbone.parameters()) == 23_508_032
        assert sum(p.numel() for p in tsn.parameters()) == 23_508_032 + 2048 * 400 + 400


# ---------------------------------------------------------------------------------------------
# Official semantics of one TAda2D block, written with 5-D ops (Conv3d, BN3d, AvgPool3d, grouped TAdaConv)
# ---------------------------------------------------------------------------------------------
def _bn3d(bn, x, training):
    return F.batch_norm(x, bn.running_mean.clone(), bn.running_var.clone(), bn.weight, bn.bias, training,
                        bn.momentum, bn.eps)


def _official_block(block: ResBlock, x: torch.Tensor, training: bool, pool_k: int = 3) -> torch.Tensor:
    br = block.conv_branch
    y = F.relu(_bn3d(br.a_bn, F.conv3d(x, br.a.weight), training))
    rf = br.b_rf
    gctx = F.conv3d(F.adaptive_avg_pool3d(y, 1), rf.g.weight, rf.g.bias)
    u = F.adaptive_avg_pool3d(y, (y.shape[2], 1, 1))
    h = F.relu(_bn3d(rf.bn, F.conv3d(u + gctx, rf.a.weight, rf.a.bias, padding=(1, 0, 0)), training))
    alpha = F.conv3d(h, rf.b.weight, padding=(1, 0, 0)) + 1
    z = tada_conv2d_grouped_reference(y, alpha, br.b.weight, stride=br.b.stride, padding=br.b.padding)
    pooled = F.avg_pool3d(z, (pool_k, 1, 1), stride=1, padding=(pool_k // 2, 0, 0), count_include_pad=True)
    z = F.relu(_bn3d(br.b_bn, z, training) + _bn3d(br.b_avgpool_bn, pooled, training))
    out = _bn3d(br.c_bn, F.conv3d(z, br.c.weight), training)
    sc = x
    if block.short_cut is not None:
        short = F.conv3d(x, block.short_cut.weight, stride=(1, *block.short_cut.stride))
        sc = _bn3d(block.short_cut_bn, short, training)
    return F.relu(out + sc)


def _randomise(module: torch.nn.Module, seed: int) -> None:
    """Non-trivial values everywhere (the zero-inits would hide the routing and pool paths)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * (0.2 if p.dim() > 1 else 0.5) + (
                1.0 if name.endswith("bn.weight") else 0.0))
        for name, buf in module.named_buffers():
            if name.endswith("running_mean"):
                buf.copy_(torch.randn(buf.shape, generator=gen) * 0.1)
            elif name.endswith("running_var"):
                buf.copy_(torch.rand(buf.shape, generator=gen) + 0.5)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("stride", [1, 2])
def test_tada_block_equals_official_semantics(training, stride):
    torch.manual_seed(7)
    c_in, width, c_out = (8, 4, 16) if stride == 2 else (16, 4, 16)
    branch = TAda2DBlock(c_in, width, c_out, stride=stride)
    block = ResBlock(c_in, c_out, stride=stride, branch=branch, bn_eps=1e-5, bn_momentum=0.1).double().train(training)
    _randomise(block, 11)
    b, t = 2, 5
    x = torch.randn(b, c_in, t, 9, 7, dtype=torch.float64, requires_grad=True)
    ref = _official_block(block, x, training)
    frames = x.transpose(1, 2).reshape(b * t, c_in, 9, 7)
    out = block(frames, t)
    out = out.view(b, t, *out.shape[1:]).transpose(1, 2)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    g = torch.randn(out.shape, dtype=torch.float64)
    params = [x] + list(block.parameters())
    for got, want in zip(torch.autograd.grad(out, params, g), torch.autograd.grad(ref, params, g)):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("pool_k", [1, 3, 5])
def test_tada_block_inference_fast_path_equals_official(channels_last, pool_k):
    """Eval under no_grad (the path of tada test and serving) equals the official block."""
    torch.manual_seed(8)
    branch = TAda2DBlock(8, 4, 16, stride=2, pool_kernel=pool_k)
    block = ResBlock(8, 16, stride=2, branch=branch, bn_eps=1e-5, bn_momentum=0.1).double().eval()
    _randomise(block, 12)
    b, t = 2, 6
    x = torch.randn(b, 8, t, 11, 9, dtype=torch.float64)
    with torch.no_grad():
        ref = _official_block(block, x, training=False, pool_k=pool_k)
    frames = x.transpose(1, 2).reshape(b * t, 8, 11, 9)
    if channels_last:
        frames = frames.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        out = block(frames, t)
    assert out.is_contiguous(memory_format=torch.channels_last) == channels_last
    out = out.view(b, t, *out.shape[1:]).transpose(1, 2)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)


def test_inplace_scaling_refuses_recorded_gradients():
    conv = TAdaConv2d(4, 4, 3, padding=1)
    x = torch.randn(6, 4, 5, 5, requires_grad=True)
    with pytest.raises(RuntimeError, match="inference"):
        conv(x * 1.0, torch.ones(6, 4), inplace=True)
    with torch.no_grad():
        y = torch.randn(6, 4, 5, 5)
        expected = conv(y.clone(), torch.full((6, 4), 2.0))
        original = y.clone()
        torch.testing.assert_close(conv(y, torch.full((6, 4), 2.0), inplace=True), expected)
        torch.testing.assert_close(y, 2 * original)  # y now holds the scaled input


@pytest.mark.parametrize("training", [True, False])
def test_tada_block_at_init_is_the_plain_bottleneck(training):
    """Zero-init of b_rf.b and b_avgpool_bn: at start each TAda block is a frame-wise 2-D bottleneck."""
    torch.manual_seed(3)
    tada = TAda2DBlock(8, 4, 16, stride=2).double().train(training)
    plain = Base2DBlock(8, 4, 16, stride=2).double().train(training)
    with torch.no_grad():
        for name in ("a", "c"):
            getattr(plain, name).weight.copy_(getattr(tada, name).weight)
        plain.b.weight.copy_(tada.b.weight[0, 0].unsqueeze(2))
    x = torch.randn(12, 8, 10, 10, dtype=torch.float64)
    torch.testing.assert_close(tada(x, 4), plain(x, 4), rtol=1e-12, atol=1e-12)


def test_temporal_pool_counts_padding():
    pool = TemporalAvgPool(3)
    x = torch.ones(2 * 4, 3, 2, 2)
    y = pool(x, 4).view(2, 4, 3, 2, 2)
    torch.testing.assert_close(y[:, 0], torch.full((2, 3, 2, 2), 2 / 3))
    torch.testing.assert_close(y[:, -1], torch.full((2, 3, 2, 2), 2 / 3))
    torch.testing.assert_close(y[:, 1:-1], torch.ones(2, 2, 3, 2, 2))
    cl = x.contiguous(memory_format=torch.channels_last)
    out = pool(cl, 4)
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, pool(x, 4))


@pytest.mark.parametrize("kernel,frames", [(3, 8), (5, 6), (3, 5), (3, 1)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_temporal_pool_equals_avg_pool3d_values_and_grads(kernel, frames, channels_last):
    """Forward and backward equal the zero-padded window mean (= AvgPool3d((k,1,1), padding k//2,
    count_include_pad)) in float64, also for a single frame."""
    pool = TemporalAvgPool(kernel)
    b, c, h, w = 3, 4, 5, 6
    video = torch.randn(b, c, frames, h, w, dtype=torch.float64, requires_grad=True)
    frames_in = video.transpose(1, 2).reshape(b * frames, c, h, w)
    if channels_last:
        frames_in = frames_in.contiguous(memory_format=torch.channels_last)
    out = pool(frames_in, frames)
    assert out.is_contiguous(memory_format=torch.channels_last) == channels_last or out.is_contiguous()
    r = kernel // 2  # the definition: zero-padded window sum over T, divided by k
    padded = torch.nn.functional.pad(video, (0, 0, 0, 0, r, r))
    ref = sum(padded[:, :, d:d + frames] for d in range(kernel)) / kernel
    if frames >= kernel:
        torch.testing.assert_close(ref, torch.nn.functional.avg_pool3d(
            video, (kernel, 1, 1), 1, (r, 0, 0), count_include_pad=True), rtol=1e-12, atol=1e-12)
    ref_frames = ref.transpose(1, 2).reshape(b * frames, c, h, w)
    torch.testing.assert_close(out, ref_frames, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(pool.forward_export(frames_in, frames), ref_frames, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(ref_frames)
    (grad,) = torch.autograd.grad(out, video, g)
    (grad_ref,) = torch.autograd.grad(ref_frames, video, g)
    torch.testing.assert_close(grad, grad_ref, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# The model contract
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return create_model("tada2d_r50", num_classes=7, dropout=0.0, **TINY)


def test_logits_in_train_and_eval_and_dict_input(tiny):
    x = torch.randn(2, 3, 4, 32, 32)
    tiny.eval()
    with torch.no_grad():
        logits = tiny(x)
        assert logits.shape == (2, 7)
        assert not torch.allclose(logits.softmax(-1).sum(-1), logits.sum(-1))  # not probabilities
        torch.testing.assert_close(tiny({"video": x}), logits)
    tiny.train()
    out = tiny(x)
    assert out.shape == (2, 7) and out.requires_grad
    with pytest.raises(KeyError, match="video"):
        tiny({"frames": x})
    tiny.eval()
    with torch.no_grad():
        torch.testing.assert_close(tiny([x, "meta"]), tiny(x))  # as officially: a list's element 0
    with pytest.raises(TypeError, match="got str"):
        tiny(["clip.mp4"])
    tiny.train()
    with pytest.raises(ValueError, match=r"\(B, C, T, H, W\)"):
        tiny(x[:, :, 0])


def test_features_head_and_classifier_reset(tiny):
    tiny.eval()
    x = torch.randn(2, 3, 4, 32, 32)
    with torch.no_grad():
        feats = tiny.forward_features(x)
        assert feats.shape == (2, 128, 4, 1, 1)
        pooled = tiny.forward_head(feats, pre_logits=True)
        assert pooled.shape == (2, 128)
        torch.testing.assert_close(tiny.forward_head(feats), tiny(x))
    assert tiny.get_classifier() is tiny.head.out
    model = create_model("tsn_r50", num_classes=5, **TINY)
    model.reset_classifier(11)
    assert model.num_classes == 11 and model.get_classifier().out_features == 11
    assert model(torch.randn(1, 3, 2, 32, 32)).shape == (1, 11)
    model = model.to(torch.bfloat16)
    model.reset_classifier(0)
    model.reset_classifier(4)  # the new head takes the model's dtype and device, even from no head
    assert model.head.out.weight.dtype == torch.bfloat16
    assert model(torch.randn(1, 3, 2, 32, 32, dtype=torch.bfloat16)).shape == (1, 4)
    with torch.device("meta"):
        meta = create_model("tsn_r50", num_classes=5, **TINY)
    meta.reset_classifier(0)
    meta.reset_classifier(3)
    assert meta.head.out.weight.is_meta


def test_inference_leaves_the_outputs_of_inner_modules_untouched(tiny):
    """What a forward hook sees does not depend on the grad mode (no in-place reuse of module outputs)."""
    tiny.eval()
    seen = {}
    relu = tiny.backbone.conv3.res_1.conv_branch.a_relu
    handle = relu.register_forward_hook(lambda mod, inp, out: seen.setdefault(torch.is_grad_enabled(), out))
    x = torch.randn(2, 3, 4, 32, 32)
    with torch.no_grad():
        tiny(x)
    tiny(x)
    handle.remove()
    torch.testing.assert_close(seen[False], seen[True].detach(), rtol=0, atol=0)


def test_channels_last_gives_the_same_result(tiny):
    tiny.eval()
    x = torch.randn(2, 3, 4, 48, 40)
    with torch.no_grad():
        tiny.channels_last = False
        plain = tiny(x)
        tiny.channels_last = True
        cl = tiny(x)
        feats, _ = tiny.forward_frames(x)
    tiny.channels_last = False
    assert feats.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(cl, plain, rtol=1e-4, atol=1e-4)


def test_channels_last_restrides_kernels_but_keeps_shapes_and_values(tmp_path):
    torch.manual_seed(4)
    model = create_model("tada2d_r50", num_classes=3, **TINY)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.channels_last = True
    after = model.state_dict()
    assert all(after[k].shape == v.shape and torch.equal(after[k], v) for k, v in before.items())
    block = model.backbone.conv3.res_1.conv_branch
    assert block.b.weight_2d.is_contiguous(memory_format=torch.channels_last)
    assert model.backbone.conv1.a.weight_2d.is_contiguous(memory_format=torch.channels_last)
    assert not block.b.weight_2d.is_contiguous()
    path = tmp_path / "cl.pth"
    torch.save(model.state_dict(), path)
    plain = create_model("tada2d_r50", num_classes=3, **TINY)
    plain.load_state_dict(torch.load(path, weights_only=True))
    assert plain.backbone.conv1.a.weight.is_contiguous()
    assert all(torch.equal(plain.state_dict()[k], v) for k, v in before.items())
    model.channels_last = False
    assert block.b.weight.is_contiguous() and model.backbone.conv1.a.weight.is_contiguous()


def test_init_follows_the_official_rules():
    torch.manual_seed(0)
    model = create_model("tada2d_r50", num_classes=10)
    block = model.backbone.conv3.res_2.conv_branch
    assert torch.count_nonzero(block.b_rf.b.weight) == 0
    assert torch.count_nonzero(block.b_avgpool_bn.weight) == 0 and torch.count_nonzero(block.b_avgpool_bn.bias) == 0
    assert torch.equal(block.c_bn.weight, torch.ones(512))  # no zero-init of the last BN
    assert torch.count_nonzero(block.b_rf.g.bias) == 0 and torch.count_nonzero(block.b_rf.a.bias) == 0
    # kaiming-normal fan_out: std = sqrt(2 / (Cout * k * k))
    for w, fan_out in ((block.a.weight, 128), (block.c.weight, 512)):
        assert abs(w.std().item() / (2 / fan_out) ** 0.5 - 1) < 0.05
    head = model.head.out
    assert head.weight.abs().max() <= 1 / 2048**0.5  # PyTorch's Linear default
    # The TAdaConv keeps its construction init by default: Kaiming-uniform with the 6-D fan-in.
    bound = 1 / (128 * 128 * 9) ** 0.5
    assert block.b.weight.abs().max() <= bound and abs(block.b.weight.std().item() / (bound / 3**0.5) - 1) < 0.05
    kaiming = create_model("tada2d_r50", num_classes=10, tada_init="kaiming")
    w = kaiming.backbone.conv3.res_2.conv_branch.b.weight
    assert abs(w.std().item() / (2 / (128 * 9)) ** 0.5 - 1) < 0.05


def test_registry():
    names = list_models()
    for name in ("tada2d_r26", "tada2d_r50", "tada2d_r101", "tsn_r26", "tsn_r50", "tsn_r101"):
        assert name in names
    assert list_models("tsn_*") == ["tsn_r101", "tsn_r26", "tsn_r50"]
    with pytest.raises(KeyError, match="tada2d_r50"):
        create_model("tada2d_r5O")
    with torch.device("meta"):
        assert create_model("tada2d_r50.ssv2_8f").num_classes == 174
        assert create_model("tada2d_r50.k400_16x5").num_classes == 400
        assert create_model("tada2d_r50.ssv2_8f", num_classes=3).num_classes == 3
        r101 = create_model("tada2d_r101")
    assert len(r101.backbone.conv4._modules) == 23
    with pytest.raises(KeyError, match="unknown zoo entry"):
        create_model("tada2d_r50.k600")
    assert is_model("tada2d_r50") and is_model("tada2d_r50.ssv2_8f")
    assert not is_model("tada2d_r50.k600") and not is_model("tada2d_r5O") and not is_model("tsn_r50.k400_8x8")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(depth=34), "depth"),
        (dict(kernel_sizes=(7, (3, 3, 3), 3, 3, 3)), "temporal kernel"),
        (dict(widths=(8, 18, 32, 64, 128)), "divisible"),
        (dict(layers=(1, 1, 1)), "four"),
    ],
)
def test_builder_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        video_resnet(**kwargs)


def test_builder_takes_its_parts():
    """The branch class, its own arguments and the stem come in as arguments; a wrong part is an error."""
    with pytest.raises(TypeError, match="block and stem"):
        video_resnet(block="TAda2DBlock")
    with pytest.raises(TypeError, match="route_ratio"):
        video_resnet(block=Base2DBlock, block_args=dict(route_ratio=4), **TINY)
    with pytest.raises(ValueError, match="tada_init"):
        video_resnet(block=TAda2DBlock, block_args=dict(tada_init="xavier"), **TINY)
    model = video_resnet(block=TAda2DBlock, block_args=dict(route_ratio=2, pool_kernel=5), **TINY)
    branch = model.backbone.conv3.res_1.conv_branch
    assert branch.b_rf.a.weight.shape[0] == 4 and branch.b_avgpool.kernel_size == 5
    assert model.arch["block"] == "TAda2DBlock"
    assert isinstance(video_resnet(block=Base2DBlock, **TINY).backbone.conv2.res_1.conv_branch, Base2DBlock)


def test_init_weights_is_the_blocks_own_and_restores_the_plain_start():
    """init_weights re-initialises a block in place: the temporal parts are zero again, BNs 1 / 0."""
    torch.manual_seed(0)
    model = create_model("tada2d_r26", num_classes=3, **TINY)
    block = model.backbone.conv3.res_1
    with torch.no_grad():
        for p in block.parameters():
            p.add_(1.0)
    block.init_weights()
    branch = block.conv_branch
    assert torch.count_nonzero(branch.b_rf.b.weight) == 0 and torch.count_nonzero(branch.b_avgpool_bn.weight) == 0
    assert torch.equal(branch.c_bn.weight, torch.ones(32)) and torch.equal(block.short_cut_bn.bias, torch.zeros(32))
    torch.manual_seed(5)
    model.backbone.init_weights()
    again = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(5)
    model.backbone.init_weights()
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in again.items())


def test_temporal_pool_records_its_export_form():
    """While torch.export records the graph the pool is one avg_pool3d, not shifted in-place adds."""

    class Pool(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.pool = TemporalAvgPool(3)

        def forward(self, x):
            return self.pool(x, 4)

    x = torch.randn(8, 3, 5, 5)
    program = torch.export.export(Pool(), (x,))
    targets = {str(node.target) for node in program.graph.nodes if node.op == "call_function"}
    assert any("avg_pool3d" in t for t in targets) and not any("add_" in t for t in targets)
    torch.testing.assert_close(program.module()(x), Pool()(x))

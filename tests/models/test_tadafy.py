"""tadafy: a 2-D (or 3-D) CNN becomes a TAda video model that starts as the original network."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from tadafy_nets import ConvNeXtLike, GroupedDilatedNet, MobileNetLike, R2Plus1DLike, randomize_norms
from torch import nn

from tada.models import create_image_model, tadafy
from tada.models.tadafy import TAdaConvBlock, TAdaVideoModel, select_convs
from tada.ops import TAdaConv2d, TAdaConv3d

B, T, S = 2, 4, 32

# the reference network's own even-kernel 'same' conv (MobileNetLike) warns about its padding copy
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")


def _clip(seed: int = 0, frames: int = T, size: int = S) -> torch.Tensor:
    return torch.randn(B, 3, frames, size, size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _frame_average(image_model: nn.Module, clip: torch.Tensor) -> torch.Tensor:
    """The image model on every frame (one batch of B*T frames), outputs averaged over frames."""
    b, c, t, h, w = clip.shape
    out = image_model(clip.transpose(1, 2).reshape(b * t, c, h, w))
    return out.view(b, t, -1).mean(dim=1)


IMAGE_NETS = {
    "resnet_basic": lambda: create_image_model("resnet10_w16", num_classes=5),
    "resnet_bottleneck": lambda: create_image_model("resnet50", num_classes=5, widths=(8, 8, 8, 16, 16)),
    "grouped_dilated": GroupedDilatedNet,
    "depthwise_se": MobileNetLike,
    "convnext_ln": ConvNeXtLike,
}
CLASSIFIERS = {"grouped_dilated": "fc"}  # a plain forward(): the classifier is named


def _pair(name: str, seed: int = 0):
    torch.manual_seed(seed)
    image = randomize_norms(IMAGE_NETS[name]().double(), seed)
    reference = copy.deepcopy(image)
    video = tadafy(image, num_frames=T, classifier=CLASSIFIERS.get(name, ""))
    return reference, video


@pytest.mark.parametrize("name", sorted(IMAGE_NETS))
def test_at_init_the_video_model_is_the_image_model_averaged_over_frames(name):
    reference, video = _pair(name)
    assert video.converted, "something must have been converted"
    x = _clip()
    with torch.no_grad():
        expected = _frame_average(reference.eval(), x)
        got = video.eval()(x)
    assert got.shape == (B, 5)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-10)
    # train mode: BN statistics over the B*T frames, as the image model on that batch of frames
    with torch.no_grad():
        torch.testing.assert_close(video.train()(x), _frame_average(reference.train(), x), rtol=0, atol=1e-10)


def test_features_and_head_follow_the_timm_contract():
    reference, video = _pair("resnet_basic")
    x = _clip()
    video.eval()
    reference.eval()
    with torch.no_grad():
        feats = video.forward_features(x)
        per_frame = reference.forward_features(x.transpose(1, 2).reshape(B * T, 3, S, S))
        expected = per_frame.view(B, T, *per_frame.shape[1:]).transpose(1, 2)
        torch.testing.assert_close(feats, expected, rtol=0, atol=1e-10)
        torch.testing.assert_close(video.forward_head(feats), video(x), rtol=0, atol=0)
        pooled = video.forward_head(feats, pre_logits=True)
    assert pooled.shape == (B, reference.num_features)


def test_a_video_cnn_of_conv3d_layers_starts_as_itself():
    torch.manual_seed(0)
    net = randomize_norms(R2Plus1DLike().double())
    reference = copy.deepcopy(net)
    video = tadafy(net, num_frames=T)
    assert video.layout == "clip"
    kinds = {n: type(video.net.get_submodule(n).conv) for n in video.converted}
    assert kinds == {"spatial": TAdaConv2d, "temporal": TAdaConv3d, "temporal_down": TAdaConv3d, "full": TAdaConv3d}
    x = _clip(frames=6)
    for mode in ("eval", "train"):
        getattr(reference, mode)()
        getattr(video, mode)()
        with torch.no_grad():
            torch.testing.assert_close(video(x), reference(x), rtol=0, atol=1e-10)


@pytest.mark.parametrize("cal_dim", ["cin", "cout"])
def test_every_image_weight_is_kept_in_place(cal_dim):
    torch.manual_seed(0)
    image = GroupedDilatedNet().double()
    before = {n: p.detach().clone() for n, p in image.named_parameters()}
    storage = {n: m.weight.data_ptr() for n, m in image.named_modules() if isinstance(m, nn.Conv2d)}
    video = tadafy(image, num_frames=T, classifier="fc", cal_dim=cal_dim)
    assert video.converted == ("block1.conv2", "transition", "block2.conv2")
    for name in video.converted:
        block = video.net.get_submodule(name)
        assert isinstance(block, TAdaConvBlock) and block.conv.cal_dim == cal_dim
        assert block.conv.weight.data_ptr() == storage[name]  # the same tensor, viewed
        torch.testing.assert_close(block.conv.weight_2d, before[f"{name}.weight"], rtol=0, atol=0)
    torch.testing.assert_close(video.net.transition.conv.bias.view(-1), before["transition.bias"], rtol=0, atol=0)
    # every other image parameter is there under its own name, unchanged
    own = dict(video.named_parameters())
    for name, value in before.items():
        owner = name.rsplit(".", 1)[0]
        key = f"net.{owner}.conv.{name.rsplit('.', 1)[1]}" if owner in video.converted else f"net.{name}"
        key = key.replace("net.fc.", "head.")
        torch.testing.assert_close(own[key].reshape(value.shape), value, rtol=0, atol=0)
    new = {n for n in own if ".rf." in n or ".pool_bn." in n}
    assert len(own) == len(before) + len(new)
    assert {n.split(".")[-2] + "." + n.split(".")[-1] for n in new} >= {"g.weight", "a.weight", "b.weight",
                                                                        "pool_bn.weight", "pool_bn.bias"}


def test_output_channel_calibration_also_starts_exact():
    torch.manual_seed(0)
    image = randomize_norms(GroupedDilatedNet().double())
    reference = copy.deepcopy(image).eval()
    video = tadafy(image, num_frames=T, classifier="fc", cal_dim="cout").eval()
    assert video.net.transition.rf.b.out_channels == 48  # Cout calibrations from the Cin=32 input
    clip = randomize_norms(R2Plus1DLike().double())
    clip_ref = copy.deepcopy(clip).eval()
    clip_video = tadafy(clip, num_frames=T, cal_dim="cout").eval()
    with torch.no_grad():
        torch.testing.assert_close(video(_clip()), _frame_average(reference, _clip()), rtol=0, atol=1e-10)
        torch.testing.assert_close(clip_video(_clip(frames=5)), clip_ref(_clip(frames=5)), rtol=0, atol=1e-10)


def _train_steps(video: TAdaVideoModel, steps: int, seed: int = 0) -> None:
    """A few SGD steps on a task whose label is the clip's direction (frames in order or reversed)."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(video.parameters(), lr=0.1, momentum=0.9)
    video.train()
    for _ in range(steps):
        x = torch.randn(B, 3, T, S, S, generator=gen, dtype=torch.float64).cumsum(dim=2)
        y = torch.tensor([0, 1])
        x = torch.stack([x[0], x[1].flip(1)])
        opt.zero_grad()
        F.cross_entropy(video(x), y).backward()
        opt.step()


@pytest.mark.parametrize("name", ["resnet_basic", "depthwise_se"])
def test_new_parameters_learn_and_break_frame_order_invariance(name):
    _, video = _pair(name)
    x = _clip(3)
    with torch.no_grad():
        start = video.eval()(x)
        torch.testing.assert_close(video(x.flip(2)), start, rtol=0, atol=1e-12)  # an average over frames
    _train_steps(video, 3)
    new = {n: p for n, p in video.named_parameters() if ".rf." in n or ".pool_bn." in n}
    assert new
    for n, p in new.items():
        if n.endswith(("rf.bn.weight", "rf.bn.bias")):
            continue  # behind a ReLU: may be zero where no unit is active
        assert p.grad is not None and p.grad.abs().sum() > 0, n
    with torch.no_grad():
        video.eval()
        moved = (video(x) - video(x.flip(2))).abs().max().item()
    assert moved > 1e-6, "once trained, the model must tell a clip from its time reversal"


def test_frames_count_follows_the_clip():
    reference, video = _pair("convnext_ln")
    reference.eval()
    video.eval()
    with torch.no_grad():
        for frames in (4, 6, 1):
            x = _clip(frames, frames=frames)
            torch.testing.assert_close(video(x), _frame_average(reference, x), rtol=0, atol=1e-10)
    assert video.num_frames == 1


def test_channels_last_computes_the_same():
    _, video = _pair("resnet_basic")
    video.eval()
    x = _clip()
    with torch.no_grad():
        expected = video(x)
        video.channels_last = True
        torch.testing.assert_close(video(x), expected, rtol=0, atol=1e-10)
        video.channels_last = False


def test_conv_selection():
    net = GroupedDilatedNet()
    spatial = select_convs(net)
    assert spatial == ["block1.conv2", "transition", "block2.conv2"]  # stem.0 excluded, 1x1s skipped
    assert select_convs(net, stem=True)[0] == "stem.0"
    assert "block1.conv1" in select_convs(net, convs="all") and "stem.0" not in select_convs(net, convs="all")
    assert select_convs(net, include=["block*"]) == ["block1.conv2", "block2.conv2"]
    assert select_convs(net, exclude=["transition"]) == ["block1.conv2", "block2.conv2"]
    assert select_convs(net, convs=lambda n, m: m.groups > 4) == ["block2.conv2"]
    assert select_convs(net, convs="none") == []
    with pytest.raises(ValueError, match="convs must be one of"):
        select_convs(net, convs="spatial3x3")


def test_all_convs_including_1x1_and_squeeze_excite_start_exact():
    torch.manual_seed(0)
    image = randomize_norms(MobileNetLike().double())
    reference = copy.deepcopy(image).eval()
    video = tadafy(image, num_frames=T, convs="all", stem=True, route_ratio=2).eval()
    assert "se.reduce" in " ".join(video.converted) and "stem.0" in video.converted
    with torch.no_grad():
        torch.testing.assert_close(video(_clip()), _frame_average(reference, _clip()), rtol=0, atol=1e-10)


def test_no_pool_branch_and_other_routing_settings():
    _, video = _pair("resnet_basic")
    image = create_image_model("resnet10_w16", num_classes=5)
    other = tadafy(image, num_frames=T, pool_kernel=1, route_ratio=8, route_kernels=(5, 1))
    block = other.net.layer2[0].conv1
    assert block.pool_bn is None and block.pool is None
    assert block.rf.a.kernel_size == 5 and block.rf.b.kernel_size == 1 and block.rf.a.out_channels == 16 // 8
    assert video.net.layer2[0].conv1.pool.kernel_size == 3


def test_bad_networks_and_arguments_are_clear_errors():
    class CustomConv(nn.Conv2d):  # e.g. timm's Conv2dSame: its own forward
        def forward(self, x):
            return super().forward(F.pad(x, (1, 1, 1, 1)))

    net = nn.Sequential(nn.Conv2d(3, 8, 3), CustomConv(8, 8, 3), nn.Conv2d(8, 8, 3))
    with pytest.raises(TypeError, match=r"'1'.*CustomConv.*exclude"):
        tadafy(copy.deepcopy(net), num_frames=T)
    assert tadafy(copy.deepcopy(net), num_frames=T, exclude=["1"]).converted == ("2",)
    with pytest.raises(ValueError, match="routing ratio 4 leaves no hidden channels"):
        tadafy(nn.Sequential(nn.Conv2d(3, 8, 3)), num_frames=T, stem=True)
    with pytest.raises(ValueError, match="both Conv2d and Conv3d"):
        tadafy(nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv3d(8, 8, 3)), num_frames=T)
    with pytest.raises(ValueError, match="num_frames"):
        tadafy(GroupedDilatedNet(), num_frames=0)
    video = tadafy(GroupedDilatedNet(), num_frames=T)  # no classifier named: per-frame outputs averaged
    with pytest.raises(AttributeError, match="classifier"):
        video.reset_classifier(3)
    with pytest.raises(ValueError, match=r"\(B, C, T, H, W\)"):
        video(torch.randn(2, 3, 8, 8))


def test_reset_classifier_in_both_head_modes():
    for name in ("resnet_basic", "grouped_dilated"):
        _, video = _pair(name)
        video.reset_classifier(7)
        assert video(_clip()).shape == (B, 7)
        assert isinstance(video.get_classifier(), nn.Linear) and video.get_classifier().out_features == 7


def test_image_state_dict_loads_into_the_tadafied_network():
    torch.manual_seed(1)
    trained = randomize_norms(create_image_model("resnet10_w16", num_classes=1000).double(), seed=1)
    torch.manual_seed(2)
    video = tadafy(create_image_model("resnet10_w16", num_classes=5).double(), num_frames=T)
    loaded, missing, dropped = video.load_image_state_dict(trained.state_dict())
    assert dropped == ["fc.weight", "fc.bias"]  # 1000 ImageNet classes vs 5
    assert all(".rf." in k or ".pool_bn." in k or k.startswith("net.fc.") for k in missing)
    assert "net.layer1.0.conv2.conv.weight" in loaded
    trained.reset_classifier(5)
    trained.fc.load_state_dict(video.net.fc.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(video.eval()(_clip()), _frame_average(trained.eval(), _clip()), rtol=0, atol=1e-10)
    with pytest.raises(ValueError, match="model keys not in the file"):
        video.load_image_state_dict({k: v for k, v in trained.state_dict().items() if "layer4" not in k})
    wrong = create_image_model("resnet18", num_classes=5).state_dict()
    with pytest.raises(ValueError, match="do not fit"):
        video.load_image_state_dict(wrong)


def test_torchvision_models_where_installed():
    tv = pytest.importorskip("torchvision", reason="torchvision is optional")
    torch.manual_seed(0)
    for build, classifier in ((tv.models.resnet18, "fc"), (tv.models.mobilenet_v3_small, "classifier")):
        image = randomize_norms(build(num_classes=5).double())
        reference = copy.deepcopy(image).eval()
        video = tadafy(image, num_frames=T, classifier=classifier).eval()
        x = _clip(size=64)
        with torch.no_grad():
            torch.testing.assert_close(video(x), _frame_average(reference, x), rtol=0, atol=1e-8)


def test_timm_models_where_installed():
    timm = pytest.importorskip("timm", reason="timm is optional")
    torch.manual_seed(0)
    # convnext's head normalises after the pool, so only its features are per-frame exact
    for arch, linear_head in (("resnet18", True), ("resnext26ts", True), ("efficientnet_b0", True),
                              ("convnext_atto", False)):
        image = randomize_norms(timm.create_model(arch, pretrained=False, num_classes=5).double())
        reference = copy.deepcopy(image).eval()
        video = tadafy(image, num_frames=T).eval()
        assert video.timm_contract and video.converted
        x = _clip(size=64)
        frames = x.transpose(1, 2).reshape(B * T, 3, 64, 64)
        with torch.no_grad():
            per_frame = reference.forward_features(frames)
            torch.testing.assert_close(video.forward_features(x),
                                       per_frame.view(B, T, *per_frame.shape[1:]).transpose(1, 2), rtol=0, atol=1e-8)
            if linear_head:
                torch.testing.assert_close(video(x), _frame_average(reference, x), rtol=0, atol=1e-8)


def test_conv3d_with_replicate_padding_and_dilation_starts_exact():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv3d(3, 8, (1, 3, 3), padding=(0, 1, 1)),
        nn.Conv3d(8, 8, 3, padding=2, dilation=(2, 1, 1), padding_mode="replicate", bias=True),
        nn.Conv3d(8, 8, (3, 1, 1), stride=(2, 1, 1), padding="valid"),
    ).double()
    reference = copy.deepcopy(net)
    video = tadafy(net, num_frames=T)
    assert video.net[1].pre_pad is not None and isinstance(video.net[1].conv, TAdaConv3d)
    x = _clip(frames=7)
    with torch.no_grad():
        torch.testing.assert_close(video(x), reference(x), rtol=0, atol=1e-10)

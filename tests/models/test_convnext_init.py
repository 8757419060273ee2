"""TAdaConvNeXtV2 from an ImageNet ConvNeXt-V1 state dict: the official inflation, new parameters
keeping their start values, the network equal to the 2-D ConvNeXt on every other frame, clear errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tada.checkpoint import CheckpointError, load_in1k
from tada.models import create_model

DEPTHS, WIDTHS = (1, 1, 2, 1), (16, 32, 64, 128)


def _imagenet_convnext(depths, widths, seed=0, classes=10):
    """A random ConvNeXt-V1 state dict in the original release's names and 2-D shapes."""
    gen = torch.Generator().manual_seed(seed)

    def r(*shape, scale=0.2):
        return torch.randn(shape, generator=gen) * scale

    sd = {"downsample_layers.0.0.weight": r(widths[0], 3, 4, 4), "downsample_layers.0.0.bias": r(widths[0]),
          "downsample_layers.0.1.weight": 1 + r(widths[0]), "downsample_layers.0.1.bias": r(widths[0])}
    for i in range(1, 4):
        sd.update({f"downsample_layers.{i}.0.weight": 1 + r(widths[i - 1]),
                   f"downsample_layers.{i}.0.bias": r(widths[i - 1]),
                   f"downsample_layers.{i}.1.weight": r(widths[i], widths[i - 1], 2, 2),
                   f"downsample_layers.{i}.1.bias": r(widths[i])})
    for i, (n, d) in enumerate(zip(depths, widths, strict=True)):
        for j in range(n):
            p = f"stages.{i}.{j}."
            sd.update({p + "gamma": r(d, scale=0.5), p + "dwconv.weight": r(d, 1, 7, 7), p + "dwconv.bias": r(d),
                       p + "norm.weight": 1 + r(d), p + "norm.bias": r(d), p + "pwconv1.weight": r(4 * d, d),
                       p + "pwconv1.bias": r(4 * d), p + "pwconv2.weight": r(d, 4 * d), p + "pwconv2.bias": r(d)})
    sd.update({"norm.weight": 1 + r(widths[-1]), "norm.bias": r(widths[-1]), "head.weight": r(classes, widths[-1]),
               "head.bias": r(classes)})
    return sd


def _ln_cf(x, w, b):
    u = x.mean(1, keepdim=True)
    s = (x - u).pow(2).mean(1, keepdim=True)
    return w[:, None, None] * (x - u) / torch.sqrt(s + 1e-6) + b[:, None, None]


def _convnext_2d_features(sd, img, depths):
    """The 2-D ConvNeXt-V1 with QuickGELU on images (N, 3, H, W) -> pooled features (N, d3) before the final norm."""
    sd = {k: v.double() for k, v in sd.items()}
    x = F.conv2d(img.double(), sd["downsample_layers.0.0.weight"], sd["downsample_layers.0.0.bias"], stride=4)
    x = _ln_cf(x, sd["downsample_layers.0.1.weight"], sd["downsample_layers.0.1.bias"])
    for i, n in enumerate(depths):
        if i:
            x = _ln_cf(x, sd[f"downsample_layers.{i}.0.weight"], sd[f"downsample_layers.{i}.0.bias"])
            x = F.conv2d(x, sd[f"downsample_layers.{i}.1.weight"], sd[f"downsample_layers.{i}.1.bias"], stride=2)
        for j in range(n):
            p = f"stages.{i}.{j}."
            y = F.conv2d(x, sd[p + "dwconv.weight"], sd[p + "dwconv.bias"], padding=3, groups=x.shape[1])
            y = F.layer_norm(y.permute(0, 2, 3, 1), (y.shape[1],), sd[p + "norm.weight"], sd[p + "norm.bias"], 1e-6)
            y = F.linear(y, sd[p + "pwconv1.weight"], sd[p + "pwconv1.bias"])
            y = F.linear(y * torch.sigmoid(1.702 * y), sd[p + "pwconv2.weight"], sd[p + "pwconv2.bias"])
            x = x + (sd[p + "gamma"] * y).permute(0, 3, 1, 2)
    return x.mean(dim=(2, 3))


@pytest.mark.parametrize("name", ["tadaconvnextv2_tiny", "convnext_tiny_frames"])
def test_imagenet_init_is_the_2d_convnext_on_every_other_frame(tmp_path, name):
    image = _imagenet_convnext(DEPTHS, WIDTHS)
    path = tmp_path / "convnext_tiny_1k_224_ema.pth"
    torch.save({"model": image}, path)
    torch.manual_seed(0)
    model = create_model(name, num_classes=6, depths=DEPTHS, widths=WIDTHS, head_dim=4).double()
    head_before = model.head.out.weight.detach().clone()
    report = load_in1k(model, path)
    assert sorted(report.dropped) == ["head.bias", "head.weight"]
    assert len(report.loaded) == len(image) - 2
    if name.startswith("tada"):
        assert all(".dwconv_rf." in k or ".norm_avgpool." in k or k.startswith("head.") for k in report.missing)
        assert any(".dwconv_rf." in k for k in report.missing) and any(".norm_avgpool." in k for k in report.missing)
    else:
        assert sorted(report.missing) == ["head.out.bias", "head.out.weight"]
    stem = model.backbone.downsample_layers[0][0].weight
    assert torch.equal(stem[:, :, 1].float(), image["downsample_layers.0.0.weight"])
    assert torch.count_nonzero(stem[:, :, 0]) == 0 and torch.count_nonzero(stem[:, :, 2]) == 0
    assert torch.equal(model.head.out.weight, head_before)  # the new head keeps its initialisation
    model.eval()
    video = torch.randn(2, 3, 8, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        got = model.forward_head(model.forward_features(video), pre_logits=True)
        frames = video[:, :, 0::2].transpose(1, 2).reshape(-1, 3, 64, 64)  # the even frames
        per_frame = _convnext_2d_features(image, frames, DEPTHS).view(2, 4, -1).mean(dim=1)
        want = F.layer_norm(per_frame, (WIDTHS[-1],), image["norm.weight"].double(), image["norm.bias"].double(), 1e-6)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)


def test_wrong_or_missing_files_are_errors_naming_them(tmp_path):
    model = create_model("tadaconvnextv2_tiny", num_classes=6, depths=DEPTHS, widths=WIDTHS, head_dim=4)
    missing = tmp_path / "absent.pth"
    with pytest.raises(FileNotFoundError, match="absent.pth"):
        load_in1k(model, missing)
    other_size = tmp_path / "convnext_small.pth"
    torch.save({"model": _imagenet_convnext((1, 1, 3, 1), WIDTHS)}, other_size)
    with pytest.raises(CheckpointError, match="convnext_small.pth.*no target"):
        load_in1k(model, other_size)
    wider = tmp_path / "wider.pth"
    torch.save({"model": _imagenet_convnext(DEPTHS, (32, 64, 128, 256))}, wider)
    with pytest.raises(CheckpointError, match="wider.pth.*shape mismatches"):
        load_in1k(model, wider)
    resnet = tmp_path / "resnet50.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.weight": torch.zeros(10, 2048)}, resnet)
    with pytest.raises(CheckpointError, match="resnet50.pth"):
        load_in1k(model, resnet)
    partial = tmp_path / "partial.pth"
    sd = _imagenet_convnext(DEPTHS, WIDTHS)
    del sd["stages.2.1.pwconv1.weight"]
    torch.save(sd, partial)
    with pytest.raises(CheckpointError, match="partial.pth.*stages.2.1.pwconv1.weight"):
        load_in1k(model, partial)

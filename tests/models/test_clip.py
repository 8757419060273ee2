"""TAdaFormer init from OpenAI CLIP files: key mapping, conv1 inflation, the initial network, wrong files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tada.checkpoint import CheckpointError
from tada.config import load_config
from tada.models import create_model
from tada.models.clip import clip_vit_filter, load_clip, read_clip_state_dict

WIDTH, LAYERS, HEADS, PATCH, RES = 256, 2, 4, 8, 32
SMALL = dict(width=WIDTH, depth=LAYERS, heads=HEADS, patch_size=PATCH, input_res=RES, num_frames=8)
REPO = Path(__file__).resolve().parents[2]


def synthetic_clip(width=WIDTH, layers=LAYERS, patch=PATCH, res=RES, seed=0) -> dict[str, torch.Tensor]:
    """An OpenAI-layout CLIP state dict (image tower, a small text tower, float16), random values."""
    gen = torch.Generator().manual_seed(seed)

    def r(*shape, scale=0.05, offset=0.0):
        return (offset + scale * torch.randn(*shape, generator=gen)).half()

    sd = {
        "visual.class_embedding": r(width, scale=0.5),
        "visual.positional_embedding": r((res // patch) ** 2 + 1, width, scale=0.5),
        "visual.proj": r(width, 64),
        "visual.conv1.weight": r(width, 3, patch, patch),
        "visual.ln_pre.weight": r(width, offset=1.0), "visual.ln_pre.bias": r(width),
        "visual.ln_post.weight": r(width, offset=1.0), "visual.ln_post.bias": r(width),
        "text_projection": r(128, 64), "logit_scale": torch.tensor(4.6).half(),
        "positional_embedding": r(77, 128), "token_embedding.weight": r(1000, 128),
        "transformer.resblocks.0.attn.in_proj_weight": r(384, 128),
        "ln_final.weight": r(128, offset=1.0), "ln_final.bias": r(128),
    }
    for i in range(layers):
        p = f"visual.transformer.resblocks.{i}."
        sd.update({
            p + "attn.in_proj_weight": r(3 * width, width), p + "attn.in_proj_bias": r(3 * width),
            p + "attn.out_proj.weight": r(width, width), p + "attn.out_proj.bias": r(width),
            p + "ln_1.weight": r(width, offset=1.0), p + "ln_1.bias": r(width),
            p + "mlp.c_fc.weight": r(4 * width, width), p + "mlp.c_fc.bias": r(4 * width),
            p + "mlp.c_proj.weight": r(width, 4 * width), p + "mlp.c_proj.bias": r(width),
            p + "ln_2.weight": r(width, offset=1.0), p + "ln_2.bias": r(width),
        })
    return sd


class _Holder(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def save_torchscript(sd: dict[str, torch.Tensor], path: Path) -> None:
    """A TorchScript archive whose state dict is ``sd`` (the form of the OpenAI release)."""
    root = _Holder()
    for key, value in sd.items():
        *parents, leaf = key.split(".")
        module = root
        for name in parents:
            if not hasattr(module, name):
                module.add_module(name, _Holder())
            module = getattr(module, name)
        module.register_parameter(leaf, nn.Parameter(value.clone(), requires_grad=False))
    torch.jit.save(torch.jit.script(root), str(path))


def clip_image_features(sd, frames: torch.Tensor) -> torch.Tensor:
    """CLIP's image tower (no projection) on images (N, 3, H, W), float64, written out."""
    f = {k: v.double() for k, v in sd.items()}
    x = F.conv2d(frames, f["visual.conv1.weight"], stride=PATCH).flatten(2).transpose(1, 2)
    x = torch.cat([f["visual.class_embedding"].expand(x.shape[0], 1, WIDTH), x], 1) + f["visual.positional_embedding"]
    x = F.layer_norm(x, (WIDTH,), f["visual.ln_pre.weight"], f["visual.ln_pre.bias"])
    for i in range(LAYERS):
        p = f"visual.transformer.resblocks.{i}."
        h = F.layer_norm(x, (WIDTH,), f[p + "ln_1.weight"], f[p + "ln_1.bias"])
        att, _ = F.multi_head_attention_forward(
            h.transpose(0, 1), h.transpose(0, 1), h.transpose(0, 1), WIDTH, HEADS, f[p + "attn.in_proj_weight"],
            f[p + "attn.in_proj_bias"], None, None, False, 0.0, f[p + "attn.out_proj.weight"],
            f[p + "attn.out_proj.bias"], training=False, need_weights=False)
        x = x + att.transpose(0, 1)
        h = F.layer_norm(x, (WIDTH,), f[p + "ln_2.weight"], f[p + "ln_2.bias"])
        h = F.linear(h, f[p + "mlp.c_fc.weight"], f[p + "mlp.c_fc.bias"])
        x = x + F.linear(h * torch.sigmoid(1.702 * h), f[p + "mlp.c_proj.weight"], f[p + "mlp.c_proj.bias"])
    return x[:, 0]


@pytest.mark.parametrize("form", ["torchscript", "state_dict"])
def test_clip_init_is_the_image_tower_on_every_other_frame(tmp_path, form):
    sd = synthetic_clip()
    path = tmp_path / "ViT-tiny.pt"
    if form == "torchscript":
        save_torchscript(sd, path)
    else:
        torch.save(sd, path)
    assert set(read_clip_state_dict(path)) == set(sd)
    model = create_model("tadaformer_b16", num_classes=5, **SMALL)
    report = load_clip(model, path)
    assert "backbone.conv1.weight" in report.loaded and "visual.proj" in report.dropped
    assert "text_projection" in report.dropped and "logit_scale" in report.dropped
    assert all(".tada." in k or k.startswith("head.") for k in report.missing)
    conv1 = model.backbone.conv1.weight
    assert conv1.dtype == torch.float32 and conv1.shape == (WIDTH, 3, 3, PATCH, PATCH)
    assert torch.equal(conv1[:, :, 1], sd["visual.conv1.weight"].float())
    assert not conv1[:, :, 0].any() and not conv1[:, :, 2].any()

    model = model.double().eval()
    video = torch.randn(2, 3, 8, RES, RES, dtype=torch.float64)
    even = video[:, :, 0::2].transpose(1, 2).reshape(-1, 3, RES, RES)  # token frame t' sees frame 2t'
    cls = clip_image_features(sd, even).view(2, 4, WIDTH).mean(dim=1)
    ln = {k: v.double() for k, v in sd.items() if k.startswith("visual.ln_post")}
    pooled = F.layer_norm(cls, (WIDTH,), ln["visual.ln_post.weight"], ln["visual.ln_post.bias"])
    with torch.no_grad():
        torch.testing.assert_close(model.forward_head(model.forward_features(video), pre_logits=True), pooled,
                                   rtol=0, atol=1e-9)


def test_the_projection_loads_when_the_model_keeps_it():
    model = create_model("tadaformer_b16", num_classes=5, **SMALL, output_dim=64)
    converted, unused = clip_vit_filter(synthetic_clip(), {k: tuple(v.shape) for k, v in model.state_dict().items()})
    assert "backbone.proj" in converted and "visual.proj" not in unused


def test_wrong_or_missing_files_are_errors_naming_them(tmp_path):
    model = create_model("tadaformer_b16", num_classes=5, **SMALL)
    with pytest.raises(FileNotFoundError, match="nowhere.pt"):
        load_clip(model, tmp_path / "nowhere.pt")
    bigger = tmp_path / "ViT-wide.pt"
    torch.save(synthetic_clip(width=512), bigger)
    with pytest.raises(CheckpointError, match="ViT-wide.pt.*shape mismatches"):
        load_clip(model, bigger)
    shallow = tmp_path / "ViT-shallow.pt"
    torch.save(synthetic_clip(layers=1), shallow)
    with pytest.raises(CheckpointError, match="ViT-shallow.pt.*lack .* backbone keys.*layers.1"):
        load_clip(model, shallow)
    resnet = tmp_path / "resnet.pt"
    torch.save({"conv1.weight": torch.zeros(4, 3, 3, 3)}, resnet)
    with pytest.raises(CheckpointError, match="resnet.pt.*not an OpenAI CLIP"):
        load_clip(model, resnet)
    with pytest.raises(ValueError, match="TRAIN.CLIP_WEIGHTS"):
        load_clip(model, "")


def test_the_project_configs_ask_for_clip_init():
    cfg = load_config(REPO / "configs" / "projects" / "tadaformer" / "tadaformer_b16_k400_16f.yaml")
    assert cfg.TRAIN.INIT == "clip" and cfg.TRAIN.CLIP_WEIGHTS == ""
    with pytest.raises(Exception, match="TRAIN.CLIP_WEIGHTS"):
        cfg.require("TRAIN.CLIP_WEIGHTS", "TRAIN.INIT is clip")

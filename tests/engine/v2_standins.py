"""Parameter-only stand-ins that carry the official TAdaConvNeXtV2 and TAdaFormer parameter names.

The optimizer's grouping reads names, shapes and ``requires_grad`` only, so these modules hold
their parameters on the meta device (no memory) and have no forward pass. Names and shapes follow
the official state-dict layouts: ``backbone.downsample_layers``/``backbone.stages.{i}.{j}`` for
ConvNeXt, ``backbone.layers.{i}`` with ``tada`` branches for TAdaFormer.
"""

from __future__ import annotations

import torch
from torch import nn


class NamedParameters(nn.Module):
    """A module tree whose parameters are exactly ``shapes`` (dotted name -> shape), in that order."""

    def __init__(self, shapes: dict[str, tuple[int, ...]], device: str = "meta"):
        super().__init__()
        for name, shape in shapes.items():
            *path, leaf = name.split(".")
            owner: nn.Module = self
            for part in path:
                if not hasattr(owner, part):
                    owner.add_module(part, nn.Module())
                owner = getattr(owner, part)
            owner.register_parameter(leaf, nn.Parameter(torch.zeros(shape, device=device)))


def _rf(prefix: str, d: int, c: int) -> dict[str, tuple[int, ...]]:
    return {
        f"{prefix}.a.weight": (c, d, 3, 1, 1), f"{prefix}.a.bias": (c,),
        f"{prefix}.norm.weight": (c,), f"{prefix}.norm.bias": (c,),
        f"{prefix}.norm_transformer.weight": (c,), f"{prefix}.norm_transformer.bias": (c,),
        f"{prefix}.qkv_proj.weight": (3 * c, c, 1, 1, 1), f"{prefix}.qkv_proj.bias": (3 * c,),
        f"{prefix}.attn_out.weight": (c, c, 1, 1, 1), f"{prefix}.attn_out.bias": (c,),
        f"{prefix}.b.weight": (d, c, 3, 1, 1), f"{prefix}.b_bias.weight": (d, c, 3, 1, 1),
    }


def convnext_shapes(dims=(96, 192, 384, 768), depths=(3, 3, 9, 3), num_classes=400) -> dict[str, tuple[int, ...]]:
    """TAdaConvNeXtV2 parameter names and shapes (defaults: Tiny with a K400 head)."""
    s: dict[str, tuple[int, ...]] = {}
    for i, d in enumerate(dims):
        p = f"backbone.downsample_layers.{i}"
        if i == 0:
            s.update({f"{p}.0.weight": (d, 3, 3, 4, 4), f"{p}.0.bias": (d,),
                      f"{p}.1.weight": (d,), f"{p}.1.bias": (d,)})
        else:
            e = dims[i - 1]
            s.update({f"{p}.0.weight": (e,), f"{p}.0.bias": (e,),
                      f"{p}.1.weight": (d, e, 1, 2, 2), f"{p}.1.bias": (d,)})
        for j in range(depths[i]):
            b = f"backbone.stages.{i}.{j}"
            s[f"{b}.gamma"] = (d,)
            s[f"{b}.dwconv.weight"] = (1, 1, d, 1, 7, 7)
            s[f"{b}.dwconv.bias"] = (1, 1, d)
            s.update(_rf(f"{b}.dwconv_rf", d, d // 2))
            for norm in ("norm", "norm_avgpool"):
                s[f"{b}.{norm}.weight"] = (d,)
                s[f"{b}.{norm}.bias"] = (d,)
            s.update({f"{b}.pwconv1.weight": (4 * d, d), f"{b}.pwconv1.bias": (4 * d,),
                      f"{b}.pwconv2.weight": (d, 4 * d), f"{b}.pwconv2.bias": (d,)})
    s.update({"backbone.norm.weight": (dims[-1],), "backbone.norm.bias": (dims[-1],),
              "head.out.weight": (num_classes, dims[-1]), "head.out.bias": (num_classes,)})
    return s


def tadaformer_shapes(width=768, depth=12, patch=16, num_classes=400, double_tada=False) -> dict[str, tuple[int, ...]]:
    """TAdaFormer parameter names and shapes (defaults: B/16 with a K400 head); BN buffers omitted."""
    w, dm = width, width // 2
    s: dict[str, tuple[int, ...]] = {
        "backbone.class_embedding": (w,),
        "backbone.positional_embedding": ((224 // patch) ** 2 + 1, w),
        "backbone.conv1.weight": (w, 3, 3, patch, patch),
        "backbone.ln_pre.weight": (w,), "backbone.ln_pre.bias": (w,),
    }
    for i in range(depth):
        p = f"backbone.layers.{i}"
        s.update({f"{p}.attn.in_proj_weight": (3 * w, w), f"{p}.attn.in_proj_bias": (3 * w,),
                  f"{p}.attn.out_proj.weight": (w, w), f"{p}.attn.out_proj.bias": (w,),
                  f"{p}.ln_1.weight": (w,), f"{p}.ln_1.bias": (w,),
                  f"{p}.mlp.c_fc.weight": (4 * w, w), f"{p}.mlp.c_fc.bias": (4 * w,),
                  f"{p}.mlp.c_proj.weight": (w, 4 * w), f"{p}.mlp.c_proj.bias": (w,),
                  f"{p}.ln_2.weight": (w,), f"{p}.ln_2.bias": (w,)})
        for branch in ("tada", "tada2") if double_tada else ("tada",):
            t = f"{p}.{branch}"
            s.update({f"{t}.tada_pre_proj.weight": (dm, w), f"{t}.tada_pre_proj.bias": (dm,),
                      f"{t}.tadaconv.weight": (1, 1, dm, 1, 3, 3), f"{t}.tadaconv.bias": (1, 1, dm)})
            s.update(_rf(f"{t}.tadaconv.rf_func", dm, dm // 2))
            for bn in ("bn_a", "bn_b"):
                s[f"{t}.tadaconv.{bn}.weight"] = (dm,)
                s[f"{t}.tadaconv.{bn}.bias"] = (dm,)
            s.update({f"{t}.tada_proj.weight": (w, dm), f"{t}.tada_proj.bias": (w,)})
    s.update({"backbone.ln_post.weight": (w,), "backbone.ln_post.bias": (w,),
              "head.out.weight": (num_classes, w), "head.out.bias": (num_classes,)})
    return s

"""Checkpoint loading: official .pyth layout, ours, bare state dicts, strictness, safety, ImageNet init."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from tada.checkpoint import CheckpointError, load_checkpoint, load_in1k, read_checkpoint, save_checkpoint
from tada.models import create_model
from tada.models.convert import resnet50_2d_key

TINY = dict(widths=(8, 16, 32, 64, 128), layers=(1, 2, 1, 1))


def _model(seed: int = 0, **kw) -> nn.Module:
    torch.manual_seed(seed)
    return create_model("tada2d_r50", num_classes=kw.pop("num_classes", 5), **{**TINY, **kw})


def _same(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)


class _Evil:
    """Any non-tensor class in a pickle: weights_only loading must refuse to construct it."""

    def __reduce__(self):
        return (print, ("this would have run",))


def test_official_pyth_layout_with_optimizer_and_epoch(tmp_path):
    src = _model(1)
    opt = torch.optim.SGD(src.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    for g in opt.param_groups:
        g["lr_mult"] = 1.0  # the official groups carry this extra key
    src(torch.randn(2, 3, 2, 32, 32)).sum().backward()
    opt.step()
    path = tmp_path / "checkpoint_epoch_00005.pyth"
    torch.save({"epoch": 4, "model_state": src.state_dict(), "optimizer_state": opt.state_dict(),
                "cfg": json.dumps({"TRAIN": {"ENABLE": True}}, indent=2)}, path)
    dst = _model(2)
    dst_opt = torch.optim.SGD(dst.parameters(), lr=0.5, momentum=0.9, nesterov=True)
    loaded = load_checkpoint(dst, path, optimizer=dst_opt)
    assert loaded.epoch == 4 and loaded.optimizer_loaded
    assert json.loads(loaded.extra["cfg"]) == {"TRAIN": {"ENABLE": True}}
    assert _same(src, dst)
    assert dst_opt.param_groups[0]["lr"] == 0.1
    first = next(iter(dst_opt.state.values()))
    assert torch.count_nonzero(first["momentum_buffer"]) > 0


def test_our_save_roundtrip_and_extra_entries(tmp_path):
    src = _model(3)
    path = save_checkpoint(tmp_path / "sub" / "ckpt.pyth", model=src, epoch=7, tada={"global_step": 12})
    assert not (tmp_path / "sub" / "ckpt.pyth.tmp").exists()
    dst = _model(4)
    loaded = load_checkpoint(dst, path)
    assert loaded.epoch == 7 and loaded.extra["tada"] == {"global_step": 12}
    assert _same(src, dst)
    with pytest.raises(ValueError, match="clash"):
        save_checkpoint(tmp_path / "x.pyth", model=src, epoch=0, model_state={})


def test_bare_state_dict_and_wrapper_prefixes(tmp_path):
    src = _model(5)
    for prefix in ("", "module.", "module._orig_mod."):
        path = tmp_path / f"bare{len(prefix)}.pth"
        torch.save({prefix + k: v for k, v in src.state_dict().items()}, path)
        dst = _model(6)
        loaded = load_checkpoint(dst, path)
        assert loaded.epoch is None
        assert _same(src, dst)


def test_loads_into_compiled_or_wrapped_models(tmp_path):
    src = _model(7)
    path = save_checkpoint(tmp_path / "c.pyth", model=src, epoch=0)

    class Wrapper(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self._orig_mod = inner

    inner = _model(8)
    load_checkpoint(Wrapper(inner), path)
    assert _same(src, inner)


def test_strict_names_missing_unexpected_and_mismatched(tmp_path):
    state = _model(9).state_dict()
    state.pop("backbone.conv2.res_1.conv_branch.b_rf.g.bias")
    state["backbone.extra.weight"] = torch.zeros(3)
    state["head.out.weight"] = torch.zeros(9, 128)
    path = tmp_path / "bad.pyth"
    torch.save({"model_state": state, "epoch": 0}, path)
    dst = _model(10)
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(dst, path)
    msg = str(err.value)
    assert "1 missing keys: backbone.conv2.res_1.conv_branch.b_rf.g.bias" in msg
    assert "1 unexpected keys: backbone.extra.weight" in msg
    assert "head.out.weight: file (9, 128) vs model (5, 128)" in msg
    assert all(torch.equal(before[k], v) for k, v in dst.state_dict().items())  # nothing loaded


def test_non_strict_loads_what_fits_and_reports_the_rest(tmp_path):
    src = _model(11, num_classes=9)
    path = save_checkpoint(tmp_path / "k.pyth", model=src, epoch=3)
    dst = _model(12, num_classes=5)
    head_before = dst.head.out.weight.clone()
    loaded = load_checkpoint(dst, path, strict=False)
    assert [m.split(":")[0] for m in loaded.mismatched_keys] == ["head.out.weight", "head.out.bias"]
    assert loaded.missing_keys == [] and loaded.unexpected_keys == []
    assert torch.equal(dst.head.out.weight, head_before)
    sd, dd = src.state_dict(), dst.state_dict()
    assert all(torch.equal(sd[k], dd[k]) for k in sd if not k.startswith("head."))


def test_refuses_code_running_pickles_and_reports_bad_files(tmp_path):
    evil = tmp_path / "evil.pyth"
    torch.save({"model_state": _model().state_dict(), "hook": _Evil()}, evil)
    with pytest.raises(CheckpointError, match="refused to load"):
        load_checkpoint(_model(), evil)
    with pytest.raises(FileNotFoundError, match="nope.pyth"):
        load_checkpoint(_model(), tmp_path / "nope.pyth")
    junk = tmp_path / "junk.pyth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pyth.*not a torch checkpoint"):
        read_checkpoint(junk)
    for name, content, reason in [
        ("empty.pyth", b"", "empty"),
        ("drive.pyth", b"\n<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning", "HTML page"),
        ("text.pyth", b"e" * 200, "starts with b'eeee"),  # made torch.load raise a bare KeyError
        ("array.pyth", b"\x93NUMPY\x01\x00v\x00{'descr': '<f4'", "NumPy"),
    ]:
        (tmp_path / name).write_bytes(content)
        with pytest.raises(CheckpointError, match=reason):
            read_checkpoint(tmp_path / name)
    legacy = tmp_path / "legacy.pyth"
    torch.save({"model_state": _model().state_dict()}, legacy, _use_new_zipfile_serialization=False)
    assert set(read_checkpoint(legacy)["model_state"]) == set(_model().state_dict())
    listy = tmp_path / "list.pyth"
    torch.save([1, 2], listy)
    with pytest.raises(CheckpointError, match="expected a dict"):
        read_checkpoint(listy)
    nostate = tmp_path / "nostate.pyth"
    torch.save({"epoch": 1, "notes": "x"}, nostate)
    with pytest.raises(CheckpointError, match="no model state"):
        load_checkpoint(_model(), nostate)


def test_optimizer_requested_but_absent(tmp_path):
    path = save_checkpoint(tmp_path / "n.pyth", model=_model(), epoch=0)
    model = _model()
    with pytest.raises(CheckpointError, match="optimizer_state"):
        load_checkpoint(model, path, optimizer=torch.optim.SGD(model.parameters(), lr=0.1))


# ---------------------------------------------------------------------------------------------
# ImageNet init from a torchvision / timm ResNet file, mapped as the official in1k init does
# ---------------------------------------------------------------------------------------------
def _torchvision_state(widths, layers, *, num_batches_tracked: bool, seed: int = 0) -> dict[str, torch.Tensor]:
    """A synthetic torchvision-named ResNet state dict (bottleneck, expansion 4)."""
    gen = torch.Generator().manual_seed(seed)

    def t(*shape):
        return torch.randn(*shape, generator=gen)

    def bn(prefix, c):
        d = {f"{prefix}.weight": t(c), f"{prefix}.bias": t(c), f"{prefix}.running_mean": t(c),
             f"{prefix}.running_var": t(c).abs() + 0.5}
        if num_batches_tracked:
            d[f"{prefix}.num_batches_tracked"] = torch.tensor(100)
        return d

    sd = {"conv1.weight": t(widths[0], 3, 7, 7), **bn("bn1", widths[0])}
    c_in = widths[0]
    for layer, (c_out, n) in enumerate(zip(widths[1:], layers), start=1):
        m = c_out // 4
        for j in range(n):
            p = f"layer{layer}.{j}"
            block_in = c_in if j == 0 else c_out
            sd.update({f"{p}.conv1.weight": t(m, block_in, 1, 1), **bn(f"{p}.bn1", m),
                       f"{p}.conv2.weight": t(m, m, 3, 3), **bn(f"{p}.bn2", m),
                       f"{p}.conv3.weight": t(c_out, m, 1, 1), **bn(f"{p}.bn3", c_out)})
            if j == 0:
                sd.update({f"{p}.downsample.0.weight": t(c_out, block_in, 1, 1), **bn(f"{p}.downsample.1", c_out)})
        c_in = c_out
    sd.update({"fc.weight": t(1000, widths[-1]), "fc.bias": t(1000)})
    return sd


def test_key_mapping_of_spec_2_3():
    assert resnet50_2d_key("conv1.weight") == "backbone.conv1.a.weight"
    assert resnet50_2d_key("bn1.running_var") == "backbone.conv1.a_bn.running_var"
    assert resnet50_2d_key("layer1.0.conv2.weight") == "backbone.conv2.res_1.conv_branch.b.weight"
    assert resnet50_2d_key("layer4.2.bn3.bias") == "backbone.conv5.res_3.conv_branch.c_bn.bias"
    assert resnet50_2d_key("layer2.0.downsample.0.weight") == "backbone.conv3.res_1.short_cut.weight"
    assert resnet50_2d_key("layer3.0.downsample.1.running_mean") == "backbone.conv4.res_1.short_cut_bn.running_mean"
    assert resnet50_2d_key("fc.weight") is None
    with pytest.raises(ValueError, match="no counterpart"):
        resnet50_2d_key("blocks.0.attn.qkv.weight")


@pytest.mark.parametrize("branch", ["tada2d_r50", "tsn_r50"])
def test_in1k_full_r50_loads_265_tensors_and_keeps_tada_extras(tmp_path, branch):
    """The real R50 key set and shapes (zeros: only names and shapes matter here)."""
    ref = _torchvision_state((64, 256, 512, 1024, 2048), (3, 4, 6, 3), num_batches_tracked=False)
    path = tmp_path / "resnet50-19c8e357.pth"
    torch.save({k: torch.zeros_like(v) for k, v in ref.items()}, path)
    model = create_model(branch, num_classes=400)
    report = load_in1k(model, path)
    assert len(report.loaded) == 265
    assert sorted(report.dropped) == ["fc.bias", "fc.weight"]
    kinds = {k.rsplit(".", 1)[0].split(".")[-1] for k in report.missing if not k.endswith("num_batches_tracked")}
    if branch == "tada2d_r50":
        assert kinds <= {"g", "a", "bn", "b", "b_avgpool_bn", "out"}
        assert torch.count_nonzero(model.backbone.conv2.res_1.conv_branch.b_rf.b.weight) == 0
    else:
        assert kinds == {"out"}


def test_in1k_values_land_in_the_right_place_and_the_block_is_the_imagenet_bottleneck(tmp_path):
    widths, layers = TINY["widths"], TINY["layers"]
    ref = _torchvision_state(widths, layers, num_batches_tracked=True, seed=3)
    path = tmp_path / "timm_resnet.pth"
    torch.save({"state_dict": ref}, path)  # timm-style wrapper; same key names as torchvision
    tada = create_model("tada2d_r50", num_classes=4, **TINY).eval()
    tsn = create_model("tsn_r50", num_classes=4, **TINY).eval()
    report = load_in1k(tada, path)
    load_in1k(tsn, path)
    assert len(report.loaded) == len(ref) - 2
    b = tada.backbone
    torch.testing.assert_close(b.conv1.a.weight[:, :, 0], ref["conv1.weight"])
    torch.testing.assert_close(b.conv2.res_1.conv_branch.b.weight[0, 0], ref["layer1.0.conv2.weight"])
    torch.testing.assert_close(b.conv3.res_2.conv_branch.c.weight[:, :, 0], ref["layer2.1.conv3.weight"])
    torch.testing.assert_close(b.conv5.res_1.short_cut_bn.running_var, ref["layer4.0.downsample.1.running_var"])
    # With the zero-init routing and pool BN, TAda2D from ImageNet equals TSN from ImageNet.
    with torch.no_grad():
        x = torch.randn(2, 3, 3, 32, 32)
        tsn.head.load_state_dict(tada.head.state_dict())
        torch.testing.assert_close(tada(x), tsn(x), rtol=1e-4, atol=1e-4)


def test_in1k_wrong_files_are_errors(tmp_path):
    model = create_model("tada2d_r50", num_classes=4, **TINY)
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        load_in1k(model, tmp_path / "missing.pth")
    with pytest.raises(ValueError, match="IN1K_WEIGHTS"):
        load_in1k(model, "")
    deeper = _torchvision_state(TINY["widths"], (1, 2, 2, 1), num_batches_tracked=False)
    torch.save(deeper, tmp_path / "deeper.pth")
    with pytest.raises(CheckpointError, match="no target"):
        load_in1k(model, tmp_path / "deeper.pth")
    wider = _torchvision_state((8, 16, 32, 64, 256), TINY["layers"], num_batches_tracked=False)
    torch.save(wider, tmp_path / "wider.pth")
    with pytest.raises(CheckpointError, match="shape mismatches"):
        load_in1k(model, tmp_path / "wider.pth")
    shallow = _torchvision_state(TINY["widths"], (1, 1, 1, 1), num_batches_tracked=False)
    torch.save(shallow, tmp_path / "shallow.pth")
    with pytest.raises(CheckpointError, match="lack 1[0-9] backbone keys"):
        load_in1k(model, tmp_path / "shallow.pth")


def test_create_model_with_a_local_checkpoint(tmp_path):
    src = _model(13)
    path = save_checkpoint(tmp_path / "zoo.pyth", model=src, epoch=99)
    torch.manual_seed(14)
    loaded = create_model("tada2d_r50", num_classes=5, checkpoint_path=str(path), **TINY)
    assert _same(src, loaded)
    with pytest.raises(CheckpointError, match="shape mismatches"):
        create_model("tada2d_r50", num_classes=6, checkpoint_path=str(path), **TINY)

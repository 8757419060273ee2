"""CUDA correctness of the model side, in seconds: the checks a CPU-only CI cannot make.

1. TAdaConv2d (fast form) vs the official grouped form on CUDA, float64, values and gradients.
2. A small TAda2D: CUDA vs CPU (fp32, TF32 off), train and eval, logits and gradients.
3. bf16 autocast vs fp32 on CUDA (relative error of the logits).
4. torch.compile vs eager on CUDA (fp32 eval and a train step's gradients).

    PYTHONPATH=src python3 benchmarks/gpu_model_check.py
"""

from __future__ import annotations

import copy
import sys

import torch
import torch.nn.functional as F

from tada.models import create_model
from tada.ops import TAdaConv2d, tada_conv2d_grouped_reference

SMALL = dict(widths=(16, 64, 128, 256, 512), layers=(1, 2, 2, 1), dropout=0.0)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-30)).item()


def live(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Make the routing and temporal-pool paths non-trivial (they are zero at init)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "b_rf.b." in name or "b_avgpool_bn" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.2 + (1.0 if name.endswith("b_avgpool_bn.weight") else 0))
    return model


def _live_grads(ref: torch.nn.Module, other: torch.nn.Module):
    """Parameter pairs whose reference gradient is not zero in exact arithmetic.

    A bias followed by a train-mode BN (b_rf.a.bias) has a zero gradient; its computed value is
    rounding noise (~1e-17), and a relative error on it means nothing.
    """
    norms = [p.grad.norm().item() for p in ref.parameters()]
    floor = 1e-6 * max(norms)
    return [(p, q) for p, q in zip(ref.parameters(), other.parameters()) if p.grad.norm().item() > floor]


def main() -> int:
    assert torch.cuda.is_available(), "no CUDA device"
    dev = torch.device("cuda")
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    failures = []

    def check(name: str, value: float, limit: float) -> None:
        ok = value <= limit
        print(f"{'ok  ' if ok else 'FAIL'} {name}: {value:.3e} (limit {limit:.0e})", flush=True)
        if not ok:
            failures.append(name)

    # 1. op vs grouped reference, float64
    torch.manual_seed(0)
    for cal_dim in ("cin", "cout"):
        conv = TAdaConv2d(16, 24, 3, stride=2, padding=1, groups=2, cal_dim=cal_dim).double().to(dev)
        x = torch.randn(2, 16, 5, 15, 13, dtype=torch.float64, device=dev, requires_grad=True)
        a = torch.randn(2, 16 if cal_dim == "cin" else 24, 5, 1, 1, dtype=torch.float64, device=dev, requires_grad=True)
        out = conv(x, a)
        ref = tada_conv2d_grouped_reference(x, a, conv.weight, stride=2, padding=1, groups=2, cal_dim=cal_dim)
        g = torch.randn_like(out)
        grads = torch.autograd.grad(out, [x, a, conv.weight], g)
        grads_ref = torch.autograd.grad(ref, [x, a, conv.weight], g)
        check(f"tadaconv2d {cal_dim} float64 forward", (out - ref).abs().max().item(), 1e-10)
        check(f"tadaconv2d {cal_dim} float64 grads", max((p - q).abs().max().item() for p, q in zip(grads, grads_ref)), 1e-10)

    # 2. small TAda2D, CUDA vs CPU
    torch.manual_seed(1)
    cpu = live(create_model("tada2d_r50", num_classes=10, **SMALL), 2)
    gpu = copy.deepcopy(cpu).to(dev)
    x = torch.randn(4, 3, 8, 64, 64)
    y = torch.randint(0, 10, (4,))
    for m in (cpu, gpu):
        m.channels_last = True
    for mode in ("train", "eval"):
        cpu.train(mode == "train")
        gpu.train(mode == "train")
        out_c = cpu(x)
        out_g = gpu(x.to(dev))
        check(f"small tada2d {mode} logits cuda vs cpu", rel(out_g.cpu(), out_c), 1e-4)
        if mode == "train":
            F.cross_entropy(out_c, y).backward()
            F.cross_entropy(out_g, y.to(dev)).backward()
            worst = max(rel(pg.grad.cpu(), pc.grad) for pc, pg in _live_grads(cpu, gpu))
            check("small tada2d grads cuda vs cpu (worst tensor)", worst, 1e-3)

    # 3. bf16 autocast vs fp32
    gpu.eval()
    with torch.no_grad():
        ref = gpu(x.to(dev))
        with torch.autocast("cuda", dtype=torch.bfloat16):
            low = gpu(x.to(dev))
    check("small tada2d eval bf16 autocast vs fp32", rel(low, ref), 3e-2)

    # 4. torch.compile vs eager
    compiled = torch.compile(gpu)
    with torch.no_grad():
        check("small tada2d eval compiled vs eager", rel(compiled(x.to(dev)), ref), 1e-4)
    gpu.train()
    for p in gpu.parameters():
        p.grad = None
    eager_model = copy.deepcopy(gpu)
    F.cross_entropy(compiled(x.to(dev)), y.to(dev)).backward()
    F.cross_entropy(eager_model(x.to(dev)), y.to(dev)).backward()
    worst = max(rel(pc.grad, pe.grad) for pe, pc in _live_grads(eager_model, gpu))
    check("small tada2d train grads compiled vs eager (worst tensor)", worst, 1e-3)
    print("FAILED: " + ", ".join(failures) if failures else "all CUDA model checks passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

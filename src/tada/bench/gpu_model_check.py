"""CUDA correctness of the model side, in seconds: the checks a CPU-only CI cannot make.

1. TAdaConv2d (fast form) vs the official grouped form on CUDA, float64, values and gradients.
2. A small TAda2D: CUDA vs CPU (fp32, TF32 off), train and eval, logits and gradients.
3. bf16 autocast vs fp32 on CUDA (relative error of the logits).
4. torch.compile vs eager on CUDA (fp32 eval and a train step's gradients).

    python -m tada.bench.gpu_model_check
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
                bias = 1.0 if name.endswith("b_avgpool_bn.weight") else 0.0
                p.copy_(torch.randn(p.shape, generator=gen) * 0.2 + bias)
    return model


def grads_of(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().cpu().double() for n, p in model.named_parameters() if p.grad is not None}


def worst_grad_error(test: dict[str, torch.Tensor], ref: dict[str, torch.Tensor]) -> tuple[float, str]:
    """Largest per-tensor relative error, with every tensor measured against the largest gradient norm.

    Per-tensor relative errors mean nothing for gradients that are zero in exact arithmetic (a bias
    followed by a train-mode BN, ``b_rf.a.bias``, gets rounding noise), so the denominator is
    floored at 1e-6 of the largest norm.
    """
    top = max(g.norm().item() for g in ref.values())
    return max((((test[n] - g).norm() / max(g.norm().item(), 1e-6 * top)).item(), n) for n, g in ref.items())


def global_grad_error(test: dict[str, torch.Tensor], ref: dict[str, torch.Tensor]) -> float:
    """Relative error of all gradients as one vector."""
    a = torch.cat([test[n].flatten() for n in ref])
    b = torch.cat([g.flatten() for g in ref.values()])
    return ((a - b).norm() / b.norm()).item()


def main() -> int:
    # `--device cpu` smoke-tests this script without a GPU (the "cuda" rows then compare two CPU copies)
    dev = torch.device(sys.argv[sys.argv.index("--device") + 1] if "--device" in sys.argv else "cuda")
    assert dev.type != "cuda" or torch.cuda.is_available(), "no CUDA device"
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
        worst = max((p - q).abs().max().item() for p, q in zip(grads, grads_ref))
        check(f"tadaconv2d {cal_dim} float64 grads", worst, 1e-10)

    # 2. small TAda2D, CUDA vs CPU: float64 on both (the kernels' correctness, to ~1e-12), then
    #    float32 on CUDA against float64 (the train-mode network is ill-conditioned in places: BN
    #    over few frames after a strong calibration, ReLU kinks; float32 on a CPU is also ~1e-2 off
    #    float64 on a few small tensors, so float32 gradients are checked as one vector)
    torch.manual_seed(1)
    cpu64 = live(create_model("tada2d_r50", num_classes=10, **SMALL), 2).double()
    gpu64 = copy.deepcopy(cpu64).to(dev)
    gpu = copy.deepcopy(cpu64).float().to(dev)
    x = torch.randn(4, 3, 8, 64, 64)
    y = torch.randint(0, 10, (4,))
    for m in (cpu64, gpu64, gpu):
        m.channels_last = True
    for mode in ("train", "eval"):
        for m in (cpu64, gpu64, gpu):
            m.train(mode == "train")
        out_e = cpu64(x.double())
        out_g64 = gpu64(x.double().to(dev))
        out_g = gpu(x.to(dev))
        check(f"small tada2d {mode} logits cuda float64 vs cpu float64", rel(out_g64.cpu(), out_e), 1e-10)
        check(f"small tada2d {mode} logits cuda float32 vs cpu float64", rel(out_g.cpu().double(), out_e), 1e-4)
        if mode == "train":
            for out in (out_e, out_g64, out_g):
                F.cross_entropy(out, y.to(out.device)).backward()
            worst, where = worst_grad_error(grads_of(gpu64), grads_of(cpu64))
            check(f"small tada2d grads cuda float64 vs cpu float64 (worst tensor: {where})", worst, 1e-8)
            # float32 on this project's CPU: 7.3e-3 on the same check
            check("small tada2d grads cuda float32 vs cpu float64 (all as one vector)",
                  global_grad_error(grads_of(gpu), grads_of(cpu64)), 3e-2)

    # 3. bf16 autocast vs fp32
    gpu.eval()
    with torch.no_grad():
        ref = gpu(x.to(dev))
        with torch.autocast(dev.type, dtype=torch.bfloat16):
            low = gpu(x.to(dev))
    check("small tada2d eval bf16 autocast vs fp32", rel(low, ref), 3e-2)

    # 4. torch.compile vs eager
    if dev.type != "cuda":
        print("compile rows skipped off CUDA")
        print("FAILED: " + ", ".join(failures) if failures else "all model checks passed")
        return 1 if failures else 0
    # float64 on the GPU: compiled and eager must agree to rounding, values and gradients
    gpu64.eval()
    compiled = torch.compile(gpu64)
    with torch.no_grad():
        check("small tada2d eval compiled vs eager (float64)",
              rel(compiled(x.double().to(dev)), gpu64(x.double().to(dev))), 1e-10)
    gpu64.train()
    eager64 = copy.deepcopy(gpu64)
    for m in (gpu64, eager64):
        for p in m.parameters():
            p.grad = None
    F.cross_entropy(compiled(x.double().to(dev)), y.to(dev)).backward()
    F.cross_entropy(eager64(x.double().to(dev)), y.to(dev)).backward()
    worst, where = worst_grad_error(grads_of(gpu64), grads_of(eager64))
    check(f"small tada2d train grads compiled vs eager (float64, worst tensor: {where})", worst, 1e-8)
    print("FAILED: " + ", ".join(failures) if failures else "all CUDA model checks passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

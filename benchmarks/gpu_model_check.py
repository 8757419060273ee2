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


def grad_errors(exact: torch.nn.Module, *models: torch.nn.Module) -> list[tuple[str, list[float]]]:
    """Per parameter, each model's relative gradient error against ``exact`` (a float64 copy).

    Parameters whose float64 gradient is zero in exact arithmetic are left out: a bias followed
    by a train-mode BN (``b_rf.a.bias``) gets rounding noise, and a relative error on noise means
    nothing. The train-mode network is ill-conditioned in places (BN over few frames after a
    strong calibration): float32 on the CPU is itself ~1e-2 off float64 on some tensors, so the
    checks below compare each float32 error with the CPU float32 error on the same tensor.
    """
    norms = {n: p.grad.norm().item() for n, p in exact.named_parameters()}
    floor = 1e-9 * max(norms.values())
    params = [dict(m.named_parameters()) for m in models]
    return [(n, [rel(ps[n].grad.cpu().double(), p.grad.cpu()) for ps in params])
            for n, p in exact.named_parameters() if norms[n] > floor]


def worst_vs(errors: list[tuple[str, list[float]]], test: int, base: int) -> tuple[float, str]:
    """Largest (error of model ``test``) / (error of model ``base`` + 1e-5) over the parameters."""
    return max(((e[test] / (e[base] + 1e-5)), f"{n}: {e[test]:.2e} vs {e[base]:.2e}") for n, e in errors)


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
        check(f"tadaconv2d {cal_dim} float64 grads", max((p - q).abs().max().item() for p, q in zip(grads, grads_ref)), 1e-10)

    # 2. small TAda2D, CUDA vs CPU
    torch.manual_seed(1)
    cpu = live(create_model("tada2d_r50", num_classes=10, **SMALL), 2)
    exact = copy.deepcopy(cpu).double()
    gpu = copy.deepcopy(cpu).to(dev)
    x = torch.randn(4, 3, 8, 64, 64)
    y = torch.randint(0, 10, (4,))
    for m in (cpu, gpu, exact):
        m.channels_last = True
    for mode in ("train", "eval"):
        for m in (cpu, gpu, exact):
            m.train(mode == "train")
        out_c = cpu(x)
        out_g = gpu(x.to(dev))
        out_e = exact(x.double())
        check(f"small tada2d {mode} logits cuda vs float64", rel(out_g.cpu().double(), out_e), 1e-4)
        check(f"small tada2d {mode} logits cpu vs float64", rel(out_c.double(), out_e), 1e-4)
        if mode == "train":
            F.cross_entropy(out_c, y).backward()
            F.cross_entropy(out_g, y.to(dev)).backward()
            F.cross_entropy(out_e, y).backward()
            ratio, where = worst_vs(grad_errors(exact, gpu, cpu), 0, 1)
            print(f"     worst gradient, cuda fp32 vs cpu fp32 error against float64: {where}")
            check("small tada2d grads: cuda error / cpu fp32 error (worst tensor)", ratio, 10.0)

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
    compiled = torch.compile(gpu)
    with torch.no_grad():
        check("small tada2d eval compiled vs eager", rel(compiled(x.to(dev)), ref), 1e-4)
    gpu.train()
    for p in gpu.parameters():
        p.grad = None
    eager_model = copy.deepcopy(gpu)
    exact = copy.deepcopy(gpu).double()
    F.cross_entropy(compiled(x.to(dev)), y.to(dev)).backward()
    F.cross_entropy(eager_model(x.to(dev)), y.to(dev)).backward()
    F.cross_entropy(exact(x.to(dev).double()), y.to(dev)).backward()
    ratio, where = worst_vs(grad_errors(exact, gpu, eager_model), 0, 1)
    print(f"     worst gradient, compiled vs eager error against float64: {where}")
    check("small tada2d train grads: compiled error / eager error (worst tensor)", ratio, 10.0)
    print("FAILED: " + ", ".join(failures) if failures else "all CUDA model checks passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

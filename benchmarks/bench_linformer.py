"""Linformer attention: pyops backends beside the eager reference (einsum projection + softmax),
the best stock composition a user can write today (contiguous matmul projections, then
F.scaled_dot_product_attention; role "alternative") and exact attention (SDPA on the full
sequence; role "exact"), forward and forward+backward, E shared by the heads or per head."""

import pytest
import torch
import torch.nn.functional as F

import pyops
from pyops import reference
from common import pick_impl

# (device, B, H, n, d, k, dtype): the spec's GPU cases, and a small CPU case
CASES = [
    *[
        pytest.param("cuda", 4, 12, n, 64, 256, torch.bfloat16, id=f"cuda-B4-H12-n{n}-d64-k256-bf16", marks=pytest.mark.gpu)
        for n in (4096, 16384, 65536)
    ],
    pytest.param("cpu", 2, 4, 1024, 32, 64, torch.float32, id="cpu-B2-H4-n1024-d32-k64-fp32"),
]


def stock_composition(q, k, v, E):
    """K' = Eᵀ K and V' = Eᵀ V as contiguous matmuls, then SDPA (cuDNN/flash pick on GPU)."""
    Et = E.transpose(-1, -2)  # (k, n) or (H, k, n)
    return F.scaled_dot_product_attention(q, torch.matmul(Et, k), torch.matmul(Et, v))


def impls(device):
    out = [
        ("reference", "reference", lambda q, k, v, E: reference.linformer_attention(q, k, v, E)),
        ("matmul+SDPA", "alternative", stock_composition),
        ("exact SDPA", "exact", lambda q, k, v, E: F.scaled_dot_product_attention(q, k, v)),
    ]
    backends = ("cuda", "triton") if device == "cuda" else ("cpu",)
    out += [(f"pyops-{b}", "pyops", lambda q, k, v, E, b=b: pyops.linformer_attention(q, k, v, E, backend=b)) for b in backends]
    return out


@pytest.mark.parametrize("device,B,H,n,d,k,dtype", CASES)
@pytest.mark.parametrize("proj", ["shared", "per_head"])
@pytest.mark.parametrize("pass_", ["fwd", "fwd+bwd"])
@pytest.mark.parametrize("impl", range(5))
def bench_linformer_attention(measure, device, B, H, n, d, k, dtype, proj, pass_, impl):
    name, role, fn = pick_impl(device, impls(device), impl)
    if role == "exact" and pass_ == "fwd+bwd" and n > 16384:
        pytest.skip("exact attention forward+backward at this length takes seconds; forward shown")
    gen = torch.Generator(device).manual_seed(0)  # drawn on the device: CPU draws of GPU-sized inputs take seconds
    q, kk, v = (torch.randn(B, H, n, d, generator=gen, device=device).to(dtype) for _ in range(3))
    E = (torch.randn((H, n, k) if proj == "per_head" else (n, k), generator=gen, device=device) / n**0.5).to(dtype)
    group = f"linformer_attention {pass_} {device} B{B} H{H} n{n} d{d} k{k} {str(dtype).removeprefix('torch.')} E {proj}"
    if pass_ == "fwd":
        with torch.no_grad():
            measure(lambda: fn(q, kk, v, E), group=group, impl=name, role=role, device=device)
        return
    leaves = [t.requires_grad_() for t in (q, kk, v, E)]
    g = torch.randn(B, H, n, d, generator=gen, device=device).to(dtype)
    measure(lambda: torch.autograd.grad(fn(*leaves), leaves, g, allow_unused=True), group=group, impl=name, role=role, device=device)

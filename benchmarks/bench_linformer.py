"""Linformer attention: pyops backends beside the eager reference (einsum projection + softmax),
the best stock composition a user can write today (contiguous matmul projections, then
F.scaled_dot_product_attention; role "alternative") and exact attention (SDPA on the full
sequence; role "exact"), forward and forward+backward, E shared by the heads or per head."""

import pytest
import torch
import torch.nn.functional as F
from common import MATH, pick_impl, work

import pyops
from pyops import reference

# (device, B, H, n, d, k, dtype): the spec's GPU cases, the realistic CPU sizes of issue #15, a small CPU case
CASES = [
    *[
        pytest.param("cuda", 4, 12, n, 64, 256, torch.bfloat16, id=f"cuda-B4-H12-n{n}-d64-k256-bf16", marks=pytest.mark.gpu)
        for n in (4096, 16384, 65536)
    ],
    pytest.param("cpu", 2, 8, 2048, 64, 128, torch.float32, id="cpu-B2-H8-n2048-d64-k128-fp32", marks=pytest.mark.large),
    pytest.param("cpu", 2, 8, 4096, 64, 256, torch.float32, id="cpu-B2-H8-n4096-d64-k256-fp32", marks=pytest.mark.large),
    pytest.param("cpu", 2, 4, 1024, 32, 64, torch.float32, id="cpu-B2-H4-n1024-d32-k64-fp32"),
]


def linformer_work(B, H, n, d, k, dtype, proj, pass_):
    """Forward: q, k, v and E in, the output out; K' = Eᵀ K and V' = Eᵀ V, Q K'ᵀ and P V' are
    2·n·k·d FLOP each per (batch, head). Backward without recomputation: q, k, v, E, the output
    and its gradient in, dq, dk, dv, dE out; dV', dP, dQ, dK' and dK, dV, dE (two) are 2·n·k·d
    each. Tensor-core math of the input dtype (TF32 rules aside)."""
    size = torch.finfo(dtype).bits // 8
    qkv, e = B * H * n * d, (H if proj == "per_head" else 1) * n * k
    if pass_ == "fwd":
        return work(size * (4 * qkv + e), 8 * B * H * n * k * d, MATH[dtype])
    return work(size * (12 * qkv + 3 * e), 24 * B * H * n * k * d, MATH[dtype])


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


@pytest.mark.parametrize("impl", range(5))
@pytest.mark.parametrize("pass_", ["fwd", "fwd+bwd"])
@pytest.mark.parametrize("proj", ["shared", "per_head"])
@pytest.mark.parametrize("device,B,H,n,d,k,dtype", CASES)
def bench_linformer_attention(measure, device, B, H, n, d, k, dtype, proj, pass_, impl):
    name, role, fn = pick_impl(device, impls(device), impl)
    if role == "exact" and pass_ == "fwd+bwd" and n > 16384:
        pytest.skip("exact attention forward+backward at this length takes seconds; forward shown")
    if role == "exact" and device == "cpu" and n > 1024:
        pytest.skip("exact attention is a GPU target; on the CPU it is shown at the small size only")
    gen = torch.Generator(device).manual_seed(0)  # drawn on the device: CPU draws of GPU-sized inputs take seconds
    q, kk, v = (torch.randn(B, H, n, d, generator=gen, device=device).to(dtype) for _ in range(3))
    E = (torch.randn((H, n, k) if proj == "per_head" else (n, k), generator=gen, device=device) / n**0.5).to(dtype)
    group = f"linformer_attention {pass_} {device} B{B} H{H} n{n} d{d} k{k} {str(dtype).removeprefix('torch.')} E {proj}"
    kw = dict(group=group, impl=name, role=role, device=device, work=linformer_work(B, H, n, d, k, dtype, proj, pass_))
    if pass_ == "fwd":
        with torch.no_grad():
            measure(lambda: fn(q, kk, v, E), **kw)
        return
    leaves = [t.requires_grad_() for t in (q, kk, v, E)]
    g = torch.randn(B, H, n, d, generator=gen, device=device).to(dtype)
    measure(lambda: torch.autograd.grad(fn(*leaves), leaves, g, allow_unused=True), **kw)

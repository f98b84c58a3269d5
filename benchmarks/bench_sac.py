"""SAConv2d: pyops beside the eager module (the reference: mmcv's composition in plain PyTorch)
and the two cuDNN convolutions the layer is built on (the alternative, and the speed floor),
forward and forward+backward, bf16 channels_last on GPU (the spec's shapes) and a small CPU case.
Every pyops backend runs both forward algorithms ("composition": two library convolutions plus
fused kernels; "igemm": the dual-accumulator kernel), so the faster one per shape can be the
default (pyops.sac.default_algorithm)."""

import pytest
import torch
from common import MATH, pick_impl, work

import pyops
from pyops import reference
from pyops.sac import random_parameters

# (device, dtype, N, C, H, W): the spec's GPU cases, the CPU size of issue #18, a small CPU case
CASES = [
    pytest.param("cuda", torch.bfloat16, 8, 256, 64, 64, id="cuda-N8-C256-64x64-bf16", marks=pytest.mark.gpu),
    pytest.param("cuda", torch.bfloat16, 8, 512, 32, 32, id="cuda-N8-C512-32x32-bf16", marks=pytest.mark.gpu),
    pytest.param("cuda", torch.bfloat16, 2, 256, 200, 200, id="cuda-N2-C256-200x200-bf16", marks=pytest.mark.gpu),
    pytest.param("cpu", torch.float32, 2, 64, 64, 64, id="cpu-N2-C64-64x64-fp32", marks=pytest.mark.large),
    pytest.param("cpu", torch.float32, 2, 32, 32, 32, id="cpu-N2-C32-32x32-fp32"),
]


def sac_work(N, C, H, W, dtype, pass_, k=3):
    """C -> C channels, stride 1, same size out. The spec's floor: the two convolutions at
    tensor-core speed (2·N·H·W·C·C·k² FLOP each) plus one read of x and one write of the output
    (and the two weights). Backward: input and weight gradients of both convolutions (twice the
    forward's FLOPs); x and the output gradient in, dx and the weight gradients out."""
    size, act, weights = torch.finfo(dtype).bits // 8, N * C * H * W, 2 * C * C * k * k
    flops = 2 * 2 * N * H * W * C * C * k * k
    if pass_ == "fwd":
        return work(size * (2 * act + weights), flops, MATH[dtype])
    return work(size * (5 * act + 3 * weights), 3 * flops, MATH[dtype])


def impls(device):
    out = [
        ("eager SAConv2d", "reference", lambda x, p: reference.sac_conv2d(x, *p, 1, 1, 1, 1)),
        ("two cuDNN convolutions" if device == "cuda" else "two convolutions", "alternative",
         lambda x, p: reference.two_convolutions(x, p[0], 1, 1, 1, 1)),
    ]
    for backend in ("cuda", "triton") if device == "cuda" else ("cpu",):
        for algorithm in ("composition", "igemm"):
            out.append((f"pyops-{backend}-{algorithm}", "pyops",
                        lambda x, p, b=backend, a=algorithm: pyops.sac_conv2d(x, *p, 1, 1, 1, 1, backend=b, algorithm=a)))
    return out


@pytest.mark.parametrize("impl", range(6))
@pytest.mark.parametrize("pass_", ["fwd", "fwd+bwd"])
@pytest.mark.parametrize("device,dtype,N,C,H,W", CASES)
def bench_sac_conv2d(measure, device, dtype, N, C, H, W, pass_, impl):
    name, role, fn = pick_impl(device, impls(device), impl)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(N, C, H, W, generator=gen).to(device=device, dtype=dtype, memory_format=torch.channels_last)
    params = random_parameters(C, C, 3, 1, True, dtype=dtype, device=device, generator=gen)
    group = f"sac_conv2d {pass_} channels_last {device} N{N} C{C} {H}x{W} {str(dtype).split('.')[-1]}"
    kw = dict(group=group, impl=name, role=role, device=device, work=sac_work(N, C, H, W, dtype, pass_))
    if pass_ == "fwd":
        with torch.no_grad():
            measure(lambda: fn(x, params), **kw)
        return
    leaves = [x.requires_grad_(), *[p.requires_grad_() for p in params]]
    g = torch.randn(N, C, H, W, generator=gen).to(device=device, dtype=dtype, memory_format=torch.channels_last)

    def fwd_bwd():
        out = fn(x, params)
        if role == "alternative":  # the two convolutions' outputs, gradients to x and the weight
            return torch.autograd.grad(out, leaves[:2], (g, g))
        return torch.autograd.grad(out, leaves, g)

    measure(fwd_bwd, **kw)

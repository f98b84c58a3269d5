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


# ---- deformable convolution and the deformable SAC layer -------------------------------------------

try:
    import torchvision.ops as tv_ops
except ImportError:  # the torchvision rows are skipped
    tv_ops = None

# (device, dtype, N, C, H, W): the spec's first GPU case, the CPU size of issue #18, a small CPU case
DEFORM_CASES = [
    pytest.param("cuda", torch.bfloat16, 8, 256, 64, 64, id="cuda-N8-C256-64x64-bf16", marks=pytest.mark.gpu),
    pytest.param("cpu", torch.float32, 2, 64, 64, 64, id="cpu-N2-C64-64x64-fp32"),
    pytest.param("cpu", torch.float32, 2, 32, 32, 32, id="cpu-N2-C32-32x32-fp32"),
]


def deform_work(N, C, H, W, dtype, pass_, convs=1, k=3):
    """C -> C channels, 3x3, stride 1. Floor: the GEMM (2·N·H·W·C·C·k² FLOP per convolution, three
    times that with the backward) and the column traffic (C·k²·H·W·N values written and read per
    convolution, twice more backward); the input and offsets are small beside them."""
    size = torch.finfo(dtype).bits // 8
    cols = N * C * k * k * H * W
    flops = 2 * N * H * W * C * C * k * k * convs
    if pass_ == "fwd":
        return work(size * 2 * cols * convs, flops, MATH[dtype])
    return work(size * 6 * cols * convs, 3 * flops, MATH[dtype])


def _tv_deform(x, offset, weight, bias, stride, padding, dilation):
    return tv_ops.deform_conv2d(x, offset, weight, bias, stride=stride, padding=padding, dilation=dilation)


def deform_impls(device):
    out = [("reference deform_conv2d", "reference", reference.deform_conv2d)]
    if tv_ops is not None:
        out.append(("torchvision deform_conv2d", "alternative", _tv_deform))
    for backend in ("cuda", "triton") if device == "cuda" else ("cpu",):
        out.append((f"pyops-{backend}", "pyops", lambda *a, b=backend: pyops.deform_conv2d(*a, backend=b)))
    return out


@pytest.mark.parametrize("impl", range(4))
@pytest.mark.parametrize("pass_", ["fwd", "fwd+bwd"])
@pytest.mark.parametrize("device,dtype,N,C,H,W", DEFORM_CASES)
def bench_deform_conv2d(measure, device, dtype, N, C, H, W, pass_, impl):
    name, role, fn = pick_impl(device, deform_impls(device), impl)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(N, C, H, W, generator=gen).to(device=device, dtype=dtype, memory_format=torch.channels_last)
    offset = (2 * torch.randn(N, 18, H, W, generator=gen)).to(device=device, dtype=dtype)
    weight = (torch.randn(C, C, 3, 3, generator=gen) / (3 * C ** 0.5)).to(device=device, dtype=dtype)
    group = f"deform_conv2d {pass_} channels_last {device} N{N} C{C} {H}x{W} {str(dtype).split('.')[-1]}"
    kw = dict(group=group, impl=name, role=role, device=device, work=deform_work(N, C, H, W, dtype, pass_))
    if pass_ == "fwd":
        with torch.no_grad():
            measure(lambda: fn(x, offset, weight, None, (1, 1), (1, 1), (1, 1)), **kw)
        return
    leaves = [x.requires_grad_(), offset.requires_grad_(), weight.requires_grad_()]
    g = torch.randn(N, C, H, W, generator=gen).to(device=device, dtype=dtype)
    measure(lambda: torch.autograd.grad(fn(*leaves, None, (1, 1), (1, 1), (1, 1)), leaves, g), **kw)


def deform_sac_impls(device):
    out = [("eager deformable SAConv2d", "reference", lambda x, p: reference.sac_deform_conv2d(x, *p, 1, 1, 1, 1))]
    if tv_ops is not None:
        out.append(("SAConv2d composed with torchvision deform_conv2d", "alternative",
                    lambda x, p: reference.sac_deform_conv2d(x, *p, 1, 1, 1, 1, deform=_tv_deform)))
    for backend in ("cuda", "triton") if device == "cuda" else ("cpu",):
        out.append((f"pyops-{backend}", "pyops", backend))
    return out


@pytest.mark.parametrize("impl", range(4))
@pytest.mark.parametrize("pass_", ["fwd", "fwd+bwd"])
@pytest.mark.parametrize("device,dtype,N,C,H,W", DEFORM_CASES)
def bench_sac_deform(measure, device, dtype, N, C, H, W, pass_, impl):
    name, role, fn = pick_impl(device, deform_sac_impls(device), impl)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(N, C, H, W, generator=gen).to(device=device, dtype=dtype, memory_format=torch.channels_last)
    params = list(random_parameters(C, C, 3, 1, True, dtype=dtype, device=device, generator=gen))
    offsets = [(torch.randn(*shape, generator=gen) * scale).to(device=device, dtype=dtype)
               for _ in range(2) for shape, scale in (((18, C, 3, 3), 2 / (3 * C ** 0.5)), ((18,), 1.0))]
    params[-1:-1] = offsets  # sac_deform_conv2d's order: ..., offset convs, bias
    trainable = [p for i, p in enumerate(params) if i not in (1, 2)]  # gamma, beta are buffers
    if role == "pyops":
        layer = pyops.SAConv2d(C, C, 3, padding=1, use_deform=True, backend=fn).to(device=device, dtype=dtype)
        names = ["weight", "weight_gamma", "weight_beta", "weight_diff", "switch.weight", "switch.bias",
                 "pre_context.weight", "pre_context.bias", "post_context.weight", "post_context.bias",
                 "offset_s.weight", "offset_s.bias", "offset_l.weight", "offset_l.bias", "bias"]
        layer.load_state_dict(dict(zip(names, params)), strict=True)
        trainable = list(layer.parameters())

        def fn(x, p):
            return layer(x)
    group = f"sac_deform {pass_} channels_last {device} N{N} C{C} {H}x{W} {str(dtype).split('.')[-1]}"
    kw = dict(group=group, impl=name, role=role, device=device, work=deform_work(N, C, H, W, dtype, pass_, convs=2))
    if pass_ == "fwd":
        with torch.no_grad():
            measure(lambda: fn(x, params), **kw)
        return
    leaves = [x.requires_grad_(), *[p.requires_grad_() for p in trainable]]
    g = torch.randn(N, C, H, W, generator=gen).to(device=device, dtype=dtype)
    measure(lambda: torch.autograd.grad(fn(x, params), leaves, g), **kw)

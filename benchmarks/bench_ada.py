"""ADA augmentation: the pyops pipeline beside the reference chain (pad, upfirdn-style up/down
sampling with conv2d, affine_grid + grid_sample, then the colour, filter, noise and cutout stages),
which stands in for NVIDIA's pure-PyTorch pipeline, forward and forward+backward, at p = 0.6.

``bench_augment``: the parameters are drawn once per case (torch.manual_seed), so every
implementation runs the same augmentation; the timed call is the whole pipeline for those
parameters. ``bench_augment_pipe``: one whole ``AugmentPipe`` call, parameter sampling included,
as a training step makes it."""

import pytest
import torch
from common import pick_impl, work

import pyops
from pyops.reference import ada as ref

# (device, preset, B, C, H, W): the spec's GPU cases, the CPU size of issue #17, small CPU cases
CASES = [
    pytest.param("cuda", "bgc", 64, 3, 256, 256, id="cuda-bgc-B64-3x256x256", marks=pytest.mark.gpu),
    pytest.param("cuda", "bgc", 16, 3, 1024, 1024, id="cuda-bgc-B16-3x1024x1024", marks=pytest.mark.gpu),
    pytest.param("cuda", "bgcfnc", 64, 3, 256, 256, id="cuda-bgcfnc-B64-3x256x256", marks=pytest.mark.gpu),
    pytest.param("cuda", "bgcfnc", 16, 3, 1024, 1024, id="cuda-bgcfnc-B16-3x1024x1024", marks=pytest.mark.gpu),
    pytest.param("cpu", "bgc", 8, 3, 128, 128, id="cpu-bgc-B8-3x128x128", marks=pytest.mark.large),
    pytest.param("cpu", "bgcfnc", 8, 3, 128, 128, id="cpu-bgcfnc-B8-3x128x128", marks=pytest.mark.large),
    pytest.param("cpu", "bgc", 4, 3, 32, 32, id="cpu-bgc-B4-3x32x32"),
    pytest.param("cpu", "bgcfnc", 4, 3, 32, 32, id="cpu-bgcfnc-B4-3x32x32"),
]

GEOM_COLOR_FLOP = 266  # per pixel and channel: the spec's count for an exact fused geometric + colour stage
FILTER_FLOP = 2 * 2 * ref.filter_bank().shape[1] + 3  # separable 43-tap filter (two passes of multiply-adds), noise, cutout


def ada_work(B, C, H, W, preset, pass_, noise_in_memory):
    """fp32 images: one read and one write per pixel and channel (twice with the backward, which
    costs the forward's FLOPs again), plus one read of the noise field when it is an explicit
    parameter (``noise_in_memory``; a whole pipe call can draw it on the chip)."""
    pixels = B * C * H * W
    flops = pixels * (GEOM_COLOR_FLOP + (FILTER_FLOP if "f" in preset else 0))
    images = (2 if pass_ == "fwd" else 4) + (1 if noise_in_memory and "n" in preset else 0)
    return work(4 * pixels * images, flops * (1 if pass_ == "fwd" else 2), "fp32")


def impls(device):
    out = [("reference", "reference", lambda x, prm: ref.augment(x, **prm))]
    backends = ("cuda", "triton") if device == "cuda" else ("cpu",)
    out += [(f"pyops-{b}", "pyops", lambda x, prm, b=b: pyops.ada.augment(x, **prm, backend=b)) for b in backends]
    return out


@pytest.mark.parametrize("impl", range(3))
@pytest.mark.parametrize("pass_", ["fwd", "fwd+bwd"])
@pytest.mark.parametrize("device,preset,B,C,H,W", CASES)
def bench_augment(measure, device, preset, B, C, H, W, pass_, impl):
    name, role, fn = pick_impl(device, impls(device), impl)
    gen = torch.Generator(device).manual_seed(0)  # drawn on the device: CPU draws of GPU-sized inputs take seconds
    x = torch.rand(B, C, H, W, generator=gen, device=device) * 2 - 1
    torch.manual_seed(0)
    params = pyops.AugmentPipe.from_preset(preset, p=0.6).to(device).sample_params(x)
    group = f"ada {preset} {pass_} {device} B{B} {C}x{H}x{W} fp32 p=0.6"
    kw = dict(group=group, impl=name, role=role, device=device, work=ada_work(B, C, H, W, preset, pass_, True))
    if pass_ == "fwd":
        measure(lambda: fn(x, params), **kw)
        return
    x.requires_grad_()
    g = torch.randn(B, C, H, W, generator=gen, device=device)
    measure(lambda: torch.autograd.grad(fn(x, params), x, g), **kw)


# (device, B, C, H, W): issue #17's whole-call targets (bgcfnc, p = 0.6), and a small CPU case
PIPE_CASES = [
    pytest.param("cuda", 64, 3, 256, 256, id="cuda-B64-3x256x256", marks=pytest.mark.gpu),
    pytest.param("cuda", 16, 3, 1024, 1024, id="cuda-B16-3x1024x1024", marks=pytest.mark.gpu),
    pytest.param("cpu", 4, 3, 32, 32, id="cpu-B4-3x32x32"),
]


def pipe_impls(device):
    """(name, role, backend): the reference is the same sampling code followed by the reference chain."""
    out = [("reference (sample_params + chain)", "reference", None)]
    return out + [(f"pyops-{b}", "pyops", b) for b in (("cuda", "triton") if device == "cuda" else ("cpu",))]


@pytest.mark.parametrize("impl", range(3))
@pytest.mark.parametrize("device,B,C,H,W", PIPE_CASES)
def bench_augment_pipe(measure, device, B, C, H, W, impl):
    name, role, backend = pick_impl(device, pipe_impls(device), impl)
    pipe = pyops.AugmentPipe.from_preset("bgcfnc", p=0.6, backend=backend).to(device)
    fn = pipe if role == "pyops" else (lambda x: ref.augment(x, **pipe.sample_params(x)))
    x = torch.rand(B, C, H, W, generator=torch.Generator(device).manual_seed(0), device=device) * 2 - 1
    torch.manual_seed(0)
    measure(lambda: fn(x), group=f"AugmentPipe(bgcfnc) call fwd {device} B{B} {C}x{H}x{W} fp32 p=0.6", impl=name,
            role=role, device=device, work=ada_work(B, C, H, W, "bgcfnc", "fwd", False))

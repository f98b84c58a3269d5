"""ADA augmentation: the pyops pipeline beside the reference chain (pad, upfirdn-style up/down
sampling with conv2d, affine_grid + grid_sample, then the colour, filter, noise and cutout stages),
which stands in for NVIDIA's pure-PyTorch pipeline, forward and forward+backward, at p = 0.6.

The parameters are drawn once per case (torch.manual_seed), so every implementation runs the same
augmentation; the timed call includes the whole pipeline for those parameters."""

import pytest
import torch

import pyops
from pyops.reference import ada as ref
from common import pick_impl

# (device, preset, B, C, H, W): the spec's GPU cases, and a small CPU case
CASES = [
    pytest.param("cuda", "bgc", 64, 3, 256, 256, id="cuda-bgc-B64-3x256x256", marks=pytest.mark.gpu),
    pytest.param("cuda", "bgc", 16, 3, 1024, 1024, id="cuda-bgc-B16-3x1024x1024", marks=pytest.mark.gpu),
    pytest.param("cuda", "bgcfnc", 64, 3, 256, 256, id="cuda-bgcfnc-B64-3x256x256", marks=pytest.mark.gpu),
    pytest.param("cuda", "bgcfnc", 16, 3, 1024, 1024, id="cuda-bgcfnc-B16-3x1024x1024", marks=pytest.mark.gpu),
    pytest.param("cpu", "bgc", 4, 3, 32, 32, id="cpu-bgc-B4-3x32x32"),
]


def impls(device):
    out = [("reference", "reference", lambda x, prm: ref.augment(x, **prm))]
    backends = ("cuda", "triton") if device == "cuda" else ("cpu",)
    out += [(f"pyops-{b}", "pyops", lambda x, prm, b=b: pyops.ada.augment(x, **prm, backend=b)) for b in backends]
    return out


@pytest.mark.parametrize("device,preset,B,C,H,W", CASES)
@pytest.mark.parametrize("pass_", ["fwd", "fwd+bwd"])
@pytest.mark.parametrize("impl", range(3))
def bench_augment(measure, device, preset, B, C, H, W, pass_, impl):
    name, role, fn = pick_impl(device, impls(device), impl)
    gen = torch.Generator(device).manual_seed(0)  # drawn on the device: CPU draws of GPU-sized inputs take seconds
    x = torch.rand(B, C, H, W, generator=gen, device=device) * 2 - 1
    torch.manual_seed(0)
    params = pyops.AugmentPipe.from_preset(preset, p=0.6).to(device).sample_params(x)
    group = f"ada {preset} {pass_} {device} B{B} {C}x{H}x{W} fp32 p=0.6"
    if pass_ == "fwd":
        measure(lambda: fn(x, params), group=group, impl=name, role=role, device=device)
        return
    x.requires_grad_()
    g = torch.randn(B, C, H, W, generator=gen, device=device)
    measure(lambda: torch.autograd.grad(fn(x, params), x, g), group=group, impl=name, role=role, device=device)

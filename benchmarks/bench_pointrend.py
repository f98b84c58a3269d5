"""point_sample: pyops backends beside the reference and F.grid_sample (what detectron2, mmcv
and Mask2Former call today), forward and forward+backward, NCHW and channels_last."""

import pytest
import torch
import torch.nn.functional as F

import pyops
from pyops import reference

# (device, N, C, H, W, P): the spec's GPU case, and a small CPU case
CASES = [
    pytest.param("cuda", 8, 256, 200, 336, 12544, id="cuda-N8-C256-200x336-P12544", marks=pytest.mark.gpu),
    pytest.param("cpu", 2, 64, 64, 96, 2048, id="cpu-N2-C64-64x96-P2048"),
]


def grid_sample_points(x, c):
    return F.grid_sample(x, 2.0 * c.unsqueeze(2) - 1.0, mode="bilinear", padding_mode="zeros", align_corners=False).squeeze(3)


def impls(device):
    out = [
        ("reference", "reference", lambda x, c: reference.point_sample(x, c)),
        ("F.grid_sample", "alternative", grid_sample_points),
    ]
    if device == "cuda":
        out += [(f"pyops-{b}", "pyops", lambda x, c, b=b: pyops.point_sample(x, c, backend=b)) for b in ("cuda", "triton")]
    else:
        out += [("pyops-cpu", "pyops", lambda x, c: pyops.point_sample(x, c, backend="cpu"))]
    return out


@pytest.mark.parametrize("device,N,C,H,W,P", CASES)
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("pass_", ["fwd", "fwd+bwd"])
@pytest.mark.parametrize("impl", range(4))
def bench_point_sample(measure, device, N, C, H, W, P, layout, pass_, impl):
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    candidates = impls(device)
    if impl >= len(candidates):
        pytest.skip("no such implementation on this device")
    name, role, fn = candidates[impl]
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(N, C, H, W, generator=gen).to(device)
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    c = torch.rand(N, P, 2, generator=gen).to(device)
    group = f"point_sample {pass_} {layout} {device} N{N} C{C} {H}x{W} P{P} fp32"
    if pass_ == "fwd":
        measure(lambda: fn(x, c), group=group, impl=name, role=role, device=device)
        return
    x.requires_grad_()
    g = torch.randn(N, C, P, generator=gen).to(device)
    measure(lambda: torch.autograd.grad(fn(x, c), x, g), group=group, impl=name, role=role, device=device)

"""point_sample: pyops backends beside the reference and F.grid_sample (what detectron2, mmcv
and Mask2Former call today), forward and forward+backward, NCHW and channels_last."""

import pytest
import torch
import torch.nn.functional as F

import pyops
from pyops import reference
from common import pick_impl

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
    name, role, fn = pick_impl(device, impls(device), impl)
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


# (device, R, mask logits side, ground-truth side, points): Mask2Former's loss sampling
M2F_CASES = [
    pytest.param("cuda", 1600, 128, 512, 12544, id="cuda-R1600-128-gt512-N12544", marks=pytest.mark.gpu),
    pytest.param("cpu", 16, 32, 128, 784, id="cpu-R16-32-gt128-N784"),
]


@pytest.mark.parametrize("device,R,side,gt_side,N", M2F_CASES)
@pytest.mark.parametrize("impl", ["reference", "cpu", "cuda", "triton"])
def bench_mask2former_sampling(measure, device, R, side, gt_side, N, impl):
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    if (impl == "cpu") != (device == "cpu") and impl != "reference":
        pytest.skip("backend does not run on this device")
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(R, 1, side, side, generator=gen).to(device)
    gt = (torch.rand(R, gt_side, gt_side, generator=gen) > 0.5).to(device)
    group = f"mask2former sampling {device} R{R} {side}x{side} gt{gt_side} N{N} os3 b0.75"
    if impl == "reference":  # Mask2Former's lines; its masks are already float there
        gt_float = gt.float()
        fn = lambda: reference.sample_points_for_loss(logits, gt_float, N, 3.0, 0.75)  # noqa: E731
        measure(fn, group=group, impl="reference (Mask2Former eager)", role="reference", device=device)
    else:
        fn = lambda: pyops.sample_points_for_loss(logits, gt, N, 3.0, 0.75, backend=impl)  # noqa: E731
        measure(fn, group=group, impl=f"pyops-{impl}", device=device)


# (device, R, coarse side, steps, points): PointRend's mask subdivision inference
SUBDIVISION_CASES = [
    pytest.param("cuda", 100, 7, 5, 784, id="cuda-R100-7to224-N784", marks=pytest.mark.gpu),
    pytest.param("cpu", 20, 7, 4, 196, id="cpu-R20-7to112-N196"),
]


@pytest.mark.parametrize("device,R,side,steps,N", SUBDIVISION_CASES)
@pytest.mark.parametrize("impl", ["reference", "cpu", "cuda", "triton"])
def bench_subdivision_inference(measure, device, R, side, steps, N, impl):
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    if (impl == "cpu") != (device == "cpu") and impl != "reference":
        pytest.skip("backend does not run on this device")
    gen = torch.Generator().manual_seed(0)
    coarse = torch.randn(R, 1, side, side, generator=gen).to(device)
    fine = torch.randn(R, 1, side << steps, side << steps, generator=gen).to(device)

    def head(coords, indices):  # the same cheap stand-in point head for every implementation
        return F.grid_sample(fine, 2.0 * coords.unsqueeze(2) - 1.0, align_corners=False).squeeze(3)

    group = f"subdivision inference {device} R{R} {side}->{side << steps} N{N}"
    if impl == "reference":
        fn = lambda: reference.subdivision_inference(coarse, head, num_steps=steps, num_points=N)  # noqa: E731
        measure(fn, group=group, impl="reference (detectron2 eager)", role="reference", device=device)
    else:
        fn = lambda: pyops.subdivision_inference(coarse, head, num_steps=steps, num_points=N, backend=impl)  # noqa: E731
        measure(fn, group=group, impl=f"pyops-{impl}", device=device)

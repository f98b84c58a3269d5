"""point_sample: pyops backends beside the reference and F.grid_sample (what detectron2, mmcv
and Mask2Former call today), forward and forward+backward, NCHW and channels_last."""

import pytest
import torch
import torch.nn.functional as F
from common import pick_impl, work

import pyops
from pyops import reference

# (device, N, C, H, W, P): the spec's GPU case, the realistic CPU size of issue #16, a small CPU case
CASES = [
    pytest.param("cuda", 8, 256, 200, 336, 12544, id="cuda-N8-C256-200x336-P12544", marks=pytest.mark.gpu),
    pytest.param("cpu", 4, 256, 100, 168, 4096, id="cpu-N4-C256-100x168-P4096", marks=pytest.mark.large),
    pytest.param("cpu", 2, 64, 64, 96, 2048, id="cpu-N2-C64-64x96-P2048"),
]


def point_sample_work(N, C, H, W, P, pass_):
    """fp32. Forward: per point its 4 corner rows of C values and 2 coordinates in, C values out
    (the spec's floor model), 7 FLOP per value. Backward (to the input): the output gradient and the
    coordinates in, the whole input gradient out (zeros included), 8 FLOP per value."""
    nbytes, flops = 4 * N * P * (4 * C + C + 2), 7 * N * C * P
    if pass_ == "fwd+bwd":
        nbytes, flops = nbytes + 4 * N * P * (C + 2) + 4 * N * C * H * W, flops + 8 * N * C * P
    return work(nbytes, flops, "fp32")


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


@pytest.mark.parametrize("impl", range(4))
@pytest.mark.parametrize("pass_", ["fwd", "fwd+bwd"])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("device,N,C,H,W,P", CASES)
def bench_point_sample(measure, device, N, C, H, W, P, layout, pass_, impl):
    name, role, fn = pick_impl(device, impls(device), impl)
    gen = torch.Generator(device).manual_seed(0)  # drawn on the device: CPU draws of GPU-sized inputs take seconds
    x = torch.randn(N, C, H, W, generator=gen, device=device)
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    c = torch.rand(N, P, 2, generator=gen, device=device)
    group = f"point_sample {pass_} {layout} {device} N{N} C{C} {H}x{W} P{P} fp32"
    kw = dict(group=group, impl=name, role=role, device=device, work=point_sample_work(N, C, H, W, P, pass_))
    if pass_ == "fwd":
        measure(lambda: fn(x, c), **kw)
        return
    x.requires_grad_()
    g = torch.randn(N, C, P, generator=gen, device=device)
    measure(lambda: torch.autograd.grad(fn(x, c), x, g), **kw)


# (device, R, mask logits side, ground-truth side, points): Mask2Former's loss sampling; the spec's
# GPU case, the CPU size of issue #16 (ground truth at 4x the logits, as in the GPU case), a small one
M2F_CASES = [
    pytest.param("cuda", 1600, 128, 512, 12544, id="cuda-R1600-128-gt512-N12544", marks=pytest.mark.gpu),
    pytest.param("cpu", 100, 64, 256, 12544, id="cpu-R100-64-gt256-N12544", marks=pytest.mark.large),
    pytest.param("cpu", 16, 32, 128, 784, id="cpu-R16-32-gt128-N784"),
]


def mask2former_work(R, side, gt_side, N, oversample=3.0):
    """fp32 logits, bool masks. Per mask: the logits at the oversample * N candidates (4 corners
    each, or the whole mask when smaller), the bool masks at N points likewise, and out the
    coordinates, logits and labels of the N points (candidates drawn on the chip, no bytes);
    ~8 FLOP per sampled point (bilinear weights and uncertainty)."""
    candidates = int(oversample * N)
    nbytes = R * (4 * min(side * side, 4 * candidates) + min(gt_side * gt_side, 4 * N) + 16 * N)
    return work(nbytes, 8 * R * (candidates + N), "fp32")


@pytest.mark.parametrize("impl", ["reference", "cpu", "cuda", "triton"])
@pytest.mark.parametrize("device,R,side,gt_side,N", M2F_CASES)
def bench_mask2former_sampling(measure, device, R, side, gt_side, N, impl):
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    if (impl == "cpu") != (device == "cpu") and impl != "reference":
        pytest.skip("backend does not run on this device")
    gen = torch.Generator(device).manual_seed(0)
    logits = torch.randn(R, 1, side, side, generator=gen, device=device)
    gt = torch.rand(R, gt_side, gt_side, generator=gen, device=device) > 0.5
    group = f"mask2former sampling {device} R{R} {side}x{side} gt{gt_side} N{N} os3 b0.75"
    if impl == "reference":  # Mask2Former's lines; its masks are already float there
        gt_float = gt.float()
        fn = lambda: reference.sample_points_for_loss(logits, gt_float, N, 3.0, 0.75)  # noqa: E731
        measure(fn, group=group, impl="reference (Mask2Former eager)", role="reference", device=device,
                work=mask2former_work(R, side, gt_side, N))
    else:
        fn = lambda: pyops.sample_points_for_loss(logits, gt, N, 3.0, 0.75, backend=impl)  # noqa: E731
        measure(fn, group=group, impl=f"pyops-{impl}", device=device, work=mask2former_work(R, side, gt_side, N))


# (device, R, coarse side, steps, points): PointRend's mask subdivision inference; the spec's GPU
# case, the CPU size of issue #16, a small one
SUBDIVISION_CASES = [
    pytest.param("cuda", 100, 7, 5, 784, id="cuda-R100-7to224-N784", marks=pytest.mark.gpu),
    pytest.param("cpu", 50, 7, 5, 784, id="cpu-R50-7to224-N784", marks=pytest.mark.large),
    pytest.param("cpu", 20, 7, 4, 196, id="cpu-R20-7to112-N196"),
]


def subdivision_work(R, side, steps, N):
    """fp32. Each step reads its level and writes the next (2x), ~8 FLOP per upsampled cell; the
    point head reads 4 corners of the fine logits at N points per step and returns one value, with
    the points' coordinates (8 bytes) in between. Launch-bound at these sizes: the floor is far below."""
    levels = [(side << i) ** 2 for i in range(steps + 1)]
    nbytes = 4 * R * (sum(levels[:-1]) + sum(levels[1:])) + steps * R * N * (16 + 4 + 8)
    return work(nbytes, 8 * R * sum(levels[1:]), "fp32")


@pytest.mark.parametrize("impl", ["reference", "cpu", "cuda", "triton"])
@pytest.mark.parametrize("device,R,side,steps,N", SUBDIVISION_CASES)
def bench_subdivision_inference(measure, device, R, side, steps, N, impl):
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    if (impl == "cpu") != (device == "cpu") and impl != "reference":
        pytest.skip("backend does not run on this device")
    gen = torch.Generator(device).manual_seed(0)
    coarse = torch.randn(R, 1, side, side, generator=gen, device=device)
    fine = torch.randn(R, 1, side << steps, side << steps, generator=gen, device=device)

    def head(coords, indices):  # the same cheap stand-in point head for every implementation
        return F.grid_sample(fine, 2.0 * coords.unsqueeze(2) - 1.0, align_corners=False).squeeze(3)

    group = f"subdivision inference {device} R{R} {side}->{side << steps} N{N}"
    if impl == "reference":
        fn = lambda: reference.subdivision_inference(coarse, head, num_steps=steps, num_points=N)  # noqa: E731
        measure(fn, group=group, impl="reference (detectron2 eager)", role="reference", device=device,
                work=subdivision_work(R, side, steps, N))
    else:
        fn = lambda: pyops.subdivision_inference(coarse, head, num_steps=steps, num_points=N, backend=impl)  # noqa: E731
        measure(fn, group=group, impl=f"pyops-{impl}", device=device, work=subdivision_work(R, side, steps, N))

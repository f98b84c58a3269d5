"""pyops.deform_conv2d against the reference (and torchvision.ops.deform_conv2d when installed), on
every backend: forward and the gradients to input, offset, weight and bias."""

from __future__ import annotations

import re

import pytest
import torch
from helpers import assert_gradcheck, device_backends
from optest import OpSpec, battery

import pyops
from pyops import reference

try:
    import torchvision.ops as tv_ops
except ImportError:  # the oracle tests are skipped; the reference tests still run
    tv_ops = None


def _out(size, k, s, p, d):
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def _deform_inputs(shape, dtype, device, gen):
    """Random input, weight and bias, and offsets of a few pixels (many samples land partly or
    wholly outside the image)."""
    N, C, H, W, O, groups, offset_groups, k, stride, padding, dilation, bias, spread = shape
    Ho, Wo = _out(H, k, stride, padding, dilation), _out(W, k, stride, padding, dilation)

    def rand(*size, scale=1.0):
        return (torch.randn(*size, generator=gen, dtype=torch.float64) * scale).to(dtype=dtype, device=device)

    x = rand(N, C, H, W)
    offset = rand(N, 2 * offset_groups * k * k, Ho, Wo, scale=spread)
    weight = rand(O, C // groups, k, k, scale=0.5)
    b = rand(O) if bias else None
    return x, offset, weight, b, stride, padding, dilation


def _run(x, offset, weight, bias, stride, padding, dilation, backend):
    return pyops.deform_conv2d(x, offset, weight, bias, stride, padding, dilation, backend=backend)


DEFORM = OpSpec(
    name="deform_conv2d",
    run=_run,
    reference=reference.deform_conv2d,
    make_inputs=_deform_inputs,
    shapes={
        # N, C, H, W, O, groups, offset_groups, k, stride, padding, dilation, bias, offset spread
        "typical": (2, 6, 9, 11, 8, 1, 1, 3, 1, 1, 1, True, 2.0),
        "groups_offset_groups": (2, 8, 7, 9, 6, 2, 4, 3, 1, 1, 1, True, 2.5),
        "stride2_dilation2": (1, 5, 12, 10, 7, 1, 5, 3, 2, 2, 2, False, 3.0),
        "kernel_1x1": (2, 3, 5, 6, 4, 1, 1, 1, 1, 0, 1, True, 1.5),
        "far_outside": (1, 4, 6, 6, 3, 1, 2, 3, 1, 1, 1, True, 8.0),
        "size_one": (1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, False, 0.7),
        "gradcheck": (2, 4, 5, 6, 4, 2, 2, 3, 1, 1, 1, True, 1.5),
        "gradcheck_stride": (1, 3, 6, 7, 2, 1, 3, 3, 2, 1, 1, False, 2.0),
        "no_images": (0, 3, 5, 5, 4, 1, 1, 3, 1, 1, 1, True, 1.0),
    },
    images=(0, 1),
    gradcheck_shapes=("gradcheck", "gradcheck_stride"),
    # a column value sums C/g * kh * kw products; the offset gradient is a sum of slope * weight
    # products with cancellation; in bfloat16 the column gradients are rounded to bfloat16 (the
    # GEMM output dtype, as in torchvision) before those sums
    tol={torch.float32: dict(atol=2e-4, rtol=2e-4), torch.float16: dict(atol=3e-2, rtol=3e-2),
         torch.bfloat16: dict(atol=5e-1, rtol=5e-2)},
)
TestDeformConv2d = battery(DEFORM)
DEVICE_BACKENDS = device_backends()


@pytest.mark.skipif(tv_ops is None, reason="torchvision is not installed")
@pytest.mark.parametrize("device,backend", DEVICE_BACKENDS)
@pytest.mark.parametrize("shape", ["typical", "groups_offset_groups", "stride2_dilation2", "far_outside"])
def test_matches_torchvision(device, backend, shape):
    x, offset, weight, bias, stride, padding, dilation = _deform_inputs(
        DEFORM.shapes[shape], torch.float64, device, torch.Generator().manual_seed(3))
    leaves = [t.clone().requires_grad_() if t is not None else None for t in (x, offset, weight, bias)]
    ours = pyops.deform_conv2d(*leaves, stride, padding, dilation, backend=backend)
    theirs_leaves = [t.detach().clone().requires_grad_() if t is not None else None for t in leaves]
    theirs = tv_ops.deform_conv2d(*theirs_leaves, stride=stride, padding=padding, dilation=dilation)
    torch.testing.assert_close(ours, theirs, atol=1e-10, rtol=1e-10)
    g = torch.randn_like(ours)
    ours_grads = torch.autograd.grad(ours, [t for t in leaves if t is not None], g)
    theirs_grads = torch.autograd.grad(theirs, [t for t in theirs_leaves if t is not None], g)
    for name, a, b in zip(("input", "offset", "weight", "bias"), ours_grads, theirs_grads):
        torch.testing.assert_close(a, b, atol=1e-9, rtol=1e-9, msg=lambda m, name=name: f"grad {name}: {m}")


@pytest.mark.parametrize("device,backend", DEVICE_BACKENDS)
def test_nan_offset_propagates(device, backend):
    x, offset, weight, bias, *geometry = _deform_inputs(DEFORM.shapes["typical"], torch.float32, device,
                                                         torch.Generator().manual_seed(1))
    offset = offset.clone()
    offset[0, 4, 2, 3] = float("nan")  # kernel point 2's dy at output pixel (2, 3) of image 0
    offset[1, 7, 0, 0] = float("inf")
    out = pyops.deform_conv2d(x, offset, weight, bias, *geometry, backend=backend)
    ref = reference.deform_conv2d(x, offset, weight, bias, *geometry)
    assert out[0, :, 2, 3].isnan().all() and out[1, :, 0, 0].isnan().all()
    assert out.isnan().sum() == ref.isnan().sum() == 2 * out.shape[1]
    torch.testing.assert_close(out, ref, equal_nan=True, atol=2e-4, rtol=2e-4)


def test_gradcheck_reference():
    # the reference's own gradients (autograd through the bilinear weights) are right
    inputs = _deform_inputs(DEFORM.shapes["gradcheck"], torch.float64, "cpu", torch.Generator().manual_seed(5))
    assert_gradcheck(reference.deform_conv2d, inputs)


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(offset=lambda o: o[:, :17]), "offset must have shape"),
        (dict(offset=lambda o: o[:, :, :-1]), "offset must have shape"),
        (dict(offset=lambda o: o[:1]), "offset must have shape"),
        (dict(offset=lambda o: torch.cat([o] * 4, 1)), "offset_groups dividing the 6 input channels"),  # 4 groups
        (dict(weight=lambda w: w[:, :4]), "divide input's 6 channels"),
        (dict(weight=lambda w: w[:7, :3]), "out_channels (7) must be divisible by groups (2"),
        (dict(bias=lambda b: b[:3]), "bias must have shape (8,)"),
        (dict(offset=lambda o: o.double()), "offset is torch.float64"),
        (dict(weight=lambda w: w[0]), "weight must be a (out_channels"),
    ],
)
def test_bad_arguments(change, message):
    x, offset, weight, bias, stride, padding, dilation = _deform_inputs(
        DEFORM.shapes["typical"], torch.float32, "cpu", torch.Generator().manual_seed(0))
    args = dict(x=x, offset=offset, weight=weight, bias=bias)
    for name, fn in change.items():
        args[name] = fn(args[name])
    with pytest.raises((ValueError, TypeError), match=r"pyops\.deform_conv2d: .*" + re.escape(message)):
        pyops.deform_conv2d(args["x"], args["offset"], args["weight"], args["bias"], stride, padding, dilation)


def test_bad_geometry():
    x, offset, weight, bias, *_ = _deform_inputs(DEFORM.shapes["typical"], torch.float32, "cpu",
                                                  torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="pyops.deform_conv2d: stride must be >= 1"):
        pyops.deform_conv2d(x, offset, weight, bias, 0, 1, 1)
    with pytest.raises(TypeError, match="pyops.deform_conv2d: padding must be an int or a pair"):
        pyops.deform_conv2d(x, offset, weight, bias, 1, (1, 1, 1), 1)
    with pytest.raises(TypeError, match="pyops.deform_conv2d: input must have dtype"):
        pyops.deform_conv2d(x.long(), offset, weight, bias, 1, 1, 1)
    with pytest.raises(ValueError, match="pyops.deform_conv2d: the output would be -1x-1: input 1x1 is too small"):
        pyops.deform_conv2d(x[:, :, :1, :1], offset, weight, bias, 1, 0, 1)

"""point_sample: every backend against the reference (detectron2 / grid_sample semantics)."""

import pytest
import torch
import torch.nn.functional as F
from helpers import (
    assert_compile_matches_eager,
    assert_matches_reference,
    device_backends,
    ops_for,
)
from optest import OpSpec, battery

import pyops
from pyops import reference

DEVICE_BACKENDS = device_backends()


def make_input(N, C, H, W, dtype, device, channels_last=False, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(N, C, H, W, generator=gen, dtype=torch.float32).to(device=device, dtype=dtype)
    return x.to(memory_format=torch.channels_last) if channels_last else x


def make_coords(shape, dtype, device, seed=1, lo=-0.1, hi=1.1):
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=gen, dtype=torch.float64) * (hi - lo) + lo).to(device=device, dtype=dtype)


def sampler(backend, align_corners=False):
    return lambda x, c: pyops.point_sample(x, c, align_corners, backend=backend)


def ref(align_corners=False):
    return lambda x, c: reference.point_sample(x, c, align_corners)


def _point_sample_inputs(shape, dtype, device, gen):
    # coords in [-margin, 1 + margin]: a little outside exercises the zero padding; gradcheck
    # shapes use a negative margin to keep clear of the map's border, where the gradient jumps
    N, C, H, W, P, align_corners, margin = shape
    x = torch.randn(N, C, H, W, generator=gen, dtype=torch.float32).to(device=device, dtype=dtype)
    c = (torch.rand(N, P, 2, generator=gen, dtype=torch.float64) * (1 + 2 * margin) - margin).to(device=device, dtype=dtype)
    return x, c, align_corners


POINT_SAMPLE = OpSpec(
    name="point_sample",
    run=lambda x, c, align_corners, backend: pyops.point_sample(x, c, align_corners, backend=backend),
    reference=reference.point_sample,
    make_inputs=_point_sample_inputs,
    shapes={
        "typical": (3, 7, 9, 13, 41, False, 0.1),
        "align_corners": (3, 7, 9, 13, 41, True, 0.1),
        "gradcheck": (2, 3, 5, 6, 7, False, -0.02),
        "gradcheck_align_corners": (2, 3, 5, 6, 7, True, -0.02),
        "size_one": (1, 1, 1, 1, 3, False, 0.1),
        "no_points": (2, 3, 4, 4, 0, False, 0.1),
        "no_channels": (2, 0, 4, 4, 5, False, 0.1),
        "no_images": (0, 3, 4, 4, 5, False, 0.1),
    },
    images=(0,),
    gradcheck_shapes=("gradcheck", "gradcheck_align_corners"),
    deterministic=True,
    # the coords gradient is a difference of corner values scaled by W/2 (and summed over C):
    # float32 cancellation reaches a few 1e-5 in absolute terms
    tol={torch.float32: dict(atol=1e-4, rtol=1e-4)},
)
TestPointSample = battery(POINT_SAMPLE)


@pytest.mark.parametrize("device,backend", DEVICE_BACKENDS)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
def test_grid_coords_and_many_channels(device, backend, channels_last):
    # (N, Hg, Wg, 2) coords give (N, C, Hg, Wg); C above one channel block of the kernels
    x = make_input(2, 70, 6, 5, torch.float32, device, channels_last)
    c = make_coords((2, 3, 4, 2), torch.float32, device)
    assert_matches_reference(sampler(backend), ref(), (x, c))
    out = pyops.point_sample(x, c, backend=backend)
    assert out.shape == (2, 70, 3, 4)
    assert out.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


@pytest.mark.parametrize("device,backend", DEVICE_BACKENDS)
def test_equals_grid_sample(device, backend):
    # the contract users rely on: detectron2's grid_sample call, bit for bit up to rounding
    x = make_input(2, 4, 8, 11, torch.float32, device)
    c = make_coords((2, 30, 2), torch.float32, device)
    want = F.grid_sample(x, 2.0 * c.unsqueeze(2) - 1.0, align_corners=False).squeeze(3)
    torch.testing.assert_close(pyops.point_sample(x, c, backend=backend), want, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("mode", ["bilinear", "nearest", "bicubic"])
@pytest.mark.parametrize("padding_mode", ["zeros", "border", "reflection"])
def test_detectron2_and_mmcv_calls(mode, padding_mode):
    # detectron2: point_sample(input, point_coords, **grid_sample_kwargs); mmcv: point_sample(input, points, ...)
    x = make_input(2, 3, 7, 9, torch.float32, "cpu").requires_grad_()
    c = make_coords((2, 25, 2), torch.float32, "cpu")
    want = F.grid_sample(x, 2.0 * c.unsqueeze(2) - 1.0, mode=mode, padding_mode=padding_mode, align_corners=True).squeeze(3)
    for call in (
        lambda: pyops.point_sample(x, point_coords=c, align_corners=True, mode=mode, padding_mode=padding_mode),
        lambda: pyops.point_sample(x, points=c, align_corners=True, mode=mode, padding_mode=padding_mode),
        lambda: pyops.point_sample(x, c, True, mode=mode, padding_mode=padding_mode),
    ):
        got = call()
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)
        (g,) = torch.autograd.grad(got, x, torch.ones_like(got))
        (g_want,) = torch.autograd.grad(want, x, torch.ones_like(want), retain_graph=True)
        torch.testing.assert_close(g, g_want, atol=1e-5, rtol=1e-5)


def test_point_argument_names_are_checked():
    x, c = make_input(1, 2, 4, 4, torch.float32, "cpu"), make_coords((1, 3, 2), torch.float32, "cpu")
    with pytest.raises(TypeError, match=r"pyops.point_sample: pass the points once.*\['coords', 'points'\]"):
        pyops.point_sample(x, c, points=c)
    with pytest.raises(TypeError, match="pyops.point_sample: pass the points once.*none"):
        pyops.point_sample(x)
    with pytest.raises(TypeError, match=r"unexpected keyword argument\(s\) \['interpolation'\]"):
        pyops.point_sample(x, c, interpolation="bilinear")
    with pytest.raises(ValueError, match="pyops.point_sample: mode must be"):
        pyops.point_sample(x, c, mode="area")
    with pytest.raises(ValueError, match="pyops.point_sample: padding_mode must be"):
        pyops.point_sample(x, c, padding_mode="circular")


@pytest.mark.parametrize("device,backend", DEVICE_BACKENDS)
def test_mixed_dtypes_and_non_contiguous(device, backend):
    base = make_input(2, 10, 12, 9, torch.float32, device)
    x = base[:, ::2, 1:, :]  # strided channels, offset rows
    c = make_coords((2, 2, 25), torch.float64, device).transpose(1, 2)  # non-contiguous, float64
    assert not x.is_contiguous() and not c.is_contiguous()
    assert_matches_reference(sampler(backend), ref(), (x, c), tol=dict(atol=1e-5, rtol=1e-4))


@pytest.mark.parametrize("device,backend", DEVICE_BACKENDS)
def test_non_finite_and_out_of_range_coords(device, backend):
    # NaN/inf give NaN like grid_sample on the CPU, on every device (CUDA's grid_sample gives 0 for
    # some of them, so the reference runs on the CPU); far-out points give 0; borders are exact
    x = make_input(1, 3, 4, 5, torch.float64, device)
    pts = [
        [float("nan"), 0.5], [0.5, float("nan")], [float("inf"), 0.5], [-float("inf"), 0.3],
        [1e30, 0.2], [-1e30, 0.7], [-3.0, 0.5], [4.0, 0.5], [0.0, 0.0], [1.0, 1.0],
        [0.1, 0.999], [-0.1, 0.5], [0.5, 1.1], [0.3, 0.6],
    ]
    c = torch.tensor([pts], dtype=torch.float64, device=device)
    for align_corners in (False, True):
        on_cpu = lambda x, c, a=align_corners: reference.point_sample(x.cpu(), c.cpu(), a).to(x.device)  # noqa: E731
        assert_matches_reference(sampler(backend, align_corners), on_cpu, (x, c), equal_nan=True)


@pytest.mark.parametrize("device,backend", DEVICE_BACKENDS)
def test_input_grad_is_deterministic(device, backend):
    # many points on a tiny map: long runs of equal keys, where atomics would reorder sums
    x = make_input(2, 33, 3, 2, torch.float32, device, channels_last=True).requires_grad_()
    c = make_coords((2, 600, 2), torch.float32, device)
    g = torch.randn(2, 33, 600, dtype=torch.float32, device=device)
    torch.use_deterministic_algorithms(True)  # also fills fresh tensors with NaN: unwritten outputs show
    try:
        grads = [torch.autograd.grad(pyops.point_sample(x, c, backend=backend), x, g)[0] for _ in range(3)]
    finally:
        torch.use_deterministic_algorithms(False)
    for other in grads[1:]:
        assert torch.equal(grads[0], other)
    torch.testing.assert_close(grads[0], torch.autograd.grad(reference.point_sample(x, c), x, g)[0], atol=1e-4, rtol=1e-4)


def test_compile_inductor_cpu():
    x = make_input(2, 3, 5, 6, torch.float32, "cpu")
    c = make_coords((2, 7, 2), torch.float32, "cpu")
    assert_compile_matches_eager(lambda x, c: pyops.point_sample(x, c).sin() * 2, (x, c), backend="inductor")


def test_backend_selection():
    x = make_input(1, 2, 3, 3, torch.float32, "cpu")
    c = make_coords((1, 4, 2), torch.float32, "cpu")
    want = reference.point_sample(x, c)
    with pyops.use_backend("reference"):
        assert pyops.get_backend() == "reference"
        torch.testing.assert_close(pyops.point_sample(x, c), want)
        with pytest.raises(ValueError, match="backend 'cuda' needs CUDA tensors"):
            pyops.point_sample(x, c, backend="cuda")  # the argument beats the global setting
    assert pyops.get_backend() is None
    with pytest.raises(ValueError, match="unknown backend 'fast'"):
        pyops.point_sample(x, c, backend="fast")
    with pytest.raises(ValueError, match="unknown backend"):
        pyops.set_backend("gpu")


@pytest.mark.parametrize(
    "x_shape,c_shape,x_dtype,c_dtype,match",
    [
        ((2, 3, 4), (2, 5, 2), torch.float32, torch.float32, r"pyops.point_sample: input must be a \(N, C, H, W\) tensor, got shape \(2, 3, 4\)"),
        ((2, 3, 4, 4), (2, 5), torch.float32, torch.float32, r"coords must be a \(N, P, 2\) or \(N, Hg, Wg, 2\) tensor"),
        ((2, 3, 4, 4), (2, 5, 3), torch.float32, torch.float32, r"coords must have shape \(N, P, 2\)"),
        ((2, 3, 4, 4), (3, 5, 2), torch.float32, torch.float32, "coords has batch size 3 but input has 2"),
        ((2, 3, 4, 4), (2, 5, 2), torch.int64, torch.float32, "input must have dtype float16/bfloat16/float32/float64/bool/uint8, got torch.int64"),
        ((2, 3, 4, 4), (2, 5, 2), torch.float32, torch.int32, "coords must have dtype float16/bfloat16/float32/float64, got torch.int32"),
        ((2, 3, 0, 4), (2, 5, 2), torch.float32, torch.float32, "non-empty spatial"),
    ],
)
@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_bad_inputs(x_shape, c_shape, x_dtype, c_dtype, match, backend):
    x = torch.ones(x_shape).to(x_dtype)
    c = torch.full(c_shape, 0.5).to(c_dtype)
    with pytest.raises((ValueError, TypeError), match=match):
        pyops.point_sample(x, c, backend=backend)


def test_bad_device_and_flags():
    x = torch.randn(1, 2, 3, 3)
    with pytest.raises(ValueError, match="coords is on meta but input is on cpu"):
        pyops.point_sample(x, torch.rand(1, 4, 2, device="meta"))
    with pytest.raises(TypeError, match="align_corners must be a bool"):
        pyops.point_sample(x, torch.rand(1, 4, 2), "yes")
    with pytest.raises(TypeError, match=r"coords must be a .* tensor, got list"):
        pyops.point_sample(x, [[0.5, 0.5]])


@pytest.mark.parametrize("device,backend", DEVICE_BACKENDS)
def test_batch_index_rows_and_out_of_range_rows(device, backend):
    # the op form used by the ROI helpers: row n samples image batch_index[n]; a bad index
    # samples nothing instead of reading out of bounds
    x = make_input(2, 5, 6, 7, torch.float32, device)
    c = make_coords((4, 9, 2), torch.float32, device)
    op = ops_for(backend).point_sample
    got = op(x, c, False, torch.tensor([1, 0, 1, 7], device=device))
    torch.testing.assert_close(got[:3], reference.point_sample(x[[1, 0, 1]], c[:3]))
    assert torch.equal(got[3], torch.zeros_like(got[3]))


def test_cpp_op_checks_its_arguments():
    # callers of torch.ops.pyops (C++, other frameworks) get errors too, not crashes
    with pytest.raises(RuntimeError, match=r"coords must have shape \(N, P, 2\)"):
        torch.ops.pyops.point_sample(torch.randn(1, 2, 3, 3), torch.rand(1, 4, 3), False)
    with pytest.raises(RuntimeError, match="grad_output must have shape"):
        torch.ops.pyops.point_sample_backward_input(torch.randn(1, 2, 5), torch.randn(1, 2, 3, 3), torch.rand(1, 4, 2), False)

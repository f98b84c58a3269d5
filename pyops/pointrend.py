"""PointRend ops: bilinear point sampling (more to come: point selection, subdivision).

The semantics are detectron2's ``point_features.py`` (see ``pyops.reference.pointrend``).
"""

from __future__ import annotations

import torch

from pyops import _backend, _extension, _selfcheck
from pyops import reference as _ref

_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_MASKS = (torch.bool, torch.uint8)  # sampled to float32 (forward only), e.g. ground-truth masks


def _check_point_sample(input: torch.Tensor, coords: torch.Tensor, align_corners: bool) -> None:
    if not isinstance(input, torch.Tensor) or not isinstance(coords, torch.Tensor):
        raise TypeError(
            f"pyops.point_sample: input and coords must be tensors, got "
            f"{type(input).__name__} and {type(coords).__name__}"
        )
    if not isinstance(align_corners, bool):
        raise TypeError(f"pyops.point_sample: align_corners must be a bool, got {align_corners!r}")
    if input.dim() != 4:
        raise ValueError(
            f"pyops.point_sample: input must be a 4-D (N, C, H, W) tensor, got shape {tuple(input.shape)}"
        )
    if coords.dim() not in (3, 4) or coords.shape[-1] != 2:
        raise ValueError(
            f"pyops.point_sample: coords must have shape (N, P, 2) or (N, Hg, Wg, 2), "
            f"got {tuple(coords.shape)}"
        )
    if input.dtype not in _FLOATS + _MASKS:
        raise TypeError(
            f"pyops.point_sample: input must be a floating-point, bool or uint8 tensor, got {input.dtype}"
        )
    if coords.dtype not in _FLOATS:
        raise TypeError(f"pyops.point_sample: coords must be a floating-point tensor, got {coords.dtype}")
    if coords.shape[0] != input.shape[0]:
        raise ValueError(
            f"pyops.point_sample: coords has batch size {coords.shape[0]} but input has {input.shape[0]}"
        )
    if coords.device != input.device:
        raise ValueError(
            f"pyops.point_sample: input is on {input.device} but coords is on {coords.device}"
        )
    if input.shape[2] == 0 or input.shape[3] == 0:
        raise ValueError(
            f"pyops.point_sample: input must have non-empty spatial dimensions, got shape "
            f"{tuple(input.shape)}"
        )


def point_sample(
    input: torch.Tensor,
    coords: torch.Tensor,
    align_corners: bool = False,
    *,
    backend: str | None = None,
) -> torch.Tensor:
    """Bilinear samples of a feature map at normalized points (PointRend's ``point_sample``).

    Args:
        input: (N, C, H, W) features, float16/bfloat16/float32/float64, NCHW or channels_last;
            or a bool/uint8 mask, sampled to float32 without a float copy of the mask.
        coords: (N, P, 2) or (N, Hg, Wg, 2) points ``(x, y)`` normalized to ``[0, 1]`` (x first),
            any floating dtype; coordinate math runs in float32 (float64 for float64 inputs).
        align_corners: as in ``F.grid_sample``; ``False`` maps ``u`` to pixel ``u * W - 0.5``.
        backend: ``"cpu"``, ``"cuda"``, ``"triton"``, ``"reference"`` or ``None`` (automatic, see
            :mod:`pyops._backend`).

    Returns:
        (N, C, P) or (N, C, Hg, Wg) in ``input.dtype`` (float32 for masks). For a channels_last
        input the result is a view of an (N, P, C) / channels_last buffer, as ``grid_sample``
        keeps the input layout.

    Exactly ``F.grid_sample(input, 2 * coords - 1, mode="bilinear", padding_mode="zeros",
    align_corners=align_corners)`` (with the extra grid dimension for (N, P, 2) coords):
    corners outside the map read as zero, and a NaN or infinite coordinate gives NaN.
    Differentiable with respect to ``input`` and ``coords``; the gradient to ``input`` is
    deterministic (bit-identical across runs) on every backend but ``"reference"``.
    """
    _check_point_sample(input, coords, align_corners)
    if coords.dim() == 4:
        out = _point_sample(input, coords.reshape(coords.shape[0], -1, 2), align_corners, None, backend)
        return out.view(*out.shape[:2], *coords.shape[1:3])
    return _point_sample(input, coords, align_corners, None, backend)


def _point_sample(input, coords, align_corners, batch_index, backend):
    """point_sample of (N, P, 2) coords, row n sampling image ``batch_index[n]`` (or n)."""
    name = _backend.resolve("point_sample", backend, input.device)
    if name == "reference":
        return _ref.point_sample(input if batch_index is None else input[batch_index], coords, align_corners)
    op = torch.ops.pyops.point_sample_triton if name == "triton" else torch.ops.pyops.point_sample
    return op(input, coords, align_corners, batch_index)


# ---- kernels of the pyops::*_triton operators (schemas in csrc/ops.cpp) -----------------------
# Registered for CUDA tensors, and for CPU tensors so the Triton interpreter can run them in tests.
# pyops.kernels (and triton) are imported on first use only.

def _opmath(t: torch.Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _point_values(input: torch.Tensor, N: int, P: int) -> torch.Tensor:
    # Same layout rule as the C++ kernels (point_sample_host.h: new_point_values).
    C = input.shape[1]
    dtype = input.dtype if input.is_floating_point() else torch.float32
    if C > 1 and input.stride(1) == 1:
        return input.new_empty((N, P, C), dtype=dtype).transpose(1, 2)
    return input.new_empty((N, C, P), dtype=dtype)


def _triton_point_sample(input, coords, align_corners, batch_index=None):
    from pyops.kernels import point_sample as k

    out = _point_values(input, coords.shape[0], coords.shape[1])
    if out.numel():
        k.forward(input, coords.to(_opmath(input)).contiguous(), _contiguous(batch_index), out, align_corners)
    return out


def _triton_backward_input(grad, input, coords, align_corners, batch_index=None):
    from pyops.kernels import point_sample as k

    grad_input = torch.zeros_like(input)
    if grad.numel():
        coords_m = coords.to(_opmath(input)).contiguous()
        k.input_grad(coords_m, _contiguous(batch_index), grad, grad_input, align_corners)
    return grad_input


def _triton_backward_coords(grad, input, coords, align_corners, batch_index=None):
    from pyops.kernels import point_sample as k

    coords_m = coords.to(_opmath(input)).contiguous()
    grad_coords = torch.zeros_like(coords_m)
    if grad_coords.numel():
        k.coords_grad(input, coords_m, _contiguous(batch_index), grad, grad_coords, align_corners)
    return grad_coords.to(coords.dtype)


def _contiguous(t):
    return None if t is None else t.contiguous()


# ---- fake kernels and autograd of the torch.ops.pyops operators -------------------------------


def _fake_point_sample(input, coords, align_corners, batch_index=None):
    return _point_values(input, coords.shape[0], coords.shape[1])


def _fake_backward_input(grad, input, coords, align_corners, batch_index=None):
    return torch.empty_like(input)


def _fake_backward_coords(grad, input, coords, align_corners, batch_index=None):
    return coords.new_empty(coords.shape)


def _setup_context(ctx, inputs, output):
    input, coords, align_corners, batch_index = inputs
    ctx.save_for_backward(input, coords, batch_index)
    ctx.align_corners = align_corners


def _make_backward(suffix: str):
    grad_input_op = getattr(torch.ops.pyops, "point_sample_backward_input" + suffix)
    grad_coords_op = getattr(torch.ops.pyops, "point_sample_backward_coords" + suffix)

    def backward(ctx, grad):
        input, coords, batch_index = ctx.saved_tensors
        grad_input = grad_coords = None
        if ctx.needs_input_grad[0]:
            grad_input = grad_input_op(grad, input, coords, ctx.align_corners, batch_index)
        if ctx.needs_input_grad[1]:
            grad_coords = grad_coords_op(grad, input, coords, ctx.align_corners, batch_index)
        return grad_input, grad_coords, None, None

    return backward


if _extension.available():
    torch.library.register_kernel("pyops::point_sample_triton", ("cpu", "cuda"), _triton_point_sample)
    torch.library.register_kernel("pyops::point_sample_backward_input_triton", ("cpu", "cuda"), _triton_backward_input)
    torch.library.register_kernel("pyops::point_sample_backward_coords_triton", ("cpu", "cuda"), _triton_backward_coords)
    for _suffix in ("", "_triton"):
        torch.library.register_fake(f"pyops::point_sample{_suffix}")(_fake_point_sample)
        torch.library.register_fake(f"pyops::point_sample_backward_input{_suffix}")(_fake_backward_input)
        torch.library.register_fake(f"pyops::point_sample_backward_coords{_suffix}")(_fake_backward_coords)
        torch.library.register_autograd(
            f"pyops::point_sample{_suffix}", _make_backward(_suffix), setup_context=_setup_context
        )


# ---- self-check for `python -m pyops` ---------------------------------------------------------


def _point_sample_inputs(device: torch.device, dtype: torch.dtype, gen: torch.Generator):
    x = torch.randn(2, 5, 9, 13, generator=gen, dtype=dtype).to(device)
    # a little outside [0, 1] so the zero padding is exercised too
    coords = (torch.rand(2, 37, 2, generator=gen, dtype=dtype) * 1.2 - 0.1).to(device)
    return x, coords


_selfcheck.register(
    _selfcheck.OpCheck(
        name="point_sample",
        make_inputs=_point_sample_inputs,
        run=lambda x, c, backend: point_sample(x, c, backend=backend),
        reference=lambda x, c: _ref.point_sample(x, c),
    )
)

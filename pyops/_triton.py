"""Kernels of the ``pyops::*_triton`` operators: allocate outputs, launch :mod:`pyops.kernels`.

The schemas are defined in C++ with the others (csrc/ops.cpp); this module registers their
implementations for CUDA tensors, and for CPU tensors so that the Triton interpreter
(``TRITON_INTERPRET=1``) can run them in tests. Triton is imported on first use only.
"""

from __future__ import annotations

import torch

from pyops import _extension


def _opmath(t: torch.Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _point_values(input: torch.Tensor, P: int) -> torch.Tensor:
    # Same layout rule as the C++ kernels (point_sample_host.h: new_point_values).
    N, C = input.shape[:2]
    if C > 1 and input.stride(1) == 1:
        return input.new_empty((N, P, C)).transpose(1, 2)
    return input.new_empty((N, C, P))


def point_sample(input, coords, align_corners):
    from pyops.kernels import point_sample as k

    coords_m = coords.to(_opmath(input)).contiguous()
    out = _point_values(input, coords.shape[1])
    if out.numel():
        k.forward(input, coords_m, out, align_corners)
    return out


def point_sample_backward_input(grad, input, coords, align_corners):
    from pyops.kernels import point_sample as k

    grad_input = torch.zeros_like(input)
    if grad.numel():
        k.input_grad(coords.to(_opmath(input)).contiguous(), grad, grad_input, align_corners)
    return grad_input


def point_sample_backward_coords(grad, input, coords, align_corners):
    from pyops.kernels import point_sample as k

    coords_m = coords.to(_opmath(input)).contiguous()
    grad_coords = torch.zeros_like(coords_m)
    if grad_coords.numel():
        k.coords_grad(input, coords_m, grad, grad_coords, align_corners)
    return grad_coords.to(coords.dtype)


if _extension.available():
    for _fn in (point_sample, point_sample_backward_input, point_sample_backward_coords):
        torch.library.register_kernel(f"pyops::{_fn.__name__}_triton", ("cpu", "cuda"), _fn)

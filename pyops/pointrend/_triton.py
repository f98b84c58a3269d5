"""Triton host glue of the PointRend operators: output allocation, dtype and layout preparation,
launches of the kernels in :mod:`pyops.kernels.point_sample` and :mod:`pyops.kernels.point_select`.

Each function is the Triton kernel of the pyops operator of the same name (registered in
:mod:`pyops.pointrend._ops`); arguments were checked by the public function. pyops.kernels (and
triton) are imported on first use only.
"""

from __future__ import annotations

import torch


def _opmath(t: torch.Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def point_values(input: torch.Tensor, N: int, P: int) -> torch.Tensor:
    # Same layout rule as the C++ kernels (point_sample_host.h: new_point_values).
    C = input.shape[1]
    dtype = input.dtype if input.is_floating_point() else torch.float32
    if C > 1 and input.stride(1) == 1:
        return input.new_empty((N, P, C), dtype=dtype).transpose(1, 2)
    return input.new_empty((N, C, P), dtype=dtype)


def point_sample(input, coords, align_corners, batch_index=None):
    from pyops.kernels import point_sample as k

    out = point_values(input, coords.shape[0], coords.shape[1])
    if out.numel():
        k.forward(input, coords.to(_opmath(input)).contiguous(), _contiguous(batch_index), out, align_corners)
    return out


def point_sample_backward_input(grad, input, coords, align_corners, batch_index=None):
    from pyops.kernels import point_sample as k

    grad_input = torch.zeros_like(input)
    if grad.numel():
        coords_m = coords.to(_opmath(input)).contiguous()
        k.input_grad(coords_m, _contiguous(batch_index), grad, grad_input, align_corners)
    return grad_input


def point_sample_backward_coords(grad, input, coords, align_corners, batch_index=None):
    from pyops.kernels import point_sample as k

    coords_m = coords.to(_opmath(input)).contiguous()
    grad_coords = torch.zeros_like(coords_m)
    if grad_coords.numel():
        k.coords_grad(input, coords_m, _contiguous(batch_index), grad, grad_coords, align_corners)
    return grad_coords.to(coords.dtype)


def _contiguous(t):
    return None if t is None else t.contiguous()


def uncertain_point_coords(logits, classes, candidates, seed, num_points, num_candidates, num_uncertain):
    from pyops.kernels import point_select as k

    R = logits.shape[0]
    out = logits.new_empty((R, num_points, 2), dtype=torch.float32)
    if R == 0:
        return out
    drawn = logits.new_empty((R, num_candidates, 2), dtype=torch.float32) if candidates is None else candidates.contiguous()
    uncertainty = logits.new_empty((R, num_candidates), dtype=torch.float32)
    k.score_candidates(logits, _contiguous(classes), None if candidates is None else drawn, drawn, uncertainty, seed)
    top = torch.topk(uncertainty, num_uncertain, dim=1, sorted=False).indices.contiguous()
    k.pick_points(drawn, top, out, seed)
    return out


def subdivision_step(logits, num_points):
    from pyops.kernels import point_select as k

    R, h, w = logits.shape
    P = min(num_points, 4 * h * w)
    up = logits.new_empty((R, 2 * h, 2 * w))
    uncertainty = logits.new_empty((R, 4 * h * w), dtype=torch.float32)
    coords = logits.new_empty((R, P, 2), dtype=torch.float32)
    if R == 0:
        return up, logits.new_empty((0, P), dtype=torch.int64), coords
    k.upsample2x(logits, up, uncertainty)
    indices = torch.topk(uncertainty, P, dim=1, sorted=False).indices.contiguous()
    k.grid_points(indices, coords, 2 * h, 2 * w)
    return up, indices, coords

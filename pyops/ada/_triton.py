"""Triton host glue of the ADA operators: the operator-level checks (the same as the C++ ops',
csrc/ada/ada_host.h, as RuntimeErrors), parameter preparation and the launches of
:mod:`pyops.kernels.ada`.

Each ``_triton_*`` function is the Triton kernel of a pyops operator (registered in
:mod:`pyops.ada._ops`), for CUDA tensors and for CPU tensors so the Triton interpreter can run
them in tests. pyops.kernels (and triton) are imported on first use only.
"""

from __future__ import annotations

import torch

from pyops.ada._args import _check_images, _check_param
from pyops.reference import ada as _ref


def _check_triton_args(op: str, images, G_inv, C) -> None:
    # the same checks as the C++ ops (csrc/ada/ada_host.h), as RuntimeErrors
    try:
        _check_images(op, images)
        _check_param(op, "G_inv", G_inv, ("B", 3, 3), images)
        _check_param(op, "C", C, ("B", 4, 4), images)
    except (TypeError, ValueError) as exc:
        raise RuntimeError(str(exc)) from exc


def _device_margin(G: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """The batch-wide reflect margin (left, top, right, bottom) as int32 on G's device, with no
    host synchronisation (the same formula as pyops.reference.ada.geometric_margin)."""
    cx, cy = (W - 1) / 2, (H - 1) / 2
    corners = torch.tensor([[-cx, -cy, 1], [cx, -cy, 1], [cx, cy, 1], [-cx, cy, 1]], dtype=G.dtype, device=G.device)
    ext = (G[:, :2, :] @ corners.t()).permute(1, 0, 2).reshape(2, -1)
    margin = torch.cat([-ext, ext]).amax(dim=1)
    margin = margin + torch.tensor([6 - cx, 6 - cy] * 2, dtype=G.dtype, device=G.device)
    limit = torch.tensor([W - 1, H - 1] * 2, dtype=G.dtype, device=G.device)
    margin = torch.nan_to_num(margin, nan=0.0).clamp(min=0)
    return torch.minimum(margin, limit).ceil().to(torch.int32)


def _triton_prepare(images, G_inv, C):
    B, _, H, W = images.shape
    G = None if G_inv is None else G_inv.to(images.device, torch.float32).contiguous()
    Cm = None if C is None else C.to(images.device, torch.float32).contiguous()
    taps = _ref.geom_filter(torch.float32, images.device)
    if G is not None and B > 0:
        margin = _device_margin(G, H, W)
    else:
        margin = torch.zeros(4, dtype=torch.int32, device=images.device)
    return G, Cm, taps, margin


def _triton_geom_color(images, G_inv, C):
    from pyops.kernels import ada as k

    _check_triton_args("ada_geom_color_triton", images, G_inv, C)
    out = torch.empty(images.shape, dtype=images.dtype, device=images.device)
    if out.numel():
        k.forward(images, out, *_triton_prepare(images, G_inv, C))
    return out


def _triton_geom_color_backward(grad, G_inv, C):
    from pyops.kernels import ada as k

    _check_triton_args("ada_geom_color_backward_triton", grad, G_inv, C)
    out = torch.empty(grad.shape, dtype=grad.dtype, device=grad.device)
    if out.numel() == 0:
        return out
    B, ch, H, W = grad.shape
    if G_inv is None and C is None:
        return out.copy_(grad)
    G, Cm, taps, margin = _triton_prepare(grad, G_inv, C)
    gv = None if G is None else torch.empty(B, ch, 2 * H + 12, 2 * W + 12, dtype=torch.float32, device=grad.device)
    k.backward(grad, out, gv, G, Cm, taps, margin)
    return out


def _triton_filter_args(op, images, filters, sigma, noise, boxes):
    try:
        _check_images(op, images)
        _check_param(op, "filters", filters, ("B", 43), images)
        _check_param(op, "sigma", sigma, ("B",), images)
        _check_param(op, "noise", noise, tuple(["B", *images.shape[1:]]), images)
        _check_param(op, "boxes", boxes, ("B", 4), images)
    except (TypeError, ValueError) as exc:
        raise RuntimeError(str(exc)) from exc
    if (sigma is None) != (noise is None):
        raise RuntimeError(f"{op}: sigma and noise must be given together")
    if filters is not None and min(images.shape[2:]) <= _ref.FILTER_PAD:
        raise RuntimeError(f"{op}: filtering needs H and W of at least 22, got shape {tuple(images.shape)}")

    def f32(t):
        return None if t is None else t.to(images.device, torch.float32).contiguous()

    return f32(filters), f32(sigma), noise, f32(boxes)


def _triton_filter_noise_cutout(images, filters, sigma, noise, boxes):
    from pyops.kernels import ada as k

    h, sg, nz, bx = _triton_filter_args("ada_filter_noise_cutout_triton", images, filters, sigma, noise, boxes)
    out = torch.empty(images.shape, dtype=images.dtype, device=images.device)
    if out.numel():
        k.filter_forward(images, out, h, sg, nz, bx)
    return out


def _triton_filter_noise_cutout_backward(grad, filters, boxes):
    from pyops.kernels import ada as k

    h, _, _, bx = _triton_filter_args("ada_filter_noise_cutout_backward_triton", grad, filters, None, None, boxes)
    out = torch.empty(grad.shape, dtype=grad.dtype, device=grad.device)
    if out.numel() == 0:
        return out
    if h is None and bx is None:
        return out.copy_(grad)
    k.filter_backward(grad, out, h, bx)
    return out

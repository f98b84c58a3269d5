"""Triton host glue of ``deform_conv2d``: the deformable im2col, col2im and offset gradient of
:mod:`pyops.kernels.deform` around ATen's batched GEMMs, a few images at a time.

Each function is the Triton kernel of the pyops operator of its name (registered in
:mod:`pyops.sac.deform`); pyops.kernels (and triton) are imported on first use.
"""

from __future__ import annotations

import warnings

import torch

MAX_COLUMNS = 2**26
"""Elements of the columns buffer of one chunk of images (at least one image per chunk); the C++
host's kMaxColumnElements."""


def _opmath(t: torch.Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _chunk(input: torch.Tensor, weight: torch.Tensor, L: int) -> int:
    """Images per chunk: as many as keep the (b, C kh kw, L) columns under MAX_COLUMNS, >= 1."""
    per_image = input.shape[1] * weight.shape[2] * weight.shape[3] * L
    return max(1, min(input.shape[0], MAX_COLUMNS // max(per_image, 1)))


@torch.no_grad()  # a kernel: its ATen calls (the GEMMs, into out= buffers) record no graph
def _triton_deform_conv2d(input, offset, weight, bias, stride, padding, dilation, groups, offset_groups):
    """(N, O, Ho, Wo) contiguous in input's dtype: per chunk of b images, the columns
    (b, C kh kw, L) and one batched GEMM per group with the weight, then the bias."""
    from pyops.kernels import deform as k

    N, C = input.shape[:2]
    O, Cg, kh, kw = weight.shape
    Ho, Wo = offset.shape[2:]
    L = Ho * Wo
    G = groups
    out = torch.empty((N, O, Ho, Wo), dtype=input.dtype, device=input.device)
    w = weight.contiguous().view(G, O // G, Cg * kh * kw)
    b = _chunk(input, weight, L)
    columns = torch.empty((b, C * kh * kw, L), dtype=input.dtype, device=input.device)
    for n0 in range(0, N, b):
        n1 = min(N, n0 + b)
        cols = columns[: n1 - n0]
        k.im2col(input[n0:n1], offset[n0:n1], cols, (kh, kw), stride, padding, dilation, offset_groups)
        torch.matmul(w, cols.view(n1 - n0, G, Cg * kh * kw, L), out=out[n0:n1].view(n1 - n0, G, O // G, L))
    if bias is not None:
        out += bias.view(1, O, 1, 1)
    return out


def _check_deterministic(t: torch.Tensor) -> None:
    """The input gradient's atomic adds are not deterministic on CUDA: raise (or warn, in
    warn-only mode) when deterministic algorithms are asked for, as torchvision does."""
    if t.is_cuda and torch.are_deterministic_algorithms_enabled():
        message = ("pyops.deform_conv2d: the backward of backend 'triton' accumulates the input gradient with "
                   "atomic adds, which is not deterministic, but torch.use_deterministic_algorithms(True) is set")
        if torch.is_deterministic_algorithms_warn_only_enabled():
            warnings.warn(message, stacklevel=3)
        else:
            raise RuntimeError(message)


@torch.no_grad()
def _triton_deform_conv2d_backward(grad_out, input, offset, weight, stride, padding, dilation, groups,
                                   offset_groups):
    """(grad_input, grad_offset, grad_weight), contiguous, in the dtypes of input, offset, weight:
    per chunk of b images, the columns again, grad_columns = weight^T grad_out per group (one
    batched GEMM), grad_weight += grad_out columns^T (summed over the chunk in op-math), then
    col2im into an op-math input gradient and the offset gradient."""
    from pyops.kernels import deform as k

    _check_deterministic(input)
    N, C, H, W = input.shape
    O, Cg, kh, kw = weight.shape
    Ho, Wo = offset.shape[2:]
    L = Ho * Wo
    G, CK = groups, Cg * kh * kw
    geometry = ((kh, kw), stride, padding, dilation, offset_groups)
    grad_out = grad_out.contiguous()
    w_t = weight.contiguous().view(G, O // G, CK).transpose(1, 2)
    grad_input = torch.zeros((N, C, H, W), dtype=_opmath(input), device=input.device)
    grad_offset = torch.empty(offset.shape, dtype=offset.dtype, device=offset.device)
    grad_weight = torch.zeros((G, O // G, CK), dtype=_opmath(weight), device=weight.device)
    b = _chunk(input, weight, L)
    columns = torch.empty((b, C * kh * kw, L), dtype=input.dtype, device=input.device)
    grad_columns = torch.empty_like(columns)
    for n0 in range(0, N, b):
        n1 = min(N, n0 + b)
        cols, gcols = columns[: n1 - n0], grad_columns[: n1 - n0]
        x, off, g = input[n0:n1], offset[n0:n1], grad_out[n0:n1].view(n1 - n0, G, O // G, L)
        k.im2col(x, off, cols, *geometry)
        torch.matmul(w_t, g, out=gcols.view(n1 - n0, G, CK, L))
        grad_weight += torch.matmul(g, cols.view(n1 - n0, G, CK, L).transpose(2, 3)).sum(0, dtype=grad_weight.dtype)
        k.col2im(gcols, off, grad_input[n0:n1], *geometry)
        k.offset_grad(gcols, x, off, grad_offset[n0:n1], *geometry)
    return (grad_input.to(input.dtype), grad_offset, grad_weight.view(weight.shape).to(weight.dtype))

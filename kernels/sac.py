"""Triton kernels of the switchable atrous convolution's fused steps: the same math as
``csrc/sac/sac.h`` (switch pre-pass, forward blend epilogue, backward blend epilogue).

Activations are dense (N, C, H, W) tensors in NCHW or channels_last order: an element of image n,
channel c and pixel p = h * W + w lies at ``n * C * HW + c * s_c + p * s_p`` with
(s_c, s_p) = (HW, 1) for NCHW and (1, C) for channels_last. Op-math tensors (switch, switch
gradient, context gradient, bias) are float32 (float64 for float64 activations), contiguous.
"""

import torch
import triton
import triton.language as tl

BLOCK_P = 64
BLOCK_C = 32
BLOCK = 1024


@triton.jit
def switch_dot_kernel(x, w, z, N, C, HW, s_c, s_p, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    """z[n, p] = sum_c w[c] * x[n, c, p], one block of pixels per program."""
    i = tl.program_id(0).to(tl.int64) * BLOCK_P + tl.arange(0, BLOCK_P)
    mi = i < N * HW
    n = i // HW
    p = i % HW
    acc = tl.zeros((BLOCK_P,), dtype=z.dtype.element_ty)
    for c0 in range(0, C, BLOCK_C):
        c = c0 + tl.arange(0, BLOCK_C).to(tl.int64)
        mc = c < C
        offs = (n * C * HW + p * s_p)[:, None] + (c * s_c)[None, :]
        xv = tl.load(x + offs, mask=mi[:, None] & mc[None, :], other=0.0).to(acc.dtype)
        wv = tl.load(w + c, mask=mc, other=0.0)
        acc += tl.sum(xv * wv[None, :], axis=1)
    tl.store(z + i, acc, mask=mi)


@triton.jit
def blend_forward_kernel(small, large, s, bias, N, C, HW, CHANNELS_LAST: tl.constexpr,
                         HAS_BIAS: tl.constexpr, BLOCK: tl.constexpr):
    """large <- large + s * (small - large) + bias; small <- small - large (storage order)."""
    i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = i < N * C * HW
    if CHANNELS_LAST:
        c = i % C
        p = (i // C) % HW
    else:
        p = i % HW
        c = (i // HW) % C
    n = i // (C * HW)
    sv = tl.load(s + n * HW + p, mask=m, other=0.0)
    ys = tl.load(small + i, mask=m, other=0.0).to(sv.dtype)
    yl = tl.load(large + i, mask=m, other=0.0).to(sv.dtype)
    d = ys - yl
    y = yl + sv * d
    if HAS_BIAS:
        y += tl.load(bias + c, mask=m, other=0.0)
    tl.store(small + i, d.to(small.dtype.element_ty), mask=m)
    tl.store(large + i, y.to(large.dtype.element_ty), mask=m)


@triton.jit
def blend_backward_kernel(grad, diff, s, ctx_grad, g_small, g_large, g_switch, N, C, HW, s_c, s_p,
                          BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    """gy = grad + ctx_grad[n, c]; g_small = s * gy; g_large = gy - g_small;
    g_switch[n, p] = sum_c gy * diff."""
    i = tl.program_id(0).to(tl.int64) * BLOCK_P + tl.arange(0, BLOCK_P)
    mi = i < N * HW
    n = i // HW
    p = i % HW
    sv = tl.load(s + i, mask=mi, other=0.0)
    acc = tl.zeros((BLOCK_P,), dtype=sv.dtype)
    for c0 in range(0, C, BLOCK_C):
        c = c0 + tl.arange(0, BLOCK_C).to(tl.int64)
        mc = c < C
        m = mi[:, None] & mc[None, :]
        offs = (n * C * HW + p * s_p)[:, None] + (c * s_c)[None, :]
        gy = tl.load(grad + offs, mask=m, other=0.0).to(acc.dtype)
        gy += tl.load(ctx_grad + n[:, None] * C + c[None, :], mask=m, other=0.0)
        acc += tl.sum(gy * tl.load(diff + offs, mask=m, other=0.0).to(acc.dtype), axis=1)
        gs = sv[:, None] * gy
        tl.store(g_small + offs, gs.to(g_small.dtype.element_ty), mask=m)
        tl.store(g_large + offs, (gy - gs).to(g_large.dtype.element_ty), mask=m)
    tl.store(g_switch + i, acc, mask=mi)


def _strides(t: torch.Tensor, channels_last: bool):
    HW = t.shape[2] * t.shape[3]
    return (1, t.shape[1]) if channels_last else (HW, 1)


def switch_dot(x: torch.Tensor, w: torch.Tensor, z: torch.Tensor, channels_last: bool) -> None:
    N, C, H, W = x.shape
    if z.numel() == 0:
        return
    s_c, s_p = _strides(x, channels_last)
    switch_dot_kernel[(triton.cdiv(N * H * W, BLOCK_P),)](x, w, z, N, C, H * W, s_c, s_p, BLOCK_P=BLOCK_P, BLOCK_C=BLOCK_C)


def blend_forward(small, large, s, bias, channels_last: bool) -> None:
    N, C, H, W = small.shape
    if small.numel() == 0:
        return
    blend_forward_kernel[(triton.cdiv(small.numel(), BLOCK),)](
        small, large, s, s if bias is None else bias, N, C, H * W,
        CHANNELS_LAST=channels_last, HAS_BIAS=bias is not None, BLOCK=BLOCK,
    )


def blend_backward(grad, diff, s, ctx_grad, g_small, g_large, g_switch, channels_last: bool) -> None:
    N, C, H, W = grad.shape
    if g_switch.numel() == 0:
        return
    s_c, s_p = _strides(grad, channels_last)
    blend_backward_kernel[(triton.cdiv(N * H * W, BLOCK_P),)](
        grad, diff, s, ctx_grad, g_small, g_large, g_switch, N, C, H * W, s_c, s_p,
        BLOCK_P=BLOCK_P, BLOCK_C=BLOCK_C,
    )

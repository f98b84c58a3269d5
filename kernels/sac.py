"""Triton kernels of the switchable atrous convolution's fused steps: the same math as
``csrc/sac/sac.h`` (switch pre-pass, forward blend epilogue, backward blend epilogue), and the
dual-accumulator convolution of the "igemm" algorithm (both branches and the blend in one kernel).

Activations are dense (N, C, H, W) tensors in NCHW or channels_last order: an element of image n,
channel c and pixel p = h * W + w lies at ``n * C * HW + c * s_c + p * s_p`` with
(s_c, s_p) = (HW, 1) for NCHW and (1, C) for channels_last. Op-math tensors (switch, switch
gradient, context gradient, bias) are float32 (float64 for float64 activations), contiguous.
"""

import os

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


# ---- the "igemm" algorithm: both branch convolutions and the blend in one kernel ----------------
#
# A program computes BLOCK_M output pixels (of one image) x BLOCK_N output channels (of one group)
# with two fp32 accumulators (fp64 for fp64): for every tap (i, j) of the kernel and every block of
# BLOCK_K input channels it gathers the dilation-d pixels (padding p) and the dilation-3d pixels
# (padding 3p) of x' as two [BLOCK_M, BLOCK_K] tiles and multiplies them with the tap's
# [BLOCK_K, BLOCK_N] tiles of w_small and w_large (tl.dot). Both gathers read the same
# neighbourhood of the tile (caches keep it). The epilogue writes y = A_l + s (A_s - A_l) + bias,
# A_s - A_l (saved for the backward), and the column sums of y of the tile to y_part[n, tile, o]
# (reduced afterwards: deterministic, no atomics). Activations are addressed through strides, so
# NCHW and channels_last both work (channels_last reads BLOCK_K contiguous channels).
# Weights are (kh, kw, C/g, O) contiguous: a tile row is contiguous in output channels.

# GPU configurations (BLOCK_M is picked by the launcher: it fixes the y_part layout).
DUAL_CONV_CONFIGS = [
    triton.Config({"BLOCK_N": 64, "BLOCK_K": 32}, num_warps=4, num_stages=3),
    triton.Config({"BLOCK_N": 128, "BLOCK_K": 32}, num_warps=8, num_stages=3),
    triton.Config({"BLOCK_N": 64, "BLOCK_K": 64}, num_warps=4, num_stages=2),
    triton.Config({"BLOCK_N": 128, "BLOCK_K": 64}, num_warps=8, num_stages=2),
]
# Under the interpreter (tests on CPU): one small fixed configuration, no autotuning; on the GPU
# problems below AUTOTUNE_MIN_OUTPUTS output elements take the first configuration untuned.
INTERPRET_CONFIG = dict(BLOCK_N=16, BLOCK_K=16)
AUTOTUNE_MIN_OUTPUTS = 1 << 22


@triton.jit
def dual_conv_kernel(x, w_small, w_large, s, bias, y, diff, y_part,
                     C, H, W, O, Ho, Wo, Cg, Og, KH, KW, SH, SW, PH, PW, DH, DW,
                     sx_n, sx_c, sx_h, sx_w, sy_n, sy_c, sy_h, sy_w, TILES_M,
                     HAS_BIAS: tl.constexpr, PRECISION: tl.constexpr,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    n = (pid_m // TILES_M).to(tl.int64)
    tile = pid_m % TILES_M
    TILES_N = tl.cdiv(Og, BLOCK_N)
    grp = pid_n // TILES_N
    p = tile * BLOCK_M + tl.arange(0, BLOCK_M)
    mp = p < Ho * Wo
    ho = p // Wo
    wo = p % Wo
    oc = (pid_n % TILES_N) * BLOCK_N + tl.arange(0, BLOCK_N)
    mo = oc < Og
    o = grp * Og + oc
    acc_dtype = s.dtype.element_ty
    acc_s = tl.zeros((BLOCK_M, BLOCK_N), dtype=acc_dtype)
    acc_l = tl.zeros((BLOCK_M, BLOCK_N), dtype=acc_dtype)
    x_img = x + n * sx_n + (grp * Cg).to(tl.int64) * sx_c
    for tap in range(0, KH * KW):
        i = tap // KW
        j = tap % KW
        # the same taps as sac.h (DualConvGeom::in_row / in_col): halo origin + tap offset
        hs = ho * SH - 3 * PH + 2 * PH + i * DH
        ws = wo * SW - 3 * PW + 2 * PW + j * DW
        hl = ho * SH - 3 * PH + i * 3 * DH
        wl = wo * SW - 3 * PW + j * 3 * DW
        ms = mp & (hs >= 0) & (hs < H) & (ws >= 0) & (ws < W)
        ml = mp & (hl >= 0) & (hl < H) & (wl >= 0) & (wl < W)
        off_s = hs.to(tl.int64) * sx_h + ws.to(tl.int64) * sx_w
        off_l = hl.to(tl.int64) * sx_h + wl.to(tl.int64) * sx_w
        w_tap = tap * Cg * O
        for c0 in range(0, Cg, BLOCK_K):
            c = c0 + tl.arange(0, BLOCK_K)
            mc = c < Cg
            off_c = c.to(tl.int64) * sx_c
            a_s = tl.load(x_img + off_s[:, None] + off_c[None, :], mask=ms[:, None] & mc[None, :], other=0.0)
            a_l = tl.load(x_img + off_l[:, None] + off_c[None, :], mask=ml[:, None] & mc[None, :], other=0.0)
            w_offs = w_tap + c[:, None] * O + o[None, :]
            mw = mc[:, None] & mo[None, :]
            b_s = tl.load(w_small + w_offs, mask=mw, other=0.0)
            b_l = tl.load(w_large + w_offs, mask=mw, other=0.0)
            acc_s = tl.dot(a_s, b_s, acc_s, input_precision=PRECISION, out_dtype=acc_s.dtype)
            acc_l = tl.dot(a_l, b_l, acc_l, input_precision=PRECISION, out_dtype=acc_l.dtype)
    sv = tl.load(s + n * Ho * Wo + p, mask=mp, other=0.0)
    d = acc_s - acc_l
    yv = acc_l + sv[:, None] * d
    if HAS_BIAS:
        yv += tl.load(bias + o, mask=mo, other=0.0)[None, :]
    m = mp[:, None] & mo[None, :]
    y_offs = (n * sy_n + ho.to(tl.int64) * sy_h + wo.to(tl.int64) * sy_w)[:, None] + o.to(tl.int64)[None, :] * sy_c
    tl.store(y + y_offs, yv.to(y.dtype.element_ty), mask=m)
    tl.store(diff + y_offs, d.to(diff.dtype.element_ty), mask=m)
    part = tl.sum(tl.where(m, yv, 0.0), axis=0)
    tl.store(y_part + (n * TILES_M + tile) * O + o, part, mask=mo)


dual_conv_tuned = triton.autotune(configs=DUAL_CONV_CONFIGS, key=["Cg", "Og", "KH", "KW", "SH", "SW"])(dual_conv_kernel)


def dual_conv_block_m(pixels: int) -> int:
    """Pixels per program: 128 for large images, 64 otherwise (32 in the interpreter)."""
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        return 32
    return 128 if pixels >= 4096 else 64


def dual_conv(xp, w_small, w_large, s, bias, y, diff, stride, padding, dilation, groups) -> torch.Tensor:
    """Fills y and diff (N, O, Ho, Wo, any dense layout) from x' (N, C, H, W, any strides) and the
    (kh, kw, C/g, O) contiguous weights; s (N, Ho, Wo) op-math contiguous, bias (O,) op-math or
    None. Returns the (N, O) op-math pixel sums of y."""
    N, C, H, W = xp.shape
    KH, KW, Cg, O = w_small.shape
    Ho, Wo = y.shape[2:]
    Og = O // groups
    block_m = dual_conv_block_m(Ho * Wo)
    tiles_m = triton.cdiv(Ho * Wo, block_m)
    y_part = torch.empty((N, tiles_m, O), device=xp.device, dtype=s.dtype)
    if y.numel() == 0:
        return y_part.sum(1)
    precision = "tf32" if xp.dtype in (torch.float16, torch.bfloat16) else "ieee"
    args = (xp, w_small, w_large, s, s if bias is None else bias, y, diff, y_part,
            C, H, W, O, Ho, Wo, Cg, Og, KH, KW, stride[0], stride[1], padding[0], padding[1],
            dilation[0], dilation[1], *xp.stride(), *y.stride())
    consts = dict(HAS_BIAS=bias is not None, PRECISION=precision, BLOCK_M=block_m)
    if os.environ.get("TRITON_INTERPRET", "0") == "1" or y.numel() < AUTOTUNE_MIN_OUTPUTS:
        fixed = DUAL_CONV_CONFIGS[0]
        config = INTERPRET_CONFIG if os.environ.get("TRITON_INTERPRET", "0") == "1" else dict(fixed.kwargs)
        launch = {} if config is INTERPRET_CONFIG else dict(num_warps=fixed.num_warps, num_stages=fixed.num_stages)
        grid = (N * tiles_m, groups * triton.cdiv(Og, config["BLOCK_N"]))
        dual_conv_kernel[grid](*args, tiles_m, **consts, **config, **launch)
    else:
        def grid(meta):
            return (N * tiles_m, groups * triton.cdiv(Og, meta["BLOCK_N"]))

        dual_conv_tuned[grid](*args, tiles_m, **consts)
    return y_part.sum(1)

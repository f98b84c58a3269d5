"""Triton kernels of ``deform_conv2d`` (deformable convolution v1): the deformable im2col, its
adjoint col2im (the input gradient) and the offset gradient. The GEMMs with the weight are
ATen's (cuBLAS); the host glue is :mod:`pyops.sac._deform_triton`.

Design (spec shape N8 C256 64x64, O256, 3x3, one offset group, bf16, H200; the CUDA kernels of
csrc/sac/deform_cuda.cu are the default and carry the same budget): im2col writes the columns,
C*9*HW*N*2 B = 151 MB (~31 us at 4.8 TB/s), reading the input's corners mostly from L1/L2; the
GEMM is 2*O*C*9*HW*N = 38.7 GFLOP (~39 us at 990 TFLOP/s); col2im and offset_grad each read the
151 MB of column gradients once (col2im with ~4 float atomics per value). Predicted: ~0.1 ms
forward, ~0.3 ms backward per convolution; never measured on a GPU. Tiles of 16 channels x 128
points, 4 warps. sm_90 (benchmarks/results/static): im2col 80, col2im 146, offset_grad 168
registers, no spills, no fp64: 384-768 threads/SM, below the 1024 target (an accepted #18
exception; smaller channel tiles are the first thing to try on a GPU).

Tensors: input (b, C, H, W) and offset (b, 2 OG K, Ho, Wo) are addressed through their strides
(any layout); columns and column gradients (b, C K, L) are contiguous, ``L = Ho Wo``, row
``c K + k`` for channel c and kernel point ``k = i kw + j``; the input gradient is a contiguous
op-math buffer; the offset gradient is contiguous in the input's dtype. Op-math (``ACC``) is
float32, float64 for float64 inputs.
"""

import os

import torch
import triton
import triton.language as tl

TILE = 2048  # channels x pixels per step of a program: BLOCK_C x BLOCK_P
MAX_BLOCK_C = 16  # channels per step (fewer when an offset group has fewer)
INTERPRET_TILE = 8192  # the interpreter pays per program and per step: bigger tiles there
NUM_WARPS = 4


def _interpreted() -> bool:
    """Whether the kernels run in the Triton interpreter (on CPU tensors, in the tests)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _opmath(t: torch.Tensor):
    """The op-math type of a tensor's kernels: float64 for float64, float32 otherwise."""
    return tl.float64 if t.dtype == torch.float64 else tl.float32


def _launch(kernel, grid, *args, **meta) -> None:
    """kernel[grid](*args, **meta), skipped for an empty grid (an empty batch)."""
    if min(grid) > 0:
        kernel[grid](*args, **meta)


# ---- the sampling points of a block of (image, offset group, kernel point, pixel) ---------------
# A program takes BLOCK_P consecutive points t = ((n OG + a) K + k) L + p of the T = b OG K L (one
# (dy, dx) pair of the offsets each) and runs over the Cpg channels of each point's offset group,
# BLOCK_C at a time: the position, bilinear weights and corner addresses are made once per point
# and serve all of them. Consecutive points share (n, a, k) and neighbouring pixels, so column
# rows and offsets are read and written in runs of contiguous pixels.


@triton.jit
def _points(off, T, Cpg, OG, K, KW, Wo, L, sh, sw, ph, pw, dh, dw, o_n, o_c, o_h, o_w,
            ACC: tl.constexpr, BLOCK_P: tl.constexpr):
    """The points of this program: (mask, n, first channel a Cpg of the group, k, p, offset
    channel 2 (a K + k), y, x); indices int64, positions in the offsets' dtype held in ACC."""
    t = tl.program_id(0).to(tl.int64) * BLOCK_P + tl.arange(0, BLOCK_P)
    mp = t < T
    r = t // L
    p = t - r * L
    k = r % K
    r = r // K
    a = r % OG
    n = r // OG
    oy = p // Wo
    ox = p - oy * Wo
    row = 2 * (a * K + k)
    src = off + n * o_n + row * o_c + oy * o_h + ox * o_w
    dy = tl.load(src, mask=mp, other=0.0).to(ACC)
    dx = tl.load(src + o_c, mask=mp, other=0.0).to(ACC)
    # in op-math (float32 for float16/bfloat16), as the reference and the C++ kernels compute them
    y = (oy * sh - ph + (k // KW) * dh).to(ACC) + dy
    x = (ox * sw - pw + (k % KW) * dw).to(ACC) + dx
    return mp, n, a * Cpg, k, p, row, y, x


@triton.jit
def _cell(y, x, H, W, mp):
    """The bilinear cell of the positions (y, x) in an H x W image: (finite, ly, lx, iy0, ix0,
    and which corners (y0, x0), (y0, x0 + 1), (y0 + 1, x0), (y0 + 1, x0 + 1) are read). A point
    with y <= -1, y >= H, x <= -1 or x >= W (or NaN) reads no corner; ly, lx are 0 there and the
    indices 0, so nothing overflows."""
    finite = (tl.abs(y) < float("inf")) & (tl.abs(x) < float("inf"))
    inside = mp & (y > -1) & (y < H) & (x > -1) & (x < W)
    y0 = tl.floor(tl.where(inside, y, 0.0))
    x0 = tl.floor(tl.where(inside, x, 0.0))
    ly = tl.where(inside, y - y0, 0.0)
    lx = tl.where(inside, x - x0, 0.0)
    iy0 = y0.to(tl.int64)
    ix0 = x0.to(tl.int64)
    vy0 = inside & (iy0 >= 0)
    vy1 = inside & (iy0 < H - 1)
    vx0 = ix0 >= 0
    vx1 = ix0 < W - 1
    return finite, ly, lx, iy0, ix0, vy0 & vx0, vy0 & vx1, vy1 & vx0, vy1 & vx1


@triton.jit
def _weights(ly, lx):
    """The bilinear weights of the four corners, as (1, BLOCK_P) rows."""
    return (((1 - ly) * (1 - lx))[None, :], ((1 - ly) * lx)[None, :], (ly * (1 - lx))[None, :],
            (ly * lx)[None, :])


@triton.jit
def _corners(src, s_h, s_w, m, m00, m01, m10, m11, ACC: tl.constexpr):
    """The four corner values (ACC) of a (channels, points) block whose corners (y0, x0) lie at
    ``src``, 0 where a corner is not read (m masks the block)."""
    v00 = tl.load(src, mask=m & m00[None, :], other=0.0).to(ACC)
    v01 = tl.load(src + s_w, mask=m & m01[None, :], other=0.0).to(ACC)
    v10 = tl.load(src + s_h, mask=m & m10[None, :], other=0.0).to(ACC)
    v11 = tl.load(src + (s_h + s_w), mask=m & m11[None, :], other=0.0).to(ACC)
    return v00, v01, v10, v11


# ---- kernels ---------------------------------------------------------------------------------


@triton.jit
def im2col_kernel(inp, off, col, T, C, H, W, Wo, L, Cpg, OG, K, KW, sh, sw, ph, pw, dh, dw,
                  s_n, s_c, s_h, s_w, o_n, o_c, o_h, o_w,
                  ACC: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    """columns[n, c K + k, p] = the bilinear sample of input[n, c] at point (n, a, k, p) for the
    channels c of offset group a (0 outside, NaN at a non-finite position), in the columns'
    dtype."""
    mp, n, c0, k, p, row, y, x = _points(off, T, Cpg, OG, K, KW, Wo, L, sh, sw, ph, pw, dh, dw, o_n, o_c, o_h,
                                         o_w, ACC, BLOCK_P)
    finite, ly, lx, iy0, ix0, m00, m01, m10, m11 = _cell(y, x, H, W, mp)
    w00, w01, w10, w11 = _weights(ly, lx)
    bad = (~finite)[None, :]
    src = (inp + n * s_n + c0 * s_c + iy0 * s_h + ix0 * s_w)[None, :]
    dst = (col + ((n * C + c0) * K + k) * L + p)[None, :]
    for c in range(0, Cpg, BLOCK_C):
        cc = (c + tl.arange(0, BLOCK_C)).to(tl.int64)[:, None]
        m = (cc < Cpg) & mp[None, :]
        v00, v01, v10, v11 = _corners(src + cc * s_c, s_h, s_w, m, m00, m01, m10, m11, ACC)
        v = tl.where(bad, float("nan"), w00 * v00 + w01 * v01 + w10 * v10 + w11 * v11)
        tl.store(dst + cc * (K * L), v.to(col.dtype.element_ty), mask=m)


@triton.jit
def col2im_kernel(gcol, off, gin, T, C, H, W, Wo, L, Cpg, OG, K, KW, sh, sw, ph, pw, dh, dw, o_n, o_c, o_h, o_w,
                  ACC: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    """grad_input[n, c] += grad_columns[n, c K + k, p] times the bilinear weights of its sample,
    at the four corners: atomic adds into the contiguous op-math grad_input; corners the forward
    does not read, points outside and non-finite positions add nothing."""
    mp, n, c0, k, p, row, y, x = _points(off, T, Cpg, OG, K, KW, Wo, L, sh, sw, ph, pw, dh, dw, o_n, o_c, o_h,
                                         o_w, ACC, BLOCK_P)
    # a non-finite position is outside: it reads, so here adds, no corner
    finite, ly, lx, iy0, ix0, m00, m01, m10, m11 = _cell(y, x, H, W, mp)
    w00, w01, w10, w11 = _weights(ly, lx)
    src = (gcol + ((n * C + c0) * K + k) * L + p)[None, :]
    dst = (gin + (n * C + c0) * H * W + iy0 * W + ix0)[None, :]
    for c in range(0, Cpg, BLOCK_C):
        cc = (c + tl.arange(0, BLOCK_C)).to(tl.int64)[:, None]
        m = (cc < Cpg) & mp[None, :]
        g = tl.load(src + cc * (K * L), mask=m, other=0.0).to(ACC)
        d = dst + cc * (H * W)
        tl.atomic_add(d, g * w00, mask=m & m00[None, :], sem="relaxed")
        tl.atomic_add(d + 1, g * w01, mask=m & m01[None, :], sem="relaxed")
        tl.atomic_add(d + W, g * w10, mask=m & m10[None, :], sem="relaxed")
        tl.atomic_add(d + (W + 1), g * w11, mask=m & m11[None, :], sem="relaxed")


@triton.jit
def offset_grad_kernel(gcol, inp, off, goff, T, C, H, W, Wo, L, Cpg, OG, K, KW, sh, sw, ph, pw, dh, dw,
                       s_n, s_c, s_h, s_w, o_n, o_c, o_h, o_w,
                       ACC: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    """grad_offset[n, 2 (a K + k) + {0, 1}, p] = the sum over the channels c of offset group a of
    grad_columns[n, c K + k, p] times the slope of the sample in y (x):
    (1 - lx)(v10 - v00) + lx (v11 - v01) and (1 - ly)(v01 - v00) + ly (v11 - v10); 0 outside,
    NaN at a non-finite position. The channels are summed in a fixed order (per lane, then one
    tree over the BLOCK_C lanes): deterministic."""
    mp, n, c0, k, p, row, y, x = _points(off, T, Cpg, OG, K, KW, Wo, L, sh, sw, ph, pw, dh, dw, o_n, o_c, o_h,
                                         o_w, ACC, BLOCK_P)
    finite, ly, lx, iy0, ix0, m00, m01, m10, m11 = _cell(y, x, H, W, mp)
    ly = ly[None, :]
    lx = lx[None, :]
    src = (inp + n * s_n + c0 * s_c + iy0 * s_h + ix0 * s_w)[None, :]
    gsrc = (gcol + ((n * C + c0) * K + k) * L + p)[None, :]
    acc_y = tl.zeros((BLOCK_C, BLOCK_P), dtype=ACC)
    acc_x = tl.zeros((BLOCK_C, BLOCK_P), dtype=ACC)
    for c in range(0, Cpg, BLOCK_C):
        cc = (c + tl.arange(0, BLOCK_C)).to(tl.int64)[:, None]
        m = (cc < Cpg) & mp[None, :]
        v00, v01, v10, v11 = _corners(src + cc * s_c, s_h, s_w, m, m00, m01, m10, m11, ACC)
        g = tl.load(gsrc + cc * (K * L), mask=m, other=0.0).to(ACC)
        acc_y += g * ((1 - lx) * (v10 - v00) + lx * (v11 - v01))
        acc_x += g * ((1 - ly) * (v01 - v00) + ly * (v11 - v10))
    gy = tl.where(finite, tl.sum(acc_y, axis=0), float("nan"))
    gx = tl.where(finite, tl.sum(acc_x, axis=0), float("nan"))
    dst = goff + (n * (2 * OG * K) + row) * L + p
    tl.store(dst, gy.to(goff.dtype.element_ty), mask=mp)
    tl.store(dst + L, gx.to(goff.dtype.element_ty), mask=mp)


# ---- launchers -------------------------------------------------------------------------------


def _blocks(Cpg: int) -> tuple[int, int]:
    """(BLOCK_C, BLOCK_P): up to MAX_BLOCK_C channels (a power of two covering Cpg when fewer),
    and pixels to fill the tile."""
    block_c = min(MAX_BLOCK_C, triton.next_power_of_2(Cpg))
    return block_c, (INTERPRET_TILE if _interpreted() else TILE) // block_c


def _geometry(C, offset, kernel_size, stride, padding, dilation, offset_groups):
    """The launch grid and the shared scalar arguments (T, C .. dw) of the three kernels."""
    N, _, Ho, Wo = offset.shape
    kh, kw = kernel_size
    Cpg = C // offset_groups
    block_c, block_p = _blocks(Cpg)
    L = Ho * Wo
    T = N * offset_groups * kh * kw * L
    meta = dict(BLOCK_C=block_c, BLOCK_P=block_p, num_warps=NUM_WARPS)
    return (triton.cdiv(T, block_p),), meta, (Wo, L, Cpg, offset_groups, kh * kw, kw, *stride, *padding, *dilation), T


def im2col(input, offset, columns, kernel_size, stride, padding, dilation, offset_groups) -> None:
    """columns (b, C kh kw, Ho Wo) contiguous <- the deformable im2col of input (b, C, H, W) at
    offset (b, 2 offset_groups kh kw, Ho, Wo), both any layout."""
    _, C, H, W = input.shape
    grid, meta, geo, T = _geometry(C, offset, kernel_size, stride, padding, dilation, offset_groups)
    _launch(im2col_kernel, grid, input, offset, columns, T, C, H, W, *geo, *input.stride(), *offset.stride(),
            ACC=_opmath(input), **meta)


def col2im(grad_columns, offset, grad_input, kernel_size, stride, padding, dilation, offset_groups) -> None:
    """grad_input (b, C, H, W) contiguous op-math += the adjoint of im2col applied to grad_columns
    (b, C kh kw, Ho Wo) contiguous."""
    _, C, H, W = grad_input.shape
    grid, meta, geo, T = _geometry(C, offset, kernel_size, stride, padding, dilation, offset_groups)
    _launch(col2im_kernel, grid, grad_columns, offset, grad_input, T, C, H, W, *geo, *offset.stride(),
            ACC=_opmath(grad_input), **meta)


def offset_grad(grad_columns, input, offset, grad_offset, kernel_size, stride, padding, dilation,
                offset_groups) -> None:
    """grad_offset (b, 2 offset_groups kh kw, Ho, Wo) contiguous <- the offset gradient from
    grad_columns (b, C kh kw, Ho Wo) contiguous and input, offset (any layout)."""
    _, C, H, W = input.shape
    grid, meta, geo, T = _geometry(C, offset, kernel_size, stride, padding, dilation, offset_groups)
    _launch(offset_grad_kernel, grid, grad_columns, input, offset, grad_offset, T, C, H, W, *geo,
            *input.stride(), *offset.stride(), ACC=_opmath(input), **meta)

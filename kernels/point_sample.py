"""Triton kernels of ``point_sample``: the same math as ``csrc/pointrend/point_sample.h``.

Tensors are addressed through explicit strides, so any input layout works; the coordinates are
(N, P, 2) contiguous in the op-math dtype (float32, or float64 for float64 inputs).
"""

import torch
import triton
import triton.language as tl


@triton.jit
def _unnormalize(u, size, ALIGN: tl.constexpr):
    g = u * 2.0 - 1.0
    if ALIGN:
        return ((g + 1.0) / 2.0) * (size - 1)
    return ((g + 1.0) * size - 1.0) / 2.0


@triton.jit
def _image(bidx, n, mask, B, HAS_BIDX: tl.constexpr):
    """Image sampled by rows n (batch_index[n], or n) and whether it exists."""
    if HAS_BIDX:
        b = tl.load(bidx + n, mask=mask, other=0)
    else:
        b = n
    ok = (b >= 0) & (b < B)
    return tl.where(ok, b, 0), ok


@triton.jit
def _taps(coords, bidx, i, mask, n, B, H, W, ALIGN: tl.constexpr, HAS_BIDX: tl.constexpr):
    """Bilinear taps of points i (rows n): position, floor, corner validity (all invalid when the
    row's image does not exist), integer corner 0, and the image index."""
    x = _unnormalize(tl.load(coords + 2 * i, mask=mask, other=0.0), W, ALIGN)
    y = _unnormalize(tl.load(coords + 2 * i + 1, mask=mask, other=0.0), H, ALIGN)
    b, ok = _image(bidx, n, mask, B, HAS_BIDX)
    x0, y0, vx0, vx1, vy0, vy1, ix0, iy0 = _cell(x, y, ok, H, W)
    return x, y, x0, y0, vx0, vx1, vy0, vy1, ix0, iy0, b


@triton.jit
def _cell(x, y, ok, H, W):
    """The bilinear cell of pixel position (x, y) in an H x W map: its corner 0 (the floors),
    which of the four corners lie inside (none where ``ok`` is false: x0/x0 + 1 by vx0/vx1,
    y0/y0 + 1 by vy0/vy1), and corner 0 as an int64 index that is safe to address."""
    x0 = tl.floor(x)
    y0 = tl.floor(y)
    vx0 = (x0 >= 0) & (x0 < W)
    vx1 = (x0 >= -1) & (x0 < W - 1)
    vy0 = ok & (y0 >= 0) & (y0 < H)
    vy1 = ok & (y0 >= -1) & (y0 < H - 1)
    ix0 = tl.where(vx0 | vx1, x0, 0.0).to(tl.int64)
    iy0 = tl.where(vy0 | vy1, y0, 0.0).to(tl.int64)
    return x0, y0, vx0, vx1, vy0, vy1, ix0, iy0


@triton.jit
def _corners(base, ix0, iy0, s_h, s_w, m, vx0, vx1, vy0, vy1, dtype: tl.constexpr):
    """The four corner values of a (points, channels) block, 0 where a corner is invalid."""
    r0 = iy0 * s_h
    r1 = r0 + s_h
    q0 = ix0 * s_w
    q1 = q0 + s_w
    v00 = tl.load(base + (r0 + q0)[:, None], mask=m & (vy0 & vx0)[:, None], other=0.0).to(dtype)
    v01 = tl.load(base + (r0 + q1)[:, None], mask=m & (vy0 & vx1)[:, None], other=0.0).to(dtype)
    v10 = tl.load(base + (r1 + q0)[:, None], mask=m & (vy1 & vx0)[:, None], other=0.0).to(dtype)
    v11 = tl.load(base + (r1 + q1)[:, None], mask=m & (vy1 & vx1)[:, None], other=0.0).to(dtype)
    return v00, v01, v10, v11


@triton.jit
def point_sample_fwd_kernel(
    inp, coords, bidx, out, B, N, C, H, W, P,
    s_n, s_c, s_h, s_w, o_n, o_c, o_p,
    ALIGN: tl.constexpr, HAS_BIDX: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
):
    i = tl.program_id(0).to(tl.int64) * BLOCK_P + tl.arange(0, BLOCK_P)
    c = tl.program_id(1).to(tl.int64) * BLOCK_C + tl.arange(0, BLOCK_C)
    mi = i < N * P
    mc = c < C
    n = i // P
    p = i % P
    x, y, x0, y0, vx0, vx1, vy0, vy1, ix0, iy0, b = _taps(coords, bidx, i, mi, n, B, H, W, ALIGN, HAS_BIDX)
    wx0 = x0 + 1 - x
    wx1 = x - x0
    wy0 = y0 + 1 - y
    wy1 = y - y0
    base = inp + (b * s_n)[:, None] + (c * s_c)[None, :]
    m = mi[:, None] & mc[None, :]
    v00, v01, v10, v11 = _corners(base, ix0, iy0, s_h, s_w, m, vx0, vx1, vy0, vy1, x.dtype)
    acc = (wx0 * wy0)[:, None] * v00
    acc += (wx1 * wy0)[:, None] * v01
    acc += (wx0 * wy1)[:, None] * v10
    acc += (wx1 * wy1)[:, None] * v11
    dst = out + (n * o_n + p * o_p)[:, None] + (c * o_c)[None, :]
    tl.store(dst, acc.to(out.dtype.element_ty), mask=m)


@triton.jit
def point_sample_coords_grad_kernel(
    inp, coords, bidx, grad, grad_coords, B, N, C, H, W, P,
    s_n, s_c, s_h, s_w, g_n, g_c, g_p,
    ALIGN: tl.constexpr, HAS_BIDX: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
):
    i = tl.program_id(0).to(tl.int64) * BLOCK_P + tl.arange(0, BLOCK_P)
    mi = i < N * P
    n = i // P
    p = i % P
    x, y, x0, y0, vx0, vx1, vy0, vy1, ix0, iy0, b = _taps(coords, bidx, i, mi, n, B, H, W, ALIGN, HAS_BIDX)
    d00 = tl.zeros([BLOCK_P], dtype=x.dtype)
    d01 = tl.zeros([BLOCK_P], dtype=x.dtype)
    d10 = tl.zeros([BLOCK_P], dtype=x.dtype)
    d11 = tl.zeros([BLOCK_P], dtype=x.dtype)
    for c_start in range(0, C, BLOCK_C):
        c = c_start + tl.arange(0, BLOCK_C).to(tl.int64)
        m = mi[:, None] & (c < C)[None, :]
        g = tl.load(grad + (n * g_n + p * g_p)[:, None] + (c * g_c)[None, :], mask=m, other=0.0)
        g = g.to(x.dtype)
        base = inp + (b * s_n)[:, None] + (c * s_c)[None, :]
        v00, v01, v10, v11 = _corners(base, ix0, iy0, s_h, s_w, m, vx0, vx1, vy0, vy1, x.dtype)
        d00 += tl.sum(g * v00, axis=1)
        d01 += tl.sum(g * v01, axis=1)
        d10 += tl.sum(g * v10, axis=1)
        d11 += tl.sum(g * v11, axis=1)
    gx = (d01 - d00) * (y0 + 1 - y) + (d11 - d10) * (y - y0)
    gy = (d10 - d00) * (x0 + 1 - x) + (d11 - d01) * (x - x0)
    if ALIGN:
        gx = gx * (W - 1)
        gy = gy * (H - 1)
    else:
        gx = gx * W
        gy = gy * H
    tl.store(grad_coords + 2 * i, gx, mask=mi)
    tl.store(grad_coords + 2 * i + 1, gy, mask=mi)


@triton.jit
def point_sample_corner_keys_kernel(
    coords, bidx, keys, weights, B, N, H, W, P, sentinel,
    ALIGN: tl.constexpr, HAS_BIDX: tl.constexpr, BLOCK_P: tl.constexpr,
):
    i = tl.program_id(0).to(tl.int64) * BLOCK_P + tl.arange(0, BLOCK_P)
    mi = i < N * P
    n = i // P
    x, y, x0, y0, vx0, vx1, vy0, vy1, ix0, iy0, b = _taps(coords, bidx, i, mi, n, B, H, W, ALIGN, HAS_BIDX)
    pix = b * H * W + iy0 * W + ix0
    e = 4 * i
    tl.store(keys + e, tl.where(vy0 & vx0, pix, sentinel), mask=mi)
    tl.store(keys + e + 1, tl.where(vy0 & vx1, pix + 1, sentinel), mask=mi)
    tl.store(keys + e + 2, tl.where(vy1 & vx0, pix + W, sentinel), mask=mi)
    tl.store(keys + e + 3, tl.where(vy1 & vx1, pix + W + 1, sentinel), mask=mi)
    tl.store(weights + e, (x0 + 1 - x) * (y0 + 1 - y), mask=mi)
    tl.store(weights + e + 1, (x - x0) * (y0 + 1 - y), mask=mi)
    tl.store(weights + e + 2, (x0 + 1 - x) * (y - y0), mask=mi)
    tl.store(weights + e + 3, (x - x0) * (y - y0), mask=mi)


@triton.jit
def point_sample_segments_kernel(
    sorted_keys, segment_end, order, weights, grad, grad_input, M, C, H, W, P, sentinel,
    g_n, g_c, g_p, gi_n, gi_c, gi_h, gi_w,
    BLOCK_S: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """Sorted positions i that start a run of equal keys sum the run (in sorted order) and
    write the pixel's gradient; the others do nothing."""
    i = tl.program_id(0).to(tl.int64) * BLOCK_S + tl.arange(0, BLOCK_S)
    c = tl.program_id(1).to(tl.int64) * BLOCK_C + tl.arange(0, BLOCK_C)
    mi = i < M
    mc = c < C
    key = tl.load(sorted_keys + i, mask=mi, other=sentinel)
    prev = tl.load(sorted_keys + i - 1, mask=mi & (i > 0), other=-1)
    start = mi & (key != sentinel) & (key != prev)
    length = tl.where(start, tl.load(segment_end + i, mask=start, other=0) - i, 0)
    b = key // (H * W)
    pix = key % (H * W)
    acc = tl.zeros([BLOCK_S, BLOCK_C], dtype=weights.dtype.element_ty)
    for t in range(0, tl.max(length, axis=0)):
        mt = t < length
        e = tl.load(order + i + t, mask=mt, other=0)
        w = tl.load(weights + e, mask=mt, other=0.0)
        n = (e // 4) // P
        p = (e // 4) % P
        m = mt[:, None] & mc[None, :]
        g = tl.load(grad + (n * g_n + p * g_p)[:, None] + (c * g_c)[None, :], mask=m, other=0.0)
        acc += w[:, None] * g.to(acc.dtype)
    dst = grad_input + (b * gi_n + (pix // W) * gi_h + (pix % W) * gi_w)[:, None] + (c * gi_c)[None, :]
    tl.store(dst, acc.to(grad_input.dtype.element_ty), mask=start[:, None] & mc[None, :])


# ---- launch helpers: outputs are allocated by the caller -------------------------------------

BLOCK_P = 64


def _block_c(C: int) -> int:
    return min(64, triton.next_power_of_2(max(C, 1)))


def forward(inp, coords, batch_index, out, align_corners: bool) -> None:
    B, C, H, W = inp.shape
    N, P = coords.shape[:2]
    block_c = _block_c(C)
    grid = (triton.cdiv(N * P, BLOCK_P), triton.cdiv(C, block_c))
    point_sample_fwd_kernel[grid](
        inp, coords, _or(batch_index, coords), out, B, N, C, H, W, P, *inp.stride(), *out.stride(),
        ALIGN=align_corners, HAS_BIDX=batch_index is not None, BLOCK_P=BLOCK_P, BLOCK_C=block_c,
    )


def coords_grad(inp, coords, batch_index, grad, grad_coords, align_corners: bool) -> None:
    B, C, H, W = inp.shape
    N, P = coords.shape[:2]
    grid = (triton.cdiv(N * P, BLOCK_P),)
    point_sample_coords_grad_kernel[grid](
        inp, coords, _or(batch_index, coords), grad, grad_coords, B, N, C, H, W, P,
        *inp.stride(), *grad.stride(),
        ALIGN=align_corners, HAS_BIDX=batch_index is not None, BLOCK_P=BLOCK_P, BLOCK_C=_block_c(C),
    )


def input_grad(coords, batch_index, grad, grad_input, align_corners: bool) -> None:
    """Deterministic: corner keys, a stable sort, one writer per touched pixel.
    ``grad_input`` must be zero-filled."""
    B, C, H, W = grad_input.shape
    N, P = coords.shape[:2]
    M = 4 * N * P
    sentinel = B * H * W
    keys = torch.empty(M, dtype=torch.int64, device=coords.device)
    weights = torch.empty(M, dtype=coords.dtype, device=coords.device)
    point_sample_corner_keys_kernel[(triton.cdiv(N * P, BLOCK_P),)](
        coords, _or(batch_index, coords), keys, weights, B, N, H, W, P, sentinel,
        ALIGN=align_corners, HAS_BIDX=batch_index is not None, BLOCK_P=BLOCK_P,
    )
    sorted_keys, order = torch.sort(keys, stable=True)
    segment_end = torch.searchsorted(sorted_keys, sorted_keys, right=True)
    block_c = _block_c(C)
    grid = (triton.cdiv(M, BLOCK_P), triton.cdiv(C, block_c))
    point_sample_segments_kernel[grid](
        sorted_keys, segment_end, order, weights, grad, grad_input, M, C, H, W, P, sentinel,
        *grad.stride(), *grad_input.stride(), BLOCK_S=BLOCK_P, BLOCK_C=block_c,
    )


def _or(tensor, fallback):
    """Triton needs a pointer even for an argument a constexpr flag switches off."""
    return tensor if tensor is not None else fallback

"""Triton kernels of PointRend's point selection: the math of csrc/pointrend/point_select.h,
drawing the same Philox random numbers, so every backend picks the same candidates."""

import torch
import triton
import triton.language as tl

from .point_sample import _cell, _unnormalize


@triton.jit
def _random_point(seed, j, r, STREAM: tl.constexpr):
    """Point j of row r in stream STREAM: Philox-4x32-10 of counter (j, r, STREAM, 0)."""
    c0 = j.to(tl.uint32)
    c1 = r.to(tl.uint32)
    c2 = tl.full(c0.shape, STREAM, tl.uint32)
    c3 = tl.zeros(c0.shape, tl.uint32)
    a, b, _, _ = tl.philox(seed, c0, c1, c2, c3)
    scale = 1.0 / 16777216.0
    return (a >> 8).to(tl.float32) * scale, (b >> 8).to(tl.float32) * scale


@triton.jit
def score_candidates_kernel(
    logits, classes, cand_in, cand_out, uncertainty, seed_ptr, R, C, H, W, PC,
    s_n, s_c, s_h, s_w,
    HAS_CLASSES: tl.constexpr, SUPPLIED: tl.constexpr, BLOCK: tl.constexpr,
):
    i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mi = i < R * PC
    r = i // PC
    if SUPPLIED:
        x = tl.load(cand_in + 2 * i, mask=mi, other=0.0)
        y = tl.load(cand_in + 2 * i + 1, mask=mi, other=0.0)
    else:
        x, y = _random_point(tl.load(seed_ptr), i % PC, r, 0)
        tl.store(cand_out + 2 * i, x, mask=mi)
        tl.store(cand_out + 2 * i + 1, y, mask=mi)
    if HAS_CLASSES:
        ch = tl.load(classes + r, mask=mi, other=0)
    else:
        ch = tl.zeros_like(r)
    ok = (ch >= 0) & (ch < C)
    px = _unnormalize(x, W, False)
    py = _unnormalize(y, H, False)
    x0, y0, vx0, vx1, vy0, vy1, ix0, iy0 = _cell(px, py, ok, H, W)
    base = logits + r * s_n + tl.where(ok, ch, 0) * s_c + iy0 * s_h + ix0 * s_w
    v00 = tl.load(base, mask=mi & vy0 & vx0, other=0.0).to(tl.float32)
    v01 = tl.load(base + s_w, mask=mi & vy0 & vx1, other=0.0).to(tl.float32)
    v10 = tl.load(base + s_h, mask=mi & vy1 & vx0, other=0.0).to(tl.float32)
    v11 = tl.load(base + s_h + s_w, mask=mi & vy1 & vx1, other=0.0).to(tl.float32)
    wx0 = x0 + 1 - px
    wx1 = px - x0
    wy0 = y0 + 1 - py
    wy1 = py - y0
    acc = wx0 * wy0 * v00
    acc += wx1 * wy0 * v01
    acc += wx0 * wy1 * v10
    acc += wx1 * wy1 * v11
    tl.store(uncertainty + i, -tl.abs(acc), mask=mi)


@triton.jit
def pick_points_kernel(cand, top, out, seed_ptr, R, PC, K, NP, BLOCK: tl.constexpr):
    i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mi = i < R * NP
    r = i // NP
    k = i % NP
    chosen = mi & (k < K)
    idx = tl.load(top + r * K + k, mask=chosen, other=0)
    cx = tl.load(cand + 2 * (r * PC + idx), mask=chosen, other=0.0)
    cy = tl.load(cand + 2 * (r * PC + idx) + 1, mask=chosen, other=0.0)
    rx, ry = _random_point(tl.load(seed_ptr), k - K, r, 1)
    tl.store(out + 2 * i, tl.where(chosen, cx, rx), mask=mi)
    tl.store(out + 2 * i + 1, tl.where(chosen, cy, ry), mask=mi)


@triton.jit
def upsample_kernel(inp, up, uncertainty, R, h, w, s_r, s_h, s_w, ACC: tl.constexpr, BLOCK: tl.constexpr):
    # ACC: float32, float64 for float64 logits (point_select.h upsample2x)
    i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    H = 2 * h
    W = 2 * w
    mi = i < R * H * W
    r = i // (H * W)
    oy = (i // W) % H
    ox = i % W
    sy = tl.maximum((oy.to(ACC) + 0.5) * 0.5 - 0.5, 0.0)
    sx = tl.maximum((ox.to(ACC) + 0.5) * 0.5 - 0.5, 0.0)
    y0 = sy.to(tl.int64)
    x0 = sx.to(tl.int64)
    dy = tl.where(y0 < h - 1, 1, 0)
    dx = tl.where(x0 < w - 1, 1, 0)
    ly1 = sy - y0
    ly0 = 1.0 - ly1
    lx1 = sx - x0
    lx0 = 1.0 - lx1
    p = inp + r * s_r + y0 * s_h + x0 * s_w
    v00 = tl.load(p, mask=mi, other=0.0).to(ACC)
    v01 = tl.load(p + dx * s_w, mask=mi, other=0.0).to(ACC)
    v10 = tl.load(p + dy * s_h, mask=mi, other=0.0).to(ACC)
    v11 = tl.load(p + dy * s_h + dx * s_w, mask=mi, other=0.0).to(ACC)
    v = ly0 * (lx0 * v00 + lx1 * v01) + ly1 * (lx0 * v10 + lx1 * v11)
    v = v.to(up.dtype.element_ty)
    tl.store(up + i, v, mask=mi)
    tl.store(uncertainty + i, -tl.abs(v.to(tl.float32)), mask=mi)


@triton.jit(do_not_specialize=["H", "W"])  # H or W = 1 must stay a runtime int (for .to below)
def grid_points_kernel(idx, coords, total, H, W, BLOCK: tl.constexpr):
    i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mi = i < total
    k = tl.load(idx + i, mask=mi, other=0)
    # IEEE division (Triton's `/` is approximate on GPUs), so the centres equal the C++ kernels'
    w_step = tl.math.div_rn(1.0, W.to(tl.float32))
    h_step = tl.math.div_rn(1.0, H.to(tl.float32))
    tl.store(coords + 2 * i, w_step / 2.0 + (k % W).to(tl.float32) * w_step, mask=mi)
    tl.store(coords + 2 * i + 1, h_step / 2.0 + (k // W).to(tl.float32) * h_step, mask=mi)


# ---- launch helpers: outputs are allocated by the caller -------------------------------------

BLOCK = 256


def score_candidates(logits, classes, cand_in, cand_out, uncertainty, seed) -> None:
    R, C, H, W = logits.shape
    PC = uncertainty.shape[1]
    score_candidates_kernel[(triton.cdiv(R * PC, BLOCK),)](
        logits, classes if classes is not None else seed, cand_in if cand_in is not None else cand_out,
        cand_out, uncertainty, seed, R, C, H, W, PC, *logits.stride(),
        HAS_CLASSES=classes is not None, SUPPLIED=cand_in is not None, BLOCK=BLOCK,
    )


def pick_points(candidates, top, out, seed) -> None:
    R, NP = out.shape[:2]
    pick_points_kernel[(triton.cdiv(R * NP, BLOCK),)](
        candidates, top, out, seed, R, candidates.shape[1], top.shape[1], NP, BLOCK=BLOCK
    )


def upsample2x(logits, up, uncertainty) -> None:
    R, h, w = logits.shape
    upsample_kernel[(triton.cdiv(R * 4 * h * w, BLOCK),)](
        logits, up, uncertainty, R, h, w, *logits.stride(),
        ACC=tl.float64 if logits.dtype == torch.float64 else tl.float32, BLOCK=BLOCK
    )


def grid_points(indices, coords, H: int, W: int) -> None:
    total = indices.numel()
    grid_points_kernel[(triton.cdiv(total, BLOCK),)](indices, coords, total, H, W, BLOCK=BLOCK)

"""Triton kernels of the ADA geometric + colour stage: the same math as ``csrc/ada/ada.h``.

Images are addressed through explicit strides (any layout); outputs are contiguous (B, C, H, W).
``G`` (B, 3, 3) and ``Cm`` (B, 4, 4) are contiguous float32; ``taps`` is sym6 normalised to sum 1
(12 float32); ``margin`` holds the batch-wide reflect margin (left, top, right, bottom) as int32,
computed on the device by the caller. Computation is in float32.
"""

import os

import triton
import triton.language as tl


@triton.jit
def _floor_div2(a):
    # floor(a / 2) for integers of either sign
    return tl.where(a >= 0, a // 2, -((1 - a) // 2))


@triton.jit
def _reflect(p, m0, n):
    r = p - m0
    r = tl.where(r < 0, -r, r)
    r = tl.where(r > n - 1, 2 * (n - 1) - r, r)
    return r


@triton.jit
def _up_weight(p, i, n_up, taps):
    """Weight of padded index i in the bilinear sample at upsampled position p (ada.h: up_weight)."""
    ok = (p > -2.0) & (p < n_up + 1.0)
    p0 = tl.floor(tl.where(ok, p, 0.0))
    c0 = p0.to(tl.int32)
    w1 = p - p0
    w0 = 1.0 - w1
    k0 = c0 + 5 - 2 * i
    m0 = ok & (c0 >= 0) & (c0 < n_up) & (k0 >= 0) & (k0 < 12)
    m1 = ok & (c0 + 1 >= 0) & (c0 + 1 < n_up) & (k0 + 1 >= 0) & (k0 + 1 < 12)
    f0 = tl.load(taps + tl.where(m0, k0, 0), mask=m0, other=0.0)
    f1 = tl.load(taps + tl.where(m1, k0 + 1, 0), mask=m1, other=0.0)
    return tl.where(m0, w0 * 2.0 * f0, 0.0) + tl.where(m1, w1 * 2.0 * f1, 0.0)


@triton.jit
def _upmap(G, b, mask, mx0, my0, H, W):
    """Affine map grid index -> upsampled padded position of samples b (ada.h: make_upmap)."""
    g = G + 9 * b
    g0 = tl.load(g + 0, mask=mask, other=1.0)
    g1 = tl.load(g + 1, mask=mask, other=0.0)
    g2 = tl.load(g + 2, mask=mask, other=0.0)
    g3 = tl.load(g + 3, mask=mask, other=0.0)
    g4 = tl.load(g + 4, mask=mask, other=1.0)
    g5 = tl.load(g + 5, mask=mask, other=0.0)
    # float arithmetic that also works when Triton specialises H or W == 1 into a constexpr
    ox = W * 1.0 + 5.0
    oy = H * 1.0 + 5.0
    tx = -g0 * ox - g1 * oy + 2.0 * g2 + (2 * mx0 + W - 1).to(tl.float32)
    ty = -g3 * ox - g4 * oy + 2.0 * g5 + (2 * my0 + H - 1).to(tl.float32)
    return g0, g1, g3, g4, tx, ty


@triton.jit
def _color_rows(Cm, b, mask):
    c = Cm + 16 * b
    return (
        tl.load(c + 0, mask=mask, other=1.0), tl.load(c + 1, mask=mask, other=0.0), tl.load(c + 2, mask=mask, other=0.0),
        tl.load(c + 4, mask=mask, other=0.0), tl.load(c + 5, mask=mask, other=1.0), tl.load(c + 6, mask=mask, other=0.0),
        tl.load(c + 8, mask=mask, other=0.0), tl.load(c + 9, mask=mask, other=0.0), tl.load(c + 10, mask=mask, other=1.0),
        tl.load(c + 3, mask=mask, other=0.0), tl.load(c + 7, mask=mask, other=0.0), tl.load(c + 11, mask=mask, other=0.0),
    )


@triton.jit
def geom_color_fwd_kernel(
    x, out, G, Cm, taps, margin, B, H, W, s_b, s_c, s_h, s_w,
    CH: tl.constexpr, HAS_G: tl.constexpr, HAS_C: tl.constexpr, BLOCK: tl.constexpr,
):
    """BLOCK output pixels per program, all channels: the geometric chain, then the colour
    matrix. The 12 x 12 downsampling taps of a pixel form one axis (256 lanes, 144 used), the
    7 padded columns of each grid sample another; the 7 padded rows are a loop."""
    i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = i < B * H * W
    b = i // (H * W)
    y = (i // W) % H
    xo = i % W
    base = x + b * s_b
    if HAS_G:
        mx0 = tl.load(margin + 0)
        my0 = tl.load(margin + 1)
        Wp = W + mx0 + tl.load(margin + 2)
        Hp = H + my0 + tl.load(margin + 3)
        a00, a01, a10, a11, tx, ty = _upmap(G, b, mask, mx0, my0, H, W)
        k = tl.arange(0, 256)
        ky = k // 16
        kx = k % 16
        kval = (ky < 12) & (kx < 12)
        fk = tl.load(taps + tl.where(kval, ky, 0), mask=kval, other=0.0) * tl.load(
            taps + tl.where(kval, kx, 0), mask=kval, other=0.0
        )
        gx = (2 * xo[:, None] + kx[None, :] + 1).to(tl.float32)  # [BLOCK, 256] grid samples
        gy = (2 * y[:, None] + ky[None, :] + 1).to(tl.float32)
        px = a00[:, None] * gx + a01[:, None] * gy + tx[:, None]
        py = a10[:, None] * gx + a11[:, None] * gy + ty[:, None]
        ok = mask[:, None] & kval[None, :]
        ok = ok & (px > -2.0) & (px < (2 * Wp + 1).to(tl.float32)) & (py > -2.0) & (py < (2 * Hp + 1).to(tl.float32))
        ix0 = _floor_div2(tl.floor(tl.where(ok, px, 0.0)).to(tl.int32) - 5)
        iy0 = _floor_div2(tl.floor(tl.where(ok, py, 0.0)).to(tl.int32) - 5)
        j8 = tl.arange(0, 8)
        ix = ix0[:, :, None] + j8[None, None, :]  # [BLOCK, 256, 8] padded columns
        inx = ok[:, :, None] & (j8 < 7)[None, None, :] & (ix >= 0) & (ix < Wp)
        wx = tl.where(inx, _up_weight(px[:, :, None], ix, 2 * Wp, taps), 0.0)
        col = tl.where(inx, _reflect(ix, mx0, W), 0).to(tl.int64) * s_w
        acc0 = tl.zeros([BLOCK], dtype=tl.float32)
        acc1 = tl.zeros([BLOCK], dtype=tl.float32)
        acc2 = tl.zeros([BLOCK], dtype=tl.float32)
        for jy in range(7):
            iy = iy0 + jy
            iny = ok & (iy >= 0) & (iy < Hp)
            wy = tl.where(iny, _up_weight(py, iy, 2 * Hp, taps), 0.0) * fk[None, :]
            row = tl.where(iny, _reflect(iy, my0, H), 0).to(tl.int64) * s_h
            off = base[:, None, None] + row[:, :, None] + col
            m3 = iny[:, :, None] & inx
            w3 = wy[:, :, None] * wx
            v = tl.load(off, mask=m3, other=0.0).to(tl.float32)
            acc0 += tl.sum(tl.sum(w3 * v, axis=2), axis=1)
            if CH == 3:
                v = tl.load(off + s_c, mask=m3, other=0.0).to(tl.float32)
                acc1 += tl.sum(tl.sum(w3 * v, axis=2), axis=1)
                v = tl.load(off + 2 * s_c, mask=m3, other=0.0).to(tl.float32)
                acc2 += tl.sum(tl.sum(w3 * v, axis=2), axis=1)
    else:
        src = base + y * s_h + xo * s_w
        acc0 = tl.load(src, mask=mask, other=0.0).to(tl.float32)
        acc1 = acc0
        acc2 = acc0
        if CH == 3:
            acc1 = tl.load(src + s_c, mask=mask, other=0.0).to(tl.float32)
            acc2 = tl.load(src + 2 * s_c, mask=mask, other=0.0).to(tl.float32)
    if HAS_C:
        c00, c01, c02, c10, c11, c12, c20, c21, c22, o0, o1, o2 = _color_rows(Cm, b, mask)
        if CH == 3:
            r0 = c00 * acc0 + c01 * acc1 + c02 * acc2 + o0
            r1 = c10 * acc0 + c11 * acc1 + c12 * acc2 + o1
            r2 = c20 * acc0 + c21 * acc1 + c22 * acc2 + o2
            acc0, acc1, acc2 = r0, r1, r2
        else:
            s = (c00 + c01 + c02) / 3.0 + (c10 + c11 + c12) / 3.0 + (c20 + c21 + c22) / 3.0
            acc0 = acc0 * s + (o0 / 3.0 + o1 / 3.0 + o2 / 3.0)
    dst = out + b * (CH * H * W) + y * W + xo
    tl.store(dst, acc0.to(out.dtype.element_ty), mask=mask)
    if CH == 3:
        tl.store(dst + H * W, acc1.to(out.dtype.element_ty), mask=mask)
        tl.store(dst + 2 * H * W, acc2.to(out.dtype.element_ty), mask=mask)


@triton.jit
def grid_adjoint_kernel(
    g, gv, Cm, taps, B, H, W, s_b, s_c, s_h, s_w,
    CH: tl.constexpr, HAS_C: tl.constexpr, BLOCK: tl.constexpr,
):
    """Step 1 of the adjoint (ada.h: grid_adjoint): colour transposed, then the downsampling
    correlation transposed, for every grid sample, into gv (B, C, 2H + 12, 2W + 12) float32."""
    Hg = 2 * H + 12
    Wg = 2 * W + 12
    i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = i < B * Hg * Wg
    b = i // (Hg * Wg)
    gy = (i // Wg) % Hg
    gx = i % Wg
    oy0 = _floor_div2(gy - 12 + 1)  # ceil((gy - 12) / 2)
    ox0 = _floor_div2(gx - 12 + 1)
    j8 = tl.arange(0, 8)
    ox = ox0[:, None] + j8[None, :]
    kx = gx[:, None] - 1 - 2 * ox
    mx = mask[:, None] & (ox >= 0) & (ox < W) & (kx >= 0) & (kx < 12)
    fx = tl.load(taps + tl.where(mx, kx, 0), mask=mx, other=0.0)
    acc0 = tl.zeros([BLOCK], dtype=tl.float32)
    acc1 = tl.zeros([BLOCK], dtype=tl.float32)
    acc2 = tl.zeros([BLOCK], dtype=tl.float32)
    if HAS_C:
        c00, c01, c02, c10, c11, c12, c20, c21, c22, o0, o1, o2 = _color_rows(Cm, b, mask)
    for j in range(7):
        oy = oy0 + j
        ky = gy - 1 - 2 * oy
        my = mask & (oy >= 0) & (oy < H) & (ky >= 0) & (ky < 12)
        fy = tl.load(taps + tl.where(my, ky, 0), mask=my, other=0.0)
        m2 = mx & my[:, None]
        off = (b * s_b + oy * s_h)[:, None] + ox * s_w
        w = fy[:, None] * fx
        v0 = tl.load(g + tl.where(m2, off, 0), mask=m2, other=0.0).to(tl.float32)
        if CH == 3:
            v1 = tl.load(g + tl.where(m2, off + s_c, 0), mask=m2, other=0.0).to(tl.float32)
            v2 = tl.load(g + tl.where(m2, off + 2 * s_c, 0), mask=m2, other=0.0).to(tl.float32)
            if HAS_C:
                t0 = c00[:, None] * v0 + c10[:, None] * v1 + c20[:, None] * v2
                t1 = c01[:, None] * v0 + c11[:, None] * v1 + c21[:, None] * v2
                t2 = c02[:, None] * v0 + c12[:, None] * v1 + c22[:, None] * v2
                v0, v1, v2 = t0, t1, t2
            acc1 += tl.sum(w * v1, axis=1)
            acc2 += tl.sum(w * v2, axis=1)
        else:
            if HAS_C:
                s = (c00 + c01 + c02) / 3.0 + (c10 + c11 + c12) / 3.0 + (c20 + c21 + c22) / 3.0
                v0 = s[:, None] * v0
        acc0 += tl.sum(w * v0, axis=1)
    dst = gv + (b * CH * Hg + gy) * Wg + gx
    tl.store(dst, acc0, mask=mask)
    if CH == 3:
        tl.store(dst + Hg * Wg, acc1, mask=mask)
        tl.store(dst + 2 * Hg * Wg, acc2, mask=mask)


@triton.jit
def pixel_adjoint_kernel(
    gv, out, G, taps, margin, B, H, W,
    CH: tl.constexpr, BLOCK: tl.constexpr, ROWS: tl.constexpr, TILE: tl.constexpr,
):
    """Step 2 of the adjoint (ada.h: pixel_adjoint): every input pixel gathers, over the padded
    positions reflecting onto it and the grid samples whose footprint holds them, forward weight
    times step-1 gradient. Output contiguous (B, C, H, W)."""
    Hg = 2 * H + 12
    Wg = 2 * W + 12
    i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = i < B * H * W
    b = i // (H * W)
    y = ((i // W) % H).to(tl.int32)
    xo = (i % W).to(tl.int32)
    mx0 = tl.load(margin + 0)
    my0 = tl.load(margin + 1)
    mx1 = tl.load(margin + 2)
    my1 = tl.load(margin + 3)
    Wp = W + mx0 + mx1
    Hp = H + my0 + my1
    a00, a01, a10, a11, tx, ty = _upmap(G, b, mask, mx0, my0, H, W)
    det = a00 * a11 - a01 * a10
    i00 = a11 / det
    i01 = -a01 / det
    i10 = -a10 / det
    i11 = a00 / det
    ex = (tl.abs(i00) + tl.abs(i01)) * 6.5 + 2.0
    ey = (tl.abs(i10) + tl.abs(i11)) * 6.5 + 2.0
    finite = (ex < 1e9) & (ey < 1e9)  # also false for NaN
    acc0 = tl.zeros([BLOCK], dtype=tl.float32)
    acc1 = tl.zeros([BLOCK], dtype=tl.float32)
    acc2 = tl.zeros([BLOCK], dtype=tl.float32)
    t = tl.arange(0, TILE)
    rr = tl.arange(0, ROWS)
    for sy in range(3):
        # padded rows reflecting onto y: y + my0; my0 - y (1 <= y <= my0); my0 + 2 (H - 1) - y
        iy = tl.where(sy == 0, y + my0, tl.where(sy == 1, my0 - y, my0 + 2 * (H - 1) - y))
        vy = mask & ((sy == 0) | ((sy == 1) & (y >= 1) & (y <= my0)) | ((sy == 2) & (y <= H - 2) & (y >= H - 1 - my1)))
        for sx in range(3):
            ix = tl.where(sx == 0, xo + mx0, tl.where(sx == 1, mx0 - xo, mx0 + 2 * (W - 1) - xo))
            vx = (sx == 0) | ((sx == 1) & (xo >= 1) & (xo <= mx0)) | ((sx == 2) & (xo <= W - 2) & (xo >= W - 1 - mx1))
            v = vy & vx
            dx = (2 * ix).to(tl.float32) + 0.5 - tx
            dy = (2 * iy).to(tl.float32) + 0.5 - ty
            cx = i00 * dx + i01 * dy
            cy = i10 * dx + i11 * dy
            ok = finite & (cx == cx) & (cy == cy)
            gx0 = tl.where(ok, tl.floor(tl.minimum(tl.maximum(cx - ex, 0.0), Wg - 1.0)), 0.0).to(tl.int32)
            gx1 = tl.where(ok, tl.ceil(tl.minimum(tl.maximum(cx + ex, 0.0), Wg - 1.0)), Wg - 1.0).to(tl.int32)
            gy0 = tl.where(ok, tl.floor(tl.minimum(tl.maximum(cy - ey, 0.0), Hg - 1.0)), 0.0).to(tl.int32)
            gy1 = tl.where(ok, tl.ceil(tl.minimum(tl.maximum(cy + ey, 0.0), Hg - 1.0)), Hg - 1.0).to(tl.int32)
            gx1 = tl.where(v, gx1, gx0 - 1)  # an absent source scans nothing
            gy1 = tl.where(v, gy1, gy0 - 1)
            n_rows = tl.max(tl.where(v, gy1 - gy0 + 1, 0), axis=0)
            n_cols = tl.max(tl.where(v, gx1 - gx0 + 1, 0), axis=0)
            lo_x = (2 * ix - 6).to(tl.float32)[:, None, None]
            lo_y = (2 * iy - 6).to(tl.float32)[:, None, None]
            for r0 in range(0, n_rows, ROWS):
                gyy = gy0[:, None, None] + r0 + rr[None, :, None]  # [BLOCK, ROWS, 1]
                rv = v[:, None, None] & (gyy <= gy1[:, None, None])
                for c0 in range(0, n_cols, TILE):
                    gxx = gx0[:, None, None] + c0 + t[None, None, :]  # [BLOCK, 1, TILE]
                    m = rv & (gxx <= gx1[:, None, None])
                    gxf = gxx.to(tl.float32)
                    gyf = gyy.to(tl.float32)
                    spx = a00[:, None, None] * gxf + a01[:, None, None] * gyf + tx[:, None, None]
                    spy = a10[:, None, None] * gxf + a11[:, None, None] * gyf + ty[:, None, None]
                    m = m & (spx >= lo_x) & (spx < lo_x + 13.0) & (spy >= lo_y) & (spy < lo_y + 13.0)
                    w = _up_weight(spx, ix[:, None, None], 2 * Wp, taps) * _up_weight(spy, iy[:, None, None], 2 * Hp, taps)
                    w = tl.where(m, w, 0.0)
                    off = (b[:, None, None] * CH * Hg + gyy) * Wg + gxx
                    off = tl.where(m, off, 0)
                    acc0 += tl.sum(tl.sum(w * tl.load(gv + off, mask=m, other=0.0), axis=2), axis=1)
                    if CH == 3:
                        acc1 += tl.sum(tl.sum(w * tl.load(gv + off + Hg * Wg, mask=m, other=0.0), axis=2), axis=1)
                        acc2 += tl.sum(tl.sum(w * tl.load(gv + off + 2 * Hg * Wg, mask=m, other=0.0), axis=2), axis=1)
    dst = out + b * (CH * H * W) + y * W + xo
    tl.store(dst, acc0.to(out.dtype.element_ty), mask=mask)
    if CH == 3:
        tl.store(dst + H * W, acc1.to(out.dtype.element_ty), mask=mask)
        tl.store(dst + 2 * H * W, acc2.to(out.dtype.element_ty), mask=mask)


@triton.jit
def color_t_kernel(g, out, Cm, B, H, W, s_b, s_c, s_h, s_w, CH: tl.constexpr, BLOCK: tl.constexpr):
    """Adjoint of the colour stage alone: the transposed matrix per pixel."""
    i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = i < B * H * W
    b = i // (H * W)
    y = (i // W) % H
    xo = i % W
    src = g + b * s_b + y * s_h + xo * s_w
    c00, c01, c02, c10, c11, c12, c20, c21, c22, o0, o1, o2 = _color_rows(Cm, b, mask)
    dst = out + b * (CH * H * W) + y * W + xo
    v0 = tl.load(src, mask=mask, other=0.0).to(tl.float32)
    if CH == 3:
        v1 = tl.load(src + s_c, mask=mask, other=0.0).to(tl.float32)
        v2 = tl.load(src + 2 * s_c, mask=mask, other=0.0).to(tl.float32)
        tl.store(dst, (c00 * v0 + c10 * v1 + c20 * v2).to(out.dtype.element_ty), mask=mask)
        tl.store(dst + H * W, (c01 * v0 + c11 * v1 + c21 * v2).to(out.dtype.element_ty), mask=mask)
        tl.store(dst + 2 * H * W, (c02 * v0 + c12 * v1 + c22 * v2).to(out.dtype.element_ty), mask=mask)
    else:
        s = (c00 + c01 + c02) / 3.0 + (c10 + c11 + c12) / 3.0 + (c20 + c21 + c22) / 3.0
        tl.store(dst, (s * v0).to(out.dtype.element_ty), mask=mask)


@triton.jit
def _keep(boxes, b, mask, y, x, H, W):
    """Whether the cutout box of sample b keeps pixel (y, x) (ada.h: cutout_keep)."""
    cx = tl.load(boxes + 4 * b, mask=mask, other=0.0)
    cy = tl.load(boxes + 4 * b + 1, mask=mask, other=0.0)
    bw = tl.load(boxes + 4 * b + 2, mask=mask, other=0.0)
    bh = tl.load(boxes + 4 * b + 3, mask=mask, other=0.0)
    dx = tl.abs((x.to(tl.float32) + 0.5) / W - cx)
    dy = tl.abs((y.to(tl.float32) + 0.5) / H - cy)
    return ~((dx < bw / 2.0) & (dy < bh / 2.0))


@triton.jit
def _pixels(B, C, H, W, BLOCK: tl.constexpr):
    """This program's BLOCK flat indices i into a (B, C, H, W) tensor, which are in range, and
    their coordinates (b, c, y, x)."""
    i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = i < B * C * H * W
    b = i // (C * H * W)
    c = (i // (H * W)) % C
    y = (i // W) % H
    xo = i % W
    return i, mask, b, c, y, xo


@triton.jit
def filter_fwd_kernel(
    x, out, h, sigma, noise, boxes, B, C, H, W, s_b, s_c, s_h, s_w, n_b, n_c, n_h, n_w,
    HAS_F: tl.constexpr, HAS_N: tl.constexpr, HAS_BOX: tl.constexpr, BLOCK: tl.constexpr,
):
    """Filtering (43 x 43 taps after a 21-pixel reflect pad), noise and cutout, one output value
    per lane (ada.h: filter_pixel, cutout_keep). Output contiguous (B, C, H, W)."""
    i, mask, b, c, y, xo = _pixels(B, C, H, W, BLOCK)
    base = x + b * s_b + c * s_c
    if HAS_F:
        k = tl.arange(0, 64)
        m2 = mask[:, None] & (k < 43)[None, :]
        hx = tl.load(h + b[:, None] * 43 + k[None, :], mask=m2, other=0.0)
        col = tl.where(m2, _reflect(xo[:, None] + k[None, :], 21, W), 0) * s_w
        v = tl.zeros([BLOCK], dtype=tl.float32)
        for ky in range(43):
            row = tl.where(mask, _reflect(y + ky, 21, H), 0) * s_h
            hy = tl.load(h + b * 43 + ky, mask=mask, other=0.0)
            vals = tl.load(base[:, None] + row[:, None] + col, mask=m2, other=0.0).to(tl.float32)
            v += hy * tl.sum(hx * vals, axis=1)
    else:
        v = tl.load(base + y * s_h + xo * s_w, mask=mask, other=0.0).to(tl.float32)
    if HAS_N:
        nv = tl.load(noise + b * n_b + c * n_c + y * n_h + xo * n_w, mask=mask, other=0.0).to(tl.float32)
        v = v + nv * tl.load(sigma + b, mask=mask, other=0.0)
    if HAS_BOX:
        v = tl.where(_keep(boxes, b, mask, y, xo, H, W), v, 0.0)
    tl.store(out + i, v.to(out.dtype.element_ty), mask=mask)


@triton.jit
def filter_adjoint_kernel(
    g, out, h, boxes, B, C, H, W, s_b, s_c, s_h, s_w,
    HAS_F: tl.constexpr, HAS_BOX: tl.constexpr, BLOCK: tl.constexpr,
):
    """Adjoint of filtering + cutout (ada.h: filter_adjoint_pixel): the padded positions that
    reflect onto each input pixel gather filter tap times kept output gradient."""
    i, mask, b, c, y, xo = _pixels(B, C, H, W, BLOCK)
    base = g + b * s_b + c * s_c
    if HAS_F:
        k = tl.arange(0, 64)
        km = (k < 43)[None, :]
        hx = tl.load(h + b[:, None] * 43 + k[None, :], mask=mask[:, None] & km, other=0.0)
        acc = tl.zeros([BLOCK], dtype=tl.float32)
        for sy in range(3):
            py = tl.where(sy == 0, y + 21, tl.where(sy == 1, 21 - y, 21 + 2 * (H - 1) - y))
            vy = mask & ((sy == 0) | ((sy == 1) & (y >= 1) & (y <= 21)) | ((sy == 2) & (y <= H - 2) & (y >= H - 22)))
            for ky in range(43):
                oy = py - ky
                my = vy & (oy >= 0) & (oy < H)
                hy = tl.load(h + b * 43 + ky, mask=my, other=0.0)
                r = tl.zeros([BLOCK], dtype=tl.float32)
                for sx in range(3):
                    px = tl.where(sx == 0, xo + 21, tl.where(sx == 1, 21 - xo, 21 + 2 * (W - 1) - xo))
                    vx = (sx == 0) | ((sx == 1) & (xo >= 1) & (xo <= 21)) | ((sx == 2) & (xo <= W - 2) & (xo >= W - 22))
                    ox = px[:, None] - k[None, :]
                    m = (my & vx)[:, None] & km & (ox >= 0) & (ox < W)
                    if HAS_BOX:
                        m = m & _keep(boxes, b[:, None], m, oy[:, None], ox, H, W)
                    off = tl.where(m, oy[:, None] * s_h + ox * s_w, 0)
                    vals = tl.load(base[:, None] + off, mask=m, other=0.0).to(tl.float32)
                    r += tl.sum(hx * vals, axis=1)
                acc += hy * r
    else:
        acc = tl.load(base + y * s_h + xo * s_w, mask=mask, other=0.0).to(tl.float32)
        if HAS_BOX:
            acc = tl.where(_keep(boxes, b, mask, y, xo, H, W), acc, 0.0)
    tl.store(out + i, acc.to(out.dtype.element_ty), mask=mask)


# ---- launch helpers ------------------------------------------------------------------------------

# The interpreter pays per operation, not per element: large blocks there, small ones on a GPU.
_INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") == "1"
FWD_BLOCK = 32 if _INTERPRETED else 2
BLOCK = 1024 if _INTERPRETED else 128
TILE = 32 if _INTERPRETED else 16
ROWS = 32 if _INTERPRETED else 1


def _block(n, most):
    # under the interpreter a block larger than the work only costs time
    return min(most, triton.next_power_of_2(max(n, 1))) if _INTERPRETED else most


def forward(x, out, G, Cm, taps, margin):
    B, C, H, W = x.shape
    block = _block(B * H * W, FWD_BLOCK if G is not None else BLOCK)
    geom_color_fwd_kernel[(triton.cdiv(B * H * W, block),)](
        x, out, G if G is not None else taps, Cm if Cm is not None else taps, taps, margin, B, H, W, *x.stride(),
        CH=C, HAS_G=G is not None, HAS_C=Cm is not None, BLOCK=block,
    )


def backward(grad, out, gv, G, Cm, taps, margin):
    B, C, H, W = grad.shape
    if G is None:
        block = _block(B * H * W, BLOCK)
        color_t_kernel[(triton.cdiv(B * H * W, block),)](grad, out, Cm, B, H, W, *grad.stride(), CH=C, BLOCK=block)
        return
    n_grid = B * (2 * H + 12) * (2 * W + 12)
    block = _block(n_grid, BLOCK)
    grid_adjoint_kernel[(triton.cdiv(n_grid, block),)](
        grad, gv, Cm if Cm is not None else taps, taps, B, H, W, *grad.stride(), CH=C, HAS_C=Cm is not None, BLOCK=block
    )
    block = _block(B * H * W, 16 if _INTERPRETED else 64)
    pixel_adjoint_kernel[(triton.cdiv(B * H * W, block),)](
        gv, out, G, taps, margin, B, H, W, CH=C, BLOCK=block, ROWS=ROWS, TILE=TILE
    )


def filter_forward(x, out, h, sigma, noise, boxes):
    B, C, H, W = x.shape
    n = x.numel()
    block = _block(n, 2048 if _INTERPRETED else 64)
    dummy = h if h is not None else (sigma if sigma is not None else boxes)
    nz = noise if noise is not None else x
    filter_fwd_kernel[(triton.cdiv(n, block),)](
        x, out, h if h is not None else dummy, sigma if sigma is not None else dummy, nz,
        boxes if boxes is not None else dummy, B, C, H, W, *x.stride(), *nz.stride(),
        HAS_F=h is not None, HAS_N=sigma is not None, HAS_BOX=boxes is not None, BLOCK=block,
    )


def filter_backward(grad, out, h, boxes):
    B, C, H, W = grad.shape
    n = grad.numel()
    block = _block(n, 2048 if _INTERPRETED else 64)
    dummy = h if h is not None else boxes
    filter_adjoint_kernel[(triton.cdiv(n, block),)](
        grad, out, h if h is not None else dummy, boxes if boxes is not None else dummy, B, C, H, W, *grad.stride(),
        HAS_F=h is not None, HAS_BOX=boxes is not None, BLOCK=block,
    )

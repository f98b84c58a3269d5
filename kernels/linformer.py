"""Triton kernels of Linformer: the projection along the sequence axis and flash-style attention of
every query tile against the k projected keys/values, forward and backward, with ``tl.dot``.

Same math as ``csrc/linformer/linformer.h``: the forward keeps a running max and normalizer per
row and writes only the output and the log-sum-exp; the backward recomputes the probabilities from
it. Dropout uses the same counter-based hash as every other backend, so its mask is a function of
(seed, row, column) only. Attention tensors are contiguous (B, H, n, d) / (B, H, k, d).
"""

import torch
import triton
import triton.language as tl


@triton.jit
def _mix32(x):
    # int64 lanes holding values in [0, 2^32): multipliers below 2^31 keep products below 2^63
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & 0xFFFFFFFF
    x = x ^ (x >> 15)
    x = (x * 0x5BD1E995) & 0xFFFFFFFF
    return x ^ (x >> 16)


@triton.jit
def _keep(seed, rows, cols, threshold):
    """Dropout keep-mask of scores (rows, cols) (broadcast against each other)."""
    r = _mix32((seed + (rows.to(tl.int64) & 0xFFFFFFFF)) & 0xFFFFFFFF)
    h = _mix32((r + cols.to(tl.int64)) & 0xFFFFFFFF)
    return (h >> 8) >= threshold


# ---- projection ---------------------------------------------------------------------------


@triton.jit
def project_fwd_kernel(
    x, E, mask, out, H, n, k, d, BH, chunk,
    sxb, sxh, sxn, sxd, seh, sen, sek, smb, smn,
    HAS_MASK: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    PREC: tl.constexpr,
):
    """out[split, b, h] (k, d) = E[h, rows]ᵀ x[b, h, rows] over the sequence rows of one split
    [split * chunk, (split + 1) * chunk), for one tile of BLOCK_K projected rows; out contiguous
    (splits, B, H, k, d) (the caller sums the splits when there are several)."""
    pid_k = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    split = tl.program_id(2).to(tl.int64)
    b = bh // H
    h = bh % H
    kk = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
    c = tl.arange(0, BLOCK_D)
    km = kk < k
    cm = c < d
    acc = tl.zeros([BLOCK_K, BLOCK_D], dtype=tl.float32)
    r_begin = split * chunk
    r_end = tl.minimum(r_begin + chunk, n)
    for n0 in range(r_begin, r_end, BLOCK_N):
        rows = n0 + tl.arange(0, BLOCK_N)
        rm = rows < r_end
        xm = rm
        if HAS_MASK:
            pad = tl.load(mask + b * smb + rows * smn, mask=rm, other=1)
            xm = rm & (pad == 0)
        et = tl.load(E + h * seh + rows[None, :] * sen + kk[:, None] * sek, mask=km[:, None] & rm[None, :], other=0.0)
        xt = tl.load(x + b * sxb + h * sxh + rows[:, None] * sxn + c[None, :] * sxd, mask=xm[:, None] & cm[None, :], other=0.0)
        acc = tl.dot(et, xt, acc, input_precision=PREC)
    dst = out + ((split * BH + bh) * k + kk)[:, None] * d + c[None, :]
    tl.store(dst, acc.to(out.dtype.element_ty), mask=km[:, None] & cm[None, :])


@triton.jit
def project_dx_kernel(
    g, E, mask, dx, H, n, k, d, seh, sen, sek, smb, smn,
    HAS_MASK: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr,
    PREC: tl.constexpr,
):
    """dx[b, h] (n, d) = E[h] g[b, h]; g contiguous (B, H, k, d), dx contiguous (B, H, n, d)."""
    pid_n = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    b = bh // H
    h = bh % H
    rows = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    c = tl.arange(0, BLOCK_D)
    rm = rows < n
    cm = c < d
    acc = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    for k0 in range(0, k, BLOCK_K):
        kk = k0 + tl.arange(0, BLOCK_K)
        km = kk < k
        e = tl.load(E + h * seh + rows[:, None] * sen + kk[None, :] * sek, mask=rm[:, None] & km[None, :], other=0.0)
        gt = tl.load(g + (bh * k + kk)[:, None] * d + c[None, :], mask=km[:, None] & cm[None, :], other=0.0)
        acc = tl.dot(e, gt, acc, input_precision=PREC)
    if HAS_MASK:
        pad = tl.load(mask + b * smb + rows * smn, mask=rm, other=1)
        acc = tl.where((pad == 0)[:, None], acc, 0.0)
    tl.store(dx + (bh * n + rows)[:, None] * d + c[None, :], acc.to(dx.dtype.element_ty), mask=rm[:, None] & cm[None, :])


@triton.jit
def project_dE_kernel(
    g, x, mask, dE, B, H, n, k, d,
    sxb, sxh, sxn, sxd, smb, smn,
    PER_HEAD: tl.constexpr, HAS_MASK: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr, PREC: tl.constexpr,
):
    """dE[h] (n, k) = sum over the (b, h) sharing E[h] of x[b, h] g[b, h]ᵀ; dE float32
    contiguous, (n, k) shared or (H, n, k) per head."""
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    hh = tl.program_id(2).to(tl.int64)
    rows = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    kk = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
    c = tl.arange(0, BLOCK_D)
    rm = rows < n
    km = kk < k
    cm = c < d
    acc = tl.zeros([BLOCK_N, BLOCK_K], dtype=tl.float32)
    count = B if PER_HEAD else B * H
    for t in range(0, count):
        t64 = hh * 0 + t  # 64-bit batch/head indices: their offsets can pass 2^31
        if PER_HEAD:
            b = t64
            h = hh
        else:
            b = t64 // H
            h = t64 % H
        xm = rm
        if HAS_MASK:
            pad = tl.load(mask + b * smb + rows * smn, mask=rm, other=1)
            xm = rm & (pad == 0)
        xt = tl.load(x + b * sxb + h * sxh + rows[:, None] * sxn + c[None, :] * sxd, mask=xm[:, None] & cm[None, :], other=0.0)
        gt = tl.load(g + ((b * H + h) * k + kk)[None, :] * d + c[:, None], mask=km[None, :] & cm[:, None], other=0.0)
        acc = tl.dot(xt, gt, acc, input_precision=PREC)
    tl.store(dE + (hh * n + rows)[:, None] * k + kk[None, :], acc, mask=rm[:, None] & km[None, :])


# ---- attention ----------------------------------------------------------------------------


@triton.jit
def _query_block(n, d, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr):
    """The query rows of this program (grid: row blocks, B * H heads): the head bh, head-dim lanes
    c, the row and lane masks, and the global row index bh * n + row (dropout counter, addressing)."""
    bh = tl.program_id(1).to(tl.int64)
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    c = tl.arange(0, BLOCK_D)
    return bh, c, rows < n, c < d, bh * n + rows


@triton.jit
def attend_fwd_kernel(
    q, kp, vp, out, lse, n, k, d, scale, seed, threshold, keep_scale,
    DROPOUT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr,
    PREC: tl.constexpr,
):
    bh, c, rm, cm, grow = _query_block(n, d, BLOCK_M, BLOCK_D)
    qt = tl.load(q + grow[:, None] * d + c[None, :], mask=rm[:, None] & cm[None, :], other=0.0)
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    for j0 in range(0, k, BLOCK_K):
        cols = j0 + tl.arange(0, BLOCK_K)
        km = cols < k
        kv_off = (bh * k + cols)[:, None] * d + c[None, :]
        kt = tl.load(kp + kv_off, mask=km[:, None] & cm[None, :], other=0.0)
        vt = tl.load(vp + kv_off, mask=km[:, None] & cm[None, :], other=0.0)
        s = tl.dot(qt, tl.trans(kt), input_precision=PREC) * scale
        s = tl.where(km[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        corr = tl.exp(m_i - m_new)
        p = tl.exp(s - m_new[:, None])
        l_i = l_i * corr + tl.sum(p, axis=1)
        if DROPOUT:
            p = tl.where(_keep(seed, grow[:, None], cols[None, :], threshold), p * keep_scale, 0.0)
        acc = acc * corr[:, None] + tl.dot(p.to(vt.dtype), vt, input_precision=PREC)
        m_i = m_new
    o = acc / l_i[:, None]
    tl.store(out + grow[:, None] * d + c[None, :], o.to(out.dtype.element_ty), mask=rm[:, None] & cm[None, :])
    tl.store(lse + grow, m_i + tl.log(l_i), mask=rm)


@triton.jit
def attend_dq_kernel(
    g, q, kp, vp, lse, delta, dq, n, k, d, scale, seed, threshold, keep_scale,
    DROPOUT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr,
    PREC: tl.constexpr,
):
    bh, c, rm, cm, grow = _query_block(n, d, BLOCK_M, BLOCK_D)
    row_off = grow[:, None] * d + c[None, :]
    qt = tl.load(q + row_off, mask=rm[:, None] & cm[None, :], other=0.0)
    gt = tl.load(g + row_off, mask=rm[:, None] & cm[None, :], other=0.0)
    lse_i = tl.load(lse + grow, mask=rm, other=0.0)
    delta_i = tl.load(delta + grow, mask=rm, other=0.0)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    for j0 in range(0, k, BLOCK_K):
        cols = j0 + tl.arange(0, BLOCK_K)
        km = cols < k
        kv_off = (bh * k + cols)[:, None] * d + c[None, :]
        kt = tl.load(kp + kv_off, mask=km[:, None] & cm[None, :], other=0.0)
        vt = tl.load(vp + kv_off, mask=km[:, None] & cm[None, :], other=0.0)
        s = tl.dot(qt, tl.trans(kt), input_precision=PREC) * scale
        p = tl.where(km[None, :], tl.exp(s - lse_i[:, None]), 0.0)
        dp = tl.dot(gt, tl.trans(vt), input_precision=PREC)
        if DROPOUT:
            dp = tl.where(_keep(seed, grow[:, None], cols[None, :], threshold), dp * keep_scale, 0.0)
        ds = p * (dp - delta_i[:, None])
        acc = tl.dot(ds.to(kt.dtype), kt, acc, input_precision=PREC)
    tl.store(dq + row_off, (acc * scale).to(dq.dtype.element_ty), mask=rm[:, None] & cm[None, :])


@triton.jit
def attend_dkv_kernel(
    g, q, kp, vp, lse, delta, part_k, part_v, n, k, d, BH, chunk, scale, seed, threshold, keep_scale,
    DROPOUT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr,
    PREC: tl.constexpr,
):
    """Partial dK', dV' (float32, (splits, B*H, k, d)) of one key tile over the query rows
    [split * chunk, (split + 1) * chunk)."""
    pid_k = tl.program_id(0)
    split = tl.program_id(1).to(tl.int64)
    bh = tl.program_id(2).to(tl.int64)
    cols = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
    c = tl.arange(0, BLOCK_D)
    km = cols < k
    cm = c < d
    kv_off = (bh * k + cols)[:, None] * d + c[None, :]
    kt = tl.load(kp + kv_off, mask=km[:, None] & cm[None, :], other=0.0)
    vt = tl.load(vp + kv_off, mask=km[:, None] & cm[None, :], other=0.0)
    dk = tl.zeros([BLOCK_K, BLOCK_D], dtype=tl.float32)
    dv = tl.zeros([BLOCK_K, BLOCK_D], dtype=tl.float32)
    r_begin = split * chunk
    r_end = tl.minimum(r_begin + chunk, n)
    for r0 in range(r_begin, r_end, BLOCK_M):
        rows = r0 + tl.arange(0, BLOCK_M)
        rm = rows < r_end
        grow = bh * n + rows
        row_off = grow[:, None] * d + c[None, :]
        qt = tl.load(q + row_off, mask=rm[:, None] & cm[None, :], other=0.0)
        gt = tl.load(g + row_off, mask=rm[:, None] & cm[None, :], other=0.0)
        lse_r = tl.load(lse + grow, mask=rm, other=0.0)
        delta_r = tl.load(delta + grow, mask=rm, other=0.0)
        st = tl.dot(kt, tl.trans(qt), input_precision=PREC) * scale  # (BLOCK_K, BLOCK_M)
        pt = tl.where(km[:, None] & rm[None, :], tl.exp(st - lse_r[None, :]), 0.0)
        dpt = tl.dot(vt, tl.trans(gt), input_precision=PREC)
        pzt = pt
        if DROPOUT:
            keep = _keep(seed, grow[None, :], cols[:, None], threshold)
            pzt = tl.where(keep, pt * keep_scale, 0.0)
            dpt = tl.where(keep, dpt * keep_scale, 0.0)
        dv = tl.dot(pzt.to(gt.dtype), gt, dv, input_precision=PREC)
        dst = pt * (dpt - delta_r[None, :])
        dk = tl.dot(dst.to(qt.dtype), qt, dk, input_precision=PREC)
    out_off = ((split * BH + bh) * k + cols)[:, None] * d + c[None, :]
    tl.store(part_k + out_off, dk * scale, mask=km[:, None] & cm[None, :])
    tl.store(part_v + out_off, dv, mask=km[:, None] & cm[None, :])


# ---- launch helpers: inputs checked by pyops.linformer; outputs allocated here ---------------

BLOCK_M = 64
BLOCK_N = 64


def _block_d(d: int) -> int:
    return max(16, triton.next_power_of_2(d))


def _block_k(k: int) -> int:
    return min(64, max(16, triton.next_power_of_2(k)))


def _prec(t: torch.Tensor) -> str:
    # fp32 inputs get full fp32 products (no tf32), so they match the reference tightly
    return "ieee" if t.dtype == torch.float32 else "tf32"


def _mask_args(mask):
    if mask is None:
        return None, 0, 0
    m = mask.view(torch.uint8)
    return m, m.stride(0), m.stride(1)


def project(x: torch.Tensor, E: torch.Tensor, mask) -> torch.Tensor:
    """x (B, H, n, d), E (n, k) or (H, n, k) -> (B, H, k, d) contiguous, in x.dtype."""
    B, H, n, d = x.shape
    k = E.shape[-1]
    if B * H * k * d == 0 or n == 0:
        return torch.zeros((B, H, k, d), dtype=x.dtype, device=x.device)
    seh = E.stride(0) if E.dim() == 3 else 0
    m, smb, smn = _mask_args(mask)
    block_k = _block_k(k)
    key_blocks = triton.cdiv(k, block_k)
    # split the long reduction over n when B * H * key_blocks programs cannot fill the GPU
    splits = _splits(x, B * H * key_blocks, n, BLOCK_N)
    chunk = triton.cdiv(triton.cdiv(n, splits), BLOCK_N) * BLOCK_N
    splits = triton.cdiv(n, chunk)
    if splits == 1:
        out = torch.empty((1, B, H, k, d), dtype=x.dtype, device=x.device)
    else:
        out = torch.empty((splits, B, H, k, d), dtype=torch.float32, device=x.device)
    project_fwd_kernel[(key_blocks, B * H, splits)](
        x, E, m if m is not None else x, out, H, n, k, d, B * H, chunk,
        *x.stride(), seh, E.stride(-2), E.stride(-1), smb, smn,
        HAS_MASK=m is not None, BLOCK_K=block_k, BLOCK_N=BLOCK_N, BLOCK_D=_block_d(d), PREC=_prec(x),
    )
    return out[0] if splits == 1 else out.sum(0).to(x.dtype)


def project_backward(g: torch.Tensor, x: torch.Tensor, E: torch.Tensor, mask):
    """(dx (B, H, n, d), dE like E) of the projection, given g = dK' (B, H, k, d)."""
    B, H, n, d = x.shape
    k = E.shape[-1]
    g = g.contiguous()
    dx = torch.zeros((B, H, n, d), dtype=x.dtype, device=x.device)
    dE = torch.zeros(E.shape, dtype=torch.float32, device=x.device)
    if B * H * n * k * d == 0:
        return dx, dE.to(E.dtype)
    seh = E.stride(0) if E.dim() == 3 else 0
    m, smb, smn = _mask_args(mask)
    block_k = _block_k(k)
    block_d = _block_d(d)
    project_dx_kernel[(triton.cdiv(n, BLOCK_N), B * H)](
        g, E, m if m is not None else x, dx, H, n, k, d, seh, E.stride(-2), E.stride(-1), smb, smn,
        HAS_MASK=m is not None, BLOCK_N=BLOCK_N, BLOCK_K=block_k, BLOCK_D=block_d, PREC=_prec(x),
    )
    per_head = E.dim() == 3
    project_dE_kernel[(triton.cdiv(n, BLOCK_N), triton.cdiv(k, block_k), H if per_head else 1)](
        g, x, m if m is not None else x, dE, B, H, n, k, d, *x.stride(), smb, smn,
        PER_HEAD=per_head, HAS_MASK=m is not None,
        BLOCK_N=BLOCK_N, BLOCK_K=block_k, BLOCK_D=block_d, PREC=_prec(x),
    )
    return dx, dE.to(E.dtype)


def _dropout_args(dropout_p: float, seed: int):
    threshold = round(dropout_p * 2**24)
    keep_scale = 1.0 / (1.0 - dropout_p) if dropout_p < 1 else 0.0
    return int(seed) & 0xFFFFFFFF, threshold, keep_scale


def attend(q, kp, vp, scale: float, dropout_p: float, seed: int):
    """(out (B, H, n, d), lse (B, H, n) float32); q, kp, vp contiguous."""
    B, H, n, d = q.shape
    k = kp.shape[2]
    out = torch.empty_like(q)
    lse = torch.empty((B, H, n), dtype=torch.float32, device=q.device)
    if B * H * n == 0:
        return out, lse
    seed32, threshold, keep_scale = _dropout_args(dropout_p, seed)
    attend_fwd_kernel[(triton.cdiv(n, BLOCK_M), B * H)](
        q, kp, vp, out, lse, n, k, d, scale, seed32, threshold, keep_scale,
        DROPOUT=dropout_p > 0, BLOCK_M=BLOCK_M, BLOCK_K=_block_k(k), BLOCK_D=_block_d(d), PREC=_prec(q),
    )
    return out, lse


def _splits(t: torch.Tensor, programs: int, n: int, block: int) -> int:
    """How many pieces to split a reduction over n into, so that `programs` programs per piece
    fill the GPU."""
    max_splits = triton.cdiv(n, block)
    if t.is_cuda:
        sms = torch.cuda.get_device_properties(t.device).multi_processor_count
        want = triton.cdiv(2 * sms, programs)
    else:
        want = 2  # interpreter: exercise the split path on small inputs
    return max(1, min(want, max_splits))


def attend_backward(g, q, kp, vp, out, lse, scale: float, dropout_p: float, seed: int):
    """(dq, dkp, dvp) of :func:`attend`; all attention tensors contiguous."""
    B, H, n, d = q.shape
    k = kp.shape[2]
    if B * H * n == 0:
        return torch.zeros_like(q), torch.zeros_like(kp), torch.zeros_like(vp)
    delta = (g.float() * out.float()).sum(-1).contiguous()  # D_i = <dO_i, O_i>
    seed32, threshold, keep_scale = _dropout_args(dropout_p, seed)
    block_k, block_d = _block_k(k), _block_d(d)
    dq = torch.empty_like(q)
    attend_dq_kernel[(triton.cdiv(n, BLOCK_M), B * H)](
        g, q, kp, vp, lse, delta, dq, n, k, d, scale, seed32, threshold, keep_scale,
        DROPOUT=dropout_p > 0, BLOCK_M=BLOCK_M, BLOCK_K=block_k, BLOCK_D=block_d, PREC=_prec(q),
    )
    key_blocks = triton.cdiv(k, block_k)
    splits = _splits(q, B * H * key_blocks, n, BLOCK_M)
    chunk = triton.cdiv(triton.cdiv(n, splits), BLOCK_M) * BLOCK_M
    splits = triton.cdiv(n, chunk)
    part_k = torch.empty((splits, B, H, k, d), dtype=torch.float32, device=q.device)
    part_v = torch.empty_like(part_k)
    attend_dkv_kernel[(key_blocks, splits, B * H)](
        g, q, kp, vp, lse, delta, part_k, part_v, n, k, d, B * H, chunk, scale, seed32, threshold, keep_scale,
        DROPOUT=dropout_p > 0, BLOCK_M=BLOCK_M, BLOCK_K=block_k, BLOCK_D=block_d, PREC=_prec(q),
    )
    return dq, part_k.sum(0).to(q.dtype), part_v.sum(0).to(q.dtype)

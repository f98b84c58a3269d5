"""Triton kernels of the switchable atrous convolution's fused steps: the steps of ``SacKernels``
in ``csrc/sac/sac_host.h`` with the math of ``csrc/sac/sac.h`` (the two contexts and their
backward, the switch pre-pass, pool and pool adjoint, AWS and its backward, the blend epilogues,
the input gradient), and the dual-accumulator convolution of the "igemm" algorithm (both branches
and the blend in one kernel).

Activations are dense (N, C, H, W) tensors in NCHW or channels_last order: an element of image n,
channel c and pixel p = h * W + w lies at ``n * C * HW + c * s_c + p * s_p`` with
(s_c, s_p) = (HW, 1) for NCHW and (1, C) for channels_last. Op-math tensors (means, contexts,
switch, their gradients, partial sums) are float32 (float64 for float64 activations), contiguous;
parameters keep their own dtype and are converted on load. Each launcher fills outputs its caller
allocated, as the C++ host does (dual_conv allocates its partial sums). No atomics: every output value is written by one program, and
every reduction runs in a fixed order.
"""

import os

import torch
import triton
import triton.language as tl

BLOCK_P = 64  # pixels per program of the per-pixel channel reductions
BLOCK_C = 32  # channels per step of those reductions
BLOCK = 1024  # elements per program of the elementwise kernels
BLOCK_T = 64  # outputs per program of the contexts and their backward (512 in the interpreter)
BLOCK_R = 32  # reduction step of the contexts
SUM_CHUNK = 32  # pixels per partial sum of input_grad_sums (kSumChunk in sac_host.h)
BLOCK_W = 256  # weight values per step of the AWS rows


def _interpreted() -> bool:
    """Whether the kernels run in the Triton interpreter (on CPU tensors, in the tests)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _opmath(t: torch.Tensor):
    """The op-math type of a tensor's kernels: float64 for float64, float32 otherwise."""
    return tl.float64 if t.dtype == torch.float64 else tl.float32


def _block_t() -> int:
    """Outputs per program of the contexts and their backward: fewer programs in the interpreter,
    which pays per program."""
    return 512 if _interpreted() else BLOCK_T


def _strides(t: torch.Tensor, channels_last: bool):
    """(s_c, s_p): the channel and pixel strides of a dense (N, C, H, W) tensor."""
    HW = t.shape[2] * t.shape[3]
    return (1, t.shape[1]) if channels_last else (HW, 1)


def _launch(kernel, grid, *args, **meta) -> None:
    """kernel[grid](*args, **meta), skipped for an empty grid (an empty batch)."""
    if min(grid) > 0:
        kernel[grid](*args, **meta)


@triton.jit
def _decode(i, C, HW, CHANNELS_LAST: tl.constexpr):
    """(n, c, p) of storage index i of a dense (N, C, H, W) tensor (sac.h Dense4d::decode)."""
    if CHANNELS_LAST:
        c = i % C
        p = (i // C) % HW
    else:
        p = i % HW
        c = (i // HW) % C
    return i // (C * HW), c, p


# ---- the two contexts: out[n, j] = b[j] + sum_k W[j, k] v[n, k], and their backward ----------


@triton.jit
def _dot_items(a, a_off, a_step, b, b_off, b_step, R, mask, ACC: tl.constexpr, BLOCK_T: tl.constexpr,
               BLOCK_R: tl.constexpr):
    """For each of BLOCK_T items t: sum over r < R of a[a_off[t] + r a_step] * b[b_off[t] + r b_step]
    in ACC, r in steps of BLOCK_R."""
    acc = tl.zeros((BLOCK_T,), dtype=ACC)
    for r0 in range(0, R, BLOCK_R):
        r = r0 + tl.arange(0, BLOCK_R)
        m = mask[:, None] & (r < R)[None, :]
        av = tl.load(a + a_off[:, None] + r[None, :] * a_step, mask=m, other=0.0).to(ACC)
        bv = tl.load(b + b_off[:, None] + r[None, :] * b_step, mask=m, other=0.0).to(ACC)
        acc += tl.sum(av * bv, axis=1)
    return acc


@triton.jit
def _sum_items(a, a_off, a_step, R, mask, ACC: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_R: tl.constexpr):
    """For each of BLOCK_T items t: sum over r < R of a[a_off[t] + r a_step] in ACC."""
    acc = tl.zeros((BLOCK_T,), dtype=ACC)
    for r0 in range(0, R, BLOCK_R):
        r = r0 + tl.arange(0, BLOCK_R)
        m = mask[:, None] & (r < R)[None, :]
        acc += tl.sum(tl.load(a + a_off[:, None] + r[None, :] * a_step, mask=m, other=0.0).to(ACC), axis=1)
    return acc


@triton.jit
def linear_kernel(v, W, b, out, N, J, K, BLOCK_T: tl.constexpr, BLOCK_R: tl.constexpr):
    """Context (sac.h linear_partial): out[n, j] = b[j] + sum_k W[j, k] v[n, k], v and out op-math,
    W (J, K) and b in their own dtype; one block of BLOCK_T outputs t = n * J + j per program."""
    ACC: tl.constexpr = out.dtype.element_ty
    t = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    mask = t < N * J
    n = t // J
    j = t % J
    acc = _dot_items(W, j * K, 1, v, n * K, 1, K, mask, ACC, BLOCK_T, BLOCK_R)
    tl.store(out + t, tl.load(b + j, mask=mask, other=0.0).to(ACC) + acc, mask=mask)


@triton.jit
def linear_backward_kernel(g, v, W, g_W, g_v, g_b, g_vbias, N, J, K, DIV,
                           HAS_VBIAS: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_R: tl.constexpr):
    """Context backward (sac.h LinearBackward) for g = dL/dout (N, J) op-math, v (N, K) op-math,
    W (J, K). The programs cover the outputs of four parts in turn, BLOCK_T outputs each:
      0: g_W[j, k] = sum_n g[n, j] v[n, k]           1: g_v[n, k] = sum_j g[n, j] W[j, k] / DIV
      2: g_b[j] = sum_n g[n, j]                       3: g_vbias[k] = g_b[k] + sum_j g_b[j] W[j, k]
    (part 3 only with HAS_VBIAS; J == K there). g_v is op-math, the others in W's dtype."""
    ACC: tl.constexpr = g.dtype.element_ty
    pid = tl.program_id(0)
    end0 = tl.cdiv(J * K, BLOCK_T)  # the programs of part i end at end_i
    end1 = end0 + tl.cdiv(N * K, BLOCK_T)
    end2 = end1 + tl.cdiv(J, BLOCK_T)
    if pid < end0:
        t = pid * BLOCK_T + tl.arange(0, BLOCK_T)
        mask = t < J * K
        acc = _dot_items(g, t // K, J, v, t % K, K, N, mask, ACC, BLOCK_T, BLOCK_R)
        tl.store(g_W + t, acc.to(g_W.dtype.element_ty), mask=mask)
    elif pid < end1:
        t = (pid - end0) * BLOCK_T + tl.arange(0, BLOCK_T)
        mask = t < N * K
        acc = _dot_items(g, (t // K) * J, 1, W, t % K, K, J, mask, ACC, BLOCK_T, BLOCK_R)
        tl.store(g_v + t, acc / DIV, mask=mask)
    elif pid < end2:
        t = (pid - end1) * BLOCK_T + tl.arange(0, BLOCK_T)
        mask = t < J
        tl.store(g_b + t, _sum_items(g, t, J, N, mask, ACC, BLOCK_T, BLOCK_R).to(g_b.dtype.element_ty), mask=mask)
    else:
        if HAS_VBIAS:
            t = (pid - end2) * BLOCK_T + tl.arange(0, BLOCK_T)
            mask = t < K
            acc = _sum_items(g, t, J, N, mask, ACC, BLOCK_T, BLOCK_R)
            for j0 in range(0, J, BLOCK_R):
                j = j0 + tl.arange(0, BLOCK_R)
                mj = j < J
                g_bj = _sum_items(g, j, J, N, mj, ACC, BLOCK_R, BLOCK_R)  # g_b[j] of this block
                w = tl.load(W + j[None, :] * K + t[:, None], mask=mask[:, None] & mj[None, :], other=0.0)
                acc += tl.sum(w.to(ACC) * g_bj[None, :], axis=1)
            tl.store(g_vbias + t, acc.to(g_vbias.dtype.element_ty), mask=mask)


def linear(v, W, b, out) -> None:
    """out (N, J) op-math <- b + W v for v (N, K) op-math, W (J, K, 1, 1) and b (J,) contiguous."""
    block_t = _block_t()
    _launch(linear_kernel, (triton.cdiv(out.numel(), block_t),), v, W, b, out, out.shape[0], W.shape[0],
            W.shape[1], BLOCK_T=block_t, BLOCK_R=BLOCK_R)


def linear_backward(g, v, W, div, g_W, g_v, g_b, g_vbias=None) -> None:
    """Context backward for g (N, J) op-math: g_W (J, K, 1, 1) and g_b (J,) in W's dtype, g_v (N, K)
    op-math (divided by div, the pixel count of the means v), g_vbias (K,) in W's dtype or None."""
    N, J, K = g.shape[0], W.shape[0], W.shape[1]
    sizes = (J * K, N * K, J) + (() if g_vbias is None else (K,))
    block_t = _block_t()
    _launch(linear_backward_kernel, (sum(triton.cdiv(n, block_t) for n in sizes),),
            g, v, W, g_W, g_v, g_b, g_b if g_vbias is None else g_vbias, N, J, K, div,
            HAS_VBIAS=g_vbias is not None, BLOCK_T=block_t, BLOCK_R=BLOCK_R)


# ---- the switch: pre-pass, pool and its adjoint ------------------------------------------------


@triton.jit
def context_switch_dot_kernel(x, ctx, w_s, xp, z, N, C, HW, s_c, s_p, BLOCK_P: tl.constexpr,
                              BLOCK_C: tl.constexpr):
    """Pre-pass (sac.h context_switch_dot): x' = x + ctx[n, c] (ctx rounded to x's dtype first) and
    z[n, p] = sum_c w_s[c] x'[n, c, p] (op-math, from the rounded x'); one block of BLOCK_P pixels
    (n, p) per program, channels in steps of BLOCK_C."""
    ACC: tl.constexpr = z.dtype.element_ty
    i = tl.program_id(0).to(tl.int64) * BLOCK_P + tl.arange(0, BLOCK_P)
    mi = i < N * HW
    n = i // HW
    p = i % HW
    acc = tl.zeros((BLOCK_P,), dtype=ACC)
    for c0 in range(0, C, BLOCK_C):
        c = c0 + tl.arange(0, BLOCK_C).to(tl.int64)
        mc = c < C
        m = mi[:, None] & mc[None, :]
        offs = (n * C * HW + p * s_p)[:, None] + (c * s_c)[None, :]
        cv = tl.load(ctx + n[:, None] * C + c[None, :], mask=m, other=0.0).to(x.dtype.element_ty)
        v = (tl.load(x + offs, mask=m, other=0.0).to(ACC) + cv.to(ACC)).to(xp.dtype.element_ty)
        tl.store(xp + offs, v, mask=m)
        acc += tl.sum(v.to(ACC) * tl.load(w_s + c, mask=mc, other=0.0).to(ACC)[None, :], axis=1)
    tl.store(z + i, acc, mask=mi)


@triton.jit
def _reflect2(r, n):
    """Index of padded row r in [-2, n + 1] of a row of n >= 3 values reflect-padded by 2."""
    return tl.where(r < 0, -r, tl.where(r >= n, 2 * (n - 1) - r, r))


@triton.jit
def switch_pool_kernel(z, bias, s, N, H, W, Ho, Wo, SH, SW, BLOCK: tl.constexpr):
    """s[n, ho, wo] = bias[0] + the mean of the 5x5 window of z (N, H, W) reflect-padded by 2,
    centred on (ho SH, wo SW) (sac.h switch_pool); one block of outputs per program."""
    ACC: tl.constexpr = s.dtype.element_ty
    i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = i < N * Ho * Wo
    wo = i % Wo
    ho = (i // Wo) % Ho
    n = i // (Ho * Wo)
    acc = tl.zeros((BLOCK,), dtype=ACC)
    for a in tl.static_range(5):
        row = z + (n * H + _reflect2(ho * SH + (a - 2), H)) * W
        for b in tl.static_range(5):
            acc += tl.load(row + _reflect2(wo * SW + (b - 2), W), mask=m, other=0.0)
    tl.store(s + i, acc / 25.0 + tl.load(bias).to(ACC), mask=m)


@triton.jit
def _reflect2_source(h, n, K: tl.constexpr):
    """The K-th (0, 1, 2) padded index r in [-2, n + 1] with reflect2(r, n) == h, and whether it
    exists (sac.h reflect2_sources)."""
    if K == 0:
        return h, h == h
    elif K == 1:
        return -h, (h >= 1) & (h <= 2)
    else:
        return 2 * (n - 1) - h, (h >= n - 3) & (h <= n - 2)


@triton.jit
def _window_outputs(r, S, size):
    """First and last output o < size whose 5-wide window, centred on o S, holds padded index r."""
    return (tl.maximum(r - 2, 0) + S - 1) // S, tl.minimum((r + 2) // S, size - 1)


@triton.jit
def switch_pool_adjoint_kernel(g, q, N, H, W, Ho, Wo, SH, SW, BLOCK: tl.constexpr):
    """q[n, h, w] = dL/dz from g = dL/ds (N, Ho, Wo), the adjoint of switch_pool without its bias
    (sac.h switch_pool_adjoint): a gather over the padded positions (r, t) reflecting onto (h, w)
    and the outputs whose window holds them (at most 5 per padded row and column); one block of
    input pixels per program."""
    i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = i < N * H * W
    w = i % W
    h = (i // W) % H
    n = i // (H * W)
    acc = tl.zeros((BLOCK,), dtype=q.dtype.element_ty)
    for b in tl.static_range(3):
        t, has_t = _reflect2_source(w, W, b)
        wo0, wo1 = _window_outputs(t, SW, Wo)
        for a in tl.static_range(3):
            r, has_r = _reflect2_source(h, H, a)
            ho0, ho1 = _window_outputs(r, SH, Ho)
            for dh in tl.static_range(5):
                row = g + (n * Ho + ho0 + dh) * Wo + wo0
                mh = m & has_t & has_r & (ho0 + dh <= ho1)
                for dw in tl.static_range(5):
                    acc += tl.load(row + dw, mask=mh & (wo0 + dw <= wo1), other=0.0)
    tl.store(q + i, acc / 25.0, mask=m)


def context_switch_dot(x, ctx, w_s, channels_last: bool, xp, z) -> None:
    """xp <- x + ctx (ctx (N, C) op-math); z (N, H, W) op-math <- w_s (1, C, 1, 1) dotted with x'."""
    N, C, H, W = x.shape
    s_c, s_p = _strides(x, channels_last)
    _launch(context_switch_dot_kernel, (triton.cdiv(N * H * W, BLOCK_P),), x, ctx, w_s, xp, z, N, C, H * W,
            s_c, s_p, BLOCK_P=BLOCK_P, BLOCK_C=BLOCK_C)


def switch_pool(z, bias, stride, s) -> None:
    """s (N, 1, Ho, Wo) op-math <- the 5x5 reflect-padded mean of z (N, H, W) every stride pixels + bias (1,)."""
    N, H, W = z.shape
    Ho, Wo = s.shape[-2:]
    _launch(switch_pool_kernel, (triton.cdiv(s.numel(), BLOCK),), z, bias, s, N, H, W, Ho, Wo, stride[0],
            stride[1], BLOCK=BLOCK)


def switch_pool_adjoint(g, stride, q) -> None:
    """q (N, H, W) <- the adjoint of switch_pool (without the bias) applied to g (N, Ho, Wo)."""
    N, H, W = q.shape
    Ho, Wo = g.shape[-2:]
    _launch(switch_pool_adjoint_kernel, (triton.cdiv(q.numel(), BLOCK),), g, q, N, H, W, Ho, Wo, stride[0],
            stride[1], BLOCK=BLOCK)


# ---- AWS: w_hat[o] = gamma[o] (W[o] - mean W[o]) / sqrt(var W[o] + eps) + beta[o], per row o ----
# Row o of an (O, C/g, KH, KW) weight is its M = C/g KH KW values m in (c, i, j) order; the inputs
# are contiguous (row o at o M), the other tensors are addressed through their four strides. A
# program takes BLOCK_O rows (one on a GPU; more in the interpreter, which pays per program) and
# runs over them in steps of BLOCK_W values.


@triton.jit
def _row_offset(o, m, KH, KW, s0, s1, s2, s3):
    """Storage offset of value m of row o of an (O, C/g, KH, KW) tensor of strides s0..s3."""
    return o * s0 + (m // (KH * KW)) * s1 + ((m // KW) % KH) * s2 + (m % KW) * s3


@triton.jit
def _aws_row_stats(w, o, mo, M, var_den, ACC: tl.constexpr, EPS: tl.constexpr, BLOCK_O: tl.constexpr,
                   BLOCK_W: tl.constexpr):
    """Mean and 1 / sigma (unbiased variance + EPS, sac.h aws_inv_sigma) in ACC of the rows o
    (mask mo) of the contiguous (O, M) weight w."""
    acc = tl.zeros((BLOCK_O, BLOCK_W), dtype=ACC)
    for m0 in range(0, M, BLOCK_W):
        m = m0 + tl.arange(0, BLOCK_W)
        acc += tl.load(w + o[:, None] * M + m[None, :], mask=mo[:, None] & (m < M)[None, :], other=0.0).to(ACC)
    mean = tl.sum(acc, axis=1) / M
    acc = tl.zeros((BLOCK_O, BLOCK_W), dtype=ACC)
    for m0 in range(0, M, BLOCK_W):
        m = m0 + tl.arange(0, BLOCK_W)
        mm = mo[:, None] & (m < M)[None, :]
        d = tl.where(mm, tl.load(w + o[:, None] * M + m[None, :], mask=mm, other=0.0).to(ACC) - mean[:, None], 0.0)
        acc += d * d
    # unbiased: var_den = M - 1, and 1 for a single weight (fan-in 1: variance 0, sac.h aws_var_divisor)
    var = tl.sum(acc, axis=1) / var_den + EPS
    if ACC == tl.float64:
        inv_sigma = 1.0 / tl.sqrt(var)
    else:  # correctly rounded, as the C++ sqrtf and division
        inv_sigma = tl.div_rn(1.0, tl.sqrt_rn(var))
    return mean, inv_sigma


@triton.jit
def aws_kernel(w, wd, gamma, beta, w_small, w_large, O, M, var_den, KH, KW, s0, s1, s2, s3,
               ACC: tl.constexpr, EPS: tl.constexpr, BLOCK_O: tl.constexpr, BLOCK_W: tl.constexpr):
    """AWS of BLOCK_O rows per program (sac.h aws_write): w_small = gamma (w - mean) / sigma + beta
    and w_large = w_small + weight_diff (w_small rounded to the weights' dtype first); w, wd
    contiguous, the outputs of strides s0..s3."""
    o = tl.program_id(0) * BLOCK_O + tl.arange(0, BLOCK_O)
    mo = o < O
    mean, inv_sigma = _aws_row_stats(w, o, mo, M, var_den, ACC, EPS, BLOCK_O, BLOCK_W)
    scale = (inv_sigma * tl.load(gamma + o, mask=mo, other=0.0).to(ACC))[:, None]
    shift = tl.load(beta + o, mask=mo, other=0.0).to(ACC)[:, None]
    for m0 in range(0, M, BLOCK_W):
        m = m0 + tl.arange(0, BLOCK_W)
        mm = mo[:, None] & (m < M)[None, :]
        i = o[:, None] * M + m[None, :]
        ws = ((tl.load(w + i, mask=mm, other=0.0).to(ACC) - mean[:, None]) * scale + shift).to(w_small.dtype.element_ty)
        wl = ws.to(ACC) + tl.load(wd + i, mask=mm, other=0.0).to(ACC)
        out = _row_offset(o[:, None], m[None, :], KH, KW, s0, s1, s2, s3)
        tl.store(w_small + out, ws, mask=mm)
        tl.store(w_large + out, wl.to(w_large.dtype.element_ty), mask=mm)


@triton.jit
def _aws_grad(gw_small, gw_large, w, o, m, mm, mean, inv_sigma, M, KH, KW, ss0, ss1, ss2, ss3, sl0, sl1, sl2, sl3,
              ACC: tl.constexpr):
    """(gw, std) at the values m of the rows o (both 2-D, mask mm): gw = dL/dw_small + dL/dw_large
    (strides ss*, sl*) and the standardised weight std = (w - mean) / sigma, in ACC."""
    gw = (tl.load(gw_small + _row_offset(o, m, KH, KW, ss0, ss1, ss2, ss3), mask=mm, other=0.0).to(ACC)
          + tl.load(gw_large + _row_offset(o, m, KH, KW, sl0, sl1, sl2, sl3), mask=mm, other=0.0).to(ACC))
    std = (tl.load(w + o * M + m, mask=mm, other=0.0).to(ACC) - mean[:, None]) * inv_sigma[:, None]
    return gw, std


@triton.jit
def aws_backward_kernel(gw_small, gw_large, w, gamma, g_w, g_gamma, g_beta, O, M, var_den, KH, KW,
                        ss0, ss1, ss2, ss3, sl0, sl1, sl2, sl3,
                        ACC: tl.constexpr, EPS: tl.constexpr, BLOCK_O: tl.constexpr, BLOCK_W: tl.constexpr):
    """AWS backward of BLOCK_O rows per program (sac.h aws_grad_sums, aws_grad_write), gw and std
    as in _aws_grad: g_beta[o] = sum gw, g_gamma[o] = sum gw std and
    g_w = gamma / sigma (gw - g_beta / M - std g_gamma / (M - 1)) (contiguous)."""
    o = tl.program_id(0) * BLOCK_O + tl.arange(0, BLOCK_O)
    mo = o < O
    mean, inv_sigma = _aws_row_stats(w, o, mo, M, var_den, ACC, EPS, BLOCK_O, BLOCK_W)
    sum_g = tl.zeros((BLOCK_O, BLOCK_W), dtype=ACC)
    sum_g_std = tl.zeros((BLOCK_O, BLOCK_W), dtype=ACC)
    for m0 in range(0, M, BLOCK_W):
        m = m0 + tl.arange(0, BLOCK_W)
        mm = mo[:, None] & (m < M)[None, :]
        gw, std = _aws_grad(gw_small, gw_large, w, o[:, None], m[None, :], mm, mean, inv_sigma, M, KH, KW,
                            ss0, ss1, ss2, ss3, sl0, sl1, sl2, sl3, ACC)
        sum_g += gw
        sum_g_std += gw * std
    total_g = tl.sum(sum_g, axis=1)
    total_g_std = tl.sum(sum_g_std, axis=1)
    mean_g = (total_g / M)[:, None]
    proj = (total_g_std / var_den)[:, None]
    scale = (tl.load(gamma + o, mask=mo, other=0.0).to(ACC) * inv_sigma)[:, None]
    for m0 in range(0, M, BLOCK_W):
        m = m0 + tl.arange(0, BLOCK_W)
        mm = mo[:, None] & (m < M)[None, :]
        gw, std = _aws_grad(gw_small, gw_large, w, o[:, None], m[None, :], mm, mean, inv_sigma, M, KH, KW,
                            ss0, ss1, ss2, ss3, sl0, sl1, sl2, sl3, ACC)
        tl.store(g_w + o[:, None] * M + m[None, :], (scale * (gw - mean_g - std * proj)).to(g_w.dtype.element_ty),
                 mask=mm)
    tl.store(g_gamma + o, total_g_std.to(g_gamma.dtype.element_ty), mask=mo)
    tl.store(g_beta + o, total_g.to(g_beta.dtype.element_ty), mask=mo)


def _aws_rows(O: int) -> int:
    """AWS rows per program: one on a GPU, up to 32 in the interpreter."""
    return min(32, triton.next_power_of_2(O)) if _interpreted() else 1


def _row_strides(t: torch.Tensor, tap_major: bool):
    """Strides of t as an (O, C/g, KH, KW) tensor; tap_major: t is (KH, KW, C/g, O) (dual_conv's)."""
    s = t.stride()
    return (s[3], s[2], s[0], s[1]) if tap_major else s


def aws(weight, gamma, beta, weight_diff, eps: float, w_small, w_large, tap_major: bool = False) -> None:
    """w_small <- AWS(weight), w_large <- w_small + weight_diff, in any layout (tap_major: both are
    (kh, kw, C/g, O)); weight, gamma, beta, weight_diff contiguous."""
    O, Cg, KH, KW = weight.shape
    rows = _aws_rows(O)
    _launch(aws_kernel, (triton.cdiv(O, rows),), weight, weight_diff, gamma, beta, w_small, w_large, O,
            Cg * KH * KW, max(Cg * KH * KW - 1, 1), KH, KW, *_row_strides(w_small, tap_major), ACC=_opmath(weight), EPS=eps, BLOCK_O=rows,
            BLOCK_W=BLOCK_W)


def aws_backward(gw_small, gw_large, weight, gamma, eps: float, g_weight, g_gamma, g_beta) -> None:
    """AWS backward from the two branch weight gradients (any layout): g_weight (contiguous),
    g_gamma, g_beta (O, 1, 1, 1); weight and gamma contiguous."""
    O, Cg, KH, KW = weight.shape
    rows = _aws_rows(O)
    _launch(aws_backward_kernel, (triton.cdiv(O, rows),), gw_small, gw_large, weight, gamma, g_weight, g_gamma,
            g_beta, O, Cg * KH * KW, max(Cg * KH * KW - 1, 1), KH, KW, *gw_small.stride(), *gw_large.stride(), ACC=_opmath(weight),
            EPS=eps, BLOCK_O=rows, BLOCK_W=BLOCK_W)


# ---- blend epilogues and the input gradient ----------------------------------------------------


@triton.jit
def blend_forward_kernel(small, large, s, bias, N, C, HW, CHANNELS_LAST: tl.constexpr,
                         HAS_BIAS: tl.constexpr, BLOCK: tl.constexpr):
    """large <- large + s * (small - large) + bias; small <- small - large (sac.h blend_forward);
    one block of elements in storage order per program; bias in any dtype."""
    i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = i < N * C * HW
    n, c, p = _decode(i, C, HW, CHANNELS_LAST)
    sv = tl.load(s + n * HW + p, mask=m, other=0.0)
    ys = tl.load(small + i, mask=m, other=0.0).to(sv.dtype)
    yl = tl.load(large + i, mask=m, other=0.0).to(sv.dtype)
    d = ys - yl
    y = yl + sv * d
    if HAS_BIAS:
        y += tl.load(bias + c, mask=m, other=0.0).to(sv.dtype)
    tl.store(small + i, d.to(small.dtype.element_ty), mask=m)
    tl.store(large + i, y.to(large.dtype.element_ty), mask=m)


@triton.jit
def blend_backward_kernel(grad, diff, s, ctx_grad, g_small, g_large, g_switch, N, C, HW, s_c, s_p,
                          BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    """gy = grad + ctx_grad[n, c]; g_small = s * gy; g_large = gy - g_small;
    g_switch[n, p] = sum_c gy * diff (sac.h blend_backward); one block of BLOCK_P pixels per
    program, channels in steps of BLOCK_C."""
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


@triton.jit
def input_grad_sums_kernel(gx_small, gx_large, xp, q, w_s, ctx_part, switch_part, C, HW, CHUNKS, CHUNK,
                           s_c, s_p, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    """Program (n * CHUNKS + k, j): over the pixels [k CHUNK, (k + 1) CHUNK) of image n, channels
    [j BLOCK_C, (j + 1) BLOCK_C), the sums of dL/dx' = gx_small + gx_large + q w_s and of x' q into
    ctx_part and switch_part[n, k, c] (sac.h input_grad_sums); CHUNK <= BLOCK_P."""
    ACC: tl.constexpr = q.dtype.element_ty
    nk = tl.program_id(0).to(tl.int64)
    n = nk // CHUNKS
    k = nk % CHUNKS
    p = k * CHUNK + tl.arange(0, BLOCK_P)
    mp = (tl.arange(0, BLOCK_P) < CHUNK) & (p < HW)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C).to(tl.int64)
    mc = c < C
    m = mp[:, None] & mc[None, :]
    offs = (n * C * HW + p * s_p)[:, None] + (c * s_c)[None, :]
    qv = tl.load(q + n * HW + p, mask=mp, other=0.0)[:, None]
    gx = (tl.load(gx_small + offs, mask=m, other=0.0).to(ACC) + tl.load(gx_large + offs, mask=m, other=0.0).to(ACC)
          + qv * tl.load(w_s + c, mask=mc, other=0.0).to(ACC)[None, :])
    tl.store(ctx_part + nk * C + c, tl.sum(gx, axis=0), mask=mc)
    tl.store(switch_part + nk * C + c, tl.sum(tl.load(xp + offs, mask=m, other=0.0).to(ACC) * qv, axis=0), mask=mc)


@triton.jit
def input_grad_kernel(gx_small, gx_large, q, w_s, corr, gx, N, C, HW, CHANNELS_LAST: tl.constexpr,
                      BLOCK: tl.constexpr):
    """gx = gx_small + gx_large + q[n, p] w_s[c] + corr[n, c] (sac.h input_grad_at), rounded to
    gx's dtype; one block of elements in storage order per program."""
    i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = i < N * C * HW
    n, c, p = _decode(i, C, HW, CHANNELS_LAST)
    qv = tl.load(q + n * HW + p, mask=m, other=0.0)
    v = (tl.load(gx_small + i, mask=m, other=0.0).to(qv.dtype) + tl.load(gx_large + i, mask=m, other=0.0).to(qv.dtype)
         + qv * tl.load(w_s + c, mask=m, other=0.0).to(qv.dtype) + tl.load(corr + n * C + c, mask=m, other=0.0))
    tl.store(gx + i, v.to(gx.dtype.element_ty), mask=m)


def blend_forward(small, large, s, bias, channels_last: bool) -> None:
    """In place: large <- blend + bias, small <- small - large; s (N, 1, Ho, Wo) op-math, bias (O,)
    in any dtype or None."""
    N, C, H, W = small.shape
    _launch(blend_forward_kernel, (triton.cdiv(small.numel(), BLOCK),), small, large, s,
            s if bias is None else bias, N, C, H * W, CHANNELS_LAST=channels_last, HAS_BIAS=bias is not None,
            BLOCK=BLOCK)


def blend_backward(grad, diff, s, ctx_grad, g_small, g_large, g_switch, channels_last: bool) -> None:
    """g_small, g_large (grad's layout), g_switch (N, Ho, Wo) op-math from grad_out, the saved
    difference, s and ctx_grad (N, O) op-math."""
    N, C, H, W = grad.shape
    s_c, s_p = _strides(grad, channels_last)
    _launch(blend_backward_kernel, (triton.cdiv(N * H * W, BLOCK_P),), grad, diff, s, ctx_grad, g_small, g_large,
            g_switch, N, C, H * W, s_c, s_p, BLOCK_P=BLOCK_P, BLOCK_C=BLOCK_C)


def input_grad_sums(gx_small, gx_large, xp, q, w_s, channels_last: bool, ctx_part, switch_part) -> None:
    """Per (image, pixel chunk, channel) sums (N, chunks, C) op-math of gx_small + gx_large + q w_s
    and of x' q, chunks of ceil(HW / chunks) <= SUM_CHUNK pixels."""
    N, C, H, W = xp.shape
    chunks = ctx_part.shape[1]
    s_c, s_p = _strides(xp, channels_last)
    _launch(input_grad_sums_kernel, (N * chunks, triton.cdiv(C, BLOCK_C)), gx_small, gx_large, xp, q, w_s,
            ctx_part, switch_part, C, H * W, chunks, triton.cdiv(H * W, chunks), s_c, s_p, BLOCK_P=SUM_CHUNK,
            BLOCK_C=BLOCK_C)


def input_grad(gx_small, gx_large, q, w_s, corr, channels_last: bool, gx) -> None:
    """gx <- gx_small + gx_large + q w_s + corr (N, C) op-math, in gx's dtype and layout."""
    N, C, H, W = gx.shape
    _launch(input_grad_kernel, (triton.cdiv(gx.numel(), BLOCK),), gx_small, gx_large, q, w_s, corr, gx, N, C,
            H * W, CHANNELS_LAST=channels_last, BLOCK=BLOCK)


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
        yv += tl.load(bias + o, mask=mo, other=0.0).to(acc_dtype)[None, :]
    m = mp[:, None] & mo[None, :]
    y_offs = (n * sy_n + ho.to(tl.int64) * sy_h + wo.to(tl.int64) * sy_w)[:, None] + o.to(tl.int64)[None, :] * sy_c
    tl.store(y + y_offs, yv.to(y.dtype.element_ty), mask=m)
    tl.store(diff + y_offs, d.to(diff.dtype.element_ty), mask=m)
    part = tl.sum(tl.where(m, yv, 0.0), axis=0)
    tl.store(y_part + (n * TILES_M + tile) * O + o, part, mask=mo)


dual_conv_tuned = triton.autotune(configs=DUAL_CONV_CONFIGS, key=["Cg", "Og", "KH", "KW", "SH", "SW"])(dual_conv_kernel)


def dual_conv_block_m(pixels: int) -> int:
    """Pixels per program: 128 for large images, 64 otherwise (32 in the interpreter)."""
    if _interpreted():
        return 32
    return 128 if pixels >= 4096 else 64


def dual_conv(xp, w_small, w_large, s, bias, y, diff, stride, padding, dilation, groups) -> torch.Tensor:
    """Fills y and diff (N, O, Ho, Wo, any dense layout) from x' (N, C, H, W, any strides) and the
    (kh, kw, C/g, O) contiguous weights; s (N, Ho, Wo) op-math contiguous, bias (O,) in any dtype
    or None. Returns the (N, tiles, O) op-math partial pixel sums of y (summed over dim 1: the
    pixel sums of y before its rounding)."""
    N, C, H, W = xp.shape
    KH, KW, Cg, O = w_small.shape
    Ho, Wo = y.shape[2:]
    Og = O // groups
    block_m = dual_conv_block_m(Ho * Wo)
    tiles_m = triton.cdiv(Ho * Wo, block_m)
    y_part = torch.empty((N, tiles_m, O), device=xp.device, dtype=s.dtype)
    if y.numel() == 0:
        return y_part
    precision = "tf32" if xp.dtype in (torch.float16, torch.bfloat16) else "ieee"
    args = (xp, w_small, w_large, s, s if bias is None else bias, y, diff, y_part,
            C, H, W, O, Ho, Wo, Cg, Og, KH, KW, stride[0], stride[1], padding[0], padding[1],
            dilation[0], dilation[1], *xp.stride(), *y.stride())
    consts = dict(HAS_BIAS=bias is not None, PRECISION=precision, BLOCK_M=block_m)
    if _interpreted() or y.numel() < AUTOTUNE_MIN_OUTPUTS:
        fixed = DUAL_CONV_CONFIGS[0]
        config = INTERPRET_CONFIG if _interpreted() else dict(fixed.kwargs)
        launch = {} if config is INTERPRET_CONFIG else dict(num_warps=fixed.num_warps, num_stages=fixed.num_stages)
        grid = (N * tiles_m, groups * triton.cdiv(Og, config["BLOCK_N"]))
        dual_conv_kernel[grid](*args, tiles_m, **consts, **config, **launch)
    else:
        def grid(meta):
            return (N * tiles_m, groups * triton.cdiv(Og, meta["BLOCK_N"]))

        dual_conv_tuned[grid](*args, tiles_m, **consts)
    return y_part

// Per-element math of the switchable atrous convolution's fused steps, shared by the CPU loops
// (sac_cpu.cpp) and the CUDA kernels (sac_cuda.cu). All arithmetic is in `T`, the op-math type
// (float for half/bfloat16/float activations, double for double).
//
// Activations are dense 4-D tensors (N, C, H, W) in NCHW or channels_last order; `Dense4d` maps
// (image n, channel c, pixel p = h * W + w) to a storage offset and back.
#pragma once

#include <cmath>
#include <type_traits>

#include "../common.h"

namespace pyops {
namespace sac {

// Op-math type: float for half/bfloat16/float, double for double.
template <typename scalar_t>
using opmath_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;

struct Dense4d {
  int64_t N, C, HW;
  bool channels_last;

  PYOPS_HD int64_t numel() const { return N * C * HW; }
  PYOPS_HD int64_t offset(int64_t n, int64_t c, int64_t p) const {
    return channels_last ? (n * HW + p) * C + c : (n * C + c) * HW + p;
  }
  // Inverse of offset(): the image, channel and pixel of storage element i.
  PYOPS_HD void decode(int64_t i, int64_t& n, int64_t& c, int64_t& p) const {
    if (channels_last) {
      c = i % C;
      p = (i / C) % HW;
      n = i / (C * HW);
    } else {
      p = i % HW;
      c = (i / HW) % C;
      n = i / (C * HW);
    }
  }
};

// A reducing function below takes (k0, step) and sums the terms k0, k0 + step, ...: the CPU calls
// it with (0, 1), a CUDA warp with (lane, 32) and then adds the lanes' partial sums.

// Pre-pass at pixel (n, p), channels c0, c0 + step, ... < C: writes x' = x + ctx[n, c] (ctx rounded
// to x's type first, as the eager layer adds a context computed in x's type) and returns the
// partial sum of w_s[c] * x'. Summed over all channels it is z[n, p], the 1x1 switch conv applied
// before the 5x5 pooling (pooling and a 1x1 conv commute).
template <typename scalar_t, typename T>
PYOPS_HD T context_switch_dot(const scalar_t* x, const T* ctx, const scalar_t* w_s, Dense4d L, int64_t n,
                              int64_t p, int64_t c0, int64_t step, scalar_t* xp) {
  T acc = T(0);
  for (int64_t c = c0; c < L.C; c += step) {
    const int64_t i = L.offset(n, c, p);
    const scalar_t v = static_cast<scalar_t>(static_cast<T>(x[i]) +
                                             static_cast<T>(static_cast<scalar_t>(ctx[n * L.C + c])));
    xp[i] = v;
    acc += static_cast<T>(w_s[c]) * static_cast<T>(v);
  }
  return acc;
}

// Index of padded row r in [-2, n + 1] in a row of n >= 3 values reflect-padded by 2.
PYOPS_HD int64_t reflect2(int64_t r, int64_t n) { return r < 0 ? -r : (r >= n ? 2 * (n - 1) - r : r); }

// The padded indices r in [-2, n + 1] with reflect2(r, n) == h (1 to 3 of them), into r[].
PYOPS_HD int reflect2_sources(int64_t h, int64_t n, int64_t* r) {
  int count = 0;
  r[count++] = h;
  if (h >= 1 && h <= 2) r[count++] = -h;
  if (h >= n - 3 && h <= n - 2) r[count++] = 2 * (n - 1) - h;
  return count;
}

// Switch before its bias at output (n, ho, wo): the mean of z (N, H, W) over the 5x5 window
// centred on input pixel (ho * SH, wo * SW) of z reflect-padded by 2.
template <typename T>
PYOPS_HD T switch_pool(const T* z, int64_t H, int64_t W, int64_t SH, int64_t SW, int64_t n, int64_t ho,
                       int64_t wo) {
  T acc = T(0);
  for (int64_t a = -2; a <= 2; ++a) {
    const T* row = z + (n * H + reflect2(ho * SH + a, H)) * W;
    for (int64_t b = -2; b <= 2; ++b) acc += row[reflect2(wo * SW + b, W)];
  }
  return acc / T(25);
}

// Adjoint of switch_pool at input pixel (n, h, w): q = dL/dz from g = dL/ds (N, Ho, Wo). Every
// padded position (r, t) that reflects onto (h, w) passes on the gradients of the outputs whose
// window holds it, |ho * SH - r| <= 2 and |wo * SW - t| <= 2.
template <typename T>
PYOPS_HD T switch_pool_adjoint(const T* g, int64_t H, int64_t W, int64_t Ho, int64_t Wo, int64_t SH, int64_t SW,
                               int64_t n, int64_t h, int64_t w) {
  int64_t rows[3], cols[3];
  const int nr = reflect2_sources(h, H, rows), nc = reflect2_sources(w, W, cols);
  T acc = T(0);
  for (int a = 0; a < nr; ++a) {
    const int64_t ho0 = rows[a] <= 2 ? 0 : (rows[a] - 2 + SH - 1) / SH;
    const int64_t ho1 = (rows[a] + 2) / SH < Ho - 1 ? (rows[a] + 2) / SH : Ho - 1;
    for (int64_t ho = ho0; ho <= ho1; ++ho) {
      const T* row = g + (n * Ho + ho) * Wo;
      for (int b = 0; b < nc; ++b) {
        const int64_t wo0 = cols[b] <= 2 ? 0 : (cols[b] - 2 + SW - 1) / SW;
        const int64_t wo1 = (cols[b] + 2) / SW < Wo - 1 ? (cols[b] + 2) / SW : Wo - 1;
        for (int64_t wo = wo0; wo <= wo1; ++wo) acc += row[wo];
      }
    }
  }
  return acc / T(25);
}

// ---- the two contexts: out[n, j] = b[j] + sum_k W[j, k] v[n, k] on the pixel means v --------

// Partial sum over k of W[j, k] * v[n, k]; W is (J, K) in the parameters' type, v op-math.
template <typename wt, typename T>
PYOPS_HD T linear_partial(const wt* W, const T* v, int64_t K, int64_t n, int64_t j, int64_t k0, int64_t step) {
  T acc = T(0);
  for (int64_t k = k0; k < K; k += step) acc += static_cast<T>(W[j * K + k]) * v[n * K + k];
  return acc;
}

// Backward of a context for g = dL/dout (N, J), as independent work items (one per output
// value, so the CPU loops and one CUDA thread each run `item(t)` for t < items()):
//   g_W[j, k] = sum_n g[n, j] v[n, k]        g_v[n, k] = scale * sum_j g[n, j] W[j, k]
//   g_b[j]    = sum_n g[n, j]                g_vbias[k] = g_b[k] + sum_j g_b[j] W[j, k]
// g_vbias (optional, J == K) is the gradient of a per-channel bias added to every pixel of the
// tensor whose means are v: the bias of the layer, which the post-context sees through GAP(y).
template <typename wt, typename T>
struct LinearBackward {
  const T* g;
  const T* v;
  const wt* W;
  int64_t N, J, K;
  T scale;
  wt* g_W;
  T* g_v;
  wt* g_b;
  wt* g_vbias;  // may be null

  PYOPS_HD int64_t items() const { return J * K + N * K + J + (g_vbias != nullptr ? K : 0); }
  PYOPS_HD T g_b_at(int64_t j) const {
    T acc = T(0);
    for (int64_t n = 0; n < N; ++n) acc += g[n * J + j];
    return acc;
  }
  PYOPS_HD void item(int64_t t) const {
    if (t < J * K) {
      const int64_t j = t / K, k = t % K;
      T acc = T(0);
      for (int64_t n = 0; n < N; ++n) acc += g[n * J + j] * v[n * K + k];
      g_W[t] = static_cast<wt>(acc);
      return;
    }
    t -= J * K;
    if (t < N * K) {
      const int64_t n = t / K, k = t % K;
      T acc = T(0);
      for (int64_t j = 0; j < J; ++j) acc += g[n * J + j] * static_cast<T>(W[j * K + k]);
      g_v[t] = scale * acc;
      return;
    }
    t -= N * K;
    if (t < J) {
      g_b[t] = static_cast<wt>(g_b_at(t));
      return;
    }
    t -= J;
    T acc = g_b_at(t);
    for (int64_t j = 0; j < J; ++j) acc += g_b_at(j) * static_cast<T>(W[j * K + t]);
    g_vbias[t] = static_cast<wt>(acc);
  }
};

// ---- AWS: w_hat[o] = gamma[o] (W[o] - mean W[o]) / sqrt(var W[o] + eps) + beta[o], per row o --

// Row o of an (O, C/g, KH, KW) weight is its M = C/g * KH * KW values in (c, i, j) order; the
// strides say where each sits (contiguous or channels_last).
struct WeightRow {
  int64_t Cg, KH, KW;
  int64_t s0, s1, s2, s3;

  PYOPS_HD int64_t M() const { return Cg * KH * KW; }
  PYOPS_HD int64_t offset(int64_t o, int64_t m) const {
    return o * s0 + (m / (KH * KW)) * s1 + ((m / KW) % KH) * s2 + (m % KW) * s3;
  }
};

template <typename scalar_t, typename T>
PYOPS_HD T row_sum(const scalar_t* w, WeightRow R, int64_t o, int64_t m0, int64_t step) {
  T acc = T(0);
  for (int64_t m = m0; m < R.M(); m += step) acc += static_cast<T>(w[R.offset(o, m)]);
  return acc;
}

template <typename scalar_t, typename T>
PYOPS_HD T row_sq_dev(const scalar_t* w, WeightRow R, int64_t o, T mean, int64_t m0, int64_t step) {
  T acc = T(0);
  for (int64_t m = m0; m < R.M(); m += step) {
    const T d = static_cast<T>(w[R.offset(o, m)]) - mean;
    acc += d * d;
  }
  return acc;
}

// The divisor of the unbiased variance of a row of M weights: M - 1, and 1 for a single weight
// (fan-in 1), whose variance is then 0 (not torch.var's NaN) and whose standardised weight is 0.
PYOPS_HD int64_t aws_var_divisor(int64_t M) { return M > 1 ? M - 1 : 1; }

// 1 / sigma from the row's sum of squared deviations (unbiased variance, as torch.var, fan-in 1
// as aws_var_divisor), with the float overload on host and device alike.
PYOPS_HD float aws_inv_sigma(float sq_dev, int64_t M, float eps) {
  return 1.0f / sqrtf(sq_dev / static_cast<float>(aws_var_divisor(M)) + eps);
}
PYOPS_HD double aws_inv_sigma(double sq_dev, int64_t M, double eps) {
  return 1.0 / ::sqrt(sq_dev / static_cast<double>(aws_var_divisor(M)) + eps);
}

// Writes row o of w_small = AWS(W) and w_large = w_small + weight_diff (in the weights' type,
// w_small rounded first as the eager layer does); w, weight_diff are rows in R, the outputs in Ro.
template <typename scalar_t, typename T>
PYOPS_HD void aws_write(const scalar_t* w, const scalar_t* weight_diff, WeightRow R, WeightRow Ro, int64_t o,
                        T mean, T inv_sigma, T gamma, T beta, int64_t m0, int64_t step, scalar_t* w_small,
                        scalar_t* w_large) {
  for (int64_t m = m0; m < R.M(); m += step) {
    const int64_t i = R.offset(o, m), io = Ro.offset(o, m);
    const scalar_t ws = static_cast<scalar_t>((static_cast<T>(w[i]) - mean) * inv_sigma * gamma + beta);
    w_small[io] = ws;
    w_large[io] = static_cast<scalar_t>(static_cast<T>(ws) + static_cast<T>(weight_diff[i]));
  }
}

// AWS backward, row o, with gw = dL/dw_small + dL/dw_large (two tensors in their own layouts
// Rs, Rl) and the standardised weight std = (W - mean) / sigma: partial sums of gw and gw * std
// (the gradients to beta and gamma), then aws_grad_write.
template <typename scalar_t, typename T>
PYOPS_HD void aws_grad_sums(const scalar_t* gw_small, WeightRow Rs, const scalar_t* gw_large, WeightRow Rl,
                            const scalar_t* w, WeightRow R, int64_t o, T mean, T inv_sigma, int64_t m0,
                            int64_t step, T& sum_g, T& sum_g_std) {
  sum_g = T(0);
  sum_g_std = T(0);
  for (int64_t m = m0; m < R.M(); m += step) {
    const T gw = static_cast<T>(gw_small[Rs.offset(o, m)]) + static_cast<T>(gw_large[Rl.offset(o, m)]);
    sum_g += gw;
    sum_g_std += gw * (static_cast<T>(w[R.offset(o, m)]) - mean) * inv_sigma;
  }
}

// dL/dW = gamma / sigma * (gw - sum_g / M - std * sum_g_std / (M - 1)) into the contiguous g_w
// (M - 1 as aws_var_divisor: fan-in 1 gives 0, the standardised weight being constant).
template <typename scalar_t, typename T>
PYOPS_HD void aws_grad_write(const scalar_t* gw_small, WeightRow Rs, const scalar_t* gw_large, WeightRow Rl,
                             const scalar_t* w, WeightRow R, int64_t o, T mean, T inv_sigma, T gamma, T sum_g,
                             T sum_g_std, int64_t m0, int64_t step, scalar_t* g_w) {
  const int64_t M = R.M();
  const T mean_g = sum_g / static_cast<T>(M), proj = sum_g_std / static_cast<T>(aws_var_divisor(M));
  for (int64_t m = m0; m < M; m += step) {
    const T gw = static_cast<T>(gw_small[Rs.offset(o, m)]) + static_cast<T>(gw_large[Rl.offset(o, m)]);
    const T std = (static_cast<T>(w[R.offset(o, m)]) - mean) * inv_sigma;
    g_w[o * M + m] = static_cast<scalar_t>(gamma * (gw - mean_g - std * proj) * inv_sigma);
  }
}

// ---- the input gradient: dL/dx = gx_small + gx_large + q * w_s + corr[n, c] ------------------
// (q = dL/dz, corr: the pre-context term, from the per-image channel sums of the first three)

// Pixels [p0, p1) of channel c of image n: the partial sums of dL/dx' = gx_small + gx_large +
// q * w_s (for the pre-context) and of x' * q (for the switch weight).
template <typename scalar_t, typename T>
PYOPS_HD void input_grad_sums(const scalar_t* gx_small, const scalar_t* gx_large, const scalar_t* xp,
                              const T* q, T w_s, Dense4d L, int64_t n, int64_t c, int64_t p0, int64_t p1,
                              T& ctx_sum, T& switch_sum) {
  ctx_sum = T(0);
  switch_sum = T(0);
  for (int64_t p = p0; p < p1; ++p) {
    const int64_t i = L.offset(n, c, p);
    const T qv = q[n * L.HW + p];
    ctx_sum += static_cast<T>(gx_small[i]) + static_cast<T>(gx_large[i]) + qv * w_s;
    switch_sum += static_cast<T>(xp[i]) * qv;
  }
}

template <typename scalar_t, typename T>
PYOPS_HD scalar_t input_grad_at(const scalar_t* gx_small, const scalar_t* gx_large, const T* q, const scalar_t* w_s,
                                const T* corr, Dense4d L, int64_t i) {
  int64_t n, c, p;
  L.decode(i, n, c, p);
  return static_cast<scalar_t>(static_cast<T>(gx_small[i]) + static_cast<T>(gx_large[i]) +
                               q[n * L.HW + p] * static_cast<T>(w_s[c]) + corr[n * L.C + c]);
}

// Forward epilogue at storage element i of the two branch outputs, s = switch value of its
// pixel, b = bias of its channel (0 without bias):
//   large[i] <- y = large + s * (small - large) + b   (= s * small + (1 - s) * large + b)
//   small[i] <- small - large                          (saved for the switch gradient)
template <typename scalar_t, typename T>
PYOPS_HD void blend_forward(scalar_t* small, scalar_t* large, int64_t i, T s, T b) {
  const T ys = static_cast<T>(small[i]);
  const T yl = static_cast<T>(large[i]);
  const T d = ys - yl;
  small[i] = static_cast<scalar_t>(d);
  large[i] = static_cast<scalar_t>(yl + s * d + b);
}

// Backward epilogue at pixel (n, p), channels o0, o0 + step, ... < O: with gy = grad_out +
// ctx_grad[n, o] (the post-context term), writes g_small = s * gy and g_large = (1 - s) * gy, and
// returns the partial switch gradient sum_o gy * (small - large) of those channels.
template <typename scalar_t, typename T>
PYOPS_HD T blend_backward(const scalar_t* grad_out, const scalar_t* diff, const T* ctx_grad, T s,
                          Dense4d L, int64_t n, int64_t p, int64_t o0, int64_t step, scalar_t* g_small,
                          scalar_t* g_large) {
  T acc = T(0);
  for (int64_t o = o0; o < L.C; o += step) {
    const int64_t i = L.offset(n, o, p);
    const T gy = static_cast<T>(grad_out[i]) + ctx_grad[n * L.C + o];
    acc += gy * static_cast<T>(diff[i]);
    const T gs = s * gy;
    g_small[i] = static_cast<scalar_t>(gs);
    g_large[i] = static_cast<scalar_t>(gy - gs);
  }
  return acc;
}

// ---- dual-accumulator convolution (the fused forward of sac_conv2d_igemm) ----------------------
// One output pixel gathers two sets of k x k taps from the same input: the "small" branch
// (dilation d, padding p) and the "large" branch (dilation 3d, padding 3p). Because p = d(k-1)/2,
// every tap of both branches of output row ho lies in the input rows
// [ho*s - 3p, ho*s + 3p]: an output tile of R rows needs a halo of (R-1)*s + 6p + 1 input rows
// starting at h0*s - 3p, and tap i of a branch sits `halo_offset` rows into it. The same holds for
// columns. The CPU kernel reads its taps through these functions, the CUDA kernels stage the halo.
struct DualConvGeom {
  int64_t N, C, H, W, O, Ho, Wo;
  int64_t KH, KW, SH, SW, PH, PW, DH, DW, groups;

  PYOPS_HD int64_t Cg() const { return C / groups; }
  PYOPS_HD int64_t Og() const { return O / groups; }
  // Offset of tap i (of kernel size k, dilation d, padding p) into the halo; large: the 3d branch.
  PYOPS_HD static int64_t halo_offset(int64_t i, int64_t p, int64_t d, bool large) {
    return large ? i * 3 * d : 2 * p + i * d;
  }
  // Halo extent (rows or columns) of `out` output rows or columns.
  PYOPS_HD static int64_t halo_extent(int64_t out, int64_t s, int64_t p) { return (out - 1) * s + 6 * p + 1; }
  // First input row (column) of the halo of output row ho (column wo).
  PYOPS_HD int64_t halo_row0(int64_t ho) const { return ho * SH - 3 * PH; }
  PYOPS_HD int64_t halo_col0(int64_t wo) const { return wo * SW - 3 * PW; }
  // Input row / column of tap (i, j) of a branch at output pixel (ho, wo); may lie outside the
  // image (zero padding: the caller checks with inside()).
  PYOPS_HD int64_t in_row(int64_t ho, int64_t i, bool large) const { return halo_row0(ho) + halo_offset(i, PH, DH, large); }
  PYOPS_HD int64_t in_col(int64_t wo, int64_t j, bool large) const { return halo_col0(wo) + halo_offset(j, PW, DW, large); }
  PYOPS_HD bool inside(int64_t h, int64_t w) const { return h >= 0 && h < H && w >= 0 && w < W; }
};

// Both accumulators of output (n, o, ho, wo): x is a dense (N, C, H, W) tensor in the layout of
// Lx (Lx.HW = H * W); w_small, w_large are (O, C/groups, KH, KW) contiguous.
template <typename scalar_t, typename T>
PYOPS_HD void dual_conv_at(const scalar_t* x, Dense4d Lx, const scalar_t* w_small, const scalar_t* w_large,
                           const DualConvGeom& g, int64_t n, int64_t o, int64_t ho, int64_t wo, T& acc_s,
                           T& acc_l) {
  const int64_t Cg = g.Cg(), c0 = (o / g.Og()) * Cg;
  acc_s = T(0);
  acc_l = T(0);
  for (int64_t i = 0; i < g.KH; ++i) {
    for (int64_t j = 0; j < g.KW; ++j) {
      const int64_t hs = g.in_row(ho, i, false), ws = g.in_col(wo, j, false);
      const int64_t hl = g.in_row(ho, i, true), wl = g.in_col(wo, j, true);
      const bool in_s = g.inside(hs, ws), in_l = g.inside(hl, wl);
      for (int64_t c = 0; c < Cg; ++c) {
        const int64_t wi = ((o * Cg + c) * g.KH + i) * g.KW + j;
        if (in_s) acc_s += static_cast<T>(w_small[wi]) * static_cast<T>(x[Lx.offset(n, c0 + c, hs * g.W + ws)]);
        if (in_l) acc_l += static_cast<T>(w_large[wi]) * static_cast<T>(x[Lx.offset(n, c0 + c, hl * g.W + wl)]);
      }
    }
  }
}

// Epilogue of the dual convolution: y = A_l + s * (A_s - A_l) + b and the saved difference
// A_s - A_l (the same blend as blend_forward, on the accumulators).
template <typename T>
PYOPS_HD T dual_blend(T acc_s, T acc_l, T s, T b, T& diff) {
  diff = acc_s - acc_l;
  return acc_l + s * diff + b;
}

}  // namespace sac
}  // namespace pyops

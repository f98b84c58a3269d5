// Per-element math of the switchable atrous convolution's fused steps, shared by the CPU loops
// (sac_cpu.cpp) and the CUDA kernels (sac_cuda.cu). All arithmetic is in `T`, the op-math type
// (float for half/bfloat16/float activations, double for double).
//
// Activations are dense 4-D tensors (N, C, H, W) in NCHW or channels_last order; `Dense4d` maps
// (image n, channel c, pixel p = h * W + w) to a storage offset and back.
#pragma once

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

// Switch pre-pass at pixel (n, p), channels c0, c0 + step, ... < C: the partial sum of
// w[c] * x[n, c, p]. Summed over all channels it is z[n, p], the 1x1 switch conv applied before the
// 5x5 pooling (pooling and a 1x1 conv commute).
template <typename scalar_t, typename T>
PYOPS_HD T switch_dot(const scalar_t* x, const T* w, Dense4d L, int64_t n, int64_t p, int64_t c0,
                      int64_t step) {
  T acc = T(0);
  for (int64_t c = c0; c < L.C; c += step) acc += w[c] * static_cast<T>(x[L.offset(n, c, p)]);
  return acc;
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

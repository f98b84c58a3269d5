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

}  // namespace sac
}  // namespace pyops

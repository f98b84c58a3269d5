// Deformable convolution v1: the sampling math shared by the CPU and CUDA kernels (and mirrored
// by kernels/deform.py). Kernel point k = i * kw + j of offset group a at output pixel (oy, ox)
// of image n samples channel c of group a at
//   y = oy * sh - ph + i * dh + offset[n, 2 (a K + k), oy, ox]
//   x = ox * sw - pw + j * dw + offset[n, 2 (a K + k) + 1, oy, ox]          (K = kh * kw)
// bilinearly (pointrend's BilinearTaps: a corner outside the image reads 0 and keeps its weight,
// so a non-finite position gives NaN). The columns of the GEMM are col[n, c K + k, oy Wo + ox].
#pragma once

#include <cstdint>
#include <type_traits>

#include "../common.h"
#include "../pointrend/point_sample.h"

namespace pyops {
namespace deform {

using pointrend::BilinearTaps;

// The arithmetic type of a kernel on scalar_t: double for double, float otherwise.
template <typename scalar_t>
using opmath = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;

// The geometry of one call, plain values only (the same struct on host and device).
struct Geometry {
  int64_t N, C, H, W;          // input
  int64_t kh, kw, Ho, Wo;      // kernel and output size
  int64_t sh, sw, ph, pw, dh, dw;
  int64_t offset_groups;
  PYOPS_HD int64_t K() const { return kh * kw; }
  PYOPS_HD int64_t L() const { return Ho * Wo; }
  PYOPS_HD int64_t group_channels() const { return C / offset_groups; }
};

// A 4-D tensor by pointer and element strides.
template <typename ptr_t>
struct Tensor4 {
  ptr_t data;
  int64_t sN, sC, sH, sW;
  PYOPS_HD int64_t index(int64_t n, int64_t c, int64_t h, int64_t w) const {
    return n * sN + c * sC + h * sH + w * sW;
  }
};

// Input and offsets of a call: where each sample lies and what it reads.
template <typename scalar_t, typename T>
struct Sampler {
  Tensor4<const scalar_t*> input;   // (N, C, H, W)
  Tensor4<const scalar_t*> offset;  // (N, 2 * offset_groups * K, Ho, Wo)
  Geometry g;

  // Taps of kernel point k of offset group a at output pixel p = oy * Wo + ox of image n.
  PYOPS_HD BilinearTaps<T> taps(int64_t n, int64_t a, int64_t k, int64_t p) const {
    const int64_t oy = p / g.Wo, ox = p - oy * g.Wo;
    const int64_t i = k / g.kw, j = k - i * g.kw;
    const int64_t ch = 2 * (a * g.K() + k);
    const T dy = static_cast<T>(offset.data[offset.index(n, ch, oy, ox)]);
    const T dx = static_cast<T>(offset.data[offset.index(n, ch + 1, oy, ox)]);
    const T y = static_cast<T>(oy * g.sh - g.ph + i * g.dh) + dy;
    const T x = static_cast<T>(ox * g.sw - g.pw + j * g.dw) + dx;
    BilinearTaps<T> t = pointrend::pixel_taps(x, y, g.H, g.W);
    // a point at or beyond one pixel outside reads nothing and has no slope (torchvision's and
    // mmcv's rule); only y or x == -1 exactly still has a valid corner here. NaN keeps its taps.
    if (y <= T(-1) || x <= T(-1)) t.vx0 = t.vx1 = t.vy0 = t.vy1 = false;
    return t;
  }
  // Corner q of channel c of image n (0 when the corner lies outside the image).
  PYOPS_HD T corner(const BilinearTaps<T>& t, int q, int64_t n, int64_t c) const {
    if (!t.valid(q)) return T(0);
    return static_cast<T>(input.data[n * input.sN + c * input.sC + t.offset(q, input.sH, input.sW)]);
  }
  PYOPS_HD T sample(const BilinearTaps<T>& t, int64_t n, int64_t c) const {
    T acc = T(0);
    for (int q = 0; q < 4; ++q) acc += t.weight(q) * corner(t, q, n, c);
    return acc;
  }
};

// d(sum_c g_c sample_c) / d(dy, dx) given the corner dot products d[q] = sum_c g_c corner_q,c:
// the offset gradient of one (image, kernel point, offset group, output pixel).
template <typename T>
PYOPS_HD void offset_grad(const BilinearTaps<T>& t, const T d[4], T* g_dy, T* g_dx) {
  pointrend::position_grad(t, d, g_dx, g_dy);
}

}  // namespace deform
}  // namespace pyops

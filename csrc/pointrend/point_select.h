// Uncertainty-guided point selection and subdivision upsampling: math shared by the CPU and
// CUDA kernels (and mirrored by kernels/point_select.py, which draws the same random numbers).
#pragma once

#include <cmath>
#include <cstdint>
#include <type_traits>

#include "point_sample.h"

namespace pyops {
namespace pointrend {

// Philox-4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011):
// counter (c0, c1, c2, c3), key = the 64-bit seed split in (low, high) words.
PYOPS_HD void philox4x32(uint32_t c[4], uint64_t seed) {
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  for (int round = 0; round < 10; ++round) {
    const uint64_t p0 = uint64_t(0xD2511F53u) * c[0];
    const uint64_t p1 = uint64_t(0xCD9E8D57u) * c[2];
    const uint32_t n0 = static_cast<uint32_t>(p1 >> 32) ^ c[1] ^ k0;
    const uint32_t n2 = static_cast<uint32_t>(p0 >> 32) ^ c[3] ^ k1;
    c[1] = static_cast<uint32_t>(p1);
    c[3] = static_cast<uint32_t>(p0);
    c[0] = n0;
    c[2] = n2;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
}

// A uniform float in [0, 1) from the top 24 bits (exact in float32).
PYOPS_HD float uniform24(uint32_t x) { return static_cast<float>(x >> 8) * (1.0f / 16777216.0f); }

// Random point j of row r in stream s (0: candidates, 1: appended random points): the first
// two Philox outputs of counter (j, r, s, 0) give x and y.
PYOPS_HD void random_point(uint64_t seed, uint32_t stream, int64_t r, int64_t j, float* x, float* y) {
  uint32_t c[4] = {static_cast<uint32_t>(j), static_cast<uint32_t>(r), stream, 0u};
  philox4x32(c, seed);
  *x = uniform24(c[0]);
  *y = uniform24(c[1]);
}

// Everything the selection kernels need for one call.
template <typename scalar_t>
struct SelectArgs {
  SampleArgs<scalar_t, float> logits;  // (R, C, H, W), coords unused
  const int64_t* classes;              // (R,) channel per row, or null: channel 0
  const float* candidates_in;          // (R, Pc, 2) supplied candidates, or null: draw them
  float* candidates;                   // (R, Pc, 2) drawn candidates (when not supplied)
  float* uncertainty;                  // (R, Pc)
  int64_t num_candidates;
  const int64_t* seed;  // one value, in the kernel's memory space
};

// Candidate j of row r: its coordinates (drawn or supplied) and uncertainty -|logit| of the
// row's channel, bilinearly sampled at the candidate (align_corners=False).
template <typename scalar_t>
PYOPS_HD void score_candidate(const SelectArgs<scalar_t>& s, int64_t r, int64_t j) {
  const int64_t i = r * s.num_candidates + j;
  float x, y;
  if (s.candidates_in) {
    x = s.candidates_in[2 * i];
    y = s.candidates_in[2 * i + 1];
  } else {
    random_point(static_cast<uint64_t>(*s.seed), 0, r, j, &x, &y);
    s.candidates[2 * i] = x;
    s.candidates[2 * i + 1] = y;
  }
  const auto& a = s.logits;
  const int64_t ch = s.classes ? s.classes[r] : 0;
  BilinearTaps<float> t = make_taps(x, y, a.H, a.W, false);
  if (ch < 0 || ch >= a.C) t.vx0 = t.vx1 = t.vy0 = t.vy1 = false;  // never read out of bounds
  s.uncertainty[i] = -fabsf(a.interpolate(t, r, ch));
}

// Output point i of row r: the i-th most uncertain candidate, then fresh random points.
PYOPS_HD void pick_point(const float* candidates, const int64_t* top, int64_t num_candidates,
                         int64_t num_uncertain, int64_t num_points, const int64_t* seed,
                         int64_t r, int64_t i, float* out) {
  float* o = out + 2 * (r * num_points + i);
  if (i < num_uncertain) {
    const float* c = candidates + 2 * (r * num_candidates + top[r * num_uncertain + i]);
    o[0] = c[0];
    o[1] = c[1];
  } else {
    random_point(static_cast<uint64_t>(*seed), 1, r, i - num_uncertain, o, o + 1);
  }
}

// 2x bilinear upsampling (align_corners=False, edge-clamped source index, as
// F.interpolate(scale_factor=2, mode="bilinear")) of an (R, h, w) map at output pixel
// (oy, ox); the blend order matches PyTorch's kernels.
// Computed in T: float, double for double logits (as PyTorch's interpolate).
template <typename scalar_t, typename T = float>
PYOPS_HD T upsample2x(const scalar_t* in, int64_t h, int64_t w, int64_t s_r, int64_t s_h,
                      int64_t s_w, int64_t r, int64_t oy, int64_t ox) {
  const T half = T(0.5), zero = T(0);
  const T ty = (static_cast<T>(oy) + half) * half - half, tx = (static_cast<T>(ox) + half) * half - half;
  const T sy = ty > zero ? ty : zero, sx = tx > zero ? tx : zero;
  const int64_t y0 = static_cast<int64_t>(sy), x0 = static_cast<int64_t>(sx);
  const int64_t dy = y0 < h - 1 ? 1 : 0, dx = x0 < w - 1 ? 1 : 0;
  const T ly1 = sy - static_cast<T>(y0), ly0 = T(1) - ly1, lx1 = sx - static_cast<T>(x0), lx0 = T(1) - lx1;
  const scalar_t* p = in + r * s_r + y0 * s_h + x0 * s_w;
  const T v00 = static_cast<T>(p[0]), v01 = static_cast<T>(p[dx * s_w]);
  const T v10 = static_cast<T>(p[dy * s_h]), v11 = static_cast<T>(p[dy * s_h + dx * s_w]);
  return ly0 * (lx0 * v00 + lx1 * v01) + ly1 * (lx0 * v10 + lx1 * v11);
}

// The op-math type of upsample2x: double for double, float otherwise.
template <typename scalar_t>
using upsample_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;

// Cell-centre coordinates of flat index idx on an (H, W) grid, as detectron2 computes them.
PYOPS_HD void grid_point(int64_t idx, int64_t H, int64_t W, float* x, float* y) {
  const float w_step = 1.0f / static_cast<float>(W), h_step = 1.0f / static_cast<float>(H);
  *x = w_step / 2.0f + static_cast<float>(idx % W) * w_step;
  *y = h_step / 2.0f + static_cast<float>(idx / W) * h_step;
}

}  // namespace pointrend
}  // namespace pyops

// Bilinear point sampling math shared by the CPU and CUDA kernels of point_sample.
//
// Semantics are those of F.grid_sample(input, 2 * coords - 1, mode="bilinear",
// padding_mode="zeros"): a point u in [0, 1] maps to pixel position
//   align_corners=False: ((2u - 1 + 1) * size - 1) / 2   (= u * size - 0.5)
//   align_corners=True:  ((2u - 1 + 1) / 2) * (size - 1)
// and the four neighbouring pixels are blended with the usual bilinear weights.
// A corner outside the map reads as 0 but keeps its weight, so a non-finite coordinate
// gives a NaN result exactly as grid_sample does. All arithmetic is in `T`, the op-math
// type (float for half/bfloat16/float inputs, double for double inputs).
#pragma once

#include <cmath>

#include "../common.h"

namespace pyops {
namespace pointrend {

// Corner order used everywhere: 0 = (x0, y0), 1 = (x1, y0), 2 = (x0, y1), 3 = (x1, y1).
template <typename T>
struct BilinearTaps {
  T x, y;            // pixel-space position
  T x0, y0;          // floor(x), floor(y) as floating-point values
  bool vx0, vx1;     // column x0 / x0 + 1 lies inside [0, W)
  bool vy0, vy1;     // row    y0 / y0 + 1 lies inside [0, H)
  int64_t ix0, iy0;  // integer column/row of corner 0; only meaningful where valid

  PYOPS_HD T wx1() const { return x - x0; }      // weight of column x0 + 1
  PYOPS_HD T wx0() const { return x0 + 1 - x; }  // weight of column x0
  PYOPS_HD T wy1() const { return y - y0; }
  PYOPS_HD T wy0() const { return y0 + 1 - y; }

  PYOPS_HD T weight(int corner) const {
    const T wx = (corner & 1) ? wx1() : wx0();
    const T wy = (corner & 2) ? wy1() : wy0();
    return wx * wy;
  }
  PYOPS_HD bool valid(int corner) const {
    return ((corner & 1) ? vx1 : vx0) && ((corner & 2) ? vy1 : vy0);
  }
  // Offset of a (valid) corner in elements, given the row and column strides.
  PYOPS_HD int64_t offset(int corner, int64_t stride_h, int64_t stride_w) const {
    return (iy0 + ((corner >> 1) & 1)) * stride_h + (ix0 + (corner & 1)) * stride_w;
  }
  // Linear pixel index y * W + x of a (valid) corner.
  PYOPS_HD int64_t pixel(int corner, int64_t W) const {
    return (iy0 + ((corner >> 1) & 1)) * W + ix0 + (corner & 1);
  }
};

// Pixel-space position of a normalized coordinate u, and d(position)/du.
template <typename T>
PYOPS_HD T unnormalize(T u, int64_t size, bool align_corners) {
  const T g = u * T(2) - T(1);  // grid_sample's [-1, 1] coordinate
  if (align_corners) return ((g + T(1)) / T(2)) * T(size - 1);
  return ((g + T(1)) * T(size) - T(1)) / T(2);
}

template <typename T>
PYOPS_HD T unnormalize_grad(int64_t size, bool align_corners) {
  return align_corners ? T(size - 1) : T(size);
}

// Taps of the pixel-space position (x, y) in an H x W map (also used by the deformable
// convolution, csrc/sac/deform.h).
template <typename T>
PYOPS_HD BilinearTaps<T> pixel_taps(T x, T y, int64_t H, int64_t W) {
  BilinearTaps<T> t;
  t.x = x;
  t.y = y;
  t.x0 = floor(t.x);
  t.y0 = floor(t.y);
  // Comparisons in floating point: NaN and huge values fail them, so no out-of-range
  // float-to-int conversion ever happens.
  t.vx0 = t.x0 >= T(0) && t.x0 < T(W);
  t.vx1 = t.x0 >= T(-1) && t.x0 < T(W - 1);
  t.vy0 = t.y0 >= T(0) && t.y0 < T(H);
  t.vy1 = t.y0 >= T(-1) && t.y0 < T(H - 1);
  t.ix0 = (t.vx0 || t.vx1) ? static_cast<int64_t>(t.x0) : 0;
  t.iy0 = (t.vy0 || t.vy1) ? static_cast<int64_t>(t.y0) : 0;
  return t;
}

template <typename T>
PYOPS_HD BilinearTaps<T> make_taps(T u, T v, int64_t H, int64_t W, bool align_corners) {
  return pixel_taps(unnormalize(u, W, align_corners), unnormalize(v, H, align_corners), H, W);
}

// Gradient of sum_c g_c * sample_c with respect to the pixel-space position (x, y), given
// the four corner dot products d_k = sum_c g_c * value_k,c (0 where a corner is invalid).
template <typename T>
PYOPS_HD void position_grad(const BilinearTaps<T>& t, const T d[4], T* gx, T* gy) {
  *gx = (d[1] - d[0]) * t.wy0() + (d[3] - d[2]) * t.wy1();
  *gy = (d[2] - d[0]) * t.wx0() + (d[3] - d[1]) * t.wx1();
}

// ---------------------------------------------------------------------------------------
// Per-point work shared by the CPU and CUDA kernels. Plain pointers and strides only, so
// the same code runs in a CPU loop and in a CUDA thread.

// A feature map and the points sampled from it. Row n of the points samples image
// batch_index[n] (or image n when batch_index is null); a row whose image index is out of
// range samples nothing (all corners invalid) rather than reading out of bounds.
template <typename scalar_t, typename T>
struct SampleArgs {
  const scalar_t* input;  // (B, C, H, W), any strides
  int64_t B, C, H, W;
  int64_t in_sN, in_sC, in_sH, in_sW;
  const T* coords;  // (N, P, 2) contiguous, (x, y) normalized to [0, 1]
  int64_t N, P;
  const int64_t* batch_index;  // (N,) or null
  bool align_corners;

  PYOPS_HD int64_t image(int64_t n) const { return batch_index ? batch_index[n] : n; }
  PYOPS_HD bool image_valid(int64_t b) const { return b >= 0 && b < B; }

  PYOPS_HD BilinearTaps<T> taps(int64_t n, int64_t p) const {
    const T* c = coords + 2 * (n * P + p);
    BilinearTaps<T> t = make_taps(c[0], c[1], H, W, align_corners);
    if (!image_valid(image(n))) t.vx0 = t.vx1 = t.vy0 = t.vy1 = false;
    return t;
  }
  // Value of corner k at channel c of row n's image, 0 outside the map.
  PYOPS_HD T corner_value(const BilinearTaps<T>& t, int k, int64_t n, int64_t c) const {
    if (!t.valid(k)) return T(0);
    return static_cast<T>(input[image(n) * in_sN + c * in_sC + t.offset(k, in_sH, in_sW)]);
  }
  // Bilinear value at channel c.
  PYOPS_HD T interpolate(const BilinearTaps<T>& t, int64_t n, int64_t c) const {
    T acc = T(0);
    for (int k = 0; k < 4; ++k) acc += t.weight(k) * corner_value(t, k, n, c);
    return acc;
  }
};

// A (N, C, P) tensor of per-point values: the output of the forward, or its gradient.
template <typename ptr_t>
struct PointValues {
  ptr_t data;
  int64_t sN, sC, sP;
  PYOPS_HD int64_t index(int64_t n, int64_t c, int64_t p) const { return n * sN + c * sC + p * sP; }
};

// Forward for one point, channels c0, c0 + step, ... < c1.
template <typename scalar_t, typename T, typename out_t>
PYOPS_HD void sample_point(const SampleArgs<scalar_t, T>& a, PointValues<out_t*> out, int64_t n,
                           int64_t p, int64_t c0, int64_t c1, int64_t step) {
  const BilinearTaps<T> t = a.taps(n, p);
  // Hoisted per-corner pointers (an invalid corner points at a valid pixel and is masked to
  // 0), so the channel loop is branch-free.
  const int64_t b = a.image_valid(a.image(n)) ? a.image(n) : 0;
  const scalar_t* src[4];
  T w[4];
  bool valid[4];
  for (int k = 0; k < 4; ++k) {
    valid[k] = t.valid(k);
    w[k] = t.weight(k);
    src[k] = a.input + b * a.in_sN + (valid[k] ? t.offset(k, a.in_sH, a.in_sW) : 0);
  }
  for (int64_t c = c0; c < c1; c += step) {
    T acc = T(0);
    for (int k = 0; k < 4; ++k) {
      const T v = static_cast<T>(src[k][c * a.in_sC]);
      acc += w[k] * (valid[k] ? v : T(0));
    }
    out.data[out.index(n, c, p)] = static_cast<out_t>(acc);
  }
}

// Partial corner dot products d_k += sum_c grad[n, c, p] * value_k[c] over c0, c0 + step, ...
template <typename scalar_t, typename T>
PYOPS_HD void corner_dots(const SampleArgs<scalar_t, T>& a, const BilinearTaps<T>& t,
                          PointValues<const scalar_t*> grad, int64_t n, int64_t p, int64_t c0,
                          int64_t c1, int64_t step, T d[4]) {
  for (int64_t c = c0; c < c1; c += step) {
    const T g = static_cast<T>(grad.data[grad.index(n, c, p)]);
    for (int k = 0; k < 4; ++k) d[k] += g * a.corner_value(t, k, n, c);
  }
}

// Gradient to the normalized (x, y) coordinate from the full corner dot products.
template <typename scalar_t, typename T>
PYOPS_HD void coords_grad(const SampleArgs<scalar_t, T>& a, const BilinearTaps<T>& t,
                          const T d[4], T* gu, T* gv) {
  T gx, gy;
  position_grad(t, d, &gx, &gy);
  *gu = gx * unnormalize_grad<T>(a.W, a.align_corners);
  *gv = gy * unnormalize_grad<T>(a.H, a.align_corners);
}

// Deterministic gradient to the input, in three steps shared by every backend:
//  1. corner_keys: every (point, corner) pair e = 4 * (n * P + p) + k gets the key
//     b * H * W + y * W + x of the pixel it touches in image b (B * H * W when none) and its
//     weight;
//  2. a stable sort of the keys (ties keep point order, so the result is bit-reproducible);
//  3. reduce_segment: the first entry of each run of equal keys sums the run in sorted
//     order and writes the pixel's gradient; every pixel is written by at most one run.
template <typename scalar_t, typename T>
PYOPS_HD void corner_keys(const SampleArgs<scalar_t, T>& a, int64_t n, int64_t p, int64_t* keys,
                          T* weights) {
  const BilinearTaps<T> t = a.taps(n, p);
  const int64_t HW = a.H * a.W;
  const int64_t e = 4 * (n * a.P + p);
  for (int k = 0; k < 4; ++k) {
    keys[e + k] = t.valid(k) ? a.image(n) * HW + t.pixel(k, a.W) : a.B * HW;
    weights[e + k] = t.weight(k);
  }
}

PYOPS_HD bool segment_start(const int64_t* sorted_keys, int64_t i, int64_t sentinel) {
  return sorted_keys[i] != sentinel && (i == 0 || sorted_keys[i - 1] != sorted_keys[i]);
}

template <typename scalar_t, typename T>
PYOPS_HD void reduce_segment(const SampleArgs<scalar_t, T>& a, PointValues<const scalar_t*> grad,
                             const int64_t* sorted_keys, const int64_t* order, const T* weights,
                             int64_t M, int64_t i, scalar_t* grad_input, int64_t gi_sN,
                             int64_t gi_sC, int64_t gi_sH, int64_t gi_sW, int64_t c0, int64_t c1,
                             int64_t step) {
  const int64_t key = sorted_keys[i];
  const int64_t HW = a.H * a.W;
  const int64_t b = key / HW, pix = key - b * HW;
  scalar_t* dst = grad_input + b * gi_sN + (pix / a.W) * gi_sH + (pix % a.W) * gi_sW;
  for (int64_t c = c0; c < c1; c += step) {
    T acc = T(0);
    for (int64_t j = i; j < M && sorted_keys[j] == key; ++j) {
      const int64_t e = order[j];
      const int64_t n = (e >> 2) / a.P, p = (e >> 2) % a.P;
      acc += weights[e] * static_cast<T>(grad.data[grad.index(n, c, p)]);
    }
    dst[c * gi_sC] = static_cast<scalar_t>(acc);
  }
}

}  // namespace pointrend
}  // namespace pyops

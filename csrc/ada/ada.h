// Per-pixel math of the StyleGAN2-ADA geometric + colour stage, shared by the CPU and CUDA
// kernels (pyops/reference/ada.py is the chain it must reproduce).
//
// The chain for an H x W image and an inverse matrix G (output pixel -> input pixel, centred):
//   reflect pad by a margin (batch-wide, see batch_margin) -> 2x upsample with sym6 (gain 2 per
//   axis) -> bilinear resample onto a (2H + 12) x (2W + 12) grid -> correlate with sym6 and keep
//   every second sample, starting at grid sample 1.
// Nothing of it is materialised: a grid sample g maps to a position (xi, yi) of the upsampled
// padded image (UpMap), its bilinear corners c read upsampled values, and each upsampled value
// is a 6-tap sum of padded pixels, so a grid sample is a separable 7 x 7 weighted sum of padded
// pixels with weights up_weight(xi, i) * up_weight(yi, j); a padded pixel reads its original
// pixel by reflection. The adjoint uses the same weights, gathered the other way round.
#pragma once

#include <cmath>

#include "../common.h"

namespace pyops {
namespace ada {

constexpr int kTaps = 12;     // sym6
constexpr int kGeomPad = 3;   // kTaps / 4
constexpr int kMaxChannels = 3;

// sym6 normalised to sum 1.
template <typename T>
PYOPS_HD T sym6(int k) {
  // published taps divided by their sum (sqrt(2)); written out so host and device agree.
  constexpr double taps[kTaps] = {
      0.015404109327027373,  0.0034907120842174702, -0.11799011114819057, -0.048311742585633,
      0.4910559419267466,    0.787641141030194,     0.3379294217276218,   -0.07263752278646252,
      -0.021060292512300564, 0.04472490177066578,   0.0017677118642428036, -0.007800708325034148};
  constexpr double sum = 0.015404109327027373 + 0.0034907120842174702 - 0.11799011114819057 -
                         0.048311742585633 + 0.4910559419267466 + 0.787641141030194 +
                         0.3379294217276218 - 0.07263752278646252 - 0.021060292512300564 +
                         0.04472490177066578 + 0.0017677118642428036 - 0.007800708325034148;
  return static_cast<T>(taps[k] / sum);
}

PYOPS_HD int64_t floor_div2(int64_t a) { return a >= 0 ? a / 2 : -((1 - a) / 2); }
PYOPS_HD int64_t ceil_div2(int64_t a) { return floor_div2(a + 1); }

// Reflection of padded index p (margin m0 before the image) into [0, n); the margin is at most
// n - 1, so one reflection is enough.
PYOPS_HD int64_t reflect(int64_t p, int64_t m0, int64_t n) {
  int64_t r = p - m0;
  if (r < 0) r = -r;
  if (r > n - 1) r = 2 * (n - 1) - r;
  return r;
}

// Reflect padding of the whole batch: left, top, right, bottom.
struct Margin {
  int64_t x0, y0, x1, y1;
};

// G: (B, 3, 3) contiguous. The image corners mapped by every G, their largest extent outside the
// image, plus 2 * kGeomPad, clamped to [0, size - 1], rounded up (as the reference does).
template <typename T>
PYOPS_HD Margin batch_margin(const T* G, int64_t B, int64_t H, int64_t W) {
  const T cx = T(W - 1) / T(2), cy = T(H - 1) / T(2);
  T m[4] = {T(0), T(0), T(0), T(0)};
  bool first = true;
  for (int64_t b = 0; b < B; ++b) {
    const T* g = G + 9 * b;
    for (int k = 0; k < 4; ++k) {
      const T sx = (k == 1 || k == 2) ? cx : -cx;
      const T sy = (k >= 2) ? cy : -cy;
      const T px = g[0] * sx + g[1] * sy + g[2];
      const T py = g[3] * sx + g[4] * sy + g[5];
      const T v[4] = {-px, -py, px, py};
      for (int j = 0; j < 4; ++j) {
        // NaN propagates, as in the reference's max
        if (first || v[j] > m[j] || v[j] != v[j]) m[j] = v[j];
      }
      first = false;
    }
  }
  const T add[4] = {T(2 * kGeomPad) - cx, T(2 * kGeomPad) - cy, T(2 * kGeomPad) - cx, T(2 * kGeomPad) - cy};
  const T lim[4] = {T(W - 1), T(H - 1), T(W - 1), T(H - 1)};
  int64_t out[4];
  for (int j = 0; j < 4; ++j) {
    T v = m[j] + add[j];
    if (!(v > T(0))) v = T(0);  // NaN -> 0
    if (v > lim[j]) v = lim[j];
    out[j] = static_cast<int64_t>(ceil(v));
  }
  return Margin{out[0], out[1], out[2], out[3]};
}

// Affine map of one sample: grid index (gx, gy) -> upsampled padded position (xi, yi).
template <typename T>
struct UpMap {
  T a00, a01, a10, a11, tx, ty;
  int64_t Hp, Wp;    // padded image size
  int64_t mx0, my0;  // left / top margin

  PYOPS_HD T xi(int64_t gx, int64_t gy) const { return a00 * T(gx) + a01 * T(gy) + tx; }
  PYOPS_HD T yi(int64_t gx, int64_t gy) const { return a10 * T(gx) + a11 * T(gy) + ty; }
};

template <typename T>
PYOPS_HD UpMap<T> make_upmap(const T* g, const Margin& m, int64_t H, int64_t W) {
  // output grid index gx -> centred output coordinate (gx - W - 5) / 2 -> G -> centred input
  // coordinate q -> upsampled padded index 2 q + 2 mx0 + W - 1.
  UpMap<T> u;
  u.a00 = g[0];
  u.a01 = g[1];
  u.a10 = g[3];
  u.a11 = g[4];
  const T ox = T(W + 2 * kGeomPad - 1), oy = T(H + 2 * kGeomPad - 1);  // W + 5, H + 5
  u.tx = -g[0] * ox - g[1] * oy + T(2) * g[2] + T(2 * m.x0 + W - 1);
  u.ty = -g[3] * ox - g[4] * oy + T(2) * g[5] + T(2 * m.y0 + H - 1);
  u.Wp = W + m.x0 + m.x1;
  u.Hp = H + m.y0 + m.y1;
  u.mx0 = m.x0;
  u.my0 = m.y0;
  return u;
}

// Weight of padded index i in the bilinear sample at upsampled position p of an axis whose
// upsampled length is n_up (= 2 * padded length): the two corners floor(p), floor(p) + 1 (each
// kept only inside [0, n_up)), each an upsampled value 2 * sum_i f[c + 5 - 2 i] x[i].
template <typename T>
PYOPS_HD T up_weight(T p, int64_t i, int64_t n_up) {
  if (!(p > T(-2) && p < T(n_up + 1))) return T(0);  // also NaN
  const T p0 = floor(p);
  const int64_t c0 = static_cast<int64_t>(p0);
  const T w1 = p - p0, w0 = T(1) - w1;
  T w = T(0);
  const int64_t k0 = c0 + 5 - 2 * i;
  if (c0 >= 0 && c0 < n_up && k0 >= 0 && k0 < kTaps) w += w0 * T(2) * sym6<T>(int(k0));
  const int64_t k1 = k0 + 1;
  if (c0 + 1 >= 0 && c0 + 1 < n_up && k1 >= 0 && k1 < kTaps) w += w1 * T(2) * sym6<T>(int(k1));
  return w;
}

// First padded index with a possibly non-zero up_weight at position p (7 indices from there).
template <typename T>
PYOPS_HD int64_t up_first(T p) {
  return floor_div2(static_cast<int64_t>(floor(p)) - 5);
}

// ---- images: strided reads, contiguous writes ---------------------------------------------------

template <typename scalar_t>
struct Image {
  scalar_t* data;
  int64_t B, C, H, W;
  int64_t sB, sC, sH, sW;
  PYOPS_HD int64_t at(int64_t b, int64_t c, int64_t y, int64_t x) const {
    return b * sB + c * sC + y * sH + x * sW;
  }
};

// Colour matrix of one sample as used on the values: RGB y = M x + o; one channel
// y = x * M[0] + o[0] (the mean of the first three rows of C).
template <typename T>
struct Color {
  T M[3][3];
  T o[3];
};

template <typename T>
PYOPS_HD Color<T> make_color(const T* c /* 4x4 row-major, or null for identity */, int64_t channels) {
  Color<T> k;
  for (int i = 0; i < 3; ++i) {
    for (int j = 0; j < 3; ++j) k.M[i][j] = c ? c[4 * i + j] : T(i == j);
    k.o[i] = c ? c[4 * i + 3] : T(0);
  }
  if (channels == 1) {
    T s = T(0), o = T(0);
    for (int i = 0; i < 3; ++i) {
      T row = T(0);
      for (int j = 0; j < 3; ++j) row += k.M[i][j];
      s += row / T(3);
      o += k.o[i] / T(3);
    }
    k.M[0][0] = s;
    k.o[0] = o;
  }
  return k;
}

// y = colour(v) in place for `channels` values; `offset` false gives the linear part only.
template <typename T>
PYOPS_HD void apply_color(const Color<T>& k, int64_t channels, T* v, bool offset) {
  if (channels == 1) {
    v[0] = v[0] * k.M[0][0] + (offset ? k.o[0] : T(0));
    return;
  }
  T y[3];
  for (int i = 0; i < 3; ++i) y[i] = k.M[i][0] * v[0] + k.M[i][1] * v[1] + k.M[i][2] * v[2] + (offset ? k.o[i] : T(0));
  for (int i = 0; i < 3; ++i) v[i] = y[i];
}

// Transposed linear part: the adjoint of apply_color without its offset.
template <typename T>
PYOPS_HD void apply_color_t(const Color<T>& k, int64_t channels, T* v) {
  if (channels == 1) {
    v[0] = v[0] * k.M[0][0];
    return;
  }
  T y[3];
  for (int j = 0; j < 3; ++j) y[j] = k.M[0][j] * v[0] + k.M[1][j] * v[1] + k.M[2][j] * v[2];
  for (int j = 0; j < 3; ++j) v[j] = y[j];
}

// ---- forward: one output pixel, every channel -----------------------------------------------

// Grid sample (gx, gy) of sample b, all channels, added with weight `w` into acc.
template <typename scalar_t, typename T>
PYOPS_HD void add_grid_sample(const Image<const scalar_t>& x, const UpMap<T>& u, int64_t b,
                              int64_t gx, int64_t gy, T w, T* acc) {
  const T px = u.xi(gx, gy), py = u.yi(gx, gy);
  if (!(px > T(-2) && px < T(2 * u.Wp + 1) && py > T(-2) && py < T(2 * u.Hp + 1))) {
    if (px != px || py != py) {  // NaN in, NaN out
      for (int64_t c = 0; c < x.C; ++c) acc[c] += w * px * py;
    }
    return;
  }
  const int64_t ix0 = up_first(px), iy0 = up_first(py);
  T wx[7];
  int64_t cols[7];
  for (int j = 0; j < 7; ++j) {
    const int64_t i = ix0 + j;
    const bool in = i >= 0 && i < u.Wp;
    wx[j] = in ? up_weight(px, i, 2 * u.Wp) : T(0);
    cols[j] = in ? reflect(i, u.mx0, x.W) : 0;
  }
  for (int jy = 0; jy < 7; ++jy) {
    const int64_t i = iy0 + jy;
    if (i < 0 || i >= u.Hp) continue;
    const T wy = up_weight(py, i, 2 * u.Hp);
    if (wy == T(0)) continue;
    const int64_t row = reflect(i, u.my0, x.H);
    for (int64_t c = 0; c < x.C; ++c) {
      const scalar_t* src = x.data + x.at(b, c, row, 0);
      T s = T(0);
      for (int jx = 0; jx < 7; ++jx) s += wx[jx] * static_cast<T>(src[cols[jx] * x.sW]);
      acc[c] += w * wy * s;
    }
  }
}

// Geometric stage at output pixel (ox, oy) of sample b: acc[c] for every channel.
template <typename scalar_t, typename T>
PYOPS_HD void geom_pixel(const Image<const scalar_t>& x, const UpMap<T>& u, int64_t b, int64_t oy,
                         int64_t ox, T* acc) {
  for (int64_t c = 0; c < x.C; ++c) acc[c] = T(0);
  for (int ky = 0; ky < kTaps; ++ky) {
    const T fy = sym6<T>(ky);
    for (int kx = 0; kx < kTaps; ++kx) {
      add_grid_sample(x, u, b, 2 * ox + kx + 1, 2 * oy + ky + 1, fy * sym6<T>(kx), acc);
    }
  }
}

// ---- forward, tiled: each grid sample computed once per tile -----------------------------------
// An output pixel o reads grid samples 2 o + 1 ... 2 o + 12 per axis, so a kTile x kTile block of
// output pixels at (oy0, ox0) reads the kGridTile x kGridTile grid samples from (2 oy0 + 1,
// 2 ox0 + 1): every grid sample is computed once for the tile (instead of for each of the up to
// 36 output pixels that read it), then each output pixel is a 12 x 12 correlation over the tile.
constexpr int kTile = 16;
constexpr int kGridTile = 2 * kTile + kTaps - 2;  // 42
constexpr int kGridTileSize = kGridTile * kGridTile;

// Grid sample j of the tile (row-major) into tile[c * kGridTileSize + j], for every channel.
template <typename scalar_t, typename T>
PYOPS_HD void tile_grid_sample(const Image<const scalar_t>& x, const UpMap<T>& u, int64_t b, int64_t oy0,
                               int64_t ox0, int j, T* tile) {
  const int64_t gy = 2 * oy0 + 1 + j / kGridTile, gx = 2 * ox0 + 1 + j % kGridTile;
  T acc[kMaxChannels] = {T(0), T(0), T(0)};
  // rows and columns past the last output pixel's window are never read
  if (gy <= 2 * (x.H - 1) + kTaps && gx <= 2 * (x.W - 1) + kTaps) {
    add_grid_sample(x, u, b, gx, gy, T(1), acc);
  }
  for (int64_t c = 0; c < x.C; ++c) tile[c * kGridTileSize + j] = acc[c];
}

// Output pixel (oy0 + ty, ox0 + tx) of a tile filled by tile_grid_sample, every channel.
template <typename T>
PYOPS_HD void tile_output(const T* tile, int64_t C, int ty, int tx, T* acc) {
  for (int64_t c = 0; c < C; ++c) {
    const T* t = tile + c * kGridTileSize + (2 * ty) * kGridTile + 2 * tx;
    T s = T(0);
    for (int ky = 0; ky < kTaps; ++ky) {
      T r = T(0);
      for (int kx = 0; kx < kTaps; ++kx) r += sym6<T>(kx) * t[ky * kGridTile + kx];
      s += sym6<T>(ky) * r;
    }
    acc[c] = s;
  }
}

// ---- adjoint ------------------------------------------------------------------------------------
// Step 1 (grid_adjoint): the gradient at grid sample (gx, gy), all channels, from the output
// gradient: colour transposed, then the downsampling correlation transposed (a gather over the
// output pixels whose 12 x 12 window covers the grid sample). Stored in a (B, C, 2H+12, 2W+12) buffer.
// Step 2 (pixel_adjoint): the gradient of an input pixel gathers, over the padded positions that
// reflect onto it and over the grid samples whose 7 x 7 footprint contains them, the weights
// of the forward times the step-1 gradient.

template <typename scalar_t, typename T>
PYOPS_HD void grid_adjoint(const Image<const scalar_t>& g, const Color<T>& k, bool has_color,
                           int64_t b, int64_t gy, int64_t gx, T* acc) {
  for (int64_t c = 0; c < g.C; ++c) acc[c] = T(0);
  // output o reads grid 2 o + 1 + k, k in [0, 12)
  const int64_t oy_lo = ceil_div2(gy - kTaps);
  for (int64_t oy = oy_lo < 0 ? 0 : oy_lo; oy < g.H; ++oy) {
    const int64_t ky = gy - 1 - 2 * oy;
    if (ky < 0) break;
    if (ky >= kTaps) continue;
    const int64_t ox_lo = ceil_div2(gx - kTaps);
    for (int64_t ox = ox_lo < 0 ? 0 : ox_lo; ox < g.W; ++ox) {
      const int64_t kx = gx - 1 - 2 * ox;
      if (kx < 0) break;
      if (kx >= kTaps) continue;
      const T w = sym6<T>(int(ky)) * sym6<T>(int(kx));
      T v[kMaxChannels];
      for (int64_t c = 0; c < g.C; ++c) v[c] = static_cast<T>(g.data[g.at(b, c, oy, ox)]);
      if (has_color) apply_color_t(k, g.C, v);
      for (int64_t c = 0; c < g.C; ++c) acc[c] += w * v[c];
    }
  }
}

// Padded positions (at most 3) that reflect onto original index r.
PYOPS_HD int padded_sources(int64_t r, int64_t m0, int64_t m1, int64_t n, int64_t* out) {
  int k = 0;
  out[k++] = r + m0;
  if (r >= 1 && r <= m0) out[k++] = m0 - r;
  if (r <= n - 2 && r >= n - 1 - m1) out[k++] = m0 + 2 * (n - 1) - r;
  return k;
}

template <typename T>
PYOPS_HD T clamp_index(T v, int64_t hi) {
  if (!(v > T(0))) return T(0);
  if (v > T(hi)) return T(hi);
  return v;
}

// Gradient of input pixel (x, y) of sample b, all channels, from the step-1 grid gradient
// gv (B, C, Hg, Wg) contiguous in T.
template <typename T>
PYOPS_HD void pixel_adjoint(const T* gv, int64_t C, int64_t H, int64_t W, const UpMap<T>& u,
                            const Margin& m, int64_t b, int64_t y, int64_t x, T* acc) {
  const int64_t Hg = 2 * H + 4 * kGeomPad, Wg = 2 * W + 4 * kGeomPad;
  for (int64_t c = 0; c < C; ++c) acc[c] = T(0);
  int64_t px[3], py[3];
  const int nx = padded_sources(x, m.x0, m.x1, W, px);
  const int ny = padded_sources(y, m.y0, m.y1, H, py);
  // inverse of the 2x2 part: grid samples whose position lies within 6.5 upsampled pixels of
  // the padded pixel's centre 2 i + 0.5 (the only ones with a non-zero weight)
  const T det = u.a00 * u.a11 - u.a01 * u.a10;
  const T i00 = u.a11 / det, i01 = -u.a01 / det, i10 = -u.a10 / det, i11 = u.a00 / det;
  const T ex = (fabs(i00) + fabs(i01)) * T(6.5) + T(2), ey = (fabs(i10) + fabs(i11)) * T(6.5) + T(2);
  for (int jy = 0; jy < ny; ++jy) {
    for (int jx = 0; jx < nx; ++jx) {
      const int64_t ix = px[jx], iy = py[jy];
      const T dx = T(2 * ix) + T(0.5) - u.tx, dy = T(2 * iy) + T(0.5) - u.ty;
      const T cx = i00 * dx + i01 * dy, cy = i10 * dx + i11 * dy;
      // bounding box in grid indices; a degenerate or non-finite map scans the whole grid
      const bool finite = ex == ex && ey == ey && cx == cx && cy == cy && fabs(ex) < T(1e9) && fabs(ey) < T(1e9);
      const int64_t gx0 = finite ? static_cast<int64_t>(floor(clamp_index(cx - ex, Wg - 1))) : 0;
      const int64_t gx1 = finite ? static_cast<int64_t>(ceil(clamp_index(cx + ex, Wg - 1))) : Wg - 1;
      const int64_t gy0 = finite ? static_cast<int64_t>(floor(clamp_index(cy - ey, Hg - 1))) : 0;
      const int64_t gy1 = finite ? static_cast<int64_t>(ceil(clamp_index(cy + ey, Hg - 1))) : Hg - 1;
      for (int64_t gy = gy0; gy <= gy1; ++gy) {
        for (int64_t gx = gx0; gx <= gx1; ++gx) {
          const T sx = u.xi(gx, gy), sy = u.yi(gx, gy);
          if (!(sx >= T(2 * ix - 6) && sx < T(2 * ix + 7) && sy >= T(2 * iy - 6) && sy < T(2 * iy + 7))) continue;
          const T wx = up_weight(sx, ix, 2 * u.Wp);
          const T wy = up_weight(sy, iy, 2 * u.Hp);
          const T w = wx * wy;
          if (w == T(0)) continue;
          const T* src = gv + ((b * C) * Hg + gy) * Wg + gx;
          for (int64_t c = 0; c < C; ++c) acc[c] += w * src[c * Hg * Wg];
        }
      }
    }
  }
}

// ---- filtering, noise, cutout -----------------------------------------------------------------
// y = keep(o) * (sum_ky h[ky] sum_kx h[kx] x[reflect(oy + ky), reflect(ox + kx)] + sigma * n[o]),
// with a 21-pixel reflect pad and the per-sample 43-tap filter h (the bank times the gains).
constexpr int kFilterTaps = 43;
constexpr int kFilterPad = 21;

// Whether cutout box (centre x, centre y, width, height; fractions of the image) keeps pixel (x, y).
template <typename T>
PYOPS_HD bool cutout_keep(const T* box, int64_t y, int64_t x, int64_t H, int64_t W) {
  const T dx = fabs((T(x) + T(0.5)) / T(W) - box[0]);
  const T dy = fabs((T(y) + T(0.5)) / T(H) - box[1]);
  return !(dx < box[2] / T(2) && dy < box[3] / T(2));
}

template <typename scalar_t, typename T>
PYOPS_HD T filter_pixel(const Image<const scalar_t>& x, const T* h, int64_t b, int64_t c, int64_t y, int64_t xx) {
  const scalar_t* plane = x.data + b * x.sB + c * x.sC;
  T s = T(0);
  for (int ky = 0; ky < kFilterTaps; ++ky) {
    const scalar_t* row = plane + reflect(y + ky, kFilterPad, x.H) * x.sH;
    T r = T(0);
    for (int kx = 0; kx < kFilterTaps; ++kx) r += h[kx] * static_cast<T>(row[reflect(xx + kx, kFilterPad, x.W) * x.sW]);
    s += h[ky] * r;
  }
  return s;
}

// Adjoint of the filter (after the cutout mask) at input pixel (y, x): the padded positions p that
// reflect onto it gather h[k] * keep * g over the output pixels p - k.
template <typename scalar_t, typename T>
PYOPS_HD T filter_adjoint_pixel(const Image<const scalar_t>& g, const T* h, const T* box, int64_t b, int64_t c,
                                int64_t y, int64_t xx) {
  int64_t py[3], px[3];
  const int ny = padded_sources(y, kFilterPad, kFilterPad, g.H, py);
  const int nx = padded_sources(xx, kFilterPad, kFilterPad, g.W, px);
  const scalar_t* plane = g.data + b * g.sB + c * g.sC;
  T s = T(0);
  for (int jy = 0; jy < ny; ++jy) {
    for (int ky = 0; ky < kFilterTaps; ++ky) {
      const int64_t oy = py[jy] - ky;
      if (oy < 0 || oy >= g.H) continue;
      T r = T(0);
      for (int jx = 0; jx < nx; ++jx) {
        for (int kx = 0; kx < kFilterTaps; ++kx) {
          const int64_t ox = px[jx] - kx;
          if (ox < 0 || ox >= g.W) continue;
          if (box && !cutout_keep(box, oy, ox, g.H, g.W)) continue;
          r += h[kx] * static_cast<T>(plane[oy * g.sH + ox * g.sW]);
        }
      }
      s += h[ky] * r;
    }
  }
  return s;
}

}  // namespace ada
}  // namespace pyops

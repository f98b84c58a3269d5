// The CPU loops of the ADA kernels over the per-pixel math of ada.h, shared by the torch CPU
// kernels (ada_cpu.cpp, in parallel) and the JAX CPU handlers (csrc/jax/jax_cpu.cpp, serially).
// No ATen: `pfor(n, grain, body)` runs body(begin, end) over chunks of [0, n) (at::parallel_for,
// or one call body(0, n)). scalar_t is the images' type, T the op-math type of the matrices.
#pragma once

#include <vector>

#include "ada.h"

namespace pyops {
namespace ada {

// out = colour(geometric(x)); g: (B, 3, 3) inverse matrices or null, c: (B, 4, 4) or null.
template <typename scalar_t, typename T, typename PFor>
void geom_color_loops(const Image<const scalar_t>& x, const Image<scalar_t>& o, const T* g, const T* c,
                      PFor pfor) {
  if (!g) {  // colour only: per pixel
    pfor(x.B * x.H, 1, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const int64_t b = r / x.H, y = r % x.H;
        const Color<T> k = make_color(c ? c + 16 * b : nullptr, x.C);
        for (int64_t xx = 0; xx < x.W; ++xx) {
          T v[kMaxChannels];
          for (int64_t ch = 0; ch < x.C; ++ch) v[ch] = static_cast<T>(x.data[x.at(b, ch, y, xx)]);
          if (c) apply_color(k, x.C, v, true);
          for (int64_t ch = 0; ch < x.C; ++ch) o.data[o.at(b, ch, y, xx)] = static_cast<scalar_t>(v[ch]);
        }
      }
    });
    return;
  }
  // geometric (+ colour): the tiles of the CUDA kernel, so the CPU tests cover its indexing
  const Margin m = batch_margin(g, x.B, x.H, x.W);
  const int64_t tiles_y = (x.H + kTile - 1) / kTile, tiles_x = (x.W + kTile - 1) / kTile;
  pfor(x.B * tiles_y * tiles_x, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> tile(kMaxChannels * kGridTileSize);
    for (int64_t t = begin; t < end; ++t) {
      const int64_t b = t / (tiles_y * tiles_x);
      const int64_t oy0 = ((t / tiles_x) % tiles_y) * kTile, ox0 = (t % tiles_x) * kTile;
      const UpMap<T> u = make_upmap(g + 9 * b, m, x.H, x.W);
      const Color<T> k = make_color(c ? c + 16 * b : nullptr, x.C);
      for (int j = 0; j < kGridTileSize; ++j) tile_grid_sample(x, u, b, oy0, ox0, j, tile.data());
      for (int ty = 0; ty < kTile && oy0 + ty < x.H; ++ty) {
        for (int tx = 0; tx < kTile && ox0 + tx < x.W; ++tx) {
          T v[kMaxChannels];
          tile_output(tile.data(), x.C, ty, tx, v);
          if (c) apply_color(k, x.C, v, true);
          for (int64_t ch = 0; ch < x.C; ++ch) o.data[o.at(b, ch, oy0 + ty, ox0 + tx)] = static_cast<scalar_t>(v[ch]);
        }
      }
    }
  });
}

// Scratch that geom_color_adjoint_loops needs: B * C * Hg * Wg op-math values when g is given.
inline int64_t geom_color_adjoint_scratch(int64_t B, int64_t C, int64_t H, int64_t W) {
  return B * C * (2 * H + 4 * kGeomPad) * (2 * W + 4 * kGeomPad);
}

// out = adjoint of geom_color_loops applied to gy; gv: geom_color_adjoint_scratch values (or
// null when g is null).
template <typename scalar_t, typename T, typename PFor>
void geom_color_adjoint_loops(const Image<const scalar_t>& gy, const Image<scalar_t>& o, const T* g, const T* c,
                              T* gv, PFor pfor) {
  const int64_t B = gy.B, C = gy.C, H = gy.H, W = gy.W;
  if (!g) {  // colour only: the transposed matrix per pixel
    pfor(B * H, 1, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const int64_t b = r / H, y = r % H;
        const Color<T> k = make_color(c ? c + 16 * b : nullptr, C);
        for (int64_t xx = 0; xx < W; ++xx) {
          T v[kMaxChannels];
          for (int64_t ch = 0; ch < C; ++ch) v[ch] = static_cast<T>(gy.data[gy.at(b, ch, y, xx)]);
          if (c) apply_color_t(k, C, v);
          for (int64_t ch = 0; ch < C; ++ch) o.data[o.at(b, ch, y, xx)] = static_cast<scalar_t>(v[ch]);
        }
      }
    });
    return;
  }
  const Margin m = batch_margin(g, B, H, W);
  const int64_t Hg = 2 * H + 4 * kGeomPad, Wg = 2 * W + 4 * kGeomPad;
  pfor(B * Hg, 1, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t b = r / Hg, yy = r % Hg;
      const Color<T> k = make_color(c ? c + 16 * b : nullptr, C);
      for (int64_t xx = 0; xx < Wg; ++xx) {
        T v[kMaxChannels];
        grid_adjoint(gy, k, c != nullptr, b, yy, xx, v);
        for (int64_t ch = 0; ch < C; ++ch) gv[((b * C + ch) * Hg + yy) * Wg + xx] = v[ch];
      }
    }
  });
  pfor(B * H, 1, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t b = r / H, y = r % H;
      const UpMap<T> u = make_upmap(g + 9 * b, m, H, W);
      for (int64_t xx = 0; xx < W; ++xx) {
        T v[kMaxChannels];
        pixel_adjoint(gv, C, H, W, u, m, b, y, xx, v);
        for (int64_t ch = 0; ch < C; ++ch) o.data[o.at(b, ch, y, xx)] = static_cast<scalar_t>(v[ch]);
      }
    }
  });
}

// out = cutout(filter(x) + noise * sigma); hp: (B, kFilterTaps), sp: (B,) (with n), bp: (B, 4);
// each may be null.
template <typename scalar_t, typename T, typename PFor>
void filter_noise_cutout_loops(const Image<const scalar_t>& x, const Image<scalar_t>& o, const T* hp, const T* sp,
                               const Image<const T>& n, const T* bp, PFor pfor) {
  pfor(x.B * x.C * x.H, 1, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t b = r / (x.C * x.H), c = (r / x.H) % x.C, y = r % x.H;
      for (int64_t xx = 0; xx < x.W; ++xx) {
        T v = hp ? filter_pixel(x, hp + kFilterTaps * b, b, c, y, xx) : static_cast<T>(x.data[x.at(b, c, y, xx)]);
        if (sp) v = v + n.data[n.at(b, c, y, xx)] * sp[b];
        if (bp && !cutout_keep(bp + 4 * b, y, xx, x.H, x.W)) v = T(0);
        o.data[o.at(b, c, y, xx)] = static_cast<scalar_t>(v);
      }
    }
  });
}

// out = adjoint of filter_noise_cutout_loops (with respect to the images) applied to g.
template <typename scalar_t, typename T, typename PFor>
void filter_noise_cutout_adjoint_loops(const Image<const scalar_t>& g, const Image<scalar_t>& o, const T* hp,
                                       const T* bp, PFor pfor) {
  pfor(g.B * g.C * g.H, 1, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t b = r / (g.C * g.H), c = (r / g.H) % g.C, y = r % g.H;
      const T* box = bp ? bp + 4 * b : nullptr;
      for (int64_t xx = 0; xx < g.W; ++xx) {
        T v;
        if (hp) {
          v = filter_adjoint_pixel(g, hp + kFilterTaps * b, box, b, c, y, xx);
        } else {
          v = (box && !cutout_keep(box, y, xx, g.H, g.W)) ? T(0) : static_cast<T>(g.data[g.at(b, c, y, xx)]);
        }
        o.data[o.at(b, c, y, xx)] = static_cast<scalar_t>(v);
      }
    }
  });
}

}  // namespace ada
}  // namespace pyops

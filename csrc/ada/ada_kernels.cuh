// CUDA kernels of the ADA geometric + colour and filter + noise + cutout stages and their
// launches, framework-free: ada.h's Image/Margin structs, raw pointers and a cudaStream_t.
// Included by the torch registration (ada_cuda.cu) and the JAX binding (csrc/jax/jax_cuda.cu).
// The mapping:
//  - margin_kernel: one thread computes the batch-wide reflect margin into a device buffer
//    (the reference reads it on the host; here nothing synchronises with the host);
//  - forward: one block per 16 x 16 output tile; its 42 x 42 grid samples (each through the
//    chain's reflect pad, upsampling and bilinear resampling) go to shared memory once, then
//    each thread correlates one output pixel's 12 x 12 window (colour-only: one thread per pixel);
//  - adjoint: one thread per grid sample (colour transposed + downsampling transposed, into a
//    float buffer), then one thread per input pixel gathering from it. No atomics: deterministic.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <limits>

#include "ada.h"

namespace pyops {
namespace ada {
namespace kernels {

constexpr int kThreads = 256;

inline int64_t blocks_for(int64_t items) { return (items + kThreads - 1) / kThreads; }
inline bool grid_ok(int64_t blocks) { return blocks <= std::numeric_limits<int32_t>::max(); }

template <typename T>
__global__ void margin_kernel(const T* G, int64_t B, int64_t H, int64_t W, Margin* out) {
  if (blockIdx.x == 0 && threadIdx.x == 0) *out = batch_margin(G, B, H, W);
}

template <typename scalar_t, typename T>
__global__ void forward_kernel(Image<const scalar_t> x, Image<scalar_t> o, const T* G, const T* Cm,
                               const Margin* margin) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= x.B * x.H * x.W) return;
  const int64_t b = i / (x.H * x.W), y = (i / x.W) % x.H, xx = i % x.W;
  T v[kMaxChannels];
  if (G) {
    const UpMap<T> u = make_upmap(G + 9 * b, *margin, x.H, x.W);
    geom_pixel(x, u, b, y, xx, v);
  } else {
    for (int64_t c = 0; c < x.C; ++c) v[c] = static_cast<T>(x.data[x.at(b, c, y, xx)]);
  }
  if (Cm) apply_color(make_color(Cm + 16 * b, x.C), x.C, v, true);
  for (int64_t c = 0; c < x.C; ++c) o.data[o.at(b, c, y, xx)] = static_cast<scalar_t>(v[c]);
}

// One block per kTile x kTile output tile: the threads fill the tile's grid samples in shared
// memory, then each thread computes one output pixel from them.
template <typename scalar_t, typename T>
__global__ void forward_tiled_kernel(Image<const scalar_t> x, Image<scalar_t> o, const T* G, const T* Cm,
                                     const Margin* margin, int64_t tiles_y, int64_t tiles_x) {
  extern __shared__ __align__(16) unsigned char smem[];
  T* tile = reinterpret_cast<T*>(smem);
  const int64_t t = blockIdx.x;
  const int64_t b = t / (tiles_y * tiles_x);
  const int64_t oy0 = ((t / tiles_x) % tiles_y) * kTile, ox0 = (t % tiles_x) * kTile;
  const UpMap<T> u = make_upmap(G + 9 * b, *margin, x.H, x.W);
  for (int j = threadIdx.x; j < kGridTileSize; j += blockDim.x) tile_grid_sample(x, u, b, oy0, ox0, j, tile);
  __syncthreads();
  const int ty = threadIdx.x / kTile, tx = threadIdx.x % kTile;
  const int64_t y = oy0 + ty, xx = ox0 + tx;
  if (y >= x.H || xx >= x.W) return;
  T v[kMaxChannels];
  tile_output(tile, x.C, ty, tx, v);
  if (Cm) apply_color(make_color(Cm + 16 * b, x.C), x.C, v, true);
  for (int64_t c = 0; c < x.C; ++c) o.data[o.at(b, c, y, xx)] = static_cast<scalar_t>(v[c]);
}

template <typename scalar_t, typename T>
__global__ void color_t_kernel(Image<const scalar_t> g, Image<scalar_t> o, const T* Cm) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= g.B * g.H * g.W) return;
  const int64_t b = i / (g.H * g.W), y = (i / g.W) % g.H, xx = i % g.W;
  T v[kMaxChannels];
  for (int64_t c = 0; c < g.C; ++c) v[c] = static_cast<T>(g.data[g.at(b, c, y, xx)]);
  if (Cm) apply_color_t(make_color(Cm + 16 * b, g.C), g.C, v);
  for (int64_t c = 0; c < g.C; ++c) o.data[o.at(b, c, y, xx)] = static_cast<scalar_t>(v[c]);
}

template <typename scalar_t, typename T>
__global__ void grid_adjoint_kernel(Image<const scalar_t> g, const T* Cm, T* gv) {
  const int64_t Hg = 2 * g.H + 4 * kGeomPad, Wg = 2 * g.W + 4 * kGeomPad;
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= g.B * Hg * Wg) return;
  const int64_t b = i / (Hg * Wg), yy = (i / Wg) % Hg, xx = i % Wg;
  const Color<T> k = make_color(Cm ? Cm + 16 * b : nullptr, g.C);
  T v[kMaxChannels];
  grid_adjoint(g, k, Cm != nullptr, b, yy, xx, v);
  for (int64_t c = 0; c < g.C; ++c) gv[((b * g.C + c) * Hg + yy) * Wg + xx] = v[c];
}

template <typename scalar_t, typename T>
__global__ void pixel_adjoint_kernel(const T* gv, Image<scalar_t> o, const T* G, const Margin* margin) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= o.B * o.H * o.W) return;
  const int64_t b = i / (o.H * o.W), y = (i / o.W) % o.H, xx = i % o.W;
  const Margin m = *margin;
  const UpMap<T> u = make_upmap(G + 9 * b, m, o.H, o.W);
  T v[kMaxChannels];
  pixel_adjoint(gv, o.C, o.H, o.W, u, m, b, y, xx, v);
  for (int64_t c = 0; c < o.C; ++c) o.data[o.at(b, c, y, xx)] = static_cast<scalar_t>(v[c]);
}

template <typename scalar_t, typename T>
__global__ void filter_forward_kernel(Image<const scalar_t> x, Image<scalar_t> o, const T* h, const T* sigma,
                                      Image<const T> noise, const T* boxes) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= x.B * x.C * x.H * x.W) return;
  const int64_t b = i / (x.C * x.H * x.W), c = (i / (x.H * x.W)) % x.C, y = (i / x.W) % x.H, xx = i % x.W;
  T v = h ? filter_pixel(x, h + kFilterTaps * b, b, c, y, xx) : static_cast<T>(x.data[x.at(b, c, y, xx)]);
  if (sigma) v = v + noise.data[noise.at(b, c, y, xx)] * sigma[b];
  if (boxes && !cutout_keep(boxes + 4 * b, y, xx, x.H, x.W)) v = T(0);
  o.data[o.at(b, c, y, xx)] = static_cast<scalar_t>(v);
}

template <typename scalar_t, typename T>
__global__ void filter_adjoint_kernel(Image<const scalar_t> g, Image<scalar_t> o, const T* h, const T* boxes) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= g.B * g.C * g.H * g.W) return;
  const int64_t b = i / (g.C * g.H * g.W), c = (i / (g.H * g.W)) % g.C, y = (i / g.W) % g.H, xx = i % g.W;
  const T* box = boxes ? boxes + 4 * b : nullptr;
  T v;
  if (h) {
    v = filter_adjoint_pixel(g, h + kFilterTaps * b, box, b, c, y, xx);
  } else {
    v = (box && !cutout_keep(box, y, xx, g.H, g.W)) ? T(0) : static_cast<T>(g.data[g.at(b, c, y, xx)]);
  }
  o.data[o.at(b, c, y, xx)] = static_cast<scalar_t>(v);
}

// ---- launches: each returns the launch's error (cudaErrorInvalidConfiguration when the work
// does not fit one grid). Absent parameters are null pointers. `margin` is device memory for
// one Margin; `grid_grad` holds B * C * (2H + 12) * (2W + 12) values of T.

template <typename scalar_t, typename T>
cudaError_t launch_geom_color(Image<const scalar_t> x, Image<scalar_t> o, const T* G, const T* Cm,
                              Margin* margin, cudaStream_t stream) {
  if (!G) {  // colour only: per pixel
    const int64_t blocks = blocks_for(x.B * x.H * x.W);
    if (!grid_ok(blocks)) return cudaErrorInvalidConfiguration;
    forward_kernel<scalar_t, T><<<blocks, kThreads, 0, stream>>>(x, o, G, Cm, margin);
    return cudaGetLastError();
  }
  const int64_t tiles_y = (x.H + kTile - 1) / kTile, tiles_x = (x.W + kTile - 1) / kTile;
  const int64_t blocks = x.B * tiles_y * tiles_x;
  if (!grid_ok(blocks)) return cudaErrorInvalidConfiguration;
  margin_kernel<T><<<1, 1, 0, stream>>>(G, x.B, x.H, x.W, margin);
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  const size_t smem = sizeof(T) * x.C * kGridTileSize;  // at most 3 * 1764 doubles = 42 KB
  forward_tiled_kernel<scalar_t, T><<<blocks, kTile * kTile, smem, stream>>>(x, o, G, Cm, margin, tiles_y, tiles_x);
  return cudaGetLastError();
}

template <typename scalar_t, typename T>
cudaError_t launch_geom_color_backward(Image<const scalar_t> gy, Image<scalar_t> o, const T* G, const T* Cm,
                                       Margin* margin, T* grid_grad, cudaStream_t stream) {
  const int64_t n = gy.B * gy.H * gy.W;
  if (!G) {
    if (!grid_ok(blocks_for(n))) return cudaErrorInvalidConfiguration;
    color_t_kernel<scalar_t, T><<<blocks_for(n), kThreads, 0, stream>>>(gy, o, Cm);
    return cudaGetLastError();
  }
  const int64_t Hg = 2 * gy.H + 4 * kGeomPad, Wg = 2 * gy.W + 4 * kGeomPad;
  if (!grid_ok(blocks_for(gy.B * Hg * Wg))) return cudaErrorInvalidConfiguration;
  margin_kernel<T><<<1, 1, 0, stream>>>(G, gy.B, gy.H, gy.W, margin);
  grid_adjoint_kernel<scalar_t, T><<<blocks_for(gy.B * Hg * Wg), kThreads, 0, stream>>>(gy, Cm, grid_grad);
  pixel_adjoint_kernel<scalar_t, T><<<blocks_for(n), kThreads, 0, stream>>>(grid_grad, o, G, margin);
  return cudaGetLastError();
}

template <typename scalar_t, typename T>
cudaError_t launch_filter_noise_cutout(Image<const scalar_t> x, Image<scalar_t> o, const T* h, const T* sigma,
                                       Image<const T> noise, const T* boxes, cudaStream_t stream) {
  const int64_t blocks = blocks_for(x.B * x.C * x.H * x.W);
  if (!grid_ok(blocks)) return cudaErrorInvalidConfiguration;
  filter_forward_kernel<scalar_t, T><<<blocks, kThreads, 0, stream>>>(x, o, h, sigma, noise, boxes);
  return cudaGetLastError();
}

template <typename scalar_t, typename T>
cudaError_t launch_filter_noise_cutout_backward(Image<const scalar_t> g, Image<scalar_t> o, const T* h,
                                                const T* boxes, cudaStream_t stream) {
  const int64_t blocks = blocks_for(g.B * g.C * g.H * g.W);
  if (!grid_ok(blocks)) return cudaErrorInvalidConfiguration;
  filter_adjoint_kernel<scalar_t, T><<<blocks, kThreads, 0, stream>>>(g, o, h, boxes);
  return cudaGetLastError();
}

}  // namespace kernels
}  // namespace ada
}  // namespace pyops

// CUDA kernels of point_sample and their launches, framework-free: plain parameter structs
// (point_sample.h), raw pointers and a cudaStream_t. Included by the torch registration
// (point_sample_cuda.cu) and the JAX binding (csrc/jax/jax_cuda.cu). Two mappings:
//  - planar (NCHW and other layouts): one thread per point, looping over channels, so
//    neighbouring threads touch neighbouring points of the (N, C, P) tensors;
//  - channels-innermost (channels_last): one warp per point, lanes over channels, so each
//    corner's channel row is read in coalesced chunks.
// The input gradient is deterministic: corner keys, a stable sort (done by the caller), then
// one writer per pixel.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <limits>

#include "point_sample.h"

namespace pyops {
namespace pointrend {
namespace kernels {

constexpr int kThreads = 256;
constexpr int kWarp = 32;
constexpr int kWarpsPerBlock = kThreads / kWarp;
constexpr int64_t kChannelChunk = 32;  // channels per thread in the planar forward

inline int64_t blocks_for(int64_t items, int64_t per_block) { return (items + per_block - 1) / per_block; }

// A launch of more blocks than a grid holds fails with cudaErrorInvalidConfiguration.
inline bool grid_ok(int64_t blocks) { return blocks <= std::numeric_limits<int32_t>::max(); }

template <typename scalar_t, typename T, typename out_t>
__global__ void sample_planar_kernel(SampleArgs<scalar_t, T> a, PointValues<out_t*> out,
                                     int64_t point_blocks, int64_t chunks) {
  const int64_t b = blockIdx.x;
  const int64_t p = (b % point_blocks) * blockDim.x + threadIdx.x;
  const int64_t chunk = (b / point_blocks) % chunks;
  const int64_t n = b / (point_blocks * chunks);
  if (p >= a.P) return;
  const int64_t c0 = chunk * kChannelChunk;
  sample_point(a, out, n, p, c0, min(c0 + kChannelChunk, a.C), int64_t(1));
}

template <typename scalar_t, typename T, typename out_t>
__global__ void sample_rows_kernel(SampleArgs<scalar_t, T> a, PointValues<out_t*> out) {
  const int64_t i = int64_t(blockIdx.x) * kWarpsPerBlock + threadIdx.y;
  if (i >= a.N * a.P) return;
  sample_point(a, out, i / a.P, i % a.P, int64_t(threadIdx.x), a.C, int64_t(kWarp));
}

template <typename scalar_t, typename T>
__global__ void coords_grad_planar_kernel(SampleArgs<scalar_t, T> a,
                                          PointValues<const scalar_t*> g, T* grad_coords) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= a.N * a.P) return;
  const int64_t n = i / a.P, p = i % a.P;
  const BilinearTaps<T> t = a.taps(n, p);
  T d[4] = {T(0), T(0), T(0), T(0)};
  corner_dots(a, t, g, n, p, int64_t(0), a.C, int64_t(1), d);
  coords_grad(a, t, d, grad_coords + 2 * i, grad_coords + 2 * i + 1);
}

template <typename scalar_t, typename T>
__global__ void coords_grad_rows_kernel(SampleArgs<scalar_t, T> a, PointValues<const scalar_t*> g,
                                        T* grad_coords) {
  const int64_t i = int64_t(blockIdx.x) * kWarpsPerBlock + threadIdx.y;
  if (i >= a.N * a.P) return;  // whole warp leaves together
  const int64_t n = i / a.P, p = i % a.P;
  const BilinearTaps<T> t = a.taps(n, p);
  T d[4] = {T(0), T(0), T(0), T(0)};
  corner_dots(a, t, g, n, p, int64_t(threadIdx.x), a.C, int64_t(kWarp), d);
  // Fixed butterfly order: the sum is the same on every run.
  for (int k = 0; k < 4; ++k)
    for (int offset = kWarp / 2; offset > 0; offset /= 2)
      d[k] += __shfl_xor_sync(0xffffffffu, d[k], offset);
  if (threadIdx.x == 0) coords_grad(a, t, d, grad_coords + 2 * i, grad_coords + 2 * i + 1);
}

template <typename scalar_t, typename T>
__global__ void corner_keys_kernel(SampleArgs<scalar_t, T> a, int64_t* keys, T* weights) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= a.N * a.P) return;
  corner_keys(a, i / a.P, i % a.P, keys, weights);
}

struct GradInput {
  int64_t sN, sC, sH, sW;
};

template <typename scalar_t, typename T>
__global__ void segments_planar_kernel(SampleArgs<scalar_t, T> a, PointValues<const scalar_t*> g,
                                       const int64_t* sorted_keys, const int64_t* order,
                                       const T* weights, int64_t M, scalar_t* grad_input,
                                       GradInput gi) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= M || !segment_start(sorted_keys, i, a.B * a.H * a.W)) return;
  reduce_segment(a, g, sorted_keys, order, weights, M, i, grad_input, gi.sN, gi.sC, gi.sH, gi.sW,
                 int64_t(0), a.C, int64_t(1));
}

template <typename scalar_t, typename T>
__global__ void segments_rows_kernel(SampleArgs<scalar_t, T> a, PointValues<const scalar_t*> g,
                                     const int64_t* sorted_keys, const int64_t* order,
                                     const T* weights, int64_t M, scalar_t* grad_input,
                                     GradInput gi) {
  const int64_t i = int64_t(blockIdx.x) * kWarpsPerBlock + threadIdx.y;
  if (i >= M || !segment_start(sorted_keys, i, a.B * a.H * a.W)) return;
  reduce_segment(a, g, sorted_keys, order, weights, M, i, grad_input, gi.sN, gi.sC, gi.sH, gi.sW,
                 int64_t(threadIdx.x), a.C, int64_t(kWarp));
}

// ---- launches: each returns the launch's error (cudaErrorInvalidConfiguration when the
// work does not fit one grid). `rows`: channels-innermost layout (one warp per point).

template <typename scalar_t, typename T, typename out_t>
cudaError_t launch_sample(const SampleArgs<scalar_t, T>& a, PointValues<out_t*> o, bool rows,
                          cudaStream_t stream) {
  if (rows) {
    const int64_t blocks = blocks_for(a.N * a.P, kWarpsPerBlock);
    if (!grid_ok(blocks)) return cudaErrorInvalidConfiguration;
    sample_rows_kernel<<<blocks, dim3(kWarp, kWarpsPerBlock), 0, stream>>>(a, o);
  } else {
    const int64_t point_blocks = blocks_for(a.P, kThreads);
    const int64_t chunks = blocks_for(a.C, kChannelChunk);
    const int64_t blocks = a.N * chunks * point_blocks;
    if (!grid_ok(blocks)) return cudaErrorInvalidConfiguration;
    sample_planar_kernel<<<blocks, kThreads, 0, stream>>>(a, o, point_blocks, chunks);
  }
  return cudaGetLastError();
}

template <typename scalar_t, typename T>
cudaError_t launch_coords_grad(const SampleArgs<scalar_t, T>& a, PointValues<const scalar_t*> g,
                               T* grad_coords, bool rows, cudaStream_t stream) {
  const int64_t blocks = blocks_for(a.N * a.P, rows ? kWarpsPerBlock : kThreads);
  if (!grid_ok(blocks)) return cudaErrorInvalidConfiguration;
  if (rows) {
    coords_grad_rows_kernel<<<blocks, dim3(kWarp, kWarpsPerBlock), 0, stream>>>(a, g, grad_coords);
  } else {
    coords_grad_planar_kernel<<<blocks, kThreads, 0, stream>>>(a, g, grad_coords);
  }
  return cudaGetLastError();
}

// Step 1 of the input gradient: keys and weights of every (point, corner), 4 * N * P each.
template <typename scalar_t, typename T>
cudaError_t launch_corner_keys(const SampleArgs<scalar_t, T>& a, int64_t* keys, T* weights,
                               cudaStream_t stream) {
  const int64_t blocks = blocks_for(a.N * a.P, kThreads);
  if (!grid_ok(blocks)) return cudaErrorInvalidConfiguration;
  corner_keys_kernel<<<blocks, kThreads, 0, stream>>>(a, keys, weights);
  return cudaGetLastError();
}

// Step 3: one writer per touched pixel, from the keys stably sorted (with their order).
// Pixels no point touches are not written: the caller zeroes grad_input first.
template <typename scalar_t, typename T>
cudaError_t launch_segments(const SampleArgs<scalar_t, T>& a, PointValues<const scalar_t*> g,
                            const int64_t* sorted_keys, const int64_t* order, const T* weights,
                            int64_t M, scalar_t* grad_input, GradInput gi, bool rows,
                            cudaStream_t stream) {
  const int64_t blocks = blocks_for(M, rows ? kWarpsPerBlock : kThreads);
  if (!grid_ok(blocks)) return cudaErrorInvalidConfiguration;
  if (rows) {
    segments_rows_kernel<<<blocks, dim3(kWarp, kWarpsPerBlock), 0, stream>>>(a, g, sorted_keys, order,
                                                                            weights, M, grad_input, gi);
  } else {
    segments_planar_kernel<<<blocks, kThreads, 0, stream>>>(a, g, sorted_keys, order, weights, M,
                                                           grad_input, gi);
  }
  return cudaGetLastError();
}

}  // namespace kernels
}  // namespace pointrend
}  // namespace pyops

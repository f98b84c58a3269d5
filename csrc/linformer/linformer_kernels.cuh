// CUDA kernels of Linformer attention and their launches, framework-free: AttendParams
// (linformer.h), raw pointers and a cudaStream_t. Included by the torch registration
// (linformer_cuda.cu, linformer_cuda_backward.cu) and the JAX binding (csrc/jax/jax_cuda.cu);
// each file instantiates only the kernels it launches. The mapping:
//  - forward and dQ: one thread per query row (rows in registers, padded to DM), the block's
//    threads stage tiles of the small K', V' (k x d per head) through shared memory; the
//    forward keeps an online softmax per row and writes only O and the log-sum-exp;
//  - dK', dV': one thread per projected key, the block stages tiles of query rows (Q, dO,
//    lse, D) through shared memory; the sequence is split over blocks and the partial sums
//    (op-math type) are added afterwards in a fixed order (deterministic, no atomics).
// P is recomputed from the saved log-sum-exp in both backward kernels. All tensors are dense
// row-major: q, out, grad, dq (B * H, n, d); kp, vp (B * H, k, d); lse, delta (B * H, n).
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "linformer.h"

namespace pyops {
namespace linformer {
namespace cuda {

constexpr int kRows = 64;  // query rows (threads) per block: forward and dQ
constexpr int kKeys = 64;  // projected keys (threads) per block: dK', dV'
constexpr int kMaxHeadDim = 128;

// Keys per shared-memory tile (forward, dQ) and query rows per tile (dK', dV'): 32 KB of
// shared memory in float at DM = 128, the same in double with half the rows.
template <typename T>
struct Tile {
  static constexpr int value = sizeof(T) == 8 ? 16 : 32;
};

// Copies rows [r0, r0 + cnt) of a (rows, d) row-major block into a (tile, DM) shared tile,
// zero-padded, in the op-math type.
template <typename scalar_t, typename T, int DM, int TILE>
__device__ __forceinline__ void stage_rows(T* dst, const scalar_t* src, int64_t r0, int64_t cnt, int64_t d) {
  for (int e = threadIdx.x; e < TILE * DM; e += blockDim.x) {
    const int r = e / DM, c = e % DM;
    dst[e] = (r < cnt && c < d) ? static_cast<T>(src[(r0 + r) * d + c]) : T(0);
  }
}

template <typename scalar_t, typename T, int DM>
__device__ __forceinline__ void load_row(T* dst, const scalar_t* src, bool active, int64_t d) {
#pragma unroll
  for (int c = 0; c < DM; ++c) dst[c] = (active && c < d) ? static_cast<T>(src[c]) : T(0);
}

// Calls f(std::integral_constant<int, DM>) with the smallest supported DM >= d.
template <typename F>
void with_head_dim(int64_t d, F&& f) {
  if (d <= 32) {
    f(std::integral_constant<int, 32>());
  } else if (d <= 64) {
    f(std::integral_constant<int, 64>());
  } else {
    f(std::integral_constant<int, 128>());
  }
}

template <typename scalar_t, typename T, int DM>
__global__ void __launch_bounds__(kRows)
    attend_fwd_kernel(AttendParams<T> a, const scalar_t* __restrict__ q,
                      const scalar_t* __restrict__ kp, const scalar_t* __restrict__ vp,
                      scalar_t* __restrict__ out, T* __restrict__ lse, int64_t n, int64_t k,
                      int64_t row_blocks) {
  constexpr int KT = Tile<T>::value;
  __shared__ T ks[KT * DM];
  __shared__ T vs[KT * DM];
  const int64_t bh = blockIdx.x / row_blocks;
  const int64_t i = (blockIdx.x % row_blocks) * kRows + threadIdx.x;
  const bool active = i < n;
  const int64_t row = bh * n + i;
  T qr[DM], acc[DM];
  load_row<scalar_t, T, DM>(qr, q + (active ? row : 0) * a.d, active, a.d);
#pragma unroll
  for (int c = 0; c < DM; ++c) acc[c] = T(0);
  T m = -INFINITY, l = T(0);
  const scalar_t* kb = kp + bh * k * a.d;
  const scalar_t* vb = vp + bh * k * a.d;
  for (int64_t j0 = 0; j0 < k; j0 += KT) {
    const int cnt = static_cast<int>(min(int64_t(KT), k - j0));
    __syncthreads();  // the previous tile is no longer read
    stage_rows<scalar_t, T, DM, KT>(ks, kb, j0, cnt, a.d);
    stage_rows<scalar_t, T, DM, KT>(vs, vb, j0, cnt, a.d);
    __syncthreads();
    if (active) forward_tile<T, DM>(a, qr, acc, m, l, ks, vs, DM, cnt, j0, uint64_t(row));
  }
  if (!active) return;
#pragma unroll
  for (int c = 0; c < DM; ++c)
    if (c < a.d) out[row * a.d + c] = static_cast<scalar_t>(acc[c] / l);
  lse[row] = finish_row(m, l);
}

template <typename scalar_t, typename T, int DM>
__global__ void __launch_bounds__(kRows)
    attend_dq_kernel(AttendParams<T> a, const scalar_t* __restrict__ grad,
                     const scalar_t* __restrict__ q, const scalar_t* __restrict__ kp,
                     const scalar_t* __restrict__ vp, const T* __restrict__ lse,
                     const T* __restrict__ delta, scalar_t* __restrict__ dq, int64_t n, int64_t k,
                     int64_t row_blocks) {
  constexpr int KT = Tile<T>::value;
  __shared__ T ks[KT * DM];
  __shared__ T vs[KT * DM];
  const int64_t bh = blockIdx.x / row_blocks;
  const int64_t i = (blockIdx.x % row_blocks) * kRows + threadIdx.x;
  const bool active = i < n;
  const int64_t row = bh * n + i;
  T qr[DM], gr[DM], acc[DM];
  load_row<scalar_t, T, DM>(qr, q + (active ? row : 0) * a.d, active, a.d);
  load_row<scalar_t, T, DM>(gr, grad + (active ? row : 0) * a.d, active, a.d);
#pragma unroll
  for (int c = 0; c < DM; ++c) acc[c] = T(0);
  const T lse_i = active ? lse[row] : T(0);
  const T delta_i = active ? delta[row] : T(0);
  const scalar_t* kb = kp + bh * k * a.d;
  const scalar_t* vb = vp + bh * k * a.d;
  for (int64_t j0 = 0; j0 < k; j0 += KT) {
    const int cnt = static_cast<int>(min(int64_t(KT), k - j0));
    __syncthreads();
    stage_rows<scalar_t, T, DM, KT>(ks, kb, j0, cnt, a.d);
    stage_rows<scalar_t, T, DM, KT>(vs, vb, j0, cnt, a.d);
    __syncthreads();
    if (active) dq_tile<T, DM>(a, qr, gr, acc, lse_i, delta_i, ks, vs, DM, cnt, j0, uint64_t(row));
  }
  if (!active) return;
#pragma unroll
  for (int c = 0; c < DM; ++c)
    if (c < a.d) dq[row * a.d + c] = static_cast<scalar_t>(acc[c] * a.scale);
}

// Partial dK', dV' of keys [kb * kKeys, ...) over the query rows of one split; written in T to
// part_k / part_v of shape (splits, B * H, k, d).
template <typename scalar_t, typename T, int DM>
__global__ void __launch_bounds__(kKeys)
    attend_dkv_kernel(AttendParams<T> a, const scalar_t* __restrict__ grad,
                      const scalar_t* __restrict__ q, const scalar_t* __restrict__ kp,
                      const scalar_t* __restrict__ vp, const T* __restrict__ lse,
                      const T* __restrict__ delta, T* __restrict__ part_k,
                      T* __restrict__ part_v, int64_t n, int64_t k, int64_t BH,
                      int64_t key_blocks, int64_t splits) {
  constexpr int R = Tile<T>::value;
  __shared__ T qs[R * DM];
  __shared__ T gs[R * DM];
  __shared__ T ls[R];
  __shared__ T ds[R];
  const int64_t kblock = blockIdx.x % key_blocks;
  const int64_t split = (blockIdx.x / key_blocks) % splits;
  const int64_t bh = blockIdx.x / (key_blocks * splits);
  const int64_t j = kblock * kKeys + threadIdx.x;
  const bool active = j < k;
  T kr[DM], vr[DM], dk[DM], dv[DM];
  load_row<scalar_t, T, DM>(kr, kp + (bh * k + (active ? j : 0)) * a.d, active, a.d);
  load_row<scalar_t, T, DM>(vr, vp + (bh * k + (active ? j : 0)) * a.d, active, a.d);
#pragma unroll
  for (int c = 0; c < DM; ++c) dk[c] = dv[c] = T(0);
  const int64_t chunk = (n + splits - 1) / splits;
  const int64_t r_begin = split * chunk;
  const int64_t r_end = min(n, r_begin + chunk);
  const scalar_t* qb = q + bh * n * a.d;
  const scalar_t* gb = grad + bh * n * a.d;
  for (int64_t r0 = r_begin; r0 < r_end; r0 += R) {
    const int64_t cnt = min(int64_t(R), r_end - r0);
    __syncthreads();
    stage_rows<scalar_t, T, DM, R>(qs, qb, r0, cnt, a.d);
    stage_rows<scalar_t, T, DM, R>(gs, gb, r0, cnt, a.d);
    for (int r = threadIdx.x; r < R; r += blockDim.x) {
      ls[r] = r < cnt ? lse[bh * n + r0 + r] : T(0);
      ds[r] = r < cnt ? delta[bh * n + r0 + r] : T(0);
    }
    __syncthreads();
    if (active) dkv_rows<T, DM>(a, kr, vr, dk, dv, qs, gs, ls, ds, DM, cnt, uint64_t(bh * n + r0), j);
  }
  if (!active) return;
  const int64_t dst = ((split * BH + bh) * k + j) * a.d;
#pragma unroll
  for (int c = 0; c < DM; ++c) {
    if (c < a.d) {
      part_k[dst + c] = dk[c] * a.scale;
      part_v[dst + c] = dv[c];
    }
  }
}

// Sums the (splits, rows) partials of the dK' / dV' kernel into `out` (rows elements) in a fixed
// order. The torch registration sums with ATen instead; the JAX binding uses this.
template <typename scalar_t, typename T>
__global__ void sum_splits_kernel(const T* __restrict__ part, scalar_t* __restrict__ out, int64_t rows,
                                  int64_t splits) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= rows) return;
  T s = T(0);
  for (int64_t p = 0; p < splits; ++p) s += part[p * rows + i];
  out[i] = static_cast<scalar_t>(s);
}

// ---- launches: each returns the launch's error (cudaErrorInvalidConfiguration when the work
// does not fit one grid). d <= kMaxHeadDim is the caller's check.

inline bool grid_ok(int64_t blocks) { return blocks <= std::numeric_limits<int32_t>::max(); }

template <typename scalar_t, typename T>
cudaError_t launch_attend_forward(const AttendParams<T>& a, const scalar_t* q, const scalar_t* kp,
                                  const scalar_t* vp, scalar_t* out, T* lse, int64_t BH, int64_t n,
                                  int64_t k, cudaStream_t stream) {
  const int64_t row_blocks = (n + kRows - 1) / kRows;
  if (!grid_ok(BH * row_blocks)) return cudaErrorInvalidConfiguration;
  with_head_dim(a.d, [&](auto dm) {
    attend_fwd_kernel<scalar_t, T, decltype(dm)::value><<<BH * row_blocks, kRows, 0, stream>>>(
        a, q, kp, vp, out, lse, n, k, row_blocks);
  });
  return cudaGetLastError();
}

// How many parts the sequence is split into for dK', dV' so that the GPU (`sms`
// multiprocessors) gets enough blocks when B * H * key blocks is small.
inline int64_t attend_backward_splits(int64_t BH, int64_t n, int64_t k, int64_t sms) {
  const int64_t key_blocks = (k + kKeys - 1) / kKeys;
  const int64_t want = (4 * sms + BH * key_blocks - 1) / (BH * key_blocks);
  const int64_t max_splits = (n + Tile<float>::value - 1) / Tile<float>::value;
  return std::max<int64_t>(1, std::min(want, max_splits));
}

// dQ into dq, and the (splits, BH, k, d) partials of dK' (scaled) and dV' into part_k, part_v.
template <typename scalar_t, typename T>
cudaError_t launch_attend_backward(const AttendParams<T>& a, const scalar_t* grad, const scalar_t* q,
                                   const scalar_t* kp, const scalar_t* vp, const T* lse, const T* delta,
                                   scalar_t* dq, T* part_k, T* part_v, int64_t BH, int64_t n, int64_t k,
                                   int64_t splits, cudaStream_t stream) {
  const int64_t row_blocks = (n + kRows - 1) / kRows;
  const int64_t key_blocks = (k + kKeys - 1) / kKeys;
  if (!grid_ok(BH * row_blocks) || !grid_ok(BH * key_blocks * splits)) return cudaErrorInvalidConfiguration;
  cudaError_t err = cudaSuccess;
  with_head_dim(a.d, [&](auto dm) {
    constexpr int DM = decltype(dm)::value;
    attend_dq_kernel<scalar_t, T, DM><<<BH * row_blocks, kRows, 0, stream>>>(a, grad, q, kp, vp, lse, delta, dq,
                                                                              n, k, row_blocks);
    err = cudaGetLastError();
    if (err != cudaSuccess) return;
    attend_dkv_kernel<scalar_t, T, DM><<<BH * key_blocks * splits, kKeys, 0, stream>>>(
        a, grad, q, kp, vp, lse, delta, part_k, part_v, n, k, BH, key_blocks, splits);
    err = cudaGetLastError();
  });
  return err;
}

}  // namespace cuda
}  // namespace linformer
}  // namespace pyops

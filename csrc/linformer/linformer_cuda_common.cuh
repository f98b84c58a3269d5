// Pieces shared by the CUDA kernels of Linformer attention (linformer_cuda.cu: forward,
// linformer_cuda_backward.cu: backward; two files so that they compile in parallel).
#pragma once

#include <algorithm>
#include <limits>
#include <type_traits>

#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "linformer_host.h"

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

inline unsigned int grid_for(int64_t blocks, const char* what) {
  TORCH_CHECK(blocks <= std::numeric_limits<int32_t>::max(), "linformer (cuda): ", blocks, " ",
              what, " blocks are too many for one launch; split the batch");
  return static_cast<unsigned int>(blocks);
}

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

#define PYOPS_DISPATCH_FLOATS(TYPE, NAME, ...) \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, TYPE, NAME, __VA_ARGS__)

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

inline void check_cuda_args(const at::Tensor& q, const char* op) {
  TORCH_CHECK(q.is_cuda(), op, " (cuda): expected CUDA tensors, got ", q.device());
  TORCH_CHECK(q.size(3) <= kMaxHeadDim, op, " (cuda): the head dim d must be at most ",
              kMaxHeadDim, ", got ", q.size(3), " (the CPU kernel has no limit)");
}

}  // namespace cuda
}  // namespace linformer
}  // namespace pyops

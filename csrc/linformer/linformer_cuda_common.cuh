// Torch-side pieces shared by the CUDA registrations of Linformer attention (linformer_cuda.cu:
// forward, linformer_cuda_backward.cu: backward; two files so that they compile in parallel).
// The kernels themselves are in linformer_kernels.cuh.
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
#include "linformer_kernels.cuh"

namespace pyops {
namespace linformer {
namespace cuda {

inline unsigned int grid_for(int64_t blocks, const char* what) {
  TORCH_CHECK(blocks <= std::numeric_limits<int32_t>::max(), "linformer (cuda): ", blocks, " ",
              what, " blocks are too many for one launch; split the batch");
  return static_cast<unsigned int>(blocks);
}

#define PYOPS_DISPATCH_FLOATS(TYPE, NAME, ...) \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, TYPE, NAME, __VA_ARGS__)

inline void check_cuda_args(const at::Tensor& q, const char* op) {
  TORCH_CHECK(q.is_cuda(), op, " (cuda): expected CUDA tensors, got ", q.device());
  TORCH_CHECK(q.size(3) <= kMaxHeadDim, op, " (cuda): the head dim d must be at most ",
              kMaxHeadDim, ", got ", q.size(3), " (the CPU kernel has no limit)");
}

}  // namespace cuda
}  // namespace linformer
}  // namespace pyops

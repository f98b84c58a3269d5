// CUDA kernels of the PointRend point-selection ops: one thread per candidate / output point
// / upsampled pixel, running the math of point_select.h; the top-k is ATen's (radix select).
#include <algorithm>
#include <limits>
#include <tuple>

#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/topk.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "point_select_host.h"

namespace pyops {
namespace pointrend {
namespace {

using OptTensor = std::optional<at::Tensor>;
constexpr int kThreads = 256;

unsigned blocks_for(int64_t items) {
  const int64_t blocks = (items + kThreads - 1) / kThreads;
  TORCH_CHECK(blocks <= std::numeric_limits<int32_t>::max(), "point selection: ", items,
              " work items are too many for one CUDA launch; split the batch");
  return static_cast<unsigned>(blocks);
}

template <typename scalar_t>
__global__ void score_candidates_kernel(SelectArgs<scalar_t> s, int64_t total) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < total) score_candidate(s, i / s.num_candidates, i % s.num_candidates);
}

__global__ void pick_points_kernel(const float* candidates, const int64_t* top, int64_t num_candidates,
                                   int64_t num_uncertain, int64_t num_points, const int64_t* seed,
                                   int64_t total, float* out) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < total)
    pick_point(candidates, top, num_candidates, num_uncertain, num_points, seed, i / num_points,
               i % num_points, out);
}

template <typename scalar_t>
__global__ void upsample_kernel(const scalar_t* in, int64_t R, int64_t h, int64_t w, int64_t s_r,
                                int64_t s_h, int64_t s_w, scalar_t* up, float* uncertainty) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t H = 2 * h, W = 2 * w;
  if (i >= R * H * W) return;
  const scalar_t v = static_cast<scalar_t>(
      upsample2x<scalar_t, upsample_t<scalar_t>>(in, h, w, s_r, s_h, s_w, i / (H * W), (i / W) % H, i % W));
  up[i] = v;
  uncertainty[i] = -fabsf(static_cast<float>(v));
}

__global__ void grid_points_kernel(const int64_t* idx, int64_t total, int64_t H, int64_t W, float* coords) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < total) grid_point(idx[i], H, W, coords + 2 * i, coords + 2 * i + 1);
}

at::Tensor uncertain_point_coords_cuda(const at::Tensor& logits_, const OptTensor& classes_,
                                       const OptTensor& candidates_in, const at::Tensor& seed,
                                       int64_t num_points, int64_t num_candidates,
                                       int64_t num_uncertain) {
  check_uncertain_point_args(logits_, classes_, candidates_in, seed, num_points, num_candidates,
                             num_uncertain);
  const c10::cuda::CUDAGuard guard(logits_.device());
  const at::Tensor logits = logits_.contiguous();
  const OptTensor classes = classes_.has_value() ? OptTensor(classes_->contiguous()) : std::nullopt;
  const int64_t R = logits.size(0);
  const auto f32 = logits.options().dtype(at::kFloat);
  at::Tensor candidates = candidates_in.has_value() ? candidates_in->contiguous()
                                                    : at::empty({R, num_candidates, 2}, f32);
  const OptTensor supplied = candidates_in.has_value() ? OptTensor(candidates) : std::nullopt;
  at::Tensor uncertainty = at::empty({R, num_candidates}, f32);
  at::Tensor out = at::empty({R, num_points, 2}, f32);
  if (R == 0) return out;
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(), "uncertain_point_coords_cuda", [&] {
    const auto s = make_select_args<scalar_t>(logits, classes, supplied, candidates, uncertainty, seed);
    score_candidates_kernel<<<blocks_for(R * num_candidates), kThreads, 0, stream>>>(s, R * num_candidates);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  const at::Tensor top = std::get<1>(at::topk(uncertainty, num_uncertain, 1, true, false)).contiguous();
  pick_points_kernel<<<blocks_for(R * num_points), kThreads, 0, stream>>>(
      candidates.const_data_ptr<float>(), top.const_data_ptr<int64_t>(), num_candidates, num_uncertain,
      num_points, seed.const_data_ptr<int64_t>(), R * num_points, out.mutable_data_ptr<float>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> subdivision_step_cuda(const at::Tensor& logits,
                                                                     int64_t num_points) {
  check_subdivision_args(logits, num_points);
  const c10::cuda::CUDAGuard guard(logits.device());
  const int64_t R = logits.size(0), h = logits.size(1), w = logits.size(2), H = 2 * h, W = 2 * w;
  const int64_t P = std::min(num_points, H * W);
  at::Tensor up = at::empty({R, H, W}, logits.options());
  at::Tensor uncertainty = at::empty({R, H * W}, logits.options().dtype(at::kFloat));
  at::Tensor coords = at::empty({R, P, 2}, logits.options().dtype(at::kFloat));
  if (R == 0) return {up, at::empty({0, P}, logits.options().dtype(at::kLong)), coords};
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(), "subdivision_step_cuda", [&] {
    upsample_kernel<<<blocks_for(R * H * W), kThreads, 0, stream>>>(
        logits.const_data_ptr<scalar_t>(), R, h, w, logits.stride(0), logits.stride(1), logits.stride(2),
        up.mutable_data_ptr<scalar_t>(), uncertainty.mutable_data_ptr<float>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  at::Tensor indices = std::get<1>(at::topk(uncertainty, P, 1, true, false)).contiguous();
  grid_points_kernel<<<blocks_for(R * P), kThreads, 0, stream>>>(indices.const_data_ptr<int64_t>(), R * P, H,
                                                                 W, coords.mutable_data_ptr<float>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {up, indices, coords};
}

}  // namespace

TORCH_LIBRARY_IMPL(pyops, CUDA, m) {
  m.impl("uncertain_point_coords", &uncertain_point_coords_cuda);
  m.impl("subdivision_step", &subdivision_step_cuda);
}

}  // namespace pointrend
}  // namespace pyops

// CUDA kernels of point_sample. The per-point math lives in point_sample.h and is shared
// with the CPU kernels; this file only maps it onto threads. Two mappings:
//  - planar (NCHW and other layouts): one thread per point, looping over channels, so
//    neighbouring threads touch neighbouring points of the (N, C, P) tensors;
//  - channels-innermost (channels_last): one warp per point, lanes over channels, so each
//    corner's channel row is read in coalesced chunks.
// The input gradient is deterministic: corner keys, a stable sort, then one writer per pixel.
#include <limits>

#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/sort.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "point_sample_host.h"

namespace pyops {
namespace pointrend {
namespace {

using OptTensor = std::optional<at::Tensor>;

OptTensor contiguous(const OptTensor& t) {
  return t.has_value() ? OptTensor(t->contiguous()) : std::nullopt;
}

constexpr int kThreads = 256;
constexpr int kWarp = 32;
constexpr int kWarpsPerBlock = kThreads / kWarp;
constexpr int64_t kChannelChunk = 32;  // channels per thread in the planar forward

int64_t blocks_for(int64_t items, int64_t per_block) {
  const int64_t blocks = (items + per_block - 1) / per_block;
  TORCH_CHECK(blocks <= std::numeric_limits<int32_t>::max(), "point_sample: ", items,
              " work items are too many for one CUDA launch; split the batch");
  return blocks;
}

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

#define PYOPS_DISPATCH_FLOATS(TYPE, NAME, ...) \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, TYPE, NAME, __VA_ARGS__)

at::Tensor point_sample_cuda(const at::Tensor& input, const at::Tensor& coords_,
                             bool align_corners, const OptTensor& batch_index_) {
  check_point_sample_args(input, coords_, batch_index_);
  const c10::cuda::CUDAGuard guard(input.device());
  const at::Tensor coords = opmath_coords(coords_, input);
  const OptTensor batch_index = contiguous(batch_index_);
  at::Tensor out = new_point_values(input, coords.size(0), coords.size(1));
  if (out.numel() == 0) return out;
  const bool rows = channels_innermost(input);
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND4(at::kHalf, at::kBFloat16, at::kBool, at::kByte, input.scalar_type(), "point_sample_cuda", [&] {
    using out_t = point_out_t<scalar_t>;
    const auto a = make_sample_args<scalar_t>(input, coords, batch_index, align_corners);
    const auto o = point_values(out, out.mutable_data_ptr<out_t>());
    if (rows) {
      sample_rows_kernel<<<blocks_for(a.N * a.P, kWarpsPerBlock), dim3(kWarp, kWarpsPerBlock), 0,
                           stream>>>(a, o);
    } else {
      const int64_t point_blocks = blocks_for(a.P, kThreads);
      const int64_t chunks = blocks_for(a.C, kChannelChunk);
      sample_planar_kernel<<<a.N * chunks * point_blocks, kThreads, 0, stream>>>(a, o, point_blocks,
                                                                               chunks);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

at::Tensor point_sample_backward_coords_cuda(const at::Tensor& grad, const at::Tensor& input,
                                             const at::Tensor& coords_, bool align_corners,
                                             const OptTensor& batch_index_) {
  check_point_grad(grad, input, coords_, batch_index_);
  const c10::cuda::CUDAGuard guard(input.device());
  const at::Tensor coords = opmath_coords(coords_, input);
  const OptTensor batch_index = contiguous(batch_index_);
  at::Tensor grad_coords = at::zeros_like(coords);
  if (grad_coords.numel() == 0) return grad_coords.to(coords_.scalar_type());
  const bool rows = channels_innermost(input);
  auto stream = at::cuda::getCurrentCUDAStream();
  PYOPS_DISPATCH_FLOATS(input.scalar_type(), "point_sample_backward_coords_cuda", [&] {
    using T = opmath_t<scalar_t>;
    const auto a = make_sample_args<scalar_t>(input, coords, batch_index, align_corners);
    const auto g = point_values(grad, grad.const_data_ptr<scalar_t>());
    T* gc = grad_coords.mutable_data_ptr<T>();
    if (rows) {
      coords_grad_rows_kernel<<<blocks_for(a.N * a.P, kWarpsPerBlock), dim3(kWarp, kWarpsPerBlock),
                                0, stream>>>(a, g, gc);
    } else {
      coords_grad_planar_kernel<<<blocks_for(a.N * a.P, kThreads), kThreads, 0, stream>>>(a, g, gc);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return grad_coords.to(coords_.scalar_type());
}

at::Tensor point_sample_backward_input_cuda(const at::Tensor& grad, const at::Tensor& input,
                                            const at::Tensor& coords_, bool align_corners,
                                            const OptTensor& batch_index_) {
  check_point_grad(grad, input, coords_, batch_index_);
  const c10::cuda::CUDAGuard guard(input.device());
  const at::Tensor coords = opmath_coords(coords_, input);
  const OptTensor batch_index = contiguous(batch_index_);
  at::Tensor grad_input = at::zeros_like(input);
  const int64_t M = 4 * coords.size(0) * coords.size(1);
  if (M == 0 || input.size(1) == 0) return grad_input;
  const bool rows = channels_innermost(grad_input);
  auto stream = at::cuda::getCurrentCUDAStream();
  PYOPS_DISPATCH_FLOATS(input.scalar_type(), "point_sample_backward_input_cuda", [&] {
    using T = opmath_t<scalar_t>;
    const auto a = make_sample_args<scalar_t>(input, coords, batch_index, align_corners);
    const auto g = point_values(grad, grad.const_data_ptr<scalar_t>());
    at::Tensor keys = at::empty({M}, input.options().dtype(at::kLong));
    at::Tensor weights = at::empty({M}, coords.options());
    T* w = weights.mutable_data_ptr<T>();
    corner_keys_kernel<<<blocks_for(a.N * a.P, kThreads), kThreads, 0, stream>>>(
        a, keys.mutable_data_ptr<int64_t>(), w);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    const auto sorted = at::sort(keys, /*stable=*/true, /*dim=*/0, /*descending=*/false);
    const int64_t* sk = std::get<0>(sorted).const_data_ptr<int64_t>();
    const int64_t* order = std::get<1>(sorted).const_data_ptr<int64_t>();
    const GradInput gi{grad_input.stride(0), grad_input.stride(1), grad_input.stride(2),
                       grad_input.stride(3)};
    scalar_t* gptr = grad_input.mutable_data_ptr<scalar_t>();
    if (rows) {
      segments_rows_kernel<<<blocks_for(M, kWarpsPerBlock), dim3(kWarp, kWarpsPerBlock), 0,
                             stream>>>(a, g, sk, order, w, M, gptr, gi);
    } else {
      segments_planar_kernel<<<blocks_for(M, kThreads), kThreads, 0, stream>>>(a, g, sk, order, w,
                                                                             M, gptr, gi);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return grad_input;
}

}  // namespace

TORCH_LIBRARY_IMPL(pyops, CUDA, m) {
  m.impl("point_sample", &point_sample_cuda);
  m.impl("point_sample_backward_input", &point_sample_backward_input_cuda);
  m.impl("point_sample_backward_coords", &point_sample_backward_coords_cuda);
}

}  // namespace pointrend
}  // namespace pyops

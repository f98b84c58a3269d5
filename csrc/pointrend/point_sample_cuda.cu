// Torch registration of the CUDA kernels of point_sample. The per-point math lives in
// point_sample.h (shared with the CPU kernels), the kernels and their launches in
// point_sample_kernels.cuh (shared with the JAX binding); this file does the tensor plumbing.
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
#include "point_sample_kernels.cuh"

namespace pyops {
namespace pointrend {
namespace {

using OptTensor = std::optional<at::Tensor>;

OptTensor contiguous(const OptTensor& t) {
  return t.has_value() ? OptTensor(t->contiguous()) : std::nullopt;
}

using namespace kernels;

// Raises the torch error of a failed launch (too many blocks: a clear message).
void check_launch(cudaError_t err, const char* op, int64_t items) {
  TORCH_CHECK(err != cudaErrorInvalidConfiguration, op, ": ", items,
              " work items are too many for one CUDA launch; split the batch");
  C10_CUDA_CHECK(err);
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
    check_launch(launch_sample(a, o, rows, stream), "point_sample", a.N * a.P);
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
    check_launch(launch_coords_grad(a, g, gc, rows, stream), "point_sample", a.N * a.P);
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
    check_launch(launch_corner_keys(a, keys.mutable_data_ptr<int64_t>(), w, stream), "point_sample",
                 a.N * a.P);
    const auto sorted = at::sort(keys, /*stable=*/true, /*dim=*/0, /*descending=*/false);
    const int64_t* sk = std::get<0>(sorted).const_data_ptr<int64_t>();
    const int64_t* order = std::get<1>(sorted).const_data_ptr<int64_t>();
    const GradInput gi{grad_input.stride(0), grad_input.stride(1), grad_input.stride(2),
                       grad_input.stride(3)};
    scalar_t* gptr = grad_input.mutable_data_ptr<scalar_t>();
    check_launch(launch_segments(a, g, sk, order, w, M, gptr, gi, rows, stream), "point_sample", M);
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

// CPU kernels of point_sample (forward and both gradients), parallel with at::parallel_for.
// The per-point math is the one the CUDA kernels run (point_sample.h).
#include <algorithm>

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/sort.h>
#include <ATen/ops/zeros_like.h>
#include <torch/library.h>

#include "point_sample_host.h"

namespace pyops {
namespace pointrend {
namespace {

using OptTensor = std::optional<at::Tensor>;

constexpr int64_t kGrain = 256;  // points per parallel task
constexpr int64_t kPlanes = 8;   // channel planes per task for planar layouts

OptTensor contiguous(const OptTensor& t) {
  return t.has_value() ? OptTensor(t->contiguous()) : std::nullopt;
}

at::Tensor point_sample_cpu(const at::Tensor& input, const at::Tensor& coords_, bool align_corners,
                            const OptTensor& batch_index_) {
  check_point_sample_args(input, coords_, batch_index_);
  const at::Tensor coords = opmath_coords(coords_, input);
  const OptTensor batch_index = contiguous(batch_index_);
  at::Tensor out = new_point_values(input, coords.size(0), coords.size(1));
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND4(at::kHalf, at::kBFloat16, at::kBool, at::kByte, input.scalar_type(), "point_sample_cpu", [&] {
    using out_t = point_out_t<scalar_t>;
    const auto a = make_sample_args<scalar_t>(input, coords, batch_index, align_corners);
    const auto o = point_values(out, out.mutable_data_ptr<out_t>());
    if (channels_innermost(input)) {  // one contiguous channel row per corner
      at::parallel_for(0, a.N * a.P, kGrain, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) sample_point(a, o, i / a.P, i % a.P, 0, a.C, 1);
      });
      return;
    }
    // Planar layouts: a few channel planes at a time, so they stay in cache across points.
    const int64_t blocks = (a.C + kPlanes - 1) / kPlanes;
    at::parallel_for(0, a.N * blocks, 1, [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        const int64_t n = b / blocks, c0 = (b % blocks) * kPlanes;
        for (int64_t p = 0; p < a.P; ++p) sample_point(a, o, n, p, c0, std::min(c0 + kPlanes, a.C), 1);
      }
    });
  });
  return out;
}

at::Tensor point_sample_backward_coords_cpu(const at::Tensor& grad, const at::Tensor& input,
                                            const at::Tensor& coords_, bool align_corners,
                                            const OptTensor& batch_index_) {
  check_point_grad(grad, input, coords_, batch_index_);
  const at::Tensor coords = opmath_coords(coords_, input);
  const OptTensor batch_index = contiguous(batch_index_);
  at::Tensor grad_coords = at::zeros_like(coords);
  if (grad_coords.numel() == 0) return grad_coords.to(coords_.scalar_type());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "point_sample_backward_coords_cpu", [&] {
    using T = opmath_t<scalar_t>;
    const auto a = make_sample_args<scalar_t>(input, coords, batch_index, align_corners);
    const auto g = point_values(grad, grad.const_data_ptr<scalar_t>());
    T* gc = grad_coords.mutable_data_ptr<T>();
    at::parallel_for(0, a.N * a.P, kGrain, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const int64_t n = i / a.P, p = i % a.P;
        const BilinearTaps<T> t = a.taps(n, p);
        T d[4] = {T(0), T(0), T(0), T(0)};
        corner_dots(a, t, g, n, p, 0, a.C, 1, d);
        coords_grad(a, t, d, gc + 2 * i, gc + 2 * i + 1);
      }
    });
  });
  return grad_coords.to(coords_.scalar_type());
}

at::Tensor point_sample_backward_input_cpu(const at::Tensor& grad, const at::Tensor& input,
                                           const at::Tensor& coords_, bool align_corners,
                                           const OptTensor& batch_index_) {
  check_point_grad(grad, input, coords_, batch_index_);
  const at::Tensor coords = opmath_coords(coords_, input);
  const OptTensor batch_index = contiguous(batch_index_);
  at::Tensor grad_input = at::zeros_like(input);
  const int64_t M = 4 * coords.size(0) * coords.size(1);
  if (M == 0 || input.size(1) == 0) return grad_input;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "point_sample_backward_input_cpu", [&] {
    using T = opmath_t<scalar_t>;
    const auto a = make_sample_args<scalar_t>(input, coords, batch_index, align_corners);
    const auto g = point_values(grad, grad.const_data_ptr<scalar_t>());
    at::Tensor keys = at::empty({M}, input.options().dtype(at::kLong));
    at::Tensor weights = at::empty({M}, coords.options());
    int64_t* k = keys.mutable_data_ptr<int64_t>();
    T* w = weights.mutable_data_ptr<T>();
    at::parallel_for(0, a.N * a.P, kGrain, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) corner_keys(a, i / a.P, i % a.P, k, w);
    });
    const auto sorted = at::sort(keys, /*stable=*/true, /*dim=*/0, /*descending=*/false);
    const int64_t* sk = std::get<0>(sorted).const_data_ptr<int64_t>();
    const int64_t* order = std::get<1>(sorted).const_data_ptr<int64_t>();
    const int64_t sentinel = a.B * a.H * a.W;
    scalar_t* gi = grad_input.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, M, 4 * kGrain, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        if (!segment_start(sk, i, sentinel)) continue;
        reduce_segment(a, g, sk, order, w, M, i, gi, grad_input.stride(0), grad_input.stride(1),
                       grad_input.stride(2), grad_input.stride(3), 0, a.C, 1);
      }
    });
  });
  return grad_input;
}

}  // namespace

TORCH_LIBRARY_IMPL(pyops, CPU, m) {
  m.impl("point_sample", &point_sample_cpu);
  m.impl("point_sample_backward_input", &point_sample_backward_input_cpu);
  m.impl("point_sample_backward_coords", &point_sample_backward_coords_cpu);
}

}  // namespace pointrend
}  // namespace pyops

// Host-side argument checks and tensor plumbing of point_sample, shared by the CPU and
// CUDA registrations (the Python wrapper checks the same things with friendlier types).
#pragma once

#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>

#include "point_sample.h"

namespace pyops {
namespace pointrend {

inline void check_point_sample_args(const at::Tensor& input, const at::Tensor& coords) {
  TORCH_CHECK(input.dim() == 4, "point_sample: input must be a 4-D (N, C, H, W) tensor, got shape ",
              input.sizes());
  TORCH_CHECK(at::isFloatingType(input.scalar_type()),
              "point_sample: input must be a floating-point tensor, got ", input.scalar_type());
  TORCH_CHECK(coords.dim() == 3 && coords.size(2) == 2,
              "point_sample: coords must have shape (N, P, 2), got ", coords.sizes());
  TORCH_CHECK(at::isFloatingType(coords.scalar_type()),
              "point_sample: coords must be a floating-point tensor, got ", coords.scalar_type());
  TORCH_CHECK(coords.size(0) == input.size(0), "point_sample: coords has batch size ",
              coords.size(0), " but input has ", input.size(0));
  TORCH_CHECK(input.device() == coords.device(), "point_sample: input is on ", input.device(),
              " but coords is on ", coords.device());
  TORCH_CHECK(input.size(2) > 0 && input.size(3) > 0,
              "point_sample: input must have non-empty spatial dimensions, got shape ",
              input.sizes());
}

inline void check_point_grad(const at::Tensor& grad, const at::Tensor& input,
                             const at::Tensor& coords) {
  check_point_sample_args(input, coords);
  TORCH_CHECK(grad.dim() == 3 && grad.size(0) == input.size(0) && grad.size(1) == input.size(1) &&
                  grad.size(2) == coords.size(1),
              "point_sample backward: grad_output must have shape (N, C, P) = (", input.size(0),
              ", ", input.size(1), ", ", coords.size(1), "), got ", grad.sizes());
  TORCH_CHECK(grad.scalar_type() == input.scalar_type(),
              "point_sample backward: grad_output dtype ", grad.scalar_type(),
              " differs from input dtype ", input.scalar_type());
  TORCH_CHECK(grad.device() == input.device(), "point_sample backward: grad_output is on ",
              grad.device(), " but input is on ", input.device());
}

// Channels-innermost inputs (channels_last) are sampled a whole channel row per point, and
// their output is laid out (N, P, C) in memory; the Python fake kernel mirrors this rule.
inline bool channels_innermost(const at::Tensor& input) {
  return input.size(1) > 1 && input.stride(1) == 1;
}

inline at::Tensor new_point_values(const at::Tensor& input, int64_t P) {
  const int64_t N = input.size(0), C = input.size(1);
  if (channels_innermost(input)) return at::empty({N, P, C}, input.options()).transpose(1, 2);
  return at::empty({N, C, P}, input.options());
}

// Coordinates in the op-math type (float, or double for double inputs), contiguous.
inline at::Tensor opmath_coords(const at::Tensor& coords, const at::Tensor& input) {
  return coords.to(at::toOpMathType(input.scalar_type())).contiguous();
}

template <typename scalar_t, typename T = at::opmath_type<scalar_t>>
SampleArgs<scalar_t, T> make_sample_args(const at::Tensor& input, const at::Tensor& coords,
                                         bool align_corners) {
  SampleArgs<scalar_t, T> a;
  a.input = input.const_data_ptr<scalar_t>();
  a.N = input.size(0);
  a.C = input.size(1);
  a.H = input.size(2);
  a.W = input.size(3);
  a.in_sN = input.stride(0);
  a.in_sC = input.stride(1);
  a.in_sH = input.stride(2);
  a.in_sW = input.stride(3);
  a.coords = coords.const_data_ptr<T>();
  a.P = coords.size(1);
  a.align_corners = align_corners;
  return a;
}

template <typename ptr_t>
PointValues<ptr_t> point_values(const at::Tensor& t, ptr_t data) {
  return PointValues<ptr_t>{data, t.stride(0), t.stride(1), t.stride(2)};
}

}  // namespace pointrend
}  // namespace pyops

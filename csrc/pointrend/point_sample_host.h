// Host-side argument checks and tensor plumbing of point_sample, shared by the CPU and
// CUDA registrations (the Python wrapper checks the same things with friendlier types).
#pragma once

#include <type_traits>

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>
#include <c10/util/Optional.h>

#include "point_sample.h"

namespace pyops {
namespace pointrend {

// Op-math type: float for half/bfloat16/float (and bool/uint8 masks), double for double.
template <typename scalar_t>
using opmath_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;

// Sampled values keep a floating input's dtype; masks (bool/uint8) sample to float32.
template <typename scalar_t>
using point_out_t = std::conditional_t<std::is_integral_v<scalar_t>, float, scalar_t>;

inline at::ScalarType point_values_dtype(at::ScalarType input) {
  return at::isFloatingType(input) ? input : at::kFloat;
}

inline void check_point_sample_args(const at::Tensor& input, const at::Tensor& coords,
                                    const std::optional<at::Tensor>& batch_index) {
  TORCH_CHECK(input.dim() == 4, "point_sample: input must be a 4-D (N, C, H, W) tensor, got shape ",
              input.sizes());
  const auto t = input.scalar_type();
  TORCH_CHECK(at::isFloatingType(t) || t == at::kBool || t == at::kByte,
              "point_sample: input must be a floating-point, bool or uint8 tensor, got ", t);
  TORCH_CHECK(coords.dim() == 3 && coords.size(2) == 2,
              "point_sample: coords must have shape (N, P, 2), got ", coords.sizes());
  TORCH_CHECK(at::isFloatingType(coords.scalar_type()),
              "point_sample: coords must be a floating-point tensor, got ", coords.scalar_type());
  TORCH_CHECK(input.device() == coords.device(), "point_sample: input is on ", input.device(),
              " but coords is on ", coords.device());
  TORCH_CHECK(input.size(2) > 0 && input.size(3) > 0,
              "point_sample: input must have non-empty spatial dimensions, got shape ",
              input.sizes());
  if (batch_index.has_value()) {
    const at::Tensor& b = *batch_index;
    TORCH_CHECK(b.dim() == 1 && b.size(0) == coords.size(0) && b.scalar_type() == at::kLong,
                "point_sample: batch_index must be an int64 tensor of shape (", coords.size(0),
                ",), got ", b.scalar_type(), " ", b.sizes());
    TORCH_CHECK(b.device() == input.device(), "point_sample: batch_index is on ", b.device(),
                " but input is on ", input.device());
    TORCH_CHECK(input.size(0) > 0 || coords.size(0) == 0,
                "point_sample: batch_index given but input has no images");
  } else {
    TORCH_CHECK(coords.size(0) == input.size(0), "point_sample: coords has batch size ",
                coords.size(0), " but input has ", input.size(0));
  }
}

inline void check_point_grad(const at::Tensor& grad, const at::Tensor& input,
                             const at::Tensor& coords,
                             const std::optional<at::Tensor>& batch_index) {
  check_point_sample_args(input, coords, batch_index);
  TORCH_CHECK(at::isFloatingType(input.scalar_type()),
              "point_sample backward: input must be floating-point, got ", input.scalar_type());
  TORCH_CHECK(grad.dim() == 3 && grad.size(0) == coords.size(0) && grad.size(1) == input.size(1) &&
                  grad.size(2) == coords.size(1),
              "point_sample backward: grad_output must have shape (N, C, P) = (", coords.size(0),
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

inline at::Tensor new_point_values(const at::Tensor& input, int64_t N, int64_t P) {
  const int64_t C = input.size(1);
  const auto options = input.options().dtype(point_values_dtype(input.scalar_type()));
  if (channels_innermost(input)) return at::empty({N, P, C}, options).transpose(1, 2);
  return at::empty({N, C, P}, options);
}

// Coordinates in the op-math type of `input`, contiguous.
inline at::Tensor opmath_coords(const at::Tensor& coords, const at::Tensor& input) {
  return coords.to(input.scalar_type() == at::kDouble ? at::kDouble : at::kFloat).contiguous();
}

template <typename scalar_t, typename T = opmath_t<scalar_t>>
SampleArgs<scalar_t, T> make_sample_args(const at::Tensor& input, const at::Tensor& coords,
                                         const std::optional<at::Tensor>& batch_index,
                                         bool align_corners) {
  SampleArgs<scalar_t, T> a;
  a.input = input.const_data_ptr<scalar_t>();
  a.B = input.size(0);
  a.C = input.size(1);
  a.H = input.size(2);
  a.W = input.size(3);
  a.in_sN = input.stride(0);
  a.in_sC = input.stride(1);
  a.in_sH = input.stride(2);
  a.in_sW = input.stride(3);
  a.coords = coords.const_data_ptr<T>();
  a.N = coords.size(0);
  a.P = coords.size(1);
  a.batch_index = batch_index.has_value() ? batch_index->const_data_ptr<int64_t>() : nullptr;
  a.align_corners = align_corners;
  return a;
}

template <typename ptr_t>
PointValues<ptr_t> point_values(const at::Tensor& t, ptr_t data) {
  return PointValues<ptr_t>{data, t.stride(0), t.stride(1), t.stride(2)};
}

}  // namespace pointrend
}  // namespace pyops

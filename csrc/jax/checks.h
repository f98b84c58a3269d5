// Shape checks of the pyops.jax targets, shared by the CPU and CUDA handlers.
#pragma once

#include "../ada/ada.h"
#include "../pointrend/point_sample.h"
#include "ffi_common.h"

namespace pyops {
namespace jaxffi {

// The kernels' views of dense float32 point_sample buffers: input (B, C, H, W), coords (B, P, 2),
// per-point values (B, C, P).
inline pointrend::SampleArgs<float, float> sample_args(const F32& input, const F32& coords, bool align_corners) {
  pointrend::SampleArgs<float, float> a;
  a.input = input.typed_data();
  a.B = dim(input, 0);
  a.C = dim(input, 1);
  a.H = dim(input, 2);
  a.W = dim(input, 3);
  a.in_sN = a.C * a.H * a.W;
  a.in_sC = a.H * a.W;
  a.in_sH = a.W;
  a.in_sW = 1;
  a.coords = coords.typed_data();
  a.N = dim(coords, 0);
  a.P = dim(coords, 1);
  a.batch_index = nullptr;
  a.align_corners = align_corners;
  return a;
}

template <typename ptr_t>
pointrend::PointValues<ptr_t> dense_points(ptr_t data, int64_t C, int64_t P) {
  return pointrend::PointValues<ptr_t>{data, C * P, P, 1};
}

// input (B, C, H, W), coords (B, P, 2).
inline ffi::Error check_point_sample(const F32& input, const F32& coords) {
  const char* op = "point_sample";
  if (rank(input) != 4 || dim(input, 2) == 0 || dim(input, 3) == 0)
    return invalid(std::string(op) + ": input must be a 4-D (N, C, H, W) array with H, W > 0, got shape " +
                   shape_of(input));
  return expect_shape(op, "point_coords", coords, {dim(input, 0), rank(coords) == 3 ? dim(coords, 1) : -1, 2});
}

inline ffi::Error check_point_grad(const F32& grad, const F32& input, const F32& coords) {
  PYOPS_FFI_RETURN_IF_ERROR(check_point_sample(input, coords));
  return expect_shape("point_sample backward", "grad", grad, {dim(input, 0), dim(input, 1), dim(coords, 1)});
}

// q (B, H, n, d), kp and vp (B, H, k, d).
inline ffi::Error check_attend(const F32& q, const F32& kp, const F32& vp) {
  const char* op = "linformer_attention";
  if (rank(q) != 4 || dim(q, 3) == 0)
    return invalid(std::string(op) + ": q must be a 4-D (B, H, n, d) array with d > 0, got shape " + shape_of(q));
  const int64_t k = rank(kp) == 4 ? dim(kp, 2) : -1;
  if (k == 0) return invalid(std::string(op) + ": the projected length k must be at least 1");
  PYOPS_FFI_RETURN_IF_ERROR(expect_shape(op, "kp", kp, {dim(q, 0), dim(q, 1), k, dim(q, 3)}));
  return expect_shape(op, "vp", vp, {dim(q, 0), dim(q, 1), k, dim(q, 3)});
}

inline ffi::Error check_attend_grad(const F32& grad, const F32& q, const F32& kp, const F32& vp,
                                    const F32& lse, const F32& delta) {
  PYOPS_FFI_RETURN_IF_ERROR(check_attend(q, kp, vp));
  const char* op = "linformer_attention backward";
  PYOPS_FFI_RETURN_IF_ERROR(expect_shape(op, "grad", grad, {dim(q, 0), dim(q, 1), dim(q, 2), dim(q, 3)}));
  PYOPS_FFI_RETURN_IF_ERROR(expect_shape(op, "lse", lse, {dim(q, 0), dim(q, 1), dim(q, 2)}));
  return expect_shape(op, "delta", delta, {dim(q, 0), dim(q, 1), dim(q, 2)});
}

// images (B, C, H, W) with C in {1, 3}; G (B, 3, 3) and Cm (B, 4, 4) when used.
inline ffi::Error check_geom_color(const F32& x, const F32& G, const F32& Cm, bool has_g, bool has_c) {
  const char* op = "ada_geometric_color";
  if (rank(x) != 4 || (dim(x, 1) != 1 && dim(x, 1) != 3) || dim(x, 2) == 0 || dim(x, 3) == 0)
    return invalid(std::string(op) + ": images must be a (B, C, H, W) array with C = 1 or 3 and H, W > 0, got shape " +
                   shape_of(x));
  if (has_g) PYOPS_FFI_RETURN_IF_ERROR(expect_shape(op, "G_inv", G, {dim(x, 0), 3, 3}));
  if (has_c) PYOPS_FFI_RETURN_IF_ERROR(expect_shape(op, "C", Cm, {dim(x, 0), 4, 4}));
  return ffi::Error::Success();
}

// images (B, C, H, W); filters (B, 43), sigma (B,), noise like images, boxes (B, 4) when used.
inline ffi::Error check_filter(const F32& x, const F32& h, const F32& sigma, const F32& noise, const F32& boxes,
                               bool has_filter, bool has_noise, bool has_boxes) {
  const char* op = "ada_filter_noise_cutout";
  if (rank(x) != 4 || (dim(x, 1) != 1 && dim(x, 1) != 3) || dim(x, 2) == 0 || dim(x, 3) == 0)
    return invalid(std::string(op) + ": images must be a (B, C, H, W) array with C = 1 or 3 and H, W > 0, got shape " +
                   shape_of(x));
  const int64_t B = dim(x, 0);
  if (has_filter) {
    PYOPS_FFI_RETURN_IF_ERROR(expect_shape(op, "filters", h, {B, ada::kFilterTaps}));
    if (dim(x, 2) <= ada::kFilterPad || dim(x, 3) <= ada::kFilterPad)
      return invalid(std::string(op) + ": filtering needs H and W of at least " + std::to_string(ada::kFilterPad + 1) +
                     ", got shape " + shape_of(x));
  }
  if (has_noise) {
    PYOPS_FFI_RETURN_IF_ERROR(expect_shape(op, "sigma", sigma, {B}));
    PYOPS_FFI_RETURN_IF_ERROR(expect_shape(op, "noise", noise, {B, dim(x, 1), dim(x, 2), dim(x, 3)}));
  }
  if (has_boxes) PYOPS_FFI_RETURN_IF_ERROR(expect_shape(op, "boxes", boxes, {B, 4}));
  return ffi::Error::Success();
}

// Dense row-major images over a buffer.
template <typename scalar_t>
ada::Image<scalar_t> dense_image(scalar_t* data, int64_t B, int64_t C, int64_t H, int64_t W) {
  return ada::Image<scalar_t>{data, B, C, H, W, C * H * W, H * W, W, 1};
}

template <typename T>
const T* if_used(const ffi::Buffer<ffi::F32>& b, bool used) {
  return used ? b.typed_data() : nullptr;
}

}  // namespace jaxffi
}  // namespace pyops

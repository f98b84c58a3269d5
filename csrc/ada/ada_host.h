// Host-side argument checks and tensor plumbing of the ADA ops, shared by the CPU and CUDA
// registrations (the Python wrapper checks the same things first, with friendlier messages).
#pragma once

#include <optional>
#include <string>

#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>

#include "ada.h"

namespace pyops {
namespace ada {

inline void check_images(const char* op, const char* name, const at::Tensor& x) {
  TORCH_CHECK(x.dim() == 4, op, ": ", name, " must be a 4-D (B, C, H, W) tensor, got shape ", x.sizes());
  TORCH_CHECK(at::isFloatingType(x.scalar_type()), op, ": ", name, " must be a floating-point tensor, got ",
              x.scalar_type());
  TORCH_CHECK(x.size(1) == 1 || x.size(1) == 3, op, ": ", name,
              " must have 1 or 3 channels (the colour transforms are defined for grey and RGB), got ",
              x.size(1));
  TORCH_CHECK(x.size(2) > 0 && x.size(3) > 0, op, ": ", name, " must have non-empty H and W, got shape ",
              x.sizes());
}

inline void check_matrix(const char* op, const char* name, const std::optional<at::Tensor>& m, int64_t n,
                         const at::Tensor& x) {
  if (!m.has_value()) return;
  TORCH_CHECK(m->dim() == 3 && m->size(0) == x.size(0) && m->size(1) == n && m->size(2) == n, op, ": ", name,
              " must have shape (B, ", n, ", ", n, ") with B = ", x.size(0), ", got ", m->sizes());
  TORCH_CHECK(at::isFloatingType(m->scalar_type()), op, ": ", name, " must be a floating-point tensor, got ",
              m->scalar_type());
  TORCH_CHECK(m->device() == x.device(), op, ": ", name, " is on ", m->device(), " but the images are on ",
              x.device());
}

inline void check_geom_color_args(const char* op, const at::Tensor& x, const std::optional<at::Tensor>& G,
                                  const std::optional<at::Tensor>& C) {
  check_images(op, "images", x);
  check_matrix(op, "G_inv", G, 3, x);
  check_matrix(op, "C", C, 4, x);
}

inline void check_vector(const char* op, const char* name, const std::optional<at::Tensor>& t, int64_t n,
                         const at::Tensor& x) {
  if (!t.has_value()) return;
  const bool shape_ok = n == 0 ? (t->dim() == 1 && t->size(0) == x.size(0))
                               : (t->dim() == 2 && t->size(0) == x.size(0) && t->size(1) == n);
  TORCH_CHECK(shape_ok, op, ": ", name, " must have shape (B", n == 0 ? "" : ", ", n == 0 ? "" : std::to_string(n),
              ") with B = ", x.size(0), ", got ", t->sizes());
  TORCH_CHECK(at::isFloatingType(t->scalar_type()), op, ": ", name, " must be a floating-point tensor, got ",
              t->scalar_type());
  TORCH_CHECK(t->device() == x.device(), op, ": ", name, " is on ", t->device(), " but the images are on ",
              x.device());
}

inline void check_filter_args(const char* op, const at::Tensor& x, const std::optional<at::Tensor>& filters,
                              const std::optional<at::Tensor>& sigma, const std::optional<at::Tensor>& noise,
                              const std::optional<at::Tensor>& boxes) {
  check_images(op, "images", x);
  check_vector(op, "filters", filters, kFilterTaps, x);
  check_vector(op, "sigma", sigma, 0, x);
  check_vector(op, "boxes", boxes, 4, x);
  if (filters.has_value()) {
    TORCH_CHECK(x.size(2) > kFilterPad && x.size(3) > kFilterPad, op, ": filtering needs H and W of at least ",
                kFilterPad + 1, " (a ", kFilterPad, "-pixel reflect pad), got shape ", x.sizes());
  }
  TORCH_CHECK(sigma.has_value() == noise.has_value(), op, ": sigma and noise must be given together");
  if (noise.has_value()) {
    TORCH_CHECK(noise->sizes() == x.sizes(), op, ": noise must have the images' shape ", x.sizes(), ", got ",
                noise->sizes());
    TORCH_CHECK(noise->device() == x.device(), op, ": noise is on ", noise->device(), " but the images are on ",
                x.device());
  }
}

// A matrix in the op-math type, contiguous; undefined when absent.
inline at::Tensor opmath_matrix(const std::optional<at::Tensor>& m, const at::Tensor& x) {
  if (!m.has_value()) return at::Tensor();
  return m->to(at::toOpMathType(x.scalar_type())).contiguous();
}

template <typename scalar_t>
Image<scalar_t> image_of(const at::Tensor& t, scalar_t* data) {
  return Image<scalar_t>{data,        t.size(0),   t.size(1),   t.size(2), t.size(3),
                         t.stride(0), t.stride(1), t.stride(2), t.stride(3)};
}

}  // namespace ada
}  // namespace pyops

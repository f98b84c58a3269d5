// Helpers shared by the XLA FFI handlers of pyops._jax_ffi (CPU and CUDA). Plain C++: no ATen,
// no libtorch; the kernels' math comes from the same headers the torch extension uses.
//
// XLA hands every buffer over dense and row-major, so strides follow from the dimensions.
// Only float32 is bound: the JAX wrappers (pyops/jax.py) check shapes and dtypes with clear
// messages before a call, and the handlers check them again so a direct call cannot read out of
// bounds.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>

#include "xla/ffi/api/ffi.h"

namespace pyops {
namespace jaxffi {

namespace ffi = xla::ffi;

using F32 = ffi::Buffer<ffi::F32>;
using F32Out = ffi::ResultBuffer<ffi::F32>;
using U8Out = ffi::ResultBuffer<ffi::U8>;

inline ffi::Error invalid(const std::string& msg) {
  return ffi::Error(ffi::ErrorCode::kInvalidArgument, "pyops.jax: " + msg);
}

template <typename Buf>
std::string shape_of(const Buf& b) {
  std::string s = "(";
  const auto dims = b.dimensions();
  for (size_t i = 0; i < dims.size(); ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
  return s + (dims.size() == 1 ? ",)" : ")");
}

// True when `b` has exactly the dimensions `want`.
template <typename Buf>
bool has_shape(const Buf& b, std::initializer_list<int64_t> want) {
  const auto dims = b.dimensions();
  if (dims.size() != want.size()) return false;
  size_t i = 0;
  for (int64_t w : want)
    if (dims[i++] != w) return false;
  return true;
}

template <typename Buf>
ffi::Error expect_shape(const char* op, const char* name, const Buf& b, std::initializer_list<int64_t> want) {
  if (has_shape(b, want)) return ffi::Error::Success();
  std::string w = "(";
  size_t i = 0;
  for (int64_t v : want) w += (i++ ? ", " : "") + std::to_string(v);
  return invalid(std::string(op) + ": " + name + " must have shape " + w + "), got " + shape_of(b));
}

// Dimension i of a buffer (0 when the rank is too small; callers check ranks first).
template <typename Buf>
int64_t dim(const Buf& b, size_t i) {
  const auto dims = b.dimensions();
  return i < dims.size() ? dims[i] : 0;
}

template <typename Buf>
size_t rank(const Buf& b) {
  return b.dimensions().size();
}

}  // namespace jaxffi
}  // namespace pyops

#define PYOPS_FFI_RETURN_IF_ERROR(expr)      \
  do {                                       \
    ::xla::ffi::Error pyops_err_ = (expr);   \
    if (pyops_err_.failure()) return pyops_err_; \
  } while (0)

// Host-side argument checks and parameter plumbing of the Linformer ops, shared by the CPU and
// CUDA registrations (the Python wrapper checks the same things with friendlier messages).
#pragma once

#include <cmath>

#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include "linformer.h"

namespace pyops {
namespace linformer {

inline void check_float(const at::Tensor& t, const char* op, const char* name) {
  TORCH_CHECK(at::isFloatingType(t.scalar_type()), op, ": ", name,
              " must be a floating-point tensor, got ", t.scalar_type());
}

inline void check_same(const at::Tensor& t, const at::Tensor& ref, const char* op,
                       const char* name, const char* ref_name) {
  TORCH_CHECK(t.scalar_type() == ref.scalar_type(), op, ": ", name, " has dtype ",
              t.scalar_type(), " but ", ref_name, " has ", ref.scalar_type());
  TORCH_CHECK(t.device() == ref.device(), op, ": ", name, " is on ", t.device(), " but ",
              ref_name, " is on ", ref.device());
}

// x (B, H, n, d); E (n, k) shared or (H, n, k) per head; key_padding_mask (B, n) bool.
inline void check_project_args(const at::Tensor& x, const at::Tensor& E,
                               const c10::optional<at::Tensor>& mask) {
  const char* op = "linformer_project";
  TORCH_CHECK(x.dim() == 4, op, ": x must be a 4-D (B, H, n, d) tensor, got shape ", x.sizes());
  check_float(x, op, "x");
  check_same(E, x, op, "E", "x");
  const int64_t H = x.size(1), n = x.size(2);
  TORCH_CHECK((E.dim() == 2 && E.size(0) == n) || (E.dim() == 3 && E.size(0) == H && E.size(1) == n),
              op, ": E must have shape (n, k) = (", n, ", k) or (H, n, k) = (", H, ", ", n,
              ", k), got ", E.sizes());
  if (mask.has_value()) {
    const at::Tensor& m = *mask;
    TORCH_CHECK(m.scalar_type() == at::kBool, op, ": key_padding_mask must be a bool tensor, got ",
                m.scalar_type());
    TORCH_CHECK(m.dim() == 2 && m.size(0) == x.size(0) && m.size(1) == n, op,
                ": key_padding_mask must have shape (B, n) = (", x.size(0), ", ", n, "), got ",
                m.sizes());
    TORCH_CHECK(m.device() == x.device(), op, ": key_padding_mask is on ", m.device(),
                " but x is on ", x.device());
  }
}

inline int64_t projected_len(const at::Tensor& E) { return E.size(-1); }

// q (B, H, n, d); kp, vp (B, H, k, d).
inline void check_attend_args(const at::Tensor& q, const at::Tensor& kp, const at::Tensor& vp,
                              double dropout_p) {
  const char* op = "linformer_attend";
  TORCH_CHECK(q.dim() == 4, op, ": q must be a 4-D (B, H, n, d) tensor, got shape ", q.sizes());
  check_float(q, op, "q");
  check_same(kp, q, op, "kp", "q");
  check_same(vp, q, op, "vp", "q");
  TORCH_CHECK(kp.dim() == 4 && kp.size(0) == q.size(0) && kp.size(1) == q.size(1) &&
                  kp.size(3) == q.size(3),
              op, ": kp must have shape (B, H, k, d) = (", q.size(0), ", ", q.size(1), ", k, ",
              q.size(3), "), got ", kp.sizes());
  TORCH_CHECK(q.size(3) >= 1, op, ": the head dim d must be at least 1, got ", q.sizes());
  TORCH_CHECK(kp.size(2) >= 1, op, ": the projected length k must be at least 1, got ", kp.sizes());
  TORCH_CHECK(vp.sizes() == kp.sizes(), op, ": vp must have the shape of kp ", kp.sizes(),
              ", got ", vp.sizes());
  TORCH_CHECK(dropout_p >= 0.0 && dropout_p <= 1.0, op, ": dropout_p must be in [0, 1], got ",
              dropout_p);
}

inline void check_attend_grad(const at::Tensor& grad, const at::Tensor& q, const at::Tensor& out,
                              const at::Tensor& lse) {
  const char* op = "linformer_attend_backward";
  TORCH_CHECK(grad.sizes() == q.sizes() && out.sizes() == q.sizes(), op,
              ": grad_output and out must have the shape of q ", q.sizes(), ", got ", grad.sizes(),
              " and ", out.sizes());
  check_same(grad, q, op, "grad_output", "q");
  check_same(out, q, op, "out", "q");
  TORCH_CHECK(lse.dim() == 3 && lse.size(0) == q.size(0) && lse.size(1) == q.size(1) &&
                  lse.size(2) == q.size(2),
              op, ": lse must have shape (B, H, n) = (", q.size(0), ", ", q.size(1), ", ",
              q.size(2), "), got ", lse.sizes());
  TORCH_CHECK(lse.scalar_type() == at::toOpMathType(q.scalar_type()), op, ": lse must be ",
              at::toOpMathType(q.scalar_type()), ", got ", lse.scalar_type());
}

template <typename T>
AttendParams<T> make_params(int64_t d, double scale, double dropout_p, int64_t seed) {
  return make_attend_params<T>(d, scale, dropout_p, seed);
}

// The projection and its gradients are GEMMs; both the CPU and the CUDA registrations run
// these (at::matmul: MKL/oneDNN on CPU, cuBLAS on CUDA, fp32 accumulation for half types).
at::Tensor project(const at::Tensor& x, const at::Tensor& E, const c10::optional<at::Tensor>& mask);
std::tuple<at::Tensor, at::Tensor> project_backward(const at::Tensor& grad, const at::Tensor& x,
                                                    const at::Tensor& E,
                                                    const c10::optional<at::Tensor>& mask);

}  // namespace linformer
}  // namespace pyops

// CPU kernels of the Linformer ops, and the projection GEMMs shared with the CUDA registration.
//
// Projection: K' = E^T K per (batch, head) as one at::matmul (masked rows of K zeroed first).
// Attention: the row loops of linformer_cpu_loops.h (shared with the JAX binding) over the math
// of linformer.h (the same math the CUDA kernels run), in parallel.
#include <algorithm>
#include <vector>

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/matmul.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <torch/library.h>

#include "linformer_cpu_loops.h"
#include "linformer_host.h"

namespace pyops {
namespace linformer {

namespace {

at::Tensor masked_rows(const at::Tensor& x, const c10::optional<at::Tensor>& mask) {
  if (!mask.has_value()) return x;
  return x.masked_fill(mask->view({x.size(0), 1, x.size(2), 1}), 0);
}

}  // namespace

at::Tensor project(const at::Tensor& x, const at::Tensor& E, const c10::optional<at::Tensor>& mask) {
  check_project_args(x, E, mask);
  // (k, n) @ (B, H, n, d) or (H, k, n) @ (B, H, n, d) -> (B, H, k, d)
  return at::matmul(E.transpose(-1, -2), masked_rows(x, mask)).contiguous();
}

std::tuple<at::Tensor, at::Tensor> project_backward(const at::Tensor& grad, const at::Tensor& x,
                                                    const at::Tensor& E,
                                                    const c10::optional<at::Tensor>& mask) {
  check_project_args(x, E, mask);
  const int64_t B = x.size(0), H = x.size(1), n = x.size(2), d = x.size(3), k = E.size(-1);
  TORCH_CHECK(grad.dim() == 4 && grad.size(0) == B && grad.size(1) == H && grad.size(2) == k &&
                  grad.size(3) == d,
              "linformer_project_backward: grad_output must have shape (B, H, k, d) = (", B, ", ",
              H, ", ", k, ", ", d, "), got ", grad.sizes());
  check_same(grad, x, "linformer_project_backward", "grad_output", "x");
  // dx = E dK' (masked rows get nothing)
  at::Tensor dx = masked_rows(at::matmul(E, grad), mask).contiguous();
  // dE = sum over everything sharing E of x dK'^T, as one GEMM over the concatenated columns
  const at::Tensor xm = masked_rows(x, mask);
  at::Tensor dE;
  if (E.dim() == 2) {
    dE = at::matmul(xm.permute({2, 0, 1, 3}).reshape({n, B * H * d}),
                    grad.permute({0, 1, 3, 2}).reshape({B * H * d, k}));
  } else {
    dE = at::matmul(xm.permute({1, 2, 0, 3}).reshape({H, n, B * d}),
                    grad.permute({1, 0, 3, 2}).reshape({H, B * d, k}));
  }
  return {dx, dE.contiguous()};
}

namespace {

// The `pfor` of linformer_cpu_loops.h.
const auto parallel = [](int64_t n, int64_t grain, const auto& body) { at::parallel_for(0, n, grain, body); };

std::tuple<at::Tensor, at::Tensor> attend_cpu(const at::Tensor& q, const at::Tensor& kp,
                                              const at::Tensor& vp, double scale,
                                              double dropout_p, int64_t seed) {
  check_attend_args(q, kp, vp, dropout_p);
  const auto opmath = at::toOpMathType(q.scalar_type());
  const at::Tensor qf = q.to(opmath).contiguous();
  const at::Tensor kf = kp.to(opmath).contiguous();
  const at::Tensor vf = vp.to(opmath).contiguous();
  const int64_t B = q.size(0), H = q.size(1), n = q.size(2), d = q.size(3), k = kp.size(2);
  at::Tensor out = at::empty({B, H, n, d}, qf.options());
  at::Tensor lse = at::empty({B, H, n}, qf.options());
  if (out.numel() == 0 && lse.numel() == 0) return {out.to(q.scalar_type()), lse};
  AT_DISPATCH_FLOATING_TYPES(opmath, "linformer_attend_cpu", [&] {
    using T = scalar_t;
    const auto a = make_params<T>(d, scale, dropout_p, seed);
    const T* qs = qf.const_data_ptr<T>();
    const T* ks = kf.const_data_ptr<T>();
    const T* vs = vf.const_data_ptr<T>();
    T* os = out.mutable_data_ptr<T>();
    T* ls = lse.mutable_data_ptr<T>();
    attend_loops(a, qs, ks, vs, os, ls, B * H, n, d, k, parallel);
  });
  return {out.to(q.scalar_type()), lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> attend_backward_cpu(
    const at::Tensor& grad, const at::Tensor& q, const at::Tensor& kp, const at::Tensor& vp,
    const at::Tensor& out, const at::Tensor& lse_, double scale, double dropout_p, int64_t seed) {
  check_attend_args(q, kp, vp, dropout_p);
  check_attend_grad(grad, q, out, lse_);
  const auto opmath = at::toOpMathType(q.scalar_type());
  const at::Tensor qf = q.to(opmath).contiguous();
  const at::Tensor kf = kp.to(opmath).contiguous();
  const at::Tensor vf = vp.to(opmath).contiguous();
  const at::Tensor gf = grad.to(opmath).contiguous();
  const at::Tensor lse = lse_.contiguous();
  const at::Tensor delta = gf.mul(out.to(opmath)).sum(-1).contiguous();  // D_i = <dO_i, O_i>
  const int64_t B = q.size(0), H = q.size(1), n = q.size(2), d = q.size(3), k = kp.size(2);
  at::Tensor dq = at::zeros_like(qf);
  at::Tensor dk = at::zeros_like(kf);
  at::Tensor dv = at::zeros_like(vf);
  if (B * H * d > 0 && n > 0) {
    AT_DISPATCH_FLOATING_TYPES(opmath, "linformer_attend_backward_cpu", [&] {
      using T = scalar_t;
      const auto a = make_params<T>(d, scale, dropout_p, seed);
      const T* qs = qf.const_data_ptr<T>();
      const T* ks = kf.const_data_ptr<T>();
      const T* vs = vf.const_data_ptr<T>();
      const T* gs = gf.const_data_ptr<T>();
      const T* ls = lse.const_data_ptr<T>();
      const T* ds = delta.const_data_ptr<T>();
      T* dqs = dq.mutable_data_ptr<T>();
      T* dks = dk.mutable_data_ptr<T>();
      T* dvs = dv.mutable_data_ptr<T>();
      attend_backward_loops(a, qs, ks, vs, gs, ls, ds, dqs, dks, dvs, B * H, n, d, k, parallel);
    });
  }
  const auto dtype = q.scalar_type();
  return {dq.to(dtype), dk.to(dtype), dv.to(dtype)};
}

}  // namespace

TORCH_LIBRARY_IMPL(pyops, CPU, m) {
  m.impl("linformer_project", &project);
  m.impl("linformer_project_backward", &project_backward);
  m.impl("linformer_attend", &attend_cpu);
  m.impl("linformer_attend_backward", &attend_backward_cpu);
}

#ifdef PYOPS_WITH_CUDA
// The projection is a plain GEMM: on CUDA tensors at::matmul runs it with cuBLAS.
TORCH_LIBRARY_IMPL(pyops, CUDA, m) {
  m.impl("linformer_project", &project);
  m.impl("linformer_project_backward", &project_backward);
}
#endif

}  // namespace linformer
}  // namespace pyops

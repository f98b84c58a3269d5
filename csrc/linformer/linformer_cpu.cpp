// CPU kernels of the Linformer ops, and the projection GEMMs shared with the CUDA registration.
//
// Projection: K' = E^T K per (batch, head) as one at::matmul (masked rows of K zeroed first).
// Attention: ATen's fused CPU flash attention, or GEMMs over chunks of query rows with
// linformer.h's dropout mask (see attend_cpu). The row loops of linformer_cpu_loops.h serve the
// JAX CPU binding, which has no ATen.
#include <algorithm>
#include <cmath>

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/_scaled_dot_product_flash_attention_for_cpu.h>
#include <ATen/ops/_scaled_dot_product_flash_attention_for_cpu_backward.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/logsumexp.h>
#include <ATen/ops/matmul.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

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

// Attention on the CPU. Without dropout and with finite inputs: ATen's fused CPU flash attention
// over the projected K', V' (the kernel F.scaled_dot_product_attention runs; its log-sum-exp is
// the one the backward needs). Otherwise (dropout must draw linformer.h's mask; a NaN or Inf must
// spread as in the reference, which the flash kernel's running max does not do): GEMMs
// (MKL/oneDNN through at::matmul) over chunks of query rows: per
// chunk the (B, H, rows, k) scores, their softmax and the dropout factors of linformer.h's
// counter-based mask (the same mask as every other backend), then P V'. Only the chunk of q (and
// of grad/out in the backward) is converted to the op-math type, never the whole tensor; K', V'
// (k <= a few hundred rows per head) are converted once. Chunks hold ~4M scores (16 MB in
// float32): one chunk covers the whole sequence at B2 H8 n2048 k128, 341 rows at B4 H12 k256.
bool use_flash(double dropout_p, std::initializer_list<at::Tensor> inputs) {
  if (dropout_p != 0) return false;
  for (const at::Tensor& t : inputs) {
    // one reduction, finite iff no NaN/Inf (or an overflow, which only takes the exact path)
    if (!std::isfinite(t.sum().item<double>())) return false;
  }
  return true;
}

int64_t chunk_rows(int64_t BH, int64_t n, int64_t k) {
  constexpr int64_t kChunkScores = int64_t(1) << 22;
  return std::max<int64_t>(1, std::min<int64_t>(n, kChunkScores / std::max<int64_t>(1, BH * k)));
}

// Z (B, H, rows, k): the dropout factor (0 or 1 / (1 - p)) of score (b, h, r0 + r, j).
template <typename T>
at::Tensor dropout_factors(const AttendParams<T>& a, int64_t B, int64_t H, int64_t n, int64_t r0, int64_t rows,
                           int64_t k, const at::TensorOptions& options) {
  at::Tensor z = at::empty({B, H, rows, k}, options);
  T* zs = z.mutable_data_ptr<T>();
  at::parallel_for(0, B * H * rows, 16, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const uint64_t row = static_cast<uint64_t>((t / rows) * n + r0 + t % rows);  // (b * H + h) * n + i
      for (int64_t j = 0; j < k; ++j) zs[t * k + j] = a.drop.keep(row, j) ? a.keep_scale : T(0);
    }
  });
  return z;
}

at::Tensor factors(const at::Tensor& q, int64_t r0, int64_t rows, int64_t k, double scale, double dropout_p,
                   int64_t seed, const at::TensorOptions& options) {
  at::Tensor z;
  AT_DISPATCH_FLOATING_TYPES(options.dtype().toScalarType(), "linformer_dropout_factors", [&] {
    const auto a = make_params<scalar_t>(q.size(3), scale, dropout_p, seed);
    z = dropout_factors(a, q.size(0), q.size(1), q.size(2), r0, rows, k, options);
  });
  return z;
}

std::tuple<at::Tensor, at::Tensor> attend_cpu(const at::Tensor& q, const at::Tensor& kp,
                                              const at::Tensor& vp, double scale,
                                              double dropout_p, int64_t seed) {
  check_attend_args(q, kp, vp, dropout_p);
  const auto opmath = at::toOpMathType(q.scalar_type());
  const auto options = q.options().dtype(opmath);
  const int64_t B = q.size(0), H = q.size(1), n = q.size(2), d = q.size(3), k = kp.size(2);
  at::Tensor out = at::empty({B, H, n, d}, q.options());
  at::Tensor lse = at::empty({B, H, n}, options);
  if (out.numel() == 0 && lse.numel() == 0) return {out, lse};
  if (use_flash(dropout_p, {q, kp, vp})) {
    auto [o, l] = at::_scaled_dot_product_flash_attention_for_cpu(q, kp.contiguous(), vp.contiguous(), 0.0, false, {}, scale);
    return {o.contiguous(), l.contiguous()};
  }
  const at::Tensor kt = kp.to(opmath).transpose(2, 3);
  const at::Tensor vf = vp.to(opmath);
  const int64_t step = chunk_rows(B * H, n, k);
  for (int64_t r0 = 0; r0 < n; r0 += step) {
    const int64_t rows = std::min(step, n - r0);
    at::Tensor s = at::matmul(q.narrow(2, r0, rows).to(opmath), kt).mul_(scale);  // (B, H, rows, k)
    const at::Tensor l = at::logsumexp(s, {-1}, /*keepdim=*/true);
    at::Tensor p = s.sub_(l).exp_();
    p.mul_(factors(q, r0, rows, k, scale, dropout_p, seed, options));
    out.narrow(2, r0, rows).copy_(at::matmul(p, vf));
    lse.narrow(2, r0, rows).copy_(l.squeeze(-1));
  }
  return {out, lse};
}

// dV' = Pdᵀ dO, dP = (dO V'ᵀ) ∘ Z, dS = P ∘ (dP - delta), dQ = dS K' scale, dK' = dSᵀ Q scale, with
// P recomputed from the saved log-sum-exp, Pd = P ∘ Z and delta_i = <dO_i, O_i>.
std::tuple<at::Tensor, at::Tensor, at::Tensor> attend_backward_cpu(
    const at::Tensor& grad, const at::Tensor& q, const at::Tensor& kp, const at::Tensor& vp,
    const at::Tensor& out, const at::Tensor& lse, double scale, double dropout_p, int64_t seed) {
  check_attend_args(q, kp, vp, dropout_p);
  check_attend_grad(grad, q, out, lse);
  const auto opmath = at::toOpMathType(q.scalar_type());
  const auto options = q.options().dtype(opmath);
  const int64_t B = q.size(0), H = q.size(1), n = q.size(2), k = kp.size(2);
  if (q.numel() > 0 && k > 0 && use_flash(dropout_p, {q, kp, vp, grad})) {
    auto [dq, dk, dv] = at::_scaled_dot_product_flash_attention_for_cpu_backward(
        grad, q, kp.contiguous(), vp.contiguous(), out, lse, 0.0, false, {}, scale);
    return {dq.contiguous(), dk.contiguous(), dv.contiguous()};  // the layouts the fake kernel states
  }
  const at::Tensor kf = kp.to(opmath);
  const at::Tensor vf = vp.to(opmath);
  at::Tensor dq = at::zeros(q.sizes(), q.options());
  at::Tensor dk = at::zeros(kf.sizes(), options);
  at::Tensor dv = at::zeros(vf.sizes(), options);
  if (q.numel() > 0 && k > 0) {
    const at::Tensor kt = kf.transpose(2, 3), vt = vf.transpose(2, 3);
    const int64_t step = chunk_rows(B * H, n, k);
    for (int64_t r0 = 0; r0 < n; r0 += step) {
      const int64_t rows = std::min(step, n - r0);
      const at::Tensor qc = q.narrow(2, r0, rows).to(opmath);
      const at::Tensor gc = grad.narrow(2, r0, rows).to(opmath);
      const at::Tensor delta = gc.mul(out.narrow(2, r0, rows).to(opmath)).sum(-1, /*keepdim=*/true);
      at::Tensor p = at::matmul(qc, kt).mul_(scale).sub_(lse.narrow(2, r0, rows).unsqueeze(-1)).exp_();
      at::Tensor dp = at::matmul(gc, vt);
      const at::Tensor z = factors(q, r0, rows, k, scale, dropout_p, seed, options);
      dv.add_(at::matmul(p.mul(z).transpose(2, 3), gc));
      dp.mul_(z);
      const at::Tensor ds = p.mul_(dp.sub_(delta));
      dq.narrow(2, r0, rows).copy_(at::matmul(ds, kf).mul_(scale));
      dk.add_(at::matmul(ds.transpose(2, 3), qc).mul_(scale));
    }
  }
  const auto dtype = q.scalar_type();
  return {dq, dk.to(dtype), dv.to(dtype)};
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

// Torch registration of the CUDA forward of Linformer attention (the projection runs as cuBLAS
// GEMMs, see linformer_cpu.cpp). The per-row math is linformer.h, shared with the CPU kernels;
// the kernels and their thread mapping are in linformer_kernels.cuh, shared with the JAX binding.
#include "linformer_cuda_common.cuh"

namespace pyops {
namespace linformer {
namespace cuda {
namespace {

std::tuple<at::Tensor, at::Tensor> attend_cuda(const at::Tensor& q_, const at::Tensor& kp_,
                                               const at::Tensor& vp_, double scale,
                                               double dropout_p, int64_t seed) {
  check_attend_args(q_, kp_, vp_, dropout_p);
  check_cuda_args(q_, "linformer_attend");
  const c10::cuda::CUDAGuard guard(q_.device());
  const at::Tensor q = q_.contiguous(), kp = kp_.contiguous(), vp = vp_.contiguous();
  const int64_t B = q.size(0), H = q.size(1), n = q.size(2), d = q.size(3), k = kp.size(2);
  const auto opmath = at::toOpMathType(q.scalar_type());
  at::Tensor out = at::empty({B, H, n, d}, q.options());
  at::Tensor lse = at::empty({B, H, n}, q.options().dtype(opmath));
  if (B * H * n == 0) return {out, lse};
  grid_for(B * H * ((n + kRows - 1) / kRows), "row");
  auto stream = at::cuda::getCurrentCUDAStream();
  PYOPS_DISPATCH_FLOATS(q.scalar_type(), "linformer_attend_cuda", [&] {
    using T = at::opmath_type<scalar_t>;
    const auto a = make_params<T>(d, scale, dropout_p, seed);
    const cudaError_t err = launch_attend_forward<scalar_t, T>(
        a, q.const_data_ptr<scalar_t>(), kp.const_data_ptr<scalar_t>(), vp.const_data_ptr<scalar_t>(),
        out.mutable_data_ptr<scalar_t>(), lse.mutable_data_ptr<T>(), B * H, n, k, stream);
    C10_CUDA_CHECK(err);
  });
  return {out, lse};
}

}  // namespace

TORCH_LIBRARY_IMPL(pyops, CUDA, m) { m.impl("linformer_attend", &attend_cuda); }

}  // namespace cuda
}  // namespace linformer
}  // namespace pyops

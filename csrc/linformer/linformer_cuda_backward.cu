// Torch registration of the CUDA backward of Linformer attention (kernels: linformer_kernels.cuh).
#include "linformer_cuda_common.cuh"

namespace pyops {
namespace linformer {
namespace cuda {
namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor> attend_backward_cuda(
    const at::Tensor& grad_, const at::Tensor& q_, const at::Tensor& kp_, const at::Tensor& vp_,
    const at::Tensor& out, const at::Tensor& lse_, double scale, double dropout_p, int64_t seed) {
  check_attend_args(q_, kp_, vp_, dropout_p);
  check_attend_grad(grad_, q_, out, lse_);
  check_cuda_args(q_, "linformer_attend_backward");
  const c10::cuda::CUDAGuard guard(q_.device());
  const at::Tensor q = q_.contiguous(), kp = kp_.contiguous(), vp = vp_.contiguous();
  const at::Tensor grad = grad_.contiguous(), lse = lse_.contiguous();
  const int64_t B = q.size(0), H = q.size(1), n = q.size(2), d = q.size(3), k = kp.size(2);
  const auto opmath = at::toOpMathType(q.scalar_type());
  at::Tensor dq = at::empty({B, H, n, d}, q.options());
  if (B * H * n == 0) return {dq, at::zeros_like(kp), at::zeros_like(vp)};
  // D_i = <dO_i, O_i> in the op-math type
  const at::Tensor delta = grad.to(opmath).mul(out.to(opmath)).sum(-1).contiguous();
  const int64_t BH = B * H;
  // Enough blocks for the whole GPU: split the sequence when B * H * key_blocks is small.
  const int64_t sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  const int64_t splits = attend_backward_splits(BH, n, k, sms);
  at::Tensor part_k = at::empty({splits, B, H, k, d}, q.options().dtype(opmath));
  at::Tensor part_v = at::empty({splits, B, H, k, d}, q.options().dtype(opmath));
  grid_for(BH * ((n + kRows - 1) / kRows), "row");
  grid_for(BH * ((k + kKeys - 1) / kKeys) * splits, "key");
  auto stream = at::cuda::getCurrentCUDAStream();
  PYOPS_DISPATCH_FLOATS(q.scalar_type(), "linformer_attend_backward_cuda", [&] {
    using T = at::opmath_type<scalar_t>;
    const auto a = make_params<T>(d, scale, dropout_p, seed);
    const cudaError_t err = launch_attend_backward<scalar_t, T>(
        a, grad.const_data_ptr<scalar_t>(), q.const_data_ptr<scalar_t>(), kp.const_data_ptr<scalar_t>(),
        vp.const_data_ptr<scalar_t>(), lse.const_data_ptr<T>(), delta.const_data_ptr<T>(),
        dq.mutable_data_ptr<scalar_t>(), part_k.mutable_data_ptr<T>(), part_v.mutable_data_ptr<T>(), BH, n, k,
        splits, stream);
    C10_CUDA_CHECK(err);
  });
  const auto dtype = q.scalar_type();
  return {dq, part_k.sum(0).to(dtype), part_v.sum(0).to(dtype)};
}

}  // namespace

TORCH_LIBRARY_IMPL(pyops, CUDA, m) { m.impl("linformer_attend_backward", &attend_backward_cuda); }

}  // namespace cuda
}  // namespace linformer
}  // namespace pyops

// CUDA kernels of the Linformer attention backward (see linformer_cuda.cu for the mapping).
#include "linformer_cuda_common.cuh"

namespace pyops {
namespace linformer {
namespace cuda {
namespace {

template <typename scalar_t, typename T, int DM>
__global__ void __launch_bounds__(kRows)
    attend_dq_kernel(AttendParams<T> a, const scalar_t* __restrict__ grad,
                     const scalar_t* __restrict__ q, const scalar_t* __restrict__ kp,
                     const scalar_t* __restrict__ vp, const T* __restrict__ lse,
                     const T* __restrict__ delta, scalar_t* __restrict__ dq, int64_t n, int64_t k,
                     int64_t row_blocks) {
  constexpr int KT = Tile<T>::value;
  __shared__ T ks[KT * DM];
  __shared__ T vs[KT * DM];
  const int64_t bh = blockIdx.x / row_blocks;
  const int64_t i = (blockIdx.x % row_blocks) * kRows + threadIdx.x;
  const bool active = i < n;
  const int64_t row = bh * n + i;
  T qr[DM], gr[DM], acc[DM];
  load_row<scalar_t, T, DM>(qr, q + (active ? row : 0) * a.d, active, a.d);
  load_row<scalar_t, T, DM>(gr, grad + (active ? row : 0) * a.d, active, a.d);
#pragma unroll
  for (int c = 0; c < DM; ++c) acc[c] = T(0);
  const T lse_i = active ? lse[row] : T(0);
  const T delta_i = active ? delta[row] : T(0);
  const scalar_t* kb = kp + bh * k * a.d;
  const scalar_t* vb = vp + bh * k * a.d;
  for (int64_t j0 = 0; j0 < k; j0 += KT) {
    const int cnt = static_cast<int>(min(int64_t(KT), k - j0));
    __syncthreads();
    stage_rows<scalar_t, T, DM, KT>(ks, kb, j0, cnt, a.d);
    stage_rows<scalar_t, T, DM, KT>(vs, vb, j0, cnt, a.d);
    __syncthreads();
    if (active) dq_tile<T, DM>(a, qr, gr, acc, lse_i, delta_i, ks, vs, DM, cnt, j0, uint64_t(row));
  }
  if (!active) return;
#pragma unroll
  for (int c = 0; c < DM; ++c)
    if (c < a.d) dq[row * a.d + c] = static_cast<scalar_t>(acc[c] * a.scale);
}

// Partial dK', dV' of keys [kb * kKeys, ...) over the query rows of one split; written in T to
// part_k / part_v of shape (splits, B * H, k, d).
template <typename scalar_t, typename T, int DM>
__global__ void __launch_bounds__(kKeys)
    attend_dkv_kernel(AttendParams<T> a, const scalar_t* __restrict__ grad,
                      const scalar_t* __restrict__ q, const scalar_t* __restrict__ kp,
                      const scalar_t* __restrict__ vp, const T* __restrict__ lse,
                      const T* __restrict__ delta, T* __restrict__ part_k,
                      T* __restrict__ part_v, int64_t n, int64_t k, int64_t BH,
                      int64_t key_blocks, int64_t splits) {
  constexpr int R = Tile<T>::value;
  __shared__ T qs[R * DM];
  __shared__ T gs[R * DM];
  __shared__ T ls[R];
  __shared__ T ds[R];
  const int64_t kblock = blockIdx.x % key_blocks;
  const int64_t split = (blockIdx.x / key_blocks) % splits;
  const int64_t bh = blockIdx.x / (key_blocks * splits);
  const int64_t j = kblock * kKeys + threadIdx.x;
  const bool active = j < k;
  T kr[DM], vr[DM], dk[DM], dv[DM];
  load_row<scalar_t, T, DM>(kr, kp + (bh * k + (active ? j : 0)) * a.d, active, a.d);
  load_row<scalar_t, T, DM>(vr, vp + (bh * k + (active ? j : 0)) * a.d, active, a.d);
#pragma unroll
  for (int c = 0; c < DM; ++c) dk[c] = dv[c] = T(0);
  const int64_t chunk = (n + splits - 1) / splits;
  const int64_t r_begin = split * chunk;
  const int64_t r_end = min(n, r_begin + chunk);
  const scalar_t* qb = q + bh * n * a.d;
  const scalar_t* gb = grad + bh * n * a.d;
  for (int64_t r0 = r_begin; r0 < r_end; r0 += R) {
    const int64_t cnt = min(int64_t(R), r_end - r0);
    __syncthreads();
    stage_rows<scalar_t, T, DM, R>(qs, qb, r0, cnt, a.d);
    stage_rows<scalar_t, T, DM, R>(gs, gb, r0, cnt, a.d);
    for (int r = threadIdx.x; r < R; r += blockDim.x) {
      ls[r] = r < cnt ? lse[bh * n + r0 + r] : T(0);
      ds[r] = r < cnt ? delta[bh * n + r0 + r] : T(0);
    }
    __syncthreads();
    if (active) dkv_rows<T, DM>(a, kr, vr, dk, dv, qs, gs, ls, ds, DM, cnt, uint64_t(bh * n + r0), j);
  }
  if (!active) return;
  const int64_t dst = ((split * BH + bh) * k + j) * a.d;
#pragma unroll
  for (int c = 0; c < DM; ++c) {
    if (c < a.d) {
      part_k[dst + c] = dk[c] * a.scale;
      part_v[dst + c] = dv[c];
    }
  }
}

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
  const int64_t row_blocks = (n + kRows - 1) / kRows;
  const int64_t key_blocks = (k + kKeys - 1) / kKeys;
  // Enough blocks for the whole GPU: split the sequence when B * H * key_blocks is small.
  const int64_t sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  const int64_t want = (4 * sms + BH * key_blocks - 1) / (BH * key_blocks);
  const int64_t max_splits = (n + Tile<float>::value - 1) / Tile<float>::value;
  const int64_t splits = std::max<int64_t>(1, std::min(want, max_splits));
  at::Tensor part_k = at::empty({splits, B, H, k, d}, q.options().dtype(opmath));
  at::Tensor part_v = at::empty({splits, B, H, k, d}, q.options().dtype(opmath));
  const unsigned int dq_blocks = grid_for(BH * row_blocks, "row");
  const unsigned int kv_blocks = grid_for(BH * key_blocks * splits, "key");
  auto stream = at::cuda::getCurrentCUDAStream();
  PYOPS_DISPATCH_FLOATS(q.scalar_type(), "linformer_attend_backward_cuda", [&] {
    using T = at::opmath_type<scalar_t>;
    const auto a = make_params<T>(d, scale, dropout_p, seed);
    with_head_dim(d, [&](auto dm) {
      constexpr int DM = decltype(dm)::value;
      attend_dq_kernel<scalar_t, T, DM><<<dq_blocks, kRows, 0, stream>>>(
          a, grad.const_data_ptr<scalar_t>(), q.const_data_ptr<scalar_t>(),
          kp.const_data_ptr<scalar_t>(), vp.const_data_ptr<scalar_t>(), lse.const_data_ptr<T>(),
          delta.const_data_ptr<T>(), dq.mutable_data_ptr<scalar_t>(), n, k, row_blocks);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      attend_dkv_kernel<scalar_t, T, DM><<<kv_blocks, kKeys, 0, stream>>>(
          a, grad.const_data_ptr<scalar_t>(), q.const_data_ptr<scalar_t>(),
          kp.const_data_ptr<scalar_t>(), vp.const_data_ptr<scalar_t>(), lse.const_data_ptr<T>(),
          delta.const_data_ptr<T>(), part_k.mutable_data_ptr<T>(), part_v.mutable_data_ptr<T>(),
          n, k, BH, key_blocks, splits);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
  const auto dtype = q.scalar_type();
  return {dq, part_k.sum(0).to(dtype), part_v.sum(0).to(dtype)};
}

}  // namespace

TORCH_LIBRARY_IMPL(pyops, CUDA, m) { m.impl("linformer_attend_backward", &attend_backward_cuda); }

}  // namespace cuda
}  // namespace linformer
}  // namespace pyops

// CUDA kernels of Linformer attention (the projection runs as cuBLAS GEMMs, see
// linformer_cpu.cpp). The per-row math is linformer.h, shared with the CPU kernels; this file
// maps it onto threads:
//  - forward and dQ: one thread per query row (rows in registers, padded to DM), the block's
//    threads stage tiles of the small K', V' (k x d per head) through shared memory; the
//    forward keeps an online softmax per row and writes only O and the log-sum-exp;
//  - dK', dV': one thread per projected key, the block stages tiles of query rows (Q, dO,
//    lse, D) through shared memory; the sequence is split over blocks and the fp32 partial
//    sums are added afterwards in a fixed order (deterministic, no atomics).
// P is recomputed from the saved log-sum-exp in both backward kernels.
#include "linformer_cuda_common.cuh"

namespace pyops {
namespace linformer {
namespace cuda {
namespace {

template <typename scalar_t, typename T, int DM>
__global__ void __launch_bounds__(kRows)
    attend_fwd_kernel(AttendParams<T> a, const scalar_t* __restrict__ q,
                      const scalar_t* __restrict__ kp, const scalar_t* __restrict__ vp,
                      scalar_t* __restrict__ out, T* __restrict__ lse, int64_t n, int64_t k,
                      int64_t row_blocks) {
  constexpr int KT = Tile<T>::value;
  __shared__ T ks[KT * DM];
  __shared__ T vs[KT * DM];
  const int64_t bh = blockIdx.x / row_blocks;
  const int64_t i = (blockIdx.x % row_blocks) * kRows + threadIdx.x;
  const bool active = i < n;
  const int64_t row = bh * n + i;
  T qr[DM], acc[DM];
  load_row<scalar_t, T, DM>(qr, q + (active ? row : 0) * a.d, active, a.d);
#pragma unroll
  for (int c = 0; c < DM; ++c) acc[c] = T(0);
  T m = -INFINITY, l = T(0);
  const scalar_t* kb = kp + bh * k * a.d;
  const scalar_t* vb = vp + bh * k * a.d;
  for (int64_t j0 = 0; j0 < k; j0 += KT) {
    const int cnt = static_cast<int>(min(int64_t(KT), k - j0));
    __syncthreads();  // the previous tile is no longer read
    stage_rows<scalar_t, T, DM, KT>(ks, kb, j0, cnt, a.d);
    stage_rows<scalar_t, T, DM, KT>(vs, vb, j0, cnt, a.d);
    __syncthreads();
    if (active) forward_tile<T, DM>(a, qr, acc, m, l, ks, vs, DM, cnt, j0, uint64_t(row));
  }
  if (!active) return;
#pragma unroll
  for (int c = 0; c < DM; ++c)
    if (c < a.d) out[row * a.d + c] = static_cast<scalar_t>(acc[c] / l);
  lse[row] = finish_row(m, l);
}

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
  const int64_t row_blocks = (n + kRows - 1) / kRows;
  const unsigned int blocks = grid_for(B * H * row_blocks, "row");
  auto stream = at::cuda::getCurrentCUDAStream();
  PYOPS_DISPATCH_FLOATS(q.scalar_type(), "linformer_attend_cuda", [&] {
    using T = at::opmath_type<scalar_t>;
    const auto a = make_params<T>(d, scale, dropout_p, seed);
    with_head_dim(d, [&](auto dm) {
      attend_fwd_kernel<scalar_t, T, decltype(dm)::value><<<blocks, kRows, 0, stream>>>(
          a, q.const_data_ptr<scalar_t>(), kp.const_data_ptr<scalar_t>(),
          vp.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(),
          lse.mutable_data_ptr<T>(), n, k, row_blocks);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
  return {out, lse};
}

}  // namespace

TORCH_LIBRARY_IMPL(pyops, CUDA, m) { m.impl("linformer_attend", &attend_cuda); }

}  // namespace cuda
}  // namespace linformer
}  // namespace pyops

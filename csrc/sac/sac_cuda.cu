// CUDA kernels of the switchable atrous convolution's fused steps (math in sac.h), plugged into
// the shared composition of sac_host.h; the two convolutions are cuDNN's (at::convolution).
// Mappings:
// - elementwise steps (blend forward, input gradient, switch pool and its adjoint): one thread
//   per output value in storage order (coalesced in both layouts);
// - the pre-pass and the blend backward reduce over channels per pixel: in NCHW one thread per
//   pixel loops over the channels (neighbouring threads read neighbouring pixels); in
//   channels_last one warp per pixel, lanes over channels, then a warp reduction;
// - per-row reductions of parameters (AWS, the contexts): one warp per row;
// - the channel sums of the input gradient: one thread per (image, 32-pixel chunk, channel),
//   partial sums the host adds up, so every reduction has a fixed order (no atomics).
#include <limits>

#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "sac_host.h"

namespace pyops {
namespace sac {
namespace {

constexpr int kThreads = 256;
constexpr int kWarp = 32;
constexpr int kWarpsPerBlock = kThreads / kWarp;

int64_t blocks_for(int64_t items, int64_t per_block = kThreads) {
  const int64_t blocks = (items + per_block - 1) / per_block;
  TORCH_CHECK(blocks <= std::numeric_limits<int32_t>::max(), "sac_conv2d: ", items,
              " work items are too many for one CUDA launch; split the batch");
  return blocks;
}

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// One thread per work item of a functor with item(t) (sac.h: LinearBackward).
template <typename F>
__global__ void items_kernel(F f, int64_t items) {
  const int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t < items) f.item(t);
}

// Context: one warp (threadIdx.y) per output (n, j), lanes over k.
template <typename wt, typename T>
__global__ void linear_kernel(const T* v, const wt* W, const wt* b, int64_t N, int64_t J, int64_t K, T* out) {
  const int64_t i = int64_t(blockIdx.x) * kWarpsPerBlock + threadIdx.y;
  if (i >= N * J) return;  // the whole warp leaves together
  const T acc = warp_sum(linear_partial(W, v, K, i / J, i % J, int64_t(threadIdx.x), int64_t(kWarp)));
  if (threadIdx.x == 0) out[i] = static_cast<T>(b[i % J]) + acc;
}

// Pre-pass, NCHW: one thread per pixel.
template <typename scalar_t, typename T>
__global__ void context_switch_dot_kernel(const scalar_t* x, const T* ctx, const scalar_t* w_s, Dense4d L,
                                          scalar_t* xp, T* z) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= L.N * L.HW) return;
  z[i] = context_switch_dot(x, ctx, w_s, L, i / L.HW, i % L.HW, int64_t(0), int64_t(1), xp);
}

// Pre-pass, channels_last: one warp (threadIdx.y) per pixel, lanes (threadIdx.x) over channels.
template <typename scalar_t, typename T>
__global__ void context_switch_dot_rows_kernel(const scalar_t* x, const T* ctx, const scalar_t* w_s, Dense4d L,
                                               scalar_t* xp, T* z) {
  const int64_t i = int64_t(blockIdx.x) * kWarpsPerBlock + threadIdx.y;
  if (i >= L.N * L.HW) return;  // the whole warp leaves together
  const T acc = warp_sum(context_switch_dot(x, ctx, w_s, L, i / L.HW, i % L.HW, int64_t(threadIdx.x),
                                            int64_t(kWarp), xp));
  if (threadIdx.x == 0) z[i] = acc;
}

// One thread per switch value (n, ho, wo).
template <typename scalar_t, typename T>
__global__ void switch_pool_kernel(const T* z, const scalar_t* bias, int64_t N, int64_t H, int64_t W, int64_t Ho,
                                   int64_t Wo, int64_t SH, int64_t SW, T* s) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= N * Ho * Wo) return;
  s[i] = switch_pool(z, H, W, SH, SW, i / (Ho * Wo), (i / Wo) % Ho, i % Wo) + static_cast<T>(bias[0]);
}

// One thread per input pixel (n, h, w).
template <typename T>
__global__ void switch_pool_adjoint_kernel(const T* g, int64_t N, int64_t H, int64_t W, int64_t Ho, int64_t Wo,
                                           int64_t SH, int64_t SW, T* q) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= N * H * W) return;
  q[i] = switch_pool_adjoint(g, H, W, Ho, Wo, SH, SW, i / (H * W), (i / W) % H, i % W);
}

// Mean and 1 / sigma of row o of the weight w, by the warp (lane = threadIdx.x); every lane gets them.
template <typename scalar_t, typename T>
__device__ void warp_aws_stats(const scalar_t* w, WeightRow R, int64_t o, T eps, T& mean, T& inv_sigma) {
  const int64_t lane = threadIdx.x;
  mean = warp_sum(row_sum<scalar_t, T>(w, R, o, lane, kWarp)) / static_cast<T>(R.M());
  inv_sigma = aws_inv_sigma(warp_sum(row_sq_dev(w, R, o, mean, lane, kWarp)), R.M(), eps);
}

// AWS: one warp (threadIdx.y) per output channel o, lanes over the row.
template <typename scalar_t, typename T>
__global__ void aws_kernel(const scalar_t* w, const scalar_t* weight_diff, const scalar_t* gamma,
                           const scalar_t* beta, WeightRow R, WeightRow Ro, int64_t O, T eps, scalar_t* w_small,
                           scalar_t* w_large) {
  const int64_t o = int64_t(blockIdx.x) * kWarpsPerBlock + threadIdx.y;
  if (o >= O) return;  // the whole warp leaves together
  const int64_t lane = threadIdx.x;
  T mean, inv_sigma;
  warp_aws_stats(w, R, o, eps, mean, inv_sigma);
  aws_write(w, weight_diff, R, Ro, o, mean, inv_sigma, static_cast<T>(gamma[o]), static_cast<T>(beta[o]), lane,
            int64_t(kWarp), w_small, w_large);
}

template <typename scalar_t, typename T>
__global__ void aws_backward_kernel(const scalar_t* gw_small, WeightRow Rs, const scalar_t* gw_large, WeightRow Rl,
                                    const scalar_t* w, const scalar_t* gamma, WeightRow R, int64_t O, T eps,
                                    scalar_t* g_w, scalar_t* g_gamma, scalar_t* g_beta) {
  const int64_t o = int64_t(blockIdx.x) * kWarpsPerBlock + threadIdx.y;
  if (o >= O) return;  // the whole warp leaves together
  const int64_t lane = threadIdx.x;
  T mean, inv_sigma, sum_g, sum_g_std;
  warp_aws_stats(w, R, o, eps, mean, inv_sigma);
  aws_grad_sums(gw_small, Rs, gw_large, Rl, w, R, o, mean, inv_sigma, lane, int64_t(kWarp), sum_g, sum_g_std);
  sum_g = warp_sum(sum_g);
  sum_g_std = warp_sum(sum_g_std);
  aws_grad_write(gw_small, Rs, gw_large, Rl, w, R, o, mean, inv_sigma, static_cast<T>(gamma[o]), sum_g, sum_g_std,
                 lane, int64_t(kWarp), g_w);
  if (lane == 0) {
    g_gamma[o] = static_cast<scalar_t>(sum_g_std);
    g_beta[o] = static_cast<scalar_t>(sum_g);
  }
}

// Channel sums for the input gradient: one thread per (image n, pixel chunk, channel c), so
// neighbouring threads read neighbouring channels (channels_last) or their own run of pixels.
template <typename scalar_t, typename T>
__global__ void input_grad_sums_kernel(const scalar_t* gx_small, const scalar_t* gx_large, const scalar_t* xp,
                                       const T* q, const scalar_t* w_s, Dense4d L, int64_t chunks,
                                       int64_t chunk, T* ctx_part, T* switch_part) {
  const int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= L.N * chunks * L.C) return;
  const int64_t c = t % L.C, k = (t / L.C) % chunks, n = t / (L.C * chunks);
  const int64_t p0 = k * chunk, p1 = p0 + chunk < L.HW ? p0 + chunk : L.HW;
  input_grad_sums(gx_small, gx_large, xp, q, static_cast<T>(w_s[c]), L, n, c, p0, p1, ctx_part[t], switch_part[t]);
}

template <typename scalar_t, typename T>
__global__ void input_grad_kernel(const scalar_t* gx_small, const scalar_t* gx_large, const T* q,
                                  const scalar_t* w_s, const T* corr, Dense4d L, scalar_t* gx) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= L.numel()) return;
  gx[i] = input_grad_at(gx_small, gx_large, q, w_s, corr, L, i);
}

template <typename scalar_t, typename T>
__global__ void blend_forward_kernel(scalar_t* small, scalar_t* large, const T* s, const scalar_t* bias, Dense4d L) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= L.numel()) return;
  int64_t n, o, p;
  L.decode(i, n, o, p);
  blend_forward(small, large, i, s[n * L.HW + p], bias != nullptr ? static_cast<T>(bias[o]) : T(0));
}

template <typename scalar_t, typename T>
__global__ void blend_backward_kernel(const scalar_t* grad_out, const scalar_t* diff, const T* s,
                                      const T* ctx_grad, Dense4d L, scalar_t* g_small,
                                      scalar_t* g_large, T* g_switch) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= L.N * L.HW) return;
  g_switch[i] = blend_backward(grad_out, diff, ctx_grad, s[i], L, i / L.HW, i % L.HW, int64_t(0),
                               int64_t(1), g_small, g_large);
}

template <typename scalar_t, typename T>
__global__ void blend_backward_rows_kernel(const scalar_t* grad_out, const scalar_t* diff, const T* s,
                                           const T* ctx_grad, Dense4d L, scalar_t* g_small,
                                           scalar_t* g_large, T* g_switch) {
  const int64_t i = int64_t(blockIdx.x) * kWarpsPerBlock + threadIdx.y;
  if (i >= L.N * L.HW) return;  // the whole warp leaves together
  const T acc = warp_sum(blend_backward(grad_out, diff, ctx_grad, s[i], L, i / L.HW, i % L.HW,
                                        int64_t(threadIdx.x), int64_t(kWarp), g_small, g_large));
  if (threadIdx.x == 0) g_switch[i] = acc;
}

template <typename F>
void launch_items(const F& f) {
  const int64_t items = f.items();
  if (items == 0) return;
  items_kernel<<<blocks_for(items), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(f, items);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void linear_cuda(const at::Tensor& v, const at::Tensor& W, const at::Tensor& b, at::Tensor& out) {
  const int64_t N = v.size(0), J = W.size(0), K = W.size(1);
  if (N * J == 0) return;
  PYOPS_SAC_DISPATCH(W.scalar_type(), "sac_linear_cuda", [&] {
    using T = opmath_t<scalar_t>;
    linear_kernel<scalar_t, T><<<blocks_for(N * J, kWarpsPerBlock), dim3(kWarp, kWarpsPerBlock), 0,
                                 at::cuda::getCurrentCUDAStream()>>>(
        v.const_data_ptr<T>(), W.const_data_ptr<scalar_t>(), b.const_data_ptr<scalar_t>(), N, J, K,
        out.mutable_data_ptr<T>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

void context_switch_dot_cuda(const at::Tensor& x, const at::Tensor& ctx, const at::Tensor& w_s, bool channels_last,
                             at::Tensor& xp, at::Tensor& z) {
  const Dense4d L = dense4d(x, channels_last);
  if (L.N * L.HW == 0) return;
  auto stream = at::cuda::getCurrentCUDAStream();
  PYOPS_SAC_DISPATCH(x.scalar_type(), "sac_context_switch_dot_cuda", [&] {
    using T = opmath_t<scalar_t>;
    const scalar_t* xd = x.const_data_ptr<scalar_t>();
    const T* c = ctx.const_data_ptr<T>();
    const scalar_t* w = w_s.const_data_ptr<scalar_t>();
    scalar_t* xpd = xp.mutable_data_ptr<scalar_t>();
    T* zd = z.mutable_data_ptr<T>();
    if (channels_last) {
      context_switch_dot_rows_kernel<scalar_t, T>
          <<<blocks_for(L.N * L.HW, kWarpsPerBlock), dim3(kWarp, kWarpsPerBlock), 0, stream>>>(xd, c, w, L, xpd, zd);
    } else {
      context_switch_dot_kernel<scalar_t, T><<<blocks_for(L.N * L.HW), kThreads, 0, stream>>>(xd, c, w, L, xpd, zd);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

void switch_pool_cuda(const at::Tensor& z, const at::Tensor& bias, int64_t SH, int64_t SW, at::Tensor& s) {
  const int64_t N = z.size(0), H = z.size(1), W = z.size(2), Ho = s.size(2), Wo = s.size(3);
  if (s.numel() == 0) return;
  PYOPS_SAC_DISPATCH(bias.scalar_type(), "sac_switch_pool_cuda", [&] {
    using T = opmath_t<scalar_t>;
    switch_pool_kernel<scalar_t, T><<<blocks_for(s.numel()), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
        z.const_data_ptr<T>(), bias.const_data_ptr<scalar_t>(), N, H, W, Ho, Wo, SH, SW, s.mutable_data_ptr<T>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

void switch_pool_adjoint_cuda(const at::Tensor& g, int64_t SH, int64_t SW, at::Tensor& q) {
  const int64_t N = q.size(0), H = q.size(1), W = q.size(2), Ho = g.size(1), Wo = g.size(2);
  if (q.numel() == 0) return;
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "sac_switch_pool_adjoint_cuda", [&] {
    switch_pool_adjoint_kernel<scalar_t><<<blocks_for(q.numel()), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
        g.const_data_ptr<scalar_t>(), N, H, W, Ho, Wo, SH, SW, q.mutable_data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

void aws_cuda(const at::Tensor& weight, const at::Tensor& gamma, const at::Tensor& beta, const at::Tensor& weight_diff,
              at::Tensor& w_small, at::Tensor& w_large) {
  const int64_t O = weight.size(0);
  if (weight.numel() == 0) return;
  PYOPS_SAC_DISPATCH(weight.scalar_type(), "sac_aws_cuda", [&] {
    using T = opmath_t<scalar_t>;
    aws_kernel<scalar_t, T><<<blocks_for(O, kWarpsPerBlock), dim3(kWarp, kWarpsPerBlock), 0,
                              at::cuda::getCurrentCUDAStream()>>>(
        weight.const_data_ptr<scalar_t>(), weight_diff.const_data_ptr<scalar_t>(), gamma.const_data_ptr<scalar_t>(),
        beta.const_data_ptr<scalar_t>(), weight_row(weight), weight_row(w_small), O, T(kAwsEps),
        w_small.mutable_data_ptr<scalar_t>(), w_large.mutable_data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

void aws_backward_cuda(const at::Tensor& gw_small, const at::Tensor& gw_large, const at::Tensor& weight,
                       const at::Tensor& gamma, at::Tensor& g_weight, at::Tensor& g_gamma, at::Tensor& g_beta) {
  const int64_t O = weight.size(0);
  if (weight.numel() == 0) return;
  PYOPS_SAC_DISPATCH(weight.scalar_type(), "sac_aws_backward_cuda", [&] {
    using T = opmath_t<scalar_t>;
    aws_backward_kernel<scalar_t, T><<<blocks_for(O, kWarpsPerBlock), dim3(kWarp, kWarpsPerBlock), 0,
                                       at::cuda::getCurrentCUDAStream()>>>(
        gw_small.const_data_ptr<scalar_t>(), weight_row(gw_small), gw_large.const_data_ptr<scalar_t>(),
        weight_row(gw_large), weight.const_data_ptr<scalar_t>(), gamma.const_data_ptr<scalar_t>(),
        weight_row(weight), O, T(kAwsEps), g_weight.mutable_data_ptr<scalar_t>(),
        g_gamma.mutable_data_ptr<scalar_t>(), g_beta.mutable_data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

void blend_forward_cuda(at::Tensor& small, at::Tensor& large, const at::Tensor& s, const OptTensor& bias,
                        bool channels_last) {
  const Dense4d L = dense4d(small, channels_last);
  if (L.numel() == 0) return;
  PYOPS_SAC_DISPATCH(small.scalar_type(), "sac_blend_forward_cuda", [&] {
    using T = opmath_t<scalar_t>;
    blend_forward_kernel<scalar_t, T><<<blocks_for(L.numel()), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
        small.mutable_data_ptr<scalar_t>(), large.mutable_data_ptr<scalar_t>(), s.const_data_ptr<T>(),
        bias.has_value() ? bias->const_data_ptr<scalar_t>() : nullptr, L);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

void blend_backward_cuda(const at::Tensor& grad_out, const at::Tensor& diff, const at::Tensor& s,
                         const at::Tensor& ctx_grad, bool channels_last, at::Tensor& g_small, at::Tensor& g_large,
                         at::Tensor& g_switch) {
  const Dense4d L = dense4d(grad_out, channels_last);
  if (L.N * L.HW == 0) return;
  auto stream = at::cuda::getCurrentCUDAStream();
  PYOPS_SAC_DISPATCH(grad_out.scalar_type(), "sac_blend_backward_cuda", [&] {
    using T = opmath_t<scalar_t>;
    const scalar_t* g = grad_out.const_data_ptr<scalar_t>();
    const scalar_t* d = diff.const_data_ptr<scalar_t>();
    const T* sw = s.const_data_ptr<T>();
    const T* cg = ctx_grad.const_data_ptr<T>();
    scalar_t* gs = g_small.mutable_data_ptr<scalar_t>();
    scalar_t* gl = g_large.mutable_data_ptr<scalar_t>();
    T* gsw = g_switch.mutable_data_ptr<T>();
    if (channels_last) {
      blend_backward_rows_kernel<scalar_t, T>
          <<<blocks_for(L.N * L.HW, kWarpsPerBlock), dim3(kWarp, kWarpsPerBlock), 0, stream>>>(g, d, sw, cg, L, gs, gl, gsw);
    } else {
      blend_backward_kernel<scalar_t, T><<<blocks_for(L.N * L.HW), kThreads, 0, stream>>>(g, d, sw, cg, L, gs, gl, gsw);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

void linear_backward_cuda(const at::Tensor& g, const at::Tensor& v, const at::Tensor& W, double scale,
                          at::Tensor& g_W, at::Tensor& g_v, at::Tensor& g_b, at::Tensor& g_vbias) {
  PYOPS_SAC_DISPATCH(W.scalar_type(), "sac_linear_backward_cuda", [&] {
    using T = opmath_t<scalar_t>;
    launch_items(LinearBackward<scalar_t, T>{
        g.const_data_ptr<T>(), v.const_data_ptr<T>(), W.const_data_ptr<scalar_t>(), g.size(0), W.size(0), W.size(1),
        static_cast<T>(scale), g_W.mutable_data_ptr<scalar_t>(), g_v.mutable_data_ptr<T>(),
        g_b.mutable_data_ptr<scalar_t>(), g_vbias.defined() ? g_vbias.mutable_data_ptr<scalar_t>() : nullptr});
  });
}

void input_grad_sums_cuda(const at::Tensor& gx_small, const at::Tensor& gx_large, const at::Tensor& xp,
                          const at::Tensor& q, const at::Tensor& w_s, bool channels_last, at::Tensor& ctx_part,
                          at::Tensor& switch_part) {
  const Dense4d L = dense4d(xp, channels_last);
  const int64_t chunks = ctx_part.size(1), items = ctx_part.numel();
  if (items == 0) return;
  PYOPS_SAC_DISPATCH(xp.scalar_type(), "sac_input_grad_sums_cuda", [&] {
    using T = opmath_t<scalar_t>;
    input_grad_sums_kernel<scalar_t, T><<<blocks_for(items), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
        gx_small.const_data_ptr<scalar_t>(), gx_large.const_data_ptr<scalar_t>(), xp.const_data_ptr<scalar_t>(),
        q.const_data_ptr<T>(), w_s.const_data_ptr<scalar_t>(), L, chunks, (L.HW + chunks - 1) / chunks,
        ctx_part.mutable_data_ptr<T>(), switch_part.mutable_data_ptr<T>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

void input_grad_cuda(const at::Tensor& gx_small, const at::Tensor& gx_large, const at::Tensor& q, const at::Tensor& w_s,
                     const at::Tensor& corr, bool channels_last, at::Tensor& gx) {
  const Dense4d L = dense4d(gx, channels_last);
  if (L.numel() == 0) return;
  PYOPS_SAC_DISPATCH(gx.scalar_type(), "sac_input_grad_cuda", [&] {
    using T = opmath_t<scalar_t>;
    input_grad_kernel<scalar_t, T><<<blocks_for(L.numel()), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
        gx_small.const_data_ptr<scalar_t>(), gx_large.const_data_ptr<scalar_t>(), q.const_data_ptr<T>(),
        w_s.const_data_ptr<scalar_t>(), corr.const_data_ptr<T>(), L, gx.mutable_data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

constexpr SacKernels kCudaKernels{&linear_cuda,         &context_switch_dot_cuda, &switch_pool_cuda,
                                  &switch_pool_adjoint_cuda, &aws_cuda,           &aws_backward_cuda,
                                  &blend_forward_cuda,  &blend_backward_cuda,     &linear_backward_cuda,
                                  &input_grad_sums_cuda, &input_grad_cuda};

SacKernels with_dual_conv(SacKernels k) {
  k.dual_conv = &dual_conv_cuda;
  return k;
}
const SacKernels kCudaIgemmKernels = with_dual_conv(kCudaKernels);

SacForward sac_conv2d_cuda(
    const at::Tensor& x, const at::Tensor& weight, const at::Tensor& gamma, const at::Tensor& beta,
    const at::Tensor& weight_diff, const at::Tensor& switch_weight, const at::Tensor& switch_bias,
    const at::Tensor& pre_weight, const at::Tensor& pre_bias, const at::Tensor& post_weight,
    const at::Tensor& post_bias, const OptTensor& bias, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  const c10::cuda::CUDAGuard guard(x.device());
  return sac_forward(kCudaKernels, x, weight, gamma, beta, weight_diff, switch_weight, switch_bias,
                     pre_weight, pre_bias, post_weight, post_bias, bias, stride, padding, dilation, groups);
}

SacForward sac_conv2d_igemm_cuda(
    const at::Tensor& x, const at::Tensor& weight, const at::Tensor& gamma, const at::Tensor& beta,
    const at::Tensor& weight_diff, const at::Tensor& switch_weight, const at::Tensor& switch_bias,
    const at::Tensor& pre_weight, const at::Tensor& pre_bias, const at::Tensor& post_weight,
    const at::Tensor& post_bias, const OptTensor& bias, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  const c10::cuda::CUDAGuard guard(x.device());
  return sac_forward(kCudaIgemmKernels, x, weight, gamma, beta, weight_diff, switch_weight, switch_bias,
                     pre_weight, pre_bias, post_weight, post_bias, bias, stride, padding, dilation, groups);
}

std::vector<at::Tensor> sac_conv2d_backward_cuda(
    const at::Tensor& grad_out, const at::Tensor& xp, const at::Tensor& weight, const at::Tensor& gamma,
    const at::Tensor& beta, const at::Tensor& weight_diff, const at::Tensor& switch_weight,
    const at::Tensor& pre_weight, const at::Tensor& post_weight,
    const at::Tensor& s, const at::Tensor& diff, const at::Tensor& x_mean, const at::Tensor& y_mean,
    at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  const c10::cuda::CUDAGuard guard(xp.device());
  return sac_backward(kCudaKernels, grad_out, xp, weight, gamma, beta, weight_diff, switch_weight,
                      pre_weight, post_weight, s, diff, x_mean, y_mean, stride, padding,
                      dilation, groups);
}

}  // namespace

TORCH_LIBRARY_IMPL(pyops, CUDA, m) {
  m.impl("sac_conv2d", &sac_conv2d_cuda);
  m.impl("sac_conv2d_backward", &sac_conv2d_backward_cuda);
  // the igemm forward (sac_igemm_cuda.cu) saves what the composition saves: same backward
  m.impl("sac_conv2d_igemm", &sac_conv2d_igemm_cuda);
  m.impl("sac_conv2d_backward_igemm", &sac_conv2d_backward_cuda);
}

}  // namespace sac
}  // namespace pyops

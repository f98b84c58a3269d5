// CUDA kernels of the switchable atrous convolution's fused steps (math in sac.h), plugged into
// the shared composition of sac_host.h; the two convolutions are cuDNN's (at::convolution).
// Mappings: the blend forward is one thread per element in storage order (coalesced in both
// layouts). The switch pre-pass and the blend backward reduce over channels per pixel: in NCHW
// one thread per pixel loops over the channels (neighbouring threads read neighbouring pixels);
// in channels_last one warp per pixel, lanes over channels, then a fixed-order warp reduction.
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

Dense4d layout(const at::Tensor& t, bool channels_last) {
  return Dense4d{t.size(0), t.size(1), t.size(2) * t.size(3), channels_last};
}

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// NCHW: one thread per pixel.
template <typename scalar_t, typename T>
__global__ void switch_dot_kernel(const scalar_t* x, const T* w, Dense4d L, T* z) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= L.N * L.HW) return;
  z[i] = switch_dot(x, w, L, i / L.HW, i % L.HW, int64_t(0), int64_t(1));
}

// channels_last: one warp (threadIdx.y) per pixel, lanes (threadIdx.x) over channels.
template <typename scalar_t, typename T>
__global__ void switch_dot_rows_kernel(const scalar_t* x, const T* w, Dense4d L, T* z) {
  const int64_t i = int64_t(blockIdx.x) * kWarpsPerBlock + threadIdx.y;
  if (i >= L.N * L.HW) return;  // the whole warp leaves together
  const T acc = warp_sum(switch_dot(x, w, L, i / L.HW, i % L.HW, int64_t(threadIdx.x), int64_t(kWarp)));
  if (threadIdx.x == 0) z[i] = acc;
}

template <typename scalar_t, typename T>
__global__ void blend_forward_kernel(scalar_t* small, scalar_t* large, const T* s, const T* bias, Dense4d L) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= L.numel()) return;
  int64_t n, o, p;
  L.decode(i, n, o, p);
  blend_forward(small, large, i, s[n * L.HW + p], bias != nullptr ? bias[o] : T(0));
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

at::Tensor switch_dot_cuda(const at::Tensor& x, const at::Tensor& w, bool channels_last) {
  const Dense4d L = layout(x, channels_last);
  at::Tensor z = at::empty({x.size(0), x.size(2), x.size(3)}, w.options());
  if (z.numel() == 0) return z;
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "sac_switch_dot_cuda", [&] {
    using T = opmath_t<scalar_t>;
    if (channels_last) {
      switch_dot_rows_kernel<scalar_t, T><<<blocks_for(L.N * L.HW, kWarpsPerBlock), dim3(kWarp, kWarpsPerBlock), 0, stream>>>(
          x.const_data_ptr<scalar_t>(), w.const_data_ptr<T>(), L, z.mutable_data_ptr<T>());
    } else {
      switch_dot_kernel<scalar_t, T><<<blocks_for(L.N * L.HW), kThreads, 0, stream>>>(
          x.const_data_ptr<scalar_t>(), w.const_data_ptr<T>(), L, z.mutable_data_ptr<T>());
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return z;
}

void blend_forward_cuda(at::Tensor& small, at::Tensor& large, const at::Tensor& s, const OptTensor& bias,
                        bool channels_last) {
  const Dense4d L = layout(small, channels_last);
  if (L.numel() == 0) return;
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, small.scalar_type(), "sac_blend_forward_cuda", [&] {
    using T = opmath_t<scalar_t>;
    blend_forward_kernel<scalar_t, T><<<blocks_for(L.numel()), kThreads, 0, stream>>>(
        small.mutable_data_ptr<scalar_t>(), large.mutable_data_ptr<scalar_t>(), s.const_data_ptr<T>(),
        bias.has_value() ? bias->const_data_ptr<T>() : nullptr, L);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> blend_backward_cuda(const at::Tensor& grad_out,
                                                                   const at::Tensor& diff,
                                                                   const at::Tensor& s,
                                                                   const at::Tensor& ctx_grad,
                                                                   bool channels_last) {
  const Dense4d L = layout(grad_out, channels_last);
  const auto fmt = format_of(channels_last);
  at::Tensor g_small = at::empty_like(grad_out, fmt);
  at::Tensor g_large = at::empty_like(grad_out, fmt);
  at::Tensor g_switch = at::empty_like(s);
  if (L.N * L.HW == 0) return {g_small, g_large, g_switch};
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad_out.scalar_type(), "sac_blend_backward_cuda", [&] {
    using T = opmath_t<scalar_t>;
    const scalar_t* g = grad_out.const_data_ptr<scalar_t>();
    const scalar_t* d = diff.const_data_ptr<scalar_t>();
    scalar_t* gs = g_small.mutable_data_ptr<scalar_t>();
    scalar_t* gl = g_large.mutable_data_ptr<scalar_t>();
    if (channels_last) {
      blend_backward_rows_kernel<scalar_t, T><<<blocks_for(L.N * L.HW, kWarpsPerBlock), dim3(kWarp, kWarpsPerBlock), 0, stream>>>(
          g, d, s.const_data_ptr<T>(), ctx_grad.const_data_ptr<T>(), L, gs, gl, g_switch.mutable_data_ptr<T>());
    } else {
      blend_backward_kernel<scalar_t, T><<<blocks_for(L.N * L.HW), kThreads, 0, stream>>>(
          g, d, s.const_data_ptr<T>(), ctx_grad.const_data_ptr<T>(), L, gs, gl, g_switch.mutable_data_ptr<T>());
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {g_small, g_large, g_switch};
}

const SacKernels kCudaKernels{&switch_dot_cuda, &blend_forward_cuda, &blend_backward_cuda};
const SacKernels kCudaIgemmKernels{&switch_dot_cuda, &blend_forward_cuda, &blend_backward_cuda, &dual_conv_cuda};

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> sac_conv2d_cuda(
    const at::Tensor& x, const at::Tensor& weight, const at::Tensor& gamma, const at::Tensor& beta,
    const at::Tensor& weight_diff, const at::Tensor& switch_weight, const at::Tensor& switch_bias,
    const at::Tensor& pre_weight, const at::Tensor& pre_bias, const at::Tensor& post_weight,
    const at::Tensor& post_bias, const OptTensor& bias, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  const c10::cuda::CUDAGuard guard(x.device());
  return sac_forward(kCudaKernels, x, weight, gamma, beta, weight_diff, switch_weight, switch_bias,
                     pre_weight, pre_bias, post_weight, post_bias, bias, stride, padding, dilation, groups);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> sac_conv2d_igemm_cuda(
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
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& weight, const at::Tensor& gamma,
    const at::Tensor& beta, const at::Tensor& weight_diff, const at::Tensor& switch_weight,
    const at::Tensor& pre_weight, const at::Tensor& pre_bias, const at::Tensor& post_weight,
    const at::Tensor& s, const at::Tensor& diff, const at::Tensor& x_mean, const at::Tensor& y_mean,
    at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  const c10::cuda::CUDAGuard guard(x.device());
  return sac_backward(kCudaKernels, grad_out, x, weight, gamma, beta, weight_diff, switch_weight,
                      pre_weight, pre_bias, post_weight, s, diff, x_mean, y_mean, stride, padding,
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

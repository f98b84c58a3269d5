// CUDA kernels of the deformable convolution (math in deform.h), plugged into deform_host.h; the
// GEMMs are cuBLAS's (at::bmm / at::baddbmm).
//
// Design (spec shape N8 C256 64x64, O256, 3x3, one offset group, bf16, H200):
// - im2col: one thread per (image, offset group, kernel point, output pixel), pixels fastest, so
//   a warp reads 32 neighbouring offsets and writes 32 neighbouring column values per channel; the
//   taps are computed once and reused for the group's channels. Writes C*9*HW*N*2 B = 151 MB
//   (the columns), reads the input's corners mostly from L1/L2 (neighbouring pixels share them):
//   ~151 MB / 4.8 TB/s = 31 us floor. sm_90: 48 registers, no stack, 256 threads per block, full occupancy.
// - GEMM (cuBLAS): 2*O*C*9*HW*N = 38.7 GFLOP, ~39 us at the bf16 dense peak (990 TFLOP/s),
//   ~60 us at a realistic 65%; reads the columns once (151 MB, 31 us, overlapping).
//   Predicted forward ~0.1 ms per deformable convolution (cuDNN's plain 3x3: 0.063 ms).
// - col_grad: one thread per (image, offset group, kernel point, output pixel) as im2col; for each
//   channel it reads the column gradient (coalesced), the four corners, accumulates the four
//   corner dot products for the offset gradient in registers and scatters the four weighted
//   values into the float input gradient with atomicAdd (not bitwise deterministic: the backward
//   raises under torch.use_deterministic_algorithms). Reads 151 MB of column gradients, ~4
//   atomics per column value (L2-resident for a 64x64x256 plane set): predicted ~0.1 ms. sm_90:
//   capped at 64 registers (__launch_bounds__(256, 4): 80 uncapped), no stack for float/half/bf16.
#include <algorithm>

#include <ATen/Context.h>
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "deform_host.h"

namespace pyops {
namespace deform {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = int64_t(1) << 20;  // grid-stride beyond this

int64_t blocks_for(int64_t items) {
  return std::max<int64_t>(1, std::min<int64_t>((items + kThreads - 1) / kThreads, kMaxBlocks));
}

// Work item i = ((nl * og + a) * K + k) * L + p of a chunk starting at image n0.
struct Item {
  int64_t nl, a, k, p;
};

__device__ __forceinline__ Item decode(int64_t i, const Geometry& g) {
  Item it;
  it.p = i % g.L();
  it.k = i / g.L() % g.K();
  it.a = i / (g.L() * g.K()) % g.offset_groups;
  it.nl = i / (g.L() * g.K() * g.offset_groups);
  return it;
}

template <typename scalar_t, typename T>
__global__ void __launch_bounds__(kThreads) im2col_kernel(Sampler<scalar_t, T> s, int64_t n0, int64_t items,
                                                          scalar_t* __restrict__ cols) {
  const Geometry& g = s.g;
  const int64_t K = g.K(), L = g.L(), Cog = g.group_channels();
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < items; i += int64_t(gridDim.x) * blockDim.x) {
    const Item it = decode(i, g);
    const int64_t n = n0 + it.nl;
    const BilinearTaps<T> t = s.taps(n, it.a, it.k, it.p);
    scalar_t* dst = cols + (it.nl * g.C + it.a * Cog) * K * L + it.k * L + it.p;
    for (int64_t c = it.a * Cog; c < (it.a + 1) * Cog; ++c, dst += K * L) *dst = static_cast<scalar_t>(s.sample(t, n, c));
  }
}

template <typename scalar_t, typename T>
__global__ void __launch_bounds__(kThreads, 4) col_grad_kernel(Sampler<scalar_t, T> s, int64_t n0, int64_t items,
                                                            const scalar_t* __restrict__ grad_cols,
                                                            T* __restrict__ grad_input,
                                                            scalar_t* __restrict__ grad_offset) {
  const Geometry& g = s.g;
  const int64_t K = g.K(), L = g.L(), Cog = g.group_channels(), HW = g.H * g.W;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < items; i += int64_t(gridDim.x) * blockDim.x) {
    const Item it = decode(i, g);
    const int64_t n = n0 + it.nl;
    const BilinearTaps<T> t = s.taps(n, it.a, it.k, it.p);
    T dots[4] = {T(0), T(0), T(0), T(0)};
    const scalar_t* src = grad_cols + (it.nl * g.C + it.a * Cog) * K * L + it.k * L + it.p;
    for (int64_t c = it.a * Cog; c < (it.a + 1) * Cog; ++c, src += K * L) {
      const T gv = static_cast<T>(*src);
      T* plane = grad_input + (n * g.C + c) * HW;
      for (int q = 0; q < 4; ++q) {
        if (!t.valid(q)) continue;
        dots[q] += gv * s.corner(t, q, n, c);
        atomicAdd(plane + t.pixel(q, g.W), gv * t.weight(q));
      }
    }
    T gy, gx;
    offset_grad(t, dots, &gy, &gx);
    scalar_t* dy = grad_offset + (n * 2 * g.offset_groups * K + 2 * (it.a * K + it.k)) * L + it.p;
    dy[0] = static_cast<scalar_t>(gy);
    dy[L] = static_cast<scalar_t>(gx);
  }
}

void im2col_cuda(const at::Tensor& input, const at::Tensor& offset, const Geometry& g, int64_t n0, at::Tensor& cols) {
  const int64_t items = cols.size(0) * g.offset_groups * g.K() * g.L();
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "deform_im2col_cuda", [&] {
    using T = opmath<scalar_t>;
    im2col_kernel<scalar_t, T><<<blocks_for(items), kThreads, 0, stream>>>(
        make_sampler<scalar_t>(input, offset, g), n0, items, cols.mutable_data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

void col_grad_cuda(const at::Tensor& input, const at::Tensor& offset, const Geometry& g, int64_t n0,
                   const at::Tensor& grad_cols, at::Tensor& grad_input, at::Tensor& grad_offset) {
  const int64_t items = grad_cols.size(0) * g.offset_groups * g.K() * g.L();
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "deform_col_grad_cuda", [&] {
    using T = opmath<scalar_t>;
    col_grad_kernel<scalar_t, T><<<blocks_for(items), kThreads, 0, stream>>>(
        make_sampler<scalar_t>(input, offset, g), n0, items, grad_cols.const_data_ptr<scalar_t>(),
        grad_input.mutable_data_ptr<T>(), grad_offset.mutable_data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

const Kernels kCudaKernels{&im2col_cuda, &col_grad_cuda};

at::Tensor deform_conv2d_cuda(const at::Tensor& input, const at::Tensor& offset, const at::Tensor& weight,
                              const std::optional<at::Tensor>& bias, at::IntArrayRef stride, at::IntArrayRef padding,
                              at::IntArrayRef dilation, int64_t groups, int64_t offset_groups) {
  const c10::cuda::CUDAGuard guard(input.device());
  return forward(kCudaKernels, input, offset, weight, bias, stride, padding, dilation, groups, offset_groups);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> deform_conv2d_backward_cuda(
    const at::Tensor& grad_out, const at::Tensor& input, const at::Tensor& offset, const at::Tensor& weight,
    at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups, int64_t offset_groups) {
  at::globalContext().alertNotDeterministic("pyops.deform_conv2d backward on CUDA (atomic input gradient)");
  const c10::cuda::CUDAGuard guard(input.device());
  return backward(kCudaKernels, grad_out, input, offset, weight, stride, padding, dilation, groups, offset_groups);
}

}  // namespace

TORCH_LIBRARY_IMPL(pyops, CUDA, m) {
  m.impl("deform_conv2d", &deform_conv2d_cuda);
  m.impl("deform_conv2d_backward", &deform_conv2d_backward_cuda);
}

}  // namespace deform
}  // namespace pyops

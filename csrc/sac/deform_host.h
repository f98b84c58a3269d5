// Host side of the deformable convolution, shared by the CPU and CUDA registrations: the
// memory-safety checks, and the three steps over chunks of images: the deformable im2col (each
// backend's kernel), one batched GEMM with the weight (ATen: oneDNN / cuBLAS) and the bias in
// the GEMM's epilogue (baddbmm). The backward recomputes the columns, runs the two transposed
// GEMMs and the backend's column-gradient kernel (input and offset gradients).
#pragma once

#include <algorithm>
#include <optional>
#include <tuple>
#include <vector>

#include <ATen/core/LegacyTypeDispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/baddbmm.h>
#include <ATen/ops/bmm.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <c10/util/Exception.h>

#include "deform.h"

namespace pyops {
namespace deform {

// Columns per chunk: at most this many elements (images are never split), so the columns of a
// large batch do not take more memory than a few activations.
constexpr int64_t kMaxColumnElements = int64_t(1) << 26;

// The kernels of one backend. `cols` and `grad_cols` are (b, C K, L) contiguous in the input's
// dtype for images n0 .. n0 + b - 1; `grad_input` (N, C, H, W) contiguous in the op-math type
// (float, double for double), zeroed by the host and accumulated into; `grad_offset` is the
// offset's shape, contiguous, in the input's dtype (every value written).
struct Kernels {
  void (*im2col)(const at::Tensor& input, const at::Tensor& offset, const Geometry& g, int64_t n0,
                 at::Tensor& cols);
  void (*col_grad)(const at::Tensor& input, const at::Tensor& offset, const Geometry& g, int64_t n0,
                   const at::Tensor& grad_cols, at::Tensor& grad_input, at::Tensor& grad_offset);
};

inline at::ScalarType opmath_type(at::ScalarType t) {
  return t == at::kDouble ? at::kDouble : at::kFloat;
}

inline Geometry check(const at::Tensor& input, const at::Tensor& offset, const at::Tensor& weight,
                      at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                      int64_t offset_groups) {
  TORCH_CHECK(input.dim() == 4 && offset.dim() == 4 && weight.dim() == 4,
              "pyops.deform_conv2d: input, offset and weight must be 4-D");
  TORCH_CHECK(stride.size() == 2 && padding.size() == 2 && dilation.size() == 2,
              "pyops.deform_conv2d: stride, padding and dilation must have two values");
  TORCH_CHECK(offset.scalar_type() == input.scalar_type() && weight.scalar_type() == input.scalar_type(),
              "pyops.deform_conv2d: offset and weight must have input's dtype");
  Geometry g;
  g.N = input.size(0), g.C = input.size(1), g.H = input.size(2), g.W = input.size(3);
  g.kh = weight.size(2), g.kw = weight.size(3);
  g.sh = stride[0], g.sw = stride[1], g.ph = padding[0], g.pw = padding[1], g.dh = dilation[0], g.dw = dilation[1];
  g.offset_groups = offset_groups;
  TORCH_CHECK(g.sh >= 1 && g.sw >= 1 && g.dh >= 1 && g.dw >= 1 && g.ph >= 0 && g.pw >= 0,
              "pyops.deform_conv2d: stride and dilation must be >= 1 and padding >= 0");
  g.Ho = (g.H + 2 * g.ph - g.dh * (g.kh - 1) - 1) / g.sh + 1;
  g.Wo = (g.W + 2 * g.pw - g.dw * (g.kw - 1) - 1) / g.sw + 1;
  TORCH_CHECK(groups >= 1 && offset_groups >= 1 && g.C % groups == 0 && g.C % offset_groups == 0 &&
                  weight.size(1) * groups == g.C && weight.size(0) % groups == 0 && g.kh >= 1 && g.kw >= 1,
              "pyops.deform_conv2d: weight ", weight.sizes(), " does not fit input ", input.sizes(), " with groups ",
              groups, " and offset_groups ", offset_groups);
  TORCH_CHECK(g.Ho >= 1 && g.Wo >= 1 && offset.size(0) == g.N && offset.size(1) == 2 * offset_groups * g.K() &&
                  offset.size(2) == g.Ho && offset.size(3) == g.Wo,
              "pyops.deform_conv2d: offset must have shape (", g.N, ", ", 2 * offset_groups * g.K(), ", ", g.Ho,
              ", ", g.Wo, "), got ", offset.sizes());
  return g;
}

// The sampler of a call's input and offsets (any strides), for the kernels of either backend.
template <typename scalar_t>
Sampler<scalar_t, opmath<scalar_t>> make_sampler(const at::Tensor& input, const at::Tensor& offset, const Geometry& g) {
  Sampler<scalar_t, opmath<scalar_t>> s;
  s.input = {input.const_data_ptr<scalar_t>(), input.stride(0), input.stride(1), input.stride(2), input.stride(3)};
  s.offset = {offset.const_data_ptr<scalar_t>(), offset.stride(0), offset.stride(1), offset.stride(2),
              offset.stride(3)};
  s.g = g;
  return s;
}

// The ATen calls inside a kernel are not differentiated (the op's autograd is registered from
// Python) and not autocast: the GEMMs run in the input's dtype.
struct InnerCallGuard {
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  c10::impl::ExcludeDispatchKeyGuard no_autocast{c10::autocast_dispatch_keyset};
};

inline int64_t chunk_images(const Geometry& g) {
  const int64_t per_image = std::max<int64_t>(1, g.C * g.K() * g.L());
  return std::max<int64_t>(1, std::min<int64_t>(g.N, kMaxColumnElements / per_image));
}

// The weight as (b * groups, O / groups, C / groups * K) batches for a chunk of b images.
inline at::Tensor batched_weight(const at::Tensor& weight, int64_t groups, int64_t b) {
  const int64_t O = weight.size(0);
  return weight.reshape({1, groups, O / groups, -1}).expand({b, groups, O / groups, weight.numel() / O})
      .reshape({b * groups, O / groups, -1});
}

inline at::Tensor forward(const Kernels& k, const at::Tensor& input, const at::Tensor& offset,
                          const at::Tensor& weight, const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                          at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups, int64_t offset_groups) {
  const Geometry g = check(input, offset, weight, stride, padding, dilation, groups, offset_groups);
  const InnerCallGuard guard;
  const int64_t O = weight.size(0), Og = O / groups, CgK = g.C / groups * g.K();
  if (bias) {
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == O && bias->scalar_type() == input.scalar_type(),
                "pyops.deform_conv2d: bias must be (", O, ") in input's dtype");
  }
  at::Tensor out = at::empty({g.N, O, g.Ho, g.Wo}, input.options());
  const int64_t b = chunk_images(g);
  at::Tensor cols = at::empty({b, g.C * g.K(), g.L()}, input.options());
  const at::Tensor w = batched_weight(weight, groups, b);
  std::optional<at::Tensor> bias3;
  if (bias) bias3 = bias->reshape({1, groups, Og, 1}).expand({b, groups, Og, 1}).reshape({b * groups, Og, 1});
  for (int64_t n0 = 0; n0 < g.N; n0 += b) {
    const int64_t bb = std::min(b, g.N - n0);
    at::Tensor c = cols.narrow(0, 0, bb);
    k.im2col(input, offset, g, n0, c);
    at::Tensor y = out.narrow(0, n0, bb).view({bb * groups, Og, g.L()});
    const at::Tensor wb = w.narrow(0, 0, bb * groups), cb = c.view({bb * groups, CgK, g.L()});
    if (bias3) {
      at::baddbmm_out(y, bias3->narrow(0, 0, bb * groups), wb, cb);
    } else {
      at::bmm_out(y, wb, cb);
    }
  }
  return out;
}

inline std::tuple<at::Tensor, at::Tensor, at::Tensor> backward(
    const Kernels& k, const at::Tensor& grad_out_, const at::Tensor& input, const at::Tensor& offset,
    const at::Tensor& weight, at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
    int64_t groups, int64_t offset_groups) {
  const Geometry g = check(input, offset, weight, stride, padding, dilation, groups, offset_groups);
  const InnerCallGuard guard;
  const int64_t O = weight.size(0), Og = O / groups, CgK = g.C / groups * g.K();
  TORCH_CHECK(grad_out_.dim() == 4 && grad_out_.size(0) == g.N && grad_out_.size(1) == O &&
                  grad_out_.size(2) == g.Ho && grad_out_.size(3) == g.Wo,
              "pyops.deform_conv2d: grad_out must have the output's shape");
  const at::Tensor grad_out = grad_out_.to(input.scalar_type()).contiguous();
  const auto acc = input.options().dtype(opmath_type(input.scalar_type()));
  at::Tensor grad_input = at::zeros({g.N, g.C, g.H, g.W}, acc);
  at::Tensor grad_offset = at::empty(offset.sizes(), offset.options().memory_format(at::MemoryFormat::Contiguous));
  at::Tensor grad_weight = at::zeros({groups, Og, CgK}, acc);
  const int64_t b = chunk_images(g);
  at::Tensor cols = at::empty({b, g.C * g.K(), g.L()}, input.options());
  at::Tensor grad_cols = at::empty({b, g.C * g.K(), g.L()}, input.options());
  const at::Tensor w = batched_weight(weight, groups, b);
  for (int64_t n0 = 0; n0 < g.N; n0 += b) {
    const int64_t bb = std::min(b, g.N - n0);
    at::Tensor c = cols.narrow(0, 0, bb), gc = grad_cols.narrow(0, 0, bb);
    k.im2col(input, offset, g, n0, c);
    const at::Tensor go = grad_out.narrow(0, n0, bb).view({bb * groups, Og, g.L()});
    at::Tensor gcb = gc.view({bb * groups, CgK, g.L()});
    at::bmm_out(gcb, w.narrow(0, 0, bb * groups).transpose(1, 2), go);
    // weight gradient of the chunk, summed over its images in the op-math type
    grad_weight.add_(at::bmm(go, c.view({bb * groups, CgK, g.L()}).transpose(1, 2))
                         .view({bb, groups, Og, CgK}).sum(0, false, opmath_type(input.scalar_type())));
    k.col_grad(input, offset, g, n0, gc, grad_input, grad_offset);
  }
  return {grad_input.to(input.scalar_type()), grad_offset,
          grad_weight.view(weight.sizes()).to(weight.scalar_type())};
}

}  // namespace deform
}  // namespace pyops

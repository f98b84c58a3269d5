// Host side of the switchable atrous convolution, shared by the CPU and CUDA registrations:
// argument checks, and the composition of the layer: the two library convolutions (and their
// backward) and a few pixel-mean reductions from ATen, everything else in the fused steps each
// backend implements (`SacKernels`, math in sac.h). The layer is launch-bound at the spec's
// shapes (the eager module issues ~30 kernels forward and ~100 ATen calls backward), so the
// composition keeps the count of calls low: about a dozen forward and two dozen backward.
#pragma once

#include <array>
#include <optional>
#include <tuple>
#include <vector>

#include <ATen/Dispatch.h>
#include <ATen/TensorOperators.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/convolution.h>
#include <ATen/ops/convolution_backward.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <c10/util/Exception.h>

#include "sac.h"

namespace pyops {
namespace sac {

using OptTensor = std::optional<at::Tensor>;
constexpr double kAwsEps = 1e-5;

// The fused steps of one backend, each filling outputs the host allocated. Activations arrive
// dense in the layout `channels_last` says; "op-math" tensors are float (double for double x),
// contiguous; parameters keep their own dtype (x's).
struct SacKernels {
  // Context: out (N, J) op-math <- b + W v for v (N, K) op-math, W (J, K, 1, 1), b (J,).
  void (*linear)(const at::Tensor& v, const at::Tensor& W, const at::Tensor& b, at::Tensor& out);
  // xp <- x + ctx (ctx (N, C) op-math), z (N, H, W) op-math <- the switch weight w_s (1, C, 1, 1)
  // dotted with x' at every pixel.
  void (*context_switch_dot)(const at::Tensor& x, const at::Tensor& ctx, const at::Tensor& w_s,
                             bool channels_last, at::Tensor& xp, at::Tensor& z);
  // s (N, Ho, Wo) op-math <- 5x5 reflect-padded mean of z (N, H, W) every (SH, SW) pixels + bias (1,).
  void (*switch_pool)(const at::Tensor& z, const at::Tensor& bias, int64_t SH, int64_t SW, at::Tensor& s);
  // q (N, H, W) <- the adjoint of switch_pool (without the bias) applied to g (N, Ho, Wo).
  void (*switch_pool_adjoint)(const at::Tensor& g, int64_t SH, int64_t SW, at::Tensor& q);
  // AWS: w_small <- AWS(weight), w_large <- w_small + weight_diff; the outputs in any layout.
  void (*aws)(const at::Tensor& weight, const at::Tensor& gamma, const at::Tensor& beta,
              const at::Tensor& weight_diff, at::Tensor& w_small, at::Tensor& w_large);
  // AWS backward from the two branch weight gradients (any layout): g_weight (contiguous),
  // g_gamma, g_beta (O, 1, 1, 1).
  void (*aws_backward)(const at::Tensor& gw_small, const at::Tensor& gw_large, const at::Tensor& weight,
                       const at::Tensor& gamma, at::Tensor& g_weight, at::Tensor& g_gamma, at::Tensor& g_beta);
  // In place: large <- blend + bias, small <- small - large. s is (N, Ho, Wo) op-math, bias (O,)
  // in x's dtype.
  void (*blend_forward)(at::Tensor& small, at::Tensor& large, const at::Tensor& s,
                        const OptTensor& bias, bool channels_last);
  // g_small, g_large (grad_out's layout), g_switch (N, Ho, Wo) op-math; ctx_grad (N, O) op-math.
  void (*blend_backward)(const at::Tensor& grad_out, const at::Tensor& diff, const at::Tensor& s,
                         const at::Tensor& ctx_grad, bool channels_last, at::Tensor& g_small,
                         at::Tensor& g_large, at::Tensor& g_switch);
  // Context backward (sac.h: LinearBackward) for g (N, J) op-math: g_W (J, K, 1, 1) and g_b (J,)
  // in W's dtype, g_v (N, K) op-math, g_vbias (K,) in W's dtype unless undefined.
  void (*linear_backward)(const at::Tensor& g, const at::Tensor& v, const at::Tensor& W, double scale,
                          at::Tensor& g_W, at::Tensor& g_v, at::Tensor& g_b, at::Tensor& g_vbias);
  // Per (image, pixel chunk, channel) sums (N, P, C) op-math of gx_small + gx_large + q w_s and of
  // x' q, chunks of ceil(HW / P) pixels (sac.h: input_grad_sums).
  void (*input_grad_sums)(const at::Tensor& gx_small, const at::Tensor& gx_large, const at::Tensor& xp,
                          const at::Tensor& q, const at::Tensor& w_s, bool channels_last,
                          at::Tensor& ctx_part, at::Tensor& switch_part);
  // gx <- gx_small + gx_large + q w_s + corr (N, C) op-math, in x's dtype and layout.
  void (*input_grad)(const at::Tensor& gx_small, const at::Tensor& gx_large, const at::Tensor& q,
                     const at::Tensor& w_s, const at::Tensor& corr, bool channels_last, at::Tensor& gx);
  // The "igemm" algorithm: both branch convolutions and the blend in one kernel (dual
  // accumulators). xp is x' in the layout `channels_last` says; w_small = AWS(W) and w_large =
  // AWS(W) + weight_diff are (O, C/g, kh, kw) contiguous in x's dtype; s (N, Ho, Wo) and bias are
  // op-math. Returns (y = blend + bias, small - large, sum of y over the pixels (N, O) op-math), y
  // and the difference in x's layout. nullptr: the composition (two at::convolution calls + blend_forward).
  std::tuple<at::Tensor, at::Tensor, at::Tensor> (*dual_conv)(
      const at::Tensor& xp, const at::Tensor& w_small, const at::Tensor& w_large, const at::Tensor& s,
      const OptTensor& bias, const DualConvGeom& g, bool channels_last) = nullptr;
};

// The activation dtypes of the fused steps.
#define PYOPS_SAC_DISPATCH(TYPE, NAME, ...) \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, TYPE, NAME, __VA_ARGS__)

inline Dense4d dense4d(const at::Tensor& t, bool channels_last) {
  return Dense4d{t.size(0), t.size(1), t.size(2) * t.size(3), channels_last};
}

inline WeightRow weight_row(const at::Tensor& w) {
  return WeightRow{w.size(1), w.size(2), w.size(3), w.stride(0), w.stride(1), w.stride(2), w.stride(3)};
}

// Pixels per chunk of input_grad_sums: enough chunks for a GPU's threads, few enough partials.
constexpr int64_t kSumChunk = 32;

// The CUDA dual convolution (sac_igemm_cuda.cu), for SacKernels::dual_conv.
std::tuple<at::Tensor, at::Tensor, at::Tensor> dual_conv_cuda(const at::Tensor& xp, const at::Tensor& w_small,
                                                              const at::Tensor& w_large, const at::Tensor& s,
                                                              const OptTensor& bias, const DualConvGeom& g,
                                                              bool channels_last);

inline at::ScalarType opmath_type(const at::Tensor& t) {
  return t.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

// channels_last when x is laid out that way (and not also plain contiguous); the Python fake
// kernels follow the same rule.
inline bool use_channels_last(const at::Tensor& x) {
  return !x.is_contiguous() && x.is_contiguous(at::MemoryFormat::ChannelsLast);
}

inline at::MemoryFormat format_of(bool channels_last) {
  return channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
}

inline void check_shape(const char* name, const at::Tensor& t, at::IntArrayRef want) {
  TORCH_CHECK(t.sizes() == want, "sac_conv2d: ", name, " must have shape ", want, ", got ", t.sizes());
}

inline void check_sac_args(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& gamma,
                           const at::Tensor& beta, const at::Tensor& weight_diff,
                           const at::Tensor& switch_weight, const at::Tensor& pre_weight,
                           const at::Tensor& post_weight,
                           at::IntArrayRef stride, at::IntArrayRef padding,
                           at::IntArrayRef dilation, int64_t groups) {
  TORCH_CHECK(x.dim() == 4, "sac_conv2d: x must be a 4-D (N, C, H, W) tensor, got shape ", x.sizes());
  TORCH_CHECK(at::isFloatingType(x.scalar_type()), "sac_conv2d: x must be floating-point, got ",
              x.scalar_type());
  TORCH_CHECK(weight.dim() == 4, "sac_conv2d: weight must be 4-D (O, C/groups, kh, kw), got shape ",
              weight.sizes());
  TORCH_CHECK(stride.size() == 2 && padding.size() == 2 && dilation.size() == 2,
              "sac_conv2d: stride, padding and dilation must have two entries");
  TORCH_CHECK(groups >= 1, "sac_conv2d: groups must be >= 1, got ", groups);
  const int64_t C = x.size(1), O = weight.size(0);
  // pyops.sac_conv2d defines empty channels itself (out = bias + PostCtx(bias)); the kernels'
  // per-channel loops and the library convolutions need at least one of each
  TORCH_CHECK(C >= 1 && O >= 1, "sac_conv2d: internal: x must have at least one channel and weight at least one "
              "output channel, got C = ", C, ", O = ", O, " (pyops.sac_conv2d handles empty channels)");
  TORCH_CHECK(C % groups == 0 && O % groups == 0 && weight.size(1) * groups == C,
              "sac_conv2d: weight has shape ", weight.sizes(), " but x has ", C,
              " channels and groups = ", groups, " (expected weight.shape[1] * groups == C)");
  for (int d = 0; d < 2; ++d) {
    const int64_t k = weight.size(2 + d);
    TORCH_CHECK(stride[d] >= 1 && dilation[d] >= 1, "sac_conv2d: stride and dilation must be >= 1, got ",
                stride, " and ", dilation);
    TORCH_CHECK(k % 2 == 1 && padding[d] * 2 == dilation[d] * (k - 1),
                "sac_conv2d: needs odd kernel sizes and padding = dilation * (kernel_size - 1) / 2 "
                "(so both branches keep the switch's size), got kernel ", weight.sizes().slice(2),
                ", padding ", padding, ", dilation ", dilation);
  }
  TORCH_CHECK(x.size(2) >= 3 && x.size(3) >= 3,
              "sac_conv2d: x must be at least 3x3 (the switch reflect-pads by 2), got ", x.sizes());
  check_shape("weight_gamma", gamma, {O, 1, 1, 1});
  check_shape("weight_beta", beta, {O, 1, 1, 1});
  check_shape("weight_diff", weight_diff, weight.sizes());
  check_shape("switch_weight", switch_weight, {1, C, 1, 1});
  check_shape("pre_weight", pre_weight, {C, C, 1, 1});
  check_shape("post_weight", post_weight, {O, O, 1, 1});
  for (const at::Tensor* t : {&weight, &gamma, &beta, &weight_diff, &switch_weight, &pre_weight, &post_weight}) {
    TORCH_CHECK(t->scalar_type() == x.scalar_type() && t->device() == x.device(),
                "sac_conv2d: every parameter must have x's dtype and device (", x.scalar_type(), ", ",
                x.device(), "), got ", t->scalar_type(), " on ", t->device());
  }
}

inline std::vector<int64_t> times3(at::IntArrayRef v) { return {3 * v[0], 3 * v[1]}; }

// AWS(weight) and AWS(weight) + weight_diff in W's dtype, laid out like x (channels_last weights
// for channels_last x, which cuDNN takes without a conversion).
inline std::pair<at::Tensor, at::Tensor> aws_weights(const SacKernels& k, const at::Tensor& weight,
                                                     const at::Tensor& gamma, const at::Tensor& beta,
                                                     const at::Tensor& weight_diff, bool channels_last) {
  const auto opts = weight.options().memory_format(format_of(channels_last));
  at::Tensor w_small = at::empty(weight.sizes(), opts), w_large = at::empty(weight.sizes(), opts);
  k.aws(weight.contiguous(), gamma.contiguous(), beta.contiguous(), weight_diff.contiguous(), w_small, w_large);
  return {w_small, w_large};
}

// Context of the pixel means v (N, K) op-math: b + W v, (N, J) op-math.
inline at::Tensor context(const SacKernels& k, const at::Tensor& v, const at::Tensor& W, const at::Tensor& b) {
  at::Tensor out = at::empty({v.size(0), W.size(0)}, v.options());
  k.linear(v.contiguous(), W.contiguous(), b.contiguous(), out);
  return out;
}

// Returns (out, switch (N, 1, Ho, Wo), small - large, x', GAP(x) (N, C), GAP(y) (N, O)); the
// last five are saved for the backward. Op-math tensors are float (double for double inputs).
// About a dozen launches: two means, the two contexts, the pre-pass (x' and the switch dot),
// the pooled switch, AWS, the two convolutions, the blend and the post-context add.
using SacForward = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

inline SacForward sac_forward(
    const SacKernels& k, const at::Tensor& x_, const at::Tensor& weight, const at::Tensor& gamma,
    const at::Tensor& beta, const at::Tensor& weight_diff, const at::Tensor& switch_weight,
    const at::Tensor& switch_bias, const at::Tensor& pre_weight, const at::Tensor& pre_bias,
    const at::Tensor& post_weight, const at::Tensor& post_bias, const OptTensor& bias,
    at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  check_sac_args(x_, weight, gamma, beta, weight_diff, switch_weight, pre_weight, post_weight, stride, padding,
                 dilation, groups);
  // the composition chooses its own precision: no autocast for the ATen calls below
  const c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
  const int64_t O = weight.size(0);
  check_shape("pre_bias", pre_bias, {x_.size(1)});
  check_shape("switch_bias", switch_bias, {1});
  check_shape("post_bias", post_bias, {O});
  if (bias.has_value()) check_shape("bias", *bias, {O});
  std::vector<const at::Tensor*> biases{&pre_bias, &switch_bias, &post_bias};
  if (bias.has_value()) biases.push_back(&*bias);
  for (const at::Tensor* t : biases) {
    TORCH_CHECK(t->scalar_type() == x_.scalar_type() && t->device() == x_.device(),
                "sac_conv2d: every parameter must have x's dtype and device (", x_.scalar_type(), ", ",
                x_.device(), "), got ", t->scalar_type(), " on ", t->device());
  }
  const bool cl = use_channels_last(x_);
  const auto fmt = format_of(cl);
  const at::Tensor x = x_.contiguous(fmt);
  const auto acc = opmath_type(x);
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t Ho = (H - 1) / stride[0] + 1, Wo = (W - 1) / stride[1] + 1;  // the 1x1 switch's size

  // switch pre-pass: x' = x + PreCtx(GAP(x)), s = pool(reflect(w_s . x')) every `stride` pixels + b_s
  const at::Tensor x_mean = x.mean({2, 3}, false, acc);
  const at::Tensor ctx = context(k, x_mean, pre_weight, pre_bias);
  at::Tensor xp = at::empty_like(x, fmt);
  at::Tensor z = at::empty({N, H, W}, x_mean.options());
  k.context_switch_dot(x, ctx, switch_weight.contiguous(), cl, xp, z);
  at::Tensor s = at::empty({N, 1, Ho, Wo}, x_mean.options());
  k.switch_pool(z, switch_bias, stride[0], stride[1], s);

  at::Tensor y, diff;
  if (k.dual_conv != nullptr) {
    OptTensor b;  // the dual convolution takes an op-math bias
    if (bias.has_value()) b = bias->to(acc).contiguous();
    auto [w_small, w_large] = aws_weights(k, weight, gamma, beta, weight_diff, false);
    const DualConvGeom g{N, C, H, W, O, Ho, Wo, weight.size(2), weight.size(3), stride[0], stride[1],
                         padding[0], padding[1], dilation[0], dilation[1], groups};
    std::tie(y, diff, std::ignore) = k.dual_conv(xp, w_small, w_large, s.view({N, Ho, Wo}), b, g, cl);
  } else {
    auto [w_small, w_large] = aws_weights(k, weight, gamma, beta, weight_diff, cl);
    const std::vector<int64_t> no_pad{0, 0};
    diff = at::convolution(xp, w_small, std::nullopt, stride, padding, dilation, false, no_pad, groups).contiguous(fmt);
    y = at::convolution(xp, w_large, std::nullopt, stride, times3(padding), times3(dilation), false, no_pad, groups)
            .contiguous(fmt);
    TORCH_CHECK(diff.sizes() == y.sizes() && y.size(2) == Ho && y.size(3) == Wo, "sac_conv2d: internal error: branch sizes ",
                diff.sizes(), " ", y.sizes(), " and switch ", s.sizes(), " differ");
    OptTensor b;
    if (bias.has_value()) b = bias->contiguous();
    k.blend_forward(diff, y, s.view({N, Ho, Wo}), b, cl);  // y <- blend + bias, diff <- small - large
  }
  // post-context: out = y + PostCtx(GAP(y))
  const at::Tensor y_mean = y.mean({2, 3}, false, acc);
  y.add_(context(k, y_mean, post_weight, post_bias).view({N, O, 1, 1}));
  return {y, s, diff, xp, x_mean, y_mean};
}

// Gradients to (x, weight, weight_gamma, weight_beta, weight_diff, switch_weight, switch_bias,
// pre_weight, pre_bias, post_weight, post_bias, bias), each in x's dtype. xp is the forward's x'.
inline std::vector<at::Tensor> sac_backward(
    const SacKernels& k, const at::Tensor& grad_out_, const at::Tensor& xp_, const at::Tensor& weight,
    const at::Tensor& gamma, const at::Tensor& beta, const at::Tensor& weight_diff,
    const at::Tensor& switch_weight, const at::Tensor& pre_weight, const at::Tensor& post_weight,
    const at::Tensor& s_, const at::Tensor& diff_, const at::Tensor& x_mean, const at::Tensor& y_mean,
    at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  const int64_t O = weight.size(0);
  check_sac_args(xp_, weight, gamma, beta, weight_diff, switch_weight, pre_weight, post_weight, stride, padding,
                 dilation, groups);
  const c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
  const bool cl = use_channels_last(xp_);
  const auto fmt = format_of(cl);
  const at::Tensor xp = xp_.contiguous(fmt);
  const auto acc = opmath_type(xp);
  const int64_t N = xp.size(0), C = xp.size(1), H = xp.size(2), W = xp.size(3);
  TORCH_CHECK(grad_out_.dim() == 4 && grad_out_.sizes() == diff_.sizes() && grad_out_.size(0) == N &&
                  grad_out_.size(1) == O,
              "sac_conv2d backward: grad_out must have the output's shape ", diff_.sizes(), ", got ",
              grad_out_.sizes());
  TORCH_CHECK(grad_out_.scalar_type() == xp.scalar_type() && diff_.scalar_type() == xp.scalar_type(),
              "sac_conv2d backward: grad_out and the saved branch difference must have x's dtype ",
              xp.scalar_type());
  const int64_t Ho = diff_.size(2), Wo = diff_.size(3);
  check_shape("switch (saved)", s_, {N, 1, Ho, Wo});
  check_shape("x_mean (saved)", x_mean, {N, C});
  check_shape("y_mean (saved)", y_mean, {N, O});
  for (const at::Tensor* t : {&s_, &x_mean, &y_mean}) {
    TORCH_CHECK(t->scalar_type() == acc, "sac_conv2d backward: the saved switch and means must be ", acc,
                ", got ", t->scalar_type());
  }
  for (const at::Tensor* t : {&grad_out_, &diff_, &s_, &x_mean, &y_mean}) {
    TORCH_CHECK(t->device() == xp.device(), "sac_conv2d backward: grad_out and the saved tensors must be on ",
                xp.device(), ", got ", t->device());
  }
  const at::Tensor grad_out = grad_out_.contiguous(fmt);
  const at::Tensor diff = diff_.contiguous(fmt);
  const at::Tensor s = s_.contiguous().view({N, Ho, Wo});
  const auto opts = x_mean.options();

  // post-context: out = y + Wpost GAP(y) + bpost; the bias reaches every pixel of y
  const at::Tensor g_sum = grad_out.sum({2, 3}, false, acc).contiguous();  // (N, O)
  at::Tensor g_post_weight = at::empty_like(post_weight, at::MemoryFormat::Contiguous);
  at::Tensor g_post_bias = xp.new_empty({O}), g_bias = xp.new_empty({O});
  at::Tensor ctx_grad = at::empty({N, O}, opts);
  k.linear_backward(g_sum, y_mean.contiguous(), post_weight.contiguous(), 1.0 / double(Ho * Wo), g_post_weight,
                    ctx_grad, g_post_bias, g_bias);
  at::Tensor g_small = at::empty_like(grad_out, fmt), g_large = at::empty_like(grad_out, fmt);
  at::Tensor g_switch = at::empty({N, Ho, Wo}, opts);
  k.blend_backward(grad_out, diff, s, ctx_grad, cl, g_small, g_large, g_switch);

  // the two convolutions
  auto [w_small, w_large] = aws_weights(k, weight, gamma, beta, weight_diff, cl);
  const std::vector<int64_t> no_pad{0, 0};
  auto [gx_small, gw_small, unused_s] = at::convolution_backward(
      g_small, xp, w_small, std::nullopt, stride, padding, dilation, false, no_pad, groups, {true, true, false});
  auto [gx_large, gw_large, unused_l] = at::convolution_backward(
      g_large, xp, w_large, std::nullopt, stride, times3(padding), times3(dilation), false, no_pad, groups,
      {true, true, false});
  gx_small = gx_small.contiguous(fmt);
  gx_large = gx_large.contiguous(fmt);

  // switch: s = sample_stride(pool5(reflect2(w_s . x'))) + b_s; q = dL/d(w_s . x')
  const at::Tensor g_switch_bias = g_switch.sum().to(xp.scalar_type()).view({1});
  at::Tensor q = at::empty({N, H, W}, opts);
  k.switch_pool_adjoint(g_switch, stride[0], stride[1], q);

  // x' = x + Wpre GAP(x) + bpre: the per-image channel sums of dL/dx' feed the pre-context
  const int64_t chunks = (H * W + kSumChunk - 1) / kSumChunk;
  at::Tensor ctx_part = at::empty({N, chunks, C}, opts), switch_part = at::empty({N, chunks, C}, opts);
  const at::Tensor w_s = switch_weight.contiguous();
  k.input_grad_sums(gx_small, gx_large, xp, q, w_s, cl, ctx_part, switch_part);
  const at::Tensor g_switch_weight = switch_part.sum({0, 1}).to(xp.scalar_type()).view({1, C, 1, 1});
  at::Tensor g_pre_weight = at::empty_like(pre_weight, at::MemoryFormat::Contiguous);
  at::Tensor g_pre_bias = xp.new_empty({C}), corr = at::empty({N, C}, opts), no_vbias;
  k.linear_backward(ctx_part.sum(1), x_mean.contiguous(), pre_weight.contiguous(), 1.0 / double(H * W),
                    g_pre_weight, corr, g_pre_bias, no_vbias);
  at::Tensor gx = at::empty_like(xp, fmt);
  k.input_grad(gx_small, gx_large, q, w_s, corr, cl, gx);

  // AWS: w_small = gamma * standard + beta, w_large = w_small + weight_diff
  at::Tensor g_weight = at::empty_like(weight, at::MemoryFormat::Contiguous);
  at::Tensor g_gamma = at::empty_like(gamma, at::MemoryFormat::Contiguous);
  at::Tensor g_beta = at::empty_like(beta, at::MemoryFormat::Contiguous);
  k.aws_backward(gw_small, gw_large, weight.contiguous(), gamma.contiguous(), g_weight, g_gamma, g_beta);

  return {gx,          g_weight,        g_gamma,       g_beta,     gw_large.contiguous(), g_switch_weight,
          g_switch_bias, g_pre_weight, g_pre_bias, g_post_weight, g_post_bias,           g_bias};
}

}  // namespace sac
}  // namespace pyops

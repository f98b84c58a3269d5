// Host side of the switchable atrous convolution, shared by the CPU and CUDA registrations:
// argument checks, and the composition of the layer from ATen calls (the two convolutions and
// their backward, the small per-channel context and AWS algebra) around three fused steps that
// each backend implements (`SacKernels`): the switch pre-pass, the forward blend epilogue and
// the backward blend epilogue.
#pragma once

#include <array>
#include <optional>
#include <tuple>
#include <vector>

#include <ATen/TensorOperators.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/addmm.h>
#include <ATen/ops/avg_pool2d.h>
#include <ATen/ops/constant_pad_nd.h>
#include <ATen/ops/convolution.h>
#include <ATen/ops/convolution_backward.h>
#include <ATen/ops/reflection_pad2d.h>
#include <ATen/ops/zeros.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <c10/util/Exception.h>

#include "sac.h"

namespace pyops {
namespace sac {

using OptTensor = std::optional<at::Tensor>;
constexpr double kAwsEps = 1e-5;

// The fused steps of one backend. Tensors arrive dense in the layout `channels_last` says.
struct SacKernels {
  // (N, H, W) op-math tensor: the switch weight (C,) dotted with x at every pixel.
  at::Tensor (*switch_dot)(const at::Tensor& x, const at::Tensor& w, bool channels_last);
  // In place: large <- blend + bias, small <- small - large. s is (N, Ho, Wo) op-math.
  void (*blend_forward)(at::Tensor& small, at::Tensor& large, const at::Tensor& s,
                        const OptTensor& bias, bool channels_last);
  // (g_small, g_large, g_switch (N, Ho, Wo) op-math); ctx_grad (N, O) op-math.
  std::tuple<at::Tensor, at::Tensor, at::Tensor> (*blend_backward)(
      const at::Tensor& grad_out, const at::Tensor& diff, const at::Tensor& s,
      const at::Tensor& ctx_grad, bool channels_last);
  // The "igemm" algorithm: both branch convolutions and the blend in one kernel (dual
  // accumulators). xp is x' in the layout `channels_last` says; w_small = AWS(W) and w_large =
  // AWS(W) + weight_diff are (O, C/g, kh, kw) in x's dtype; s (N, Ho, Wo) and bias are op-math.
  // Returns (y = blend + bias, small - large, sum of y over the pixels (N, O) op-math), y and the
  // difference in x's layout. nullptr: the composition (two at::convolution calls + blend_forward).
  std::tuple<at::Tensor, at::Tensor, at::Tensor> (*dual_conv)(
      const at::Tensor& xp, const at::Tensor& w_small, const at::Tensor& w_large, const at::Tensor& s,
      const OptTensor& bias, const DualConvGeom& g, bool channels_last) = nullptr;
};

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
                           const at::Tensor& pre_bias, const at::Tensor& post_weight,
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
  check_shape("pre_bias", pre_bias, {C});
  check_shape("post_weight", post_weight, {O, O, 1, 1});
  for (const at::Tensor* t : {&weight, &gamma, &beta, &weight_diff, &switch_weight, &pre_weight,
                              &pre_bias, &post_weight}) {
    TORCH_CHECK(t->scalar_type() == x.scalar_type() && t->device() == x.device(),
                "sac_conv2d: every parameter must have x's dtype and device (", x.scalar_type(), ", ",
                x.device(), "), got ", t->scalar_type(), " on ", t->device());
  }
}

inline std::vector<int64_t> times3(at::IntArrayRef v) { return {3 * v[0], 3 * v[1]}; }

// Adjoint of a reflection padding by 2 of the last two dims: (..., H + 4, W + 4) -> (..., H, W).
// Built from slices, so it is deterministic (ATen's CUDA reflection_pad2d_backward adds with
// atomics). Padded index p holds original index reflect(p - 2): p = 0, 1 hold 2, 1 and
// p = n + 2, n + 3 hold n - 2, n - 3.
inline at::Tensor reflect2_adjoint(const at::Tensor& g) {
  at::Tensor r = g;
  for (const int64_t d : {g.dim() - 2, g.dim() - 1}) {
    const int64_t n = r.size(d) - 4;
    at::Tensor out = r.narrow(d, 2, n).clone();
    out.narrow(d, 1, 2).add_(r.narrow(d, 0, 2).flip({d}));
    out.narrow(d, n - 3, 2).add_(r.narrow(d, n + 2, 2).flip({d}));
    r = out;
  }
  return r;
}

// AWS: gamma * (W - mean_o W) / sqrt(var_o W + eps) + beta in op-math, returned in W's dtype;
// also the standardised weights (O, M) and 1/sigma (O, 1) for the backward.
inline std::tuple<at::Tensor, at::Tensor, at::Tensor> aws(const at::Tensor& weight,
                                                          const at::Tensor& gamma,
                                                          const at::Tensor& beta) {
  const auto acc = opmath_type(weight);
  const int64_t O = weight.size(0);
  const at::Tensor w = weight.to(acc).reshape({O, -1});
  const at::Tensor inv_sigma = (w.var(1, /*unbiased=*/true, /*keepdim=*/true) + kAwsEps).rsqrt();
  const at::Tensor standard = (w - w.mean(1, true)) * inv_sigma;
  const at::Tensor w_hat = standard * gamma.to(acc).view({O, 1}) + beta.to(acc).view({O, 1});
  return {w_hat.view(weight.sizes()).to(weight.scalar_type()), standard, inv_sigma};
}

// x' = x + PreCtx(GAP(x)), in x's layout.
inline at::Tensor with_context(const at::Tensor& x, const at::Tensor& x_mean,
                               const at::Tensor& pre_weight, const at::Tensor& pre_bias,
                               bool channels_last) {
  const int64_t N = x.size(0), C = x.size(1);
  const auto acc = opmath_type(x);
  const at::Tensor ctx = at::addmm(pre_bias.to(acc), x_mean, pre_weight.to(acc).view({C, C}).t());
  return (x + ctx.to(x.scalar_type()).view({N, C, 1, 1})).contiguous(format_of(channels_last));
}

// Returns (out, switch (N, 1, Ho, Wo), small - large, GAP(x) (N, C), GAP(y) (N, O)); the last
// four are saved for the backward. Op-math tensors are float (double for double inputs).
inline std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> sac_forward(
    const SacKernels& k, const at::Tensor& x_, const at::Tensor& weight, const at::Tensor& gamma,
    const at::Tensor& beta, const at::Tensor& weight_diff, const at::Tensor& switch_weight,
    const at::Tensor& switch_bias, const at::Tensor& pre_weight, const at::Tensor& pre_bias,
    const at::Tensor& post_weight, const at::Tensor& post_bias, const OptTensor& bias,
    at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  check_sac_args(x_, weight, gamma, beta, weight_diff, switch_weight, pre_weight, pre_bias,
                 post_weight, stride, padding, dilation, groups);
  // the composition chooses its own precision: no autocast for the ATen calls below
  const c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
  const int64_t O = weight.size(0);
  check_shape("switch_bias", switch_bias, {1});
  check_shape("post_bias", post_bias, {O});
  if (bias.has_value()) check_shape("bias", *bias, {O});
  const bool cl = use_channels_last(x_);
  const at::Tensor x = x_.contiguous(format_of(cl));
  const auto acc = opmath_type(x);
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);

  const at::Tensor x_mean = x.mean({2, 3}, false, acc);
  const at::Tensor xp = with_context(x, x_mean, pre_weight, pre_bias, cl);
  // switch: pool(reflect(w_s . x')) sampled every `stride` pixels, plus its bias
  const at::Tensor z = k.switch_dot(xp, switch_weight.to(acc).reshape({C}).contiguous(), cl);
  const at::Tensor pooled = at::avg_pool2d(at::reflection_pad2d(z.view({N, 1, H, W}), {2, 2, 2, 2}), {5, 5}, {1, 1});
  const at::Tensor s = (pooled.slice(2, 0, H, stride[0]).slice(3, 0, W, stride[1]) +
                        switch_bias.to(acc))
                           .contiguous();

  const at::Tensor w_hat = std::get<0>(aws(weight, gamma, beta));
  OptTensor b;
  if (bias.has_value()) b = bias->to(acc).contiguous();
  if (k.dual_conv != nullptr) {
    const int64_t Ho = s.size(2), Wo = s.size(3);
    const DualConvGeom g{N, C, H, W, O, Ho, Wo, weight.size(2), weight.size(3), stride[0], stride[1],
                         padding[0], padding[1], dilation[0], dilation[1], groups};
    auto [y, diff, y_sum] = k.dual_conv(xp, w_hat.contiguous(), (w_hat + weight_diff).contiguous(),
                                        s.view({N, Ho, Wo}), b, g, cl);
    const at::Tensor y_mean = y_sum / double(Ho * Wo);
    const at::Tensor post = at::addmm(post_bias.to(acc), y_mean, post_weight.to(acc).view({O, O}).t());
    y.add_(post.to(y.scalar_type()).view({N, O, 1, 1}));
    return {y, s.view({N, 1, Ho, Wo}), diff, x_mean, y_mean};
  }
  const std::vector<int64_t> no_pad{0, 0};
  at::Tensor small = at::convolution(xp, w_hat, std::nullopt, stride, padding, dilation, false, no_pad, groups)
                         .contiguous(format_of(cl));
  at::Tensor large = at::convolution(xp, w_hat + weight_diff, std::nullopt, stride, times3(padding),
                                     times3(dilation), false, no_pad, groups)
                         .contiguous(format_of(cl));
  TORCH_CHECK(small.sizes() == large.sizes() && small.size(2) == s.size(2) && small.size(3) == s.size(3),
              "sac_conv2d: internal error: branch sizes ", small.sizes(), " ", large.sizes(),
              " and switch ", s.sizes(), " differ");
  const int64_t Ho = small.size(2), Wo = small.size(3);
  k.blend_forward(small, large, s.view({N, Ho, Wo}), b, cl);  // large <- y, small <- diff
  const at::Tensor y_mean = large.mean({2, 3}, false, acc);
  const at::Tensor post = at::addmm(post_bias.to(acc), y_mean, post_weight.to(acc).view({O, O}).t());
  large.add_(post.to(large.scalar_type()).view({N, O, 1, 1}));
  return {large, s.view({N, 1, Ho, Wo}), small, x_mean, y_mean};
}

// Gradients to (x, weight, weight_gamma, weight_beta, weight_diff, switch_weight, switch_bias,
// pre_weight, pre_bias, post_weight, post_bias, bias), each in its input's dtype (bias: x's).
inline std::vector<at::Tensor> sac_backward(
    const SacKernels& k, const at::Tensor& grad_out_, const at::Tensor& x_, const at::Tensor& weight,
    const at::Tensor& gamma, const at::Tensor& beta, const at::Tensor& weight_diff,
    const at::Tensor& switch_weight, const at::Tensor& pre_weight, const at::Tensor& pre_bias,
    const at::Tensor& post_weight, const at::Tensor& s_, const at::Tensor& diff_,
    const at::Tensor& x_mean, const at::Tensor& y_mean, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  check_sac_args(x_, weight, gamma, beta, weight_diff, switch_weight, pre_weight, pre_bias,
                 post_weight, stride, padding, dilation, groups);
  const c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
  const bool cl = use_channels_last(x_);
  const auto fmt = format_of(cl);
  const at::Tensor x = x_.contiguous(fmt);
  const auto acc = opmath_type(x);
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), O = weight.size(0);
  TORCH_CHECK(grad_out_.dim() == 4 && grad_out_.sizes() == diff_.sizes() && grad_out_.size(0) == N &&
                  grad_out_.size(1) == O,
              "sac_conv2d backward: grad_out must have the output's shape ", diff_.sizes(), ", got ",
              grad_out_.sizes());
  TORCH_CHECK(grad_out_.scalar_type() == x.scalar_type() && diff_.scalar_type() == x.scalar_type(),
              "sac_conv2d backward: grad_out and the saved branch difference must have x's dtype ",
              x.scalar_type());
  const int64_t Ho = diff_.size(2), Wo = diff_.size(3);
  check_shape("switch (saved)", s_, {N, 1, Ho, Wo});
  check_shape("x_mean (saved)", x_mean, {N, C});
  check_shape("y_mean (saved)", y_mean, {N, O});
  const at::Tensor grad_out = grad_out_.contiguous(fmt);
  const at::Tensor diff = diff_.contiguous(fmt);
  const at::Tensor s = s_.to(acc).contiguous().view({N, Ho, Wo});

  // post-context: out = y + Wpost GAP(y) + bpost
  const at::Tensor g_sum = grad_out.sum({2, 3}, false, acc);  // (N, O)
  const at::Tensor post_w = post_weight.to(acc).view({O, O});
  const at::Tensor g_post_bias = g_sum.sum(0);
  const at::Tensor g_post_weight = g_sum.t().mm(y_mean.to(acc)).view({O, O, 1, 1});
  const at::Tensor ctx_grad = (g_sum.mm(post_w) / double(Ho * Wo)).contiguous();
  const at::Tensor g_bias = g_post_bias + ctx_grad.sum(0) * double(Ho * Wo);
  auto [g_small, g_large, g_switch] = k.blend_backward(grad_out, diff, s, ctx_grad, cl);

  // the two convolutions
  const at::Tensor xp = with_context(x, x_mean.to(acc), pre_weight, pre_bias, cl);
  auto [w_hat, standard, inv_sigma] = aws(weight, gamma, beta);
  const std::vector<int64_t> no_pad{0, 0};
  auto [gx_small, gw_small, unused_s] = at::convolution_backward(
      g_small, xp, w_hat, std::nullopt, stride, padding, dilation, false, no_pad, groups, {true, true, false});
  auto [gx_large, gw_large, unused_l] = at::convolution_backward(
      g_large, xp, w_hat + weight_diff, std::nullopt, stride, times3(padding), times3(dilation), false,
      no_pad, groups, {true, true, false});

  // switch: s = sample_stride(pool5(reflect2(w_s . x'))) + b_s; q = adjoint of the pooling
  const at::Tensor g_switch_bias = g_switch.sum().view({1});
  at::Tensor g_pooled = at::zeros({N, 1, H, W}, x.options().dtype(acc));
  g_pooled.slice(2, 0, H, stride[0]).slice(3, 0, W, stride[1]).copy_(g_switch.view({N, 1, Ho, Wo}));
  const at::Tensor g_padded = at::avg_pool2d(at::constant_pad_nd(g_pooled, {4, 4, 4, 4}, 0), {5, 5}, {1, 1});
  const at::Tensor q = reflect2_adjoint(g_padded);  // (N, 1, H, W)
  const at::Tensor g_switch_weight = (xp.to(acc) * q).sum({0, 2, 3}).view({1, C, 1, 1});

  // x' = x + Wpre GAP(x) + bpre
  at::Tensor gxp = gx_small.to(acc).add_(gx_large).add_(q * switch_weight.to(acc).view({1, C, 1, 1}));
  const at::Tensor g_ctx = gxp.sum({2, 3});  // (N, C)
  const at::Tensor g_pre_bias = g_ctx.sum(0);
  const at::Tensor g_pre_weight = g_ctx.t().mm(x_mean.to(acc)).view({C, C, 1, 1});
  const at::Tensor pre_w = pre_weight.to(acc).view({C, C});
  gxp.add_((g_ctx.mm(pre_w) / double(H * W)).view({N, C, 1, 1}));

  // AWS: w_hat = gamma * standard + beta
  const at::Tensor g_w_hat = (gw_small.to(acc) + gw_large.to(acc)).reshape({O, -1});
  const int64_t M = g_w_hat.size(1);
  const at::Tensor g_gamma = (g_w_hat * standard).sum(1).view({O, 1, 1, 1});
  const at::Tensor g_beta = g_w_hat.sum(1).view({O, 1, 1, 1});
  const at::Tensor g_std = g_w_hat * gamma.to(acc).view({O, 1});
  const at::Tensor g_weight =
      (g_std - g_std.mean(1, true) - standard * ((g_std * standard).sum(1, true) / double(M - 1))) * inv_sigma;

  const auto dt = x.scalar_type();
  return {gxp.to(dt).contiguous(fmt),
          g_weight.view(weight.sizes()).to(dt),
          g_gamma.to(dt),
          g_beta.to(dt),
          gw_large.to(dt).contiguous(),
          g_switch_weight.to(dt),
          g_switch_bias.to(dt),
          g_pre_weight.to(dt),
          g_pre_bias.to(dt),
          g_post_weight.to(dt),
          g_post_bias.to(dt),
          g_bias.to(dt)};
}

}  // namespace sac
}  // namespace pyops

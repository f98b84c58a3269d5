// CPU kernels of the switchable atrous convolution: the fused steps (sac.h math) as
// at::parallel_for loops, plugged into the shared composition of sac_host.h; and the
// dual-accumulator direct convolution of the "igemm" algorithm (sac_conv2d_igemm).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include "sac_host.h"

namespace pyops {
namespace sac {
namespace {

constexpr int64_t kGrain = 2048;

Dense4d layout(const at::Tensor& t, bool channels_last) {
  return Dense4d{t.size(0), t.size(1), t.size(2) * t.size(3), channels_last};
}

at::Tensor switch_dot_cpu(const at::Tensor& x, const at::Tensor& w, bool channels_last) {
  const Dense4d L = layout(x, channels_last);
  at::Tensor z = at::empty({x.size(0), x.size(2), x.size(3)}, w.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "sac_switch_dot_cpu", [&] {
    using T = opmath_t<scalar_t>;
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    const T* wp = w.const_data_ptr<T>();
    T* zp = z.mutable_data_ptr<T>();
    at::parallel_for(0, L.N * L.HW, kGrain / 8, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) zp[i] = switch_dot(xp, wp, L, i / L.HW, i % L.HW, int64_t(0), int64_t(1));
    });
  });
  return z;
}

void blend_forward_cpu(at::Tensor& small, at::Tensor& large, const at::Tensor& s, const OptTensor& bias,
                       bool channels_last) {
  const Dense4d L = layout(small, channels_last);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, small.scalar_type(), "sac_blend_forward_cpu", [&] {
    using T = opmath_t<scalar_t>;
    scalar_t* sp = small.mutable_data_ptr<scalar_t>();
    scalar_t* lp = large.mutable_data_ptr<scalar_t>();
    const T* sw = s.const_data_ptr<T>();
    const T* bp = bias.has_value() ? bias->const_data_ptr<T>() : nullptr;
    at::parallel_for(0, L.numel(), kGrain, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        int64_t n, o, p;
        L.decode(i, n, o, p);
        blend_forward(sp, lp, i, sw[n * L.HW + p], bp ? bp[o] : T(0));
      }
    });
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> blend_backward_cpu(const at::Tensor& grad_out,
                                                                  const at::Tensor& diff,
                                                                  const at::Tensor& s,
                                                                  const at::Tensor& ctx_grad,
                                                                  bool channels_last) {
  const Dense4d L = layout(grad_out, channels_last);
  const auto fmt = format_of(channels_last);
  at::Tensor g_small = at::empty_like(grad_out, fmt);
  at::Tensor g_large = at::empty_like(grad_out, fmt);
  at::Tensor g_switch = at::empty_like(s);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad_out.scalar_type(), "sac_blend_backward_cpu", [&] {
    using T = opmath_t<scalar_t>;
    const scalar_t* g = grad_out.const_data_ptr<scalar_t>();
    const scalar_t* d = diff.const_data_ptr<scalar_t>();
    const T* sw = s.const_data_ptr<T>();
    const T* cg = ctx_grad.const_data_ptr<T>();
    scalar_t* gs = g_small.mutable_data_ptr<scalar_t>();
    scalar_t* gl = g_large.mutable_data_ptr<scalar_t>();
    T* gsw = g_switch.mutable_data_ptr<T>();
    at::parallel_for(0, L.N * L.HW, kGrain / 8, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const int64_t n = i / L.HW, p = i % L.HW;
        gsw[i] = blend_backward(g, d, cg, sw[i], L, n, p, int64_t(0), int64_t(1), gs, gl);
      }
    });
  });
  return {g_small, g_large, g_switch};
}

// The dual-accumulator convolution, one (image, output channel) pair per task: every output
// pixel gathers both branches' taps (sac.h: dual_conv_at) and blends them; the pixel sum of y
// is accumulated in a fixed order, so it is deterministic.
std::tuple<at::Tensor, at::Tensor, at::Tensor> dual_conv_cpu(const at::Tensor& xp, const at::Tensor& w_small,
                                                             const at::Tensor& w_large, const at::Tensor& s,
                                                             const OptTensor& bias, const DualConvGeom& g,
                                                             bool channels_last) {
  const Dense4d Lx = layout(xp, channels_last);
  const Dense4d Ly{g.N, g.O, g.Ho * g.Wo, channels_last};
  const auto opts = xp.options().memory_format(format_of(channels_last));
  at::Tensor y = at::empty({g.N, g.O, g.Ho, g.Wo}, opts);
  at::Tensor diff = at::empty({g.N, g.O, g.Ho, g.Wo}, opts);
  at::Tensor y_sum = at::empty({g.N, g.O}, s.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, xp.scalar_type(), "sac_dual_conv_cpu", [&] {
    using T = opmath_t<scalar_t>;
    const scalar_t* x = xp.const_data_ptr<scalar_t>();
    const scalar_t* ws = w_small.const_data_ptr<scalar_t>();
    const scalar_t* wl = w_large.const_data_ptr<scalar_t>();
    const T* sp = s.const_data_ptr<T>();
    const T* bp = bias.has_value() ? bias->const_data_ptr<T>() : nullptr;
    scalar_t* yp = y.mutable_data_ptr<scalar_t>();
    scalar_t* dp = diff.mutable_data_ptr<scalar_t>();
    T* sum = y_sum.mutable_data_ptr<T>();
    at::parallel_for(0, g.N * g.O, 1, [&](int64_t begin, int64_t end) {
      for (int64_t task = begin; task < end; ++task) {
        const int64_t n = task / g.O, o = task % g.O;
        T total = T(0);
        for (int64_t p = 0; p < Ly.HW; ++p) {
          T acc_s, acc_l, d;
          dual_conv_at(x, Lx, ws, wl, g, n, o, p / g.Wo, p % g.Wo, acc_s, acc_l);
          const T yv = dual_blend(acc_s, acc_l, sp[n * Ly.HW + p], bp ? bp[o] : T(0), d);
          const int64_t i = Ly.offset(n, o, p);
          yp[i] = static_cast<scalar_t>(yv);
          dp[i] = static_cast<scalar_t>(d);
          total += yv;
        }
        sum[task] = total;
      }
    });
  });
  return {y, diff, y_sum};
}

const SacKernels kCpuKernels{&switch_dot_cpu, &blend_forward_cpu, &blend_backward_cpu};
const SacKernels kCpuIgemmKernels{&switch_dot_cpu, &blend_forward_cpu, &blend_backward_cpu, &dual_conv_cpu};

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> sac_conv2d_cpu(
    const at::Tensor& x, const at::Tensor& weight, const at::Tensor& gamma, const at::Tensor& beta,
    const at::Tensor& weight_diff, const at::Tensor& switch_weight, const at::Tensor& switch_bias,
    const at::Tensor& pre_weight, const at::Tensor& pre_bias, const at::Tensor& post_weight,
    const at::Tensor& post_bias, const OptTensor& bias, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  return sac_forward(kCpuKernels, x, weight, gamma, beta, weight_diff, switch_weight, switch_bias,
                     pre_weight, pre_bias, post_weight, post_bias, bias, stride, padding, dilation, groups);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> sac_conv2d_igemm_cpu(
    const at::Tensor& x, const at::Tensor& weight, const at::Tensor& gamma, const at::Tensor& beta,
    const at::Tensor& weight_diff, const at::Tensor& switch_weight, const at::Tensor& switch_bias,
    const at::Tensor& pre_weight, const at::Tensor& pre_bias, const at::Tensor& post_weight,
    const at::Tensor& post_bias, const OptTensor& bias, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  return sac_forward(kCpuIgemmKernels, x, weight, gamma, beta, weight_diff, switch_weight, switch_bias,
                     pre_weight, pre_bias, post_weight, post_bias, bias, stride, padding, dilation, groups);
}

std::vector<at::Tensor> sac_conv2d_backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& weight, const at::Tensor& gamma,
    const at::Tensor& beta, const at::Tensor& weight_diff, const at::Tensor& switch_weight,
    const at::Tensor& pre_weight, const at::Tensor& pre_bias, const at::Tensor& post_weight,
    const at::Tensor& s, const at::Tensor& diff, const at::Tensor& x_mean, const at::Tensor& y_mean,
    at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  return sac_backward(kCpuKernels, grad_out, x, weight, gamma, beta, weight_diff, switch_weight,
                      pre_weight, pre_bias, post_weight, s, diff, x_mean, y_mean, stride, padding,
                      dilation, groups);
}

}  // namespace

TORCH_LIBRARY_IMPL(pyops, CPU, m) {
  m.impl("sac_conv2d", &sac_conv2d_cpu);
  m.impl("sac_conv2d_backward", &sac_conv2d_backward_cpu);
  // the igemm forward saves what the composition's forward saves: same backward
  m.impl("sac_conv2d_igemm", &sac_conv2d_igemm_cpu);
  m.impl("sac_conv2d_backward_igemm", &sac_conv2d_backward_cpu);
}

}  // namespace sac
}  // namespace pyops

// CPU kernels of the switchable atrous convolution: the fused steps (sac.h math) as
// at::parallel_for loops, plugged into the shared composition of sac_host.h; and the
// dual-accumulator direct convolution of the "igemm" algorithm (sac_conv2d_igemm).
#include <algorithm>

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

void linear_cpu(const at::Tensor& v, const at::Tensor& W, const at::Tensor& b, at::Tensor& out) {
  const int64_t J = W.size(0), K = W.size(1);
  PYOPS_SAC_DISPATCH(W.scalar_type(), "sac_linear_cpu", [&] {
    using T = opmath_t<scalar_t>;
    const T* vp = v.const_data_ptr<T>();
    const scalar_t* Wp = W.const_data_ptr<scalar_t>();
    const scalar_t* bp = b.const_data_ptr<scalar_t>();
    T* op = out.mutable_data_ptr<T>();
    at::parallel_for(0, out.numel(), kGrain / K + 1, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i)
        op[i] = static_cast<T>(bp[i % J]) + linear_partial(Wp, vp, K, i / J, i % J, int64_t(0), int64_t(1));
    });
  });
}

void context_switch_dot_cpu(const at::Tensor& x, const at::Tensor& ctx, const at::Tensor& w_s, bool channels_last,
                            at::Tensor& xp, at::Tensor& z) {
  const Dense4d L = dense4d(x, channels_last);
  PYOPS_SAC_DISPATCH(x.scalar_type(), "sac_context_switch_dot_cpu", [&] {
    using T = opmath_t<scalar_t>;
    const scalar_t* xd = x.const_data_ptr<scalar_t>();
    const T* c = ctx.const_data_ptr<T>();
    const scalar_t* w = w_s.const_data_ptr<scalar_t>();
    scalar_t* xpd = xp.mutable_data_ptr<scalar_t>();
    T* zd = z.mutable_data_ptr<T>();
    at::parallel_for(0, L.N * L.HW, kGrain / 8, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i)
        zd[i] = context_switch_dot(xd, c, w, L, i / L.HW, i % L.HW, int64_t(0), int64_t(1), xpd);
    });
  });
}

void switch_pool_cpu(const at::Tensor& z, const at::Tensor& bias, int64_t SH, int64_t SW, at::Tensor& s) {
  const int64_t H = z.size(1), W = z.size(2), Ho = s.size(2), Wo = s.size(3);
  PYOPS_SAC_DISPATCH(bias.scalar_type(), "sac_switch_pool_cpu", [&] {
    using T = opmath_t<scalar_t>;
    const T* zd = z.const_data_ptr<T>();
    const T b = static_cast<T>(bias.const_data_ptr<scalar_t>()[0]);
    T* sd = s.mutable_data_ptr<T>();
    at::parallel_for(0, s.numel(), kGrain / 32, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i)
        sd[i] = switch_pool(zd, H, W, SH, SW, i / (Ho * Wo), (i / Wo) % Ho, i % Wo) + b;
    });
  });
}

void switch_pool_adjoint_cpu(const at::Tensor& g, int64_t SH, int64_t SW, at::Tensor& q) {
  const int64_t H = q.size(1), W = q.size(2), Ho = g.size(1), Wo = g.size(2);
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "sac_switch_pool_adjoint_cpu", [&] {
    const scalar_t* gd = g.const_data_ptr<scalar_t>();
    scalar_t* qd = q.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, q.numel(), kGrain / 32, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i)
        qd[i] = switch_pool_adjoint(gd, H, W, Ho, Wo, SH, SW, i / (H * W), (i / W) % H, i % W);
    });
  });
}

// Mean and 1 / sigma of row o of the weight w.
template <typename scalar_t, typename T>
void aws_stats(const scalar_t* w, WeightRow R, int64_t o, T& mean, T& inv_sigma) {
  mean = row_sum<scalar_t, T>(w, R, o, 0, 1) / static_cast<T>(R.M());
  inv_sigma = aws_inv_sigma(row_sq_dev(w, R, o, mean, 0, 1), R.M(), T(kAwsEps));
}

void aws_cpu(const at::Tensor& weight, const at::Tensor& gamma, const at::Tensor& beta, const at::Tensor& weight_diff,
             at::Tensor& w_small, at::Tensor& w_large) {
  const WeightRow R = weight_row(weight), Ro = weight_row(w_small);
  PYOPS_SAC_DISPATCH(weight.scalar_type(), "sac_aws_cpu", [&] {
    using T = opmath_t<scalar_t>;
    const scalar_t* w = weight.const_data_ptr<scalar_t>();
    const scalar_t* wd = weight_diff.const_data_ptr<scalar_t>();
    const scalar_t* g = gamma.const_data_ptr<scalar_t>();
    const scalar_t* b = beta.const_data_ptr<scalar_t>();
    scalar_t* ws = w_small.mutable_data_ptr<scalar_t>();
    scalar_t* wl = w_large.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, weight.size(0), 1, [&](int64_t begin, int64_t end) {
      for (int64_t o = begin; o < end; ++o) {
        T mean, inv_sigma;
        aws_stats(w, R, o, mean, inv_sigma);
        aws_write(w, wd, R, Ro, o, mean, inv_sigma, static_cast<T>(g[o]), static_cast<T>(b[o]), 0, 1, ws, wl);
      }
    });
  });
}

void aws_backward_cpu(const at::Tensor& gw_small, const at::Tensor& gw_large, const at::Tensor& weight,
                      const at::Tensor& gamma, at::Tensor& g_weight, at::Tensor& g_gamma, at::Tensor& g_beta) {
  const WeightRow R = weight_row(weight), Rs = weight_row(gw_small), Rl = weight_row(gw_large);
  PYOPS_SAC_DISPATCH(weight.scalar_type(), "sac_aws_backward_cpu", [&] {
    using T = opmath_t<scalar_t>;
    const scalar_t* gs = gw_small.const_data_ptr<scalar_t>();
    const scalar_t* gl = gw_large.const_data_ptr<scalar_t>();
    const scalar_t* w = weight.const_data_ptr<scalar_t>();
    const scalar_t* gm = gamma.const_data_ptr<scalar_t>();
    scalar_t* gw = g_weight.mutable_data_ptr<scalar_t>();
    scalar_t* gg = g_gamma.mutable_data_ptr<scalar_t>();
    scalar_t* gb = g_beta.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, weight.size(0), 1, [&](int64_t begin, int64_t end) {
      for (int64_t o = begin; o < end; ++o) {
        T mean, inv_sigma, sum_g, sum_g_std;
        aws_stats(w, R, o, mean, inv_sigma);
        aws_grad_sums(gs, Rs, gl, Rl, w, R, o, mean, inv_sigma, 0, 1, sum_g, sum_g_std);
        aws_grad_write(gs, Rs, gl, Rl, w, R, o, mean, inv_sigma, static_cast<T>(gm[o]), sum_g, sum_g_std, 0, 1, gw);
        gg[o] = static_cast<scalar_t>(sum_g_std);
        gb[o] = static_cast<scalar_t>(sum_g);
      }
    });
  });
}

void blend_forward_cpu(at::Tensor& small, at::Tensor& large, const at::Tensor& s, const OptTensor& bias,
                       bool channels_last) {
  const Dense4d L = dense4d(small, channels_last);
  PYOPS_SAC_DISPATCH(small.scalar_type(), "sac_blend_forward_cpu", [&] {
    using T = opmath_t<scalar_t>;
    scalar_t* sp = small.mutable_data_ptr<scalar_t>();
    scalar_t* lp = large.mutable_data_ptr<scalar_t>();
    const T* sw = s.const_data_ptr<T>();
    const scalar_t* bp = bias.has_value() ? bias->const_data_ptr<scalar_t>() : nullptr;
    at::parallel_for(0, L.numel(), kGrain, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        int64_t n, o, p;
        L.decode(i, n, o, p);
        blend_forward(sp, lp, i, sw[n * L.HW + p], bp ? static_cast<T>(bp[o]) : T(0));
      }
    });
  });
}

void blend_backward_cpu(const at::Tensor& grad_out, const at::Tensor& diff, const at::Tensor& s,
                        const at::Tensor& ctx_grad, bool channels_last, at::Tensor& g_small, at::Tensor& g_large,
                        at::Tensor& g_switch) {
  const Dense4d L = dense4d(grad_out, channels_last);
  PYOPS_SAC_DISPATCH(grad_out.scalar_type(), "sac_blend_backward_cpu", [&] {
    using T = opmath_t<scalar_t>;
    const scalar_t* g = grad_out.const_data_ptr<scalar_t>();
    const scalar_t* d = diff.const_data_ptr<scalar_t>();
    const T* sw = s.const_data_ptr<T>();
    const T* cg = ctx_grad.const_data_ptr<T>();
    scalar_t* gs = g_small.mutable_data_ptr<scalar_t>();
    scalar_t* gl = g_large.mutable_data_ptr<scalar_t>();
    T* gsw = g_switch.mutable_data_ptr<T>();
    at::parallel_for(0, L.N * L.HW, kGrain / 8, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i)
        gsw[i] = blend_backward(g, d, cg, sw[i], L, i / L.HW, i % L.HW, int64_t(0), int64_t(1), gs, gl);
    });
  });
}

void linear_backward_cpu(const at::Tensor& g, const at::Tensor& v, const at::Tensor& W, double scale,
                         at::Tensor& g_W, at::Tensor& g_v, at::Tensor& g_b, at::Tensor& g_vbias) {
  PYOPS_SAC_DISPATCH(W.scalar_type(), "sac_linear_backward_cpu", [&] {
    using T = opmath_t<scalar_t>;
    const LinearBackward<scalar_t, T> f{
        g.const_data_ptr<T>(), v.const_data_ptr<T>(), W.const_data_ptr<scalar_t>(), g.size(0), W.size(0), W.size(1),
        static_cast<T>(scale), g_W.mutable_data_ptr<scalar_t>(), g_v.mutable_data_ptr<T>(),
        g_b.mutable_data_ptr<scalar_t>(), g_vbias.defined() ? g_vbias.mutable_data_ptr<scalar_t>() : nullptr};
    at::parallel_for(0, f.items(), kGrain / 64, [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) f.item(t);
    });
  });
}

void input_grad_sums_cpu(const at::Tensor& gx_small, const at::Tensor& gx_large, const at::Tensor& xp,
                         const at::Tensor& q, const at::Tensor& w_s, bool channels_last, at::Tensor& ctx_part,
                         at::Tensor& switch_part) {
  const Dense4d L = dense4d(xp, channels_last);
  const int64_t chunks = ctx_part.size(1), chunk = (L.HW + chunks - 1) / chunks;
  PYOPS_SAC_DISPATCH(xp.scalar_type(), "sac_input_grad_sums_cpu", [&] {
    using T = opmath_t<scalar_t>;
    const scalar_t* gs = gx_small.const_data_ptr<scalar_t>();
    const scalar_t* gl = gx_large.const_data_ptr<scalar_t>();
    const scalar_t* x = xp.const_data_ptr<scalar_t>();
    const T* qd = q.const_data_ptr<T>();
    const scalar_t* w = w_s.const_data_ptr<scalar_t>();
    T* cp = ctx_part.mutable_data_ptr<T>();
    T* sp = switch_part.mutable_data_ptr<T>();
    at::parallel_for(0, ctx_part.numel(), kGrain / chunk + 1, [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) {
        const int64_t c = t % L.C, k = (t / L.C) % chunks, n = t / (L.C * chunks);
        const int64_t p0 = k * chunk, p1 = std::min(p0 + chunk, L.HW);
        input_grad_sums(gs, gl, x, qd, static_cast<T>(w[c]), L, n, c, p0, p1, cp[t], sp[t]);
      }
    });
  });
}

void input_grad_cpu(const at::Tensor& gx_small, const at::Tensor& gx_large, const at::Tensor& q, const at::Tensor& w_s,
                    const at::Tensor& corr, bool channels_last, at::Tensor& gx) {
  const Dense4d L = dense4d(gx, channels_last);
  PYOPS_SAC_DISPATCH(gx.scalar_type(), "sac_input_grad_cpu", [&] {
    using T = opmath_t<scalar_t>;
    const scalar_t* gs = gx_small.const_data_ptr<scalar_t>();
    const scalar_t* gl = gx_large.const_data_ptr<scalar_t>();
    const T* qd = q.const_data_ptr<T>();
    const scalar_t* w = w_s.const_data_ptr<scalar_t>();
    const T* cd = corr.const_data_ptr<T>();
    scalar_t* out = gx.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, L.numel(), kGrain, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) out[i] = input_grad_at(gs, gl, qd, w, cd, L, i);
    });
  });
}

// The dual-accumulator convolution, one (image, output channel) pair per task: every output
// pixel gathers both branches' taps (sac.h: dual_conv_at) and blends them; the pixel sum of y
// is accumulated in a fixed order, so it is deterministic.
std::tuple<at::Tensor, at::Tensor, at::Tensor> dual_conv_cpu(const at::Tensor& xp, const at::Tensor& w_small,
                                                             const at::Tensor& w_large, const at::Tensor& s,
                                                             const OptTensor& bias, const DualConvGeom& g,
                                                             bool channels_last) {
  const Dense4d Lx = dense4d(xp, channels_last);
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

constexpr SacKernels kCpuKernels{&linear_cpu,         &context_switch_dot_cpu, &switch_pool_cpu,
                                 &switch_pool_adjoint_cpu, &aws_cpu,           &aws_backward_cpu,
                                 &blend_forward_cpu,  &blend_backward_cpu,     &linear_backward_cpu,
                                 &input_grad_sums_cpu, &input_grad_cpu};

SacKernels with_dual_conv(SacKernels k) {
  k.dual_conv = &dual_conv_cpu;
  return k;
}
const SacKernels kCpuIgemmKernels = with_dual_conv(kCpuKernels);

SacForward sac_conv2d_cpu(
    const at::Tensor& x, const at::Tensor& weight, const at::Tensor& gamma, const at::Tensor& beta,
    const at::Tensor& weight_diff, const at::Tensor& switch_weight, const at::Tensor& switch_bias,
    const at::Tensor& pre_weight, const at::Tensor& pre_bias, const at::Tensor& post_weight,
    const at::Tensor& post_bias, const OptTensor& bias, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  return sac_forward(kCpuKernels, x, weight, gamma, beta, weight_diff, switch_weight, switch_bias,
                     pre_weight, pre_bias, post_weight, post_bias, bias, stride, padding, dilation, groups);
}

SacForward sac_conv2d_igemm_cpu(
    const at::Tensor& x, const at::Tensor& weight, const at::Tensor& gamma, const at::Tensor& beta,
    const at::Tensor& weight_diff, const at::Tensor& switch_weight, const at::Tensor& switch_bias,
    const at::Tensor& pre_weight, const at::Tensor& pre_bias, const at::Tensor& post_weight,
    const at::Tensor& post_bias, const OptTensor& bias, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  return sac_forward(kCpuIgemmKernels, x, weight, gamma, beta, weight_diff, switch_weight, switch_bias,
                     pre_weight, pre_bias, post_weight, post_bias, bias, stride, padding, dilation, groups);
}

std::vector<at::Tensor> sac_conv2d_backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& xp, const at::Tensor& weight, const at::Tensor& gamma,
    const at::Tensor& beta, const at::Tensor& weight_diff, const at::Tensor& switch_weight,
    const at::Tensor& pre_weight, const at::Tensor& post_weight,
    const at::Tensor& s, const at::Tensor& diff, const at::Tensor& x_mean, const at::Tensor& y_mean,
    at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  return sac_backward(kCpuKernels, grad_out, xp, weight, gamma, beta, weight_diff, switch_weight,
                      pre_weight, post_weight, s, diff, x_mean, y_mean, stride, padding,
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

// CPU kernels of the ADA geometric + colour stage (forward and its adjoint), parallel over
// image rows with at::parallel_for. The per-pixel math is the one the CUDA kernels run (ada.h).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "ada_host.h"

namespace pyops {
namespace ada {
namespace {

#define PYOPS_ADA_DISPATCH(TYPE, NAME, ...) \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, TYPE, NAME, __VA_ARGS__)

at::Tensor geom_color_cpu(const at::Tensor& images, const std::optional<at::Tensor>& G_,
                          const std::optional<at::Tensor>& C_) {
  check_geom_color_args("ada_geom_color", images, G_, C_);
  const at::Tensor G = opmath_matrix(G_, images), Cm = opmath_matrix(C_, images);
  at::Tensor out = at::empty(images.sizes(), images.options());
  if (out.numel() == 0) return out;
  PYOPS_ADA_DISPATCH(images.scalar_type(), "ada_geom_color_cpu", [&] {
    using T = at::opmath_type<scalar_t>;
    const auto x = image_of(images, images.const_data_ptr<scalar_t>());
    const auto o = image_of(out, out.mutable_data_ptr<scalar_t>());
    const T* g = G.defined() ? G.const_data_ptr<T>() : nullptr;
    const T* c = Cm.defined() ? Cm.const_data_ptr<T>() : nullptr;
    const Margin m = g ? batch_margin(g, x.B, x.H, x.W) : Margin{0, 0, 0, 0};
    at::parallel_for(0, x.B * x.H, 1, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const int64_t b = r / x.H, y = r % x.H;
        const UpMap<T> u = g ? make_upmap(g + 9 * b, m, x.H, x.W) : UpMap<T>{};
        const Color<T> k = make_color(c ? c + 16 * b : nullptr, x.C);
        for (int64_t xx = 0; xx < x.W; ++xx) {
          T v[kMaxChannels];
          if (g) {
            geom_pixel(x, u, b, y, xx, v);
          } else {
            for (int64_t ch = 0; ch < x.C; ++ch) v[ch] = static_cast<T>(x.data[x.at(b, ch, y, xx)]);
          }
          if (c) apply_color(k, x.C, v, true);
          for (int64_t ch = 0; ch < x.C; ++ch) o.data[o.at(b, ch, y, xx)] = static_cast<scalar_t>(v[ch]);
        }
      }
    });
  });
  return out;
}

at::Tensor geom_color_backward_cpu(const at::Tensor& grad, const std::optional<at::Tensor>& G_,
                                   const std::optional<at::Tensor>& C_) {
  check_geom_color_args("ada_geom_color_backward", grad, G_, C_);
  const at::Tensor G = opmath_matrix(G_, grad), Cm = opmath_matrix(C_, grad);
  at::Tensor out = at::empty(grad.sizes(), grad.options());
  if (out.numel() == 0) return out;
  PYOPS_ADA_DISPATCH(grad.scalar_type(), "ada_geom_color_backward_cpu", [&] {
    using T = at::opmath_type<scalar_t>;
    const auto gy = image_of(grad, grad.const_data_ptr<scalar_t>());
    const auto o = image_of(out, out.mutable_data_ptr<scalar_t>());
    const T* g = G.defined() ? G.const_data_ptr<T>() : nullptr;
    const T* c = Cm.defined() ? Cm.const_data_ptr<T>() : nullptr;
    const int64_t B = gy.B, C = gy.C, H = gy.H, W = gy.W;
    if (!g) {  // colour only: the transposed matrix per pixel
      at::parallel_for(0, B * H, 1, [&](int64_t begin, int64_t end) {
        for (int64_t r = begin; r < end; ++r) {
          const int64_t b = r / H, y = r % H;
          const Color<T> k = make_color(c ? c + 16 * b : nullptr, C);
          for (int64_t xx = 0; xx < W; ++xx) {
            T v[kMaxChannels];
            for (int64_t ch = 0; ch < C; ++ch) v[ch] = static_cast<T>(gy.data[gy.at(b, ch, y, xx)]);
            if (c) apply_color_t(k, C, v);
            for (int64_t ch = 0; ch < C; ++ch) o.data[o.at(b, ch, y, xx)] = static_cast<scalar_t>(v[ch]);
          }
        }
      });
      return;
    }
    const Margin m = batch_margin(g, B, H, W);
    const int64_t Hg = 2 * H + 4 * kGeomPad, Wg = 2 * W + 4 * kGeomPad;
    at::Tensor gv_t = at::empty({B, C, Hg, Wg}, grad.options().dtype(c10::CppTypeToScalarType<T>::value));
    T* gv = gv_t.mutable_data_ptr<T>();
    at::parallel_for(0, B * Hg, 1, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const int64_t b = r / Hg, yy = r % Hg;
        const Color<T> k = make_color(c ? c + 16 * b : nullptr, C);
        for (int64_t xx = 0; xx < Wg; ++xx) {
          T v[kMaxChannels];
          grid_adjoint(gy, k, c != nullptr, b, yy, xx, v);
          for (int64_t ch = 0; ch < C; ++ch) gv[((b * C + ch) * Hg + yy) * Wg + xx] = v[ch];
        }
      }
    });
    at::parallel_for(0, B * H, 1, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const int64_t b = r / H, y = r % H;
        const UpMap<T> u = make_upmap(g + 9 * b, m, H, W);
        for (int64_t xx = 0; xx < W; ++xx) {
          T v[kMaxChannels];
          pixel_adjoint(gv, C, H, W, u, m, b, y, xx, v);
          for (int64_t ch = 0; ch < C; ++ch) o.data[o.at(b, ch, y, xx)] = static_cast<scalar_t>(v[ch]);
        }
      }
    });
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(pyops, CPU, m) {
  m.impl("ada_geom_color", &geom_color_cpu);
  m.impl("ada_geom_color_backward", &geom_color_backward_cpu);
}

}  // namespace ada
}  // namespace pyops

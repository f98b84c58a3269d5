// CPU kernels of the ADA geometric + colour stage (forward and its adjoint), parallel over
// output tiles (forward) and image rows (adjoint) with at::parallel_for. The per-pixel math is the one the CUDA kernels run (ada.h).
#include <vector>

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
    if (!g) {  // colour only: per pixel
      at::parallel_for(0, x.B * x.H, 1, [&](int64_t begin, int64_t end) {
        for (int64_t r = begin; r < end; ++r) {
          const int64_t b = r / x.H, y = r % x.H;
          const Color<T> k = make_color(c ? c + 16 * b : nullptr, x.C);
          for (int64_t xx = 0; xx < x.W; ++xx) {
            T v[kMaxChannels];
            for (int64_t ch = 0; ch < x.C; ++ch) v[ch] = static_cast<T>(x.data[x.at(b, ch, y, xx)]);
            if (c) apply_color(k, x.C, v, true);
            for (int64_t ch = 0; ch < x.C; ++ch) o.data[o.at(b, ch, y, xx)] = static_cast<scalar_t>(v[ch]);
          }
        }
      });
      return;
    }
    // geometric (+ colour): the tiles of the CUDA kernel, so these tests cover its indexing
    const Margin m = batch_margin(g, x.B, x.H, x.W);
    const int64_t tiles_y = (x.H + kTile - 1) / kTile, tiles_x = (x.W + kTile - 1) / kTile;
    at::parallel_for(0, x.B * tiles_y * tiles_x, 1, [&](int64_t begin, int64_t end) {
      std::vector<T> tile(kMaxChannels * kGridTileSize);
      for (int64_t t = begin; t < end; ++t) {
        const int64_t b = t / (tiles_y * tiles_x);
        const int64_t oy0 = ((t / tiles_x) % tiles_y) * kTile, ox0 = (t % tiles_x) * kTile;
        const UpMap<T> u = make_upmap(g + 9 * b, m, x.H, x.W);
        const Color<T> k = make_color(c ? c + 16 * b : nullptr, x.C);
        for (int j = 0; j < kGridTileSize; ++j) tile_grid_sample(x, u, b, oy0, ox0, j, tile.data());
        for (int ty = 0; ty < kTile && oy0 + ty < x.H; ++ty) {
          for (int tx = 0; tx < kTile && ox0 + tx < x.W; ++tx) {
            T v[kMaxChannels];
            tile_output(tile.data(), x.C, ty, tx, v);
            if (c) apply_color(k, x.C, v, true);
            for (int64_t ch = 0; ch < x.C; ++ch) o.data[o.at(b, ch, oy0 + ty, ox0 + tx)] = static_cast<scalar_t>(v[ch]);
          }
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

at::Tensor filter_noise_cutout_cpu(const at::Tensor& images, const std::optional<at::Tensor>& filters_,
                                   const std::optional<at::Tensor>& sigma_, const std::optional<at::Tensor>& noise,
                                   const std::optional<at::Tensor>& boxes_) {
  check_filter_args("ada_filter_noise_cutout", images, filters_, sigma_, noise, boxes_);
  const at::Tensor h = opmath_matrix(filters_, images), sg = opmath_matrix(sigma_, images);
  const at::Tensor bx = opmath_matrix(boxes_, images);
  at::Tensor out = at::empty(images.sizes(), images.options());
  if (out.numel() == 0) return out;
  PYOPS_ADA_DISPATCH(images.scalar_type(), "ada_filter_noise_cutout_cpu", [&] {
    using T = at::opmath_type<scalar_t>;
    const auto x = image_of(images, images.const_data_ptr<scalar_t>());
    const auto o = image_of(out, out.mutable_data_ptr<scalar_t>());
    const T* hp = h.defined() ? h.const_data_ptr<T>() : nullptr;
    const T* sp = sg.defined() ? sg.const_data_ptr<T>() : nullptr;
    const T* bp = bx.defined() ? bx.const_data_ptr<T>() : nullptr;
    const at::Tensor nz = noise.has_value() ? noise->to(c10::CppTypeToScalarType<T>::value) : at::Tensor();
    const auto n = nz.defined() ? image_of(nz, nz.const_data_ptr<T>()) : Image<const T>{};
    at::parallel_for(0, x.B * x.C * x.H, 1, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const int64_t b = r / (x.C * x.H), c = (r / x.H) % x.C, y = r % x.H;
        for (int64_t xx = 0; xx < x.W; ++xx) {
          T v = hp ? filter_pixel(x, hp + kFilterTaps * b, b, c, y, xx) : static_cast<T>(x.data[x.at(b, c, y, xx)]);
          if (sp) v = v + n.data[n.at(b, c, y, xx)] * sp[b];
          if (bp && !cutout_keep(bp + 4 * b, y, xx, x.H, x.W)) v = T(0);
          o.data[o.at(b, c, y, xx)] = static_cast<scalar_t>(v);
        }
      }
    });
  });
  return out;
}

at::Tensor filter_noise_cutout_backward_cpu(const at::Tensor& grad, const std::optional<at::Tensor>& filters_,
                                            const std::optional<at::Tensor>& boxes_) {
  check_filter_args("ada_filter_noise_cutout_backward", grad, filters_, std::nullopt, std::nullopt, boxes_);
  const at::Tensor h = opmath_matrix(filters_, grad), bx = opmath_matrix(boxes_, grad);
  at::Tensor out = at::empty(grad.sizes(), grad.options());
  if (out.numel() == 0) return out;
  PYOPS_ADA_DISPATCH(grad.scalar_type(), "ada_filter_noise_cutout_backward_cpu", [&] {
    using T = at::opmath_type<scalar_t>;
    const auto g = image_of(grad, grad.const_data_ptr<scalar_t>());
    const auto o = image_of(out, out.mutable_data_ptr<scalar_t>());
    const T* hp = h.defined() ? h.const_data_ptr<T>() : nullptr;
    const T* bp = bx.defined() ? bx.const_data_ptr<T>() : nullptr;
    at::parallel_for(0, g.B * g.C * g.H, 1, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const int64_t b = r / (g.C * g.H), c = (r / g.H) % g.C, y = r % g.H;
        const T* box = bp ? bp + 4 * b : nullptr;
        for (int64_t xx = 0; xx < g.W; ++xx) {
          T v;
          if (hp) {
            v = filter_adjoint_pixel(g, hp + kFilterTaps * b, box, b, c, y, xx);
          } else {
            v = (box && !cutout_keep(box, y, xx, g.H, g.W)) ? T(0) : static_cast<T>(g.data[g.at(b, c, y, xx)]);
          }
          o.data[o.at(b, c, y, xx)] = static_cast<scalar_t>(v);
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
  m.impl("ada_filter_noise_cutout", &filter_noise_cutout_cpu);
  m.impl("ada_filter_noise_cutout_backward", &filter_noise_cutout_backward_cpu);
}

}  // namespace ada
}  // namespace pyops

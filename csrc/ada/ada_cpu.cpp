// CPU kernels of the ADA ops: the loops of ada_cpu_loops.h (shared with the JAX binding), run in
// parallel with at::parallel_for over output tiles or image rows. The per-pixel math is the one
// the CUDA kernels run (ada.h).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "ada_cpu_loops.h"
#include "ada_host.h"

namespace pyops {
namespace ada {
namespace {

#define PYOPS_ADA_DISPATCH(TYPE, NAME, ...) \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, TYPE, NAME, __VA_ARGS__)

// The `pfor` of ada_cpu_loops.h.
const auto parallel = [](int64_t n, int64_t grain, const auto& body) { at::parallel_for(0, n, grain, body); };

at::Tensor geom_color_cpu(const at::Tensor& images, const std::optional<at::Tensor>& G_,
                          const std::optional<at::Tensor>& C_) {
  check_geom_color_args("ada_geom_color", images, G_, C_);
  const at::Tensor G = opmath_matrix(G_, images), Cm = opmath_matrix(C_, images);
  at::Tensor out = at::empty(images.sizes(), images.options());
  if (out.numel() == 0) return out;
  PYOPS_ADA_DISPATCH(images.scalar_type(), "ada_geom_color_cpu", [&] {
    using T = at::opmath_type<scalar_t>;
    geom_color_loops(image_of(images, images.const_data_ptr<scalar_t>()), image_of(out, out.mutable_data_ptr<scalar_t>()),
                     G.defined() ? G.const_data_ptr<T>() : nullptr, Cm.defined() ? Cm.const_data_ptr<T>() : nullptr,
                     parallel);
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
    at::Tensor gv;
    if (G.defined()) {
      gv = at::empty({geom_color_adjoint_scratch(grad.size(0), grad.size(1), grad.size(2), grad.size(3))},
                     grad.options().dtype(c10::CppTypeToScalarType<T>::value));
    }
    geom_color_adjoint_loops(image_of(grad, grad.const_data_ptr<scalar_t>()), image_of(out, out.mutable_data_ptr<scalar_t>()),
                             G.defined() ? G.const_data_ptr<T>() : nullptr,
                             Cm.defined() ? Cm.const_data_ptr<T>() : nullptr,
                             gv.defined() ? gv.mutable_data_ptr<T>() : nullptr, parallel);
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
    const at::Tensor nz = noise.has_value() ? noise->to(c10::CppTypeToScalarType<T>::value) : at::Tensor();
    filter_noise_cutout_loops(image_of(images, images.const_data_ptr<scalar_t>()),
                              image_of(out, out.mutable_data_ptr<scalar_t>()),
                              h.defined() ? h.const_data_ptr<T>() : nullptr,
                              sg.defined() ? sg.const_data_ptr<T>() : nullptr,
                              nz.defined() ? image_of(nz, nz.const_data_ptr<T>()) : Image<const T>{},
                              bx.defined() ? bx.const_data_ptr<T>() : nullptr, parallel);
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
    filter_noise_cutout_adjoint_loops(image_of(grad, grad.const_data_ptr<scalar_t>()),
                                      image_of(out, out.mutable_data_ptr<scalar_t>()),
                                      h.defined() ? h.const_data_ptr<T>() : nullptr,
                                      bx.defined() ? bx.const_data_ptr<T>() : nullptr, parallel);
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

// Torch registration of the CUDA kernels of the ADA geometric + colour and filter + noise +
// cutout stages. The per-pixel math lives in ada.h (shared with the CPU kernels), the kernels,
// their thread mapping and launches in ada_kernels.cuh (shared with the JAX binding).
#include <limits>

#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "ada_host.h"
#include "ada_kernels.cuh"

namespace pyops {
namespace ada {
namespace {

using namespace kernels;

// Raises the torch error of a failed launch (too many blocks: a clear message).
void check_launch(cudaError_t err, const char* op) {
  TORCH_CHECK(err != cudaErrorInvalidConfiguration, op,
              ": the images are too large for one CUDA launch; split the batch");
  C10_CUDA_CHECK(err);
}

#define PYOPS_ADA_DISPATCH(TYPE, NAME, ...) \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, TYPE, NAME, __VA_ARGS__)

at::Tensor margin_buffer(const at::Tensor& x) {
  // four int64 values, as a byte tensor sized for Margin
  return at::empty({static_cast<int64_t>(sizeof(Margin))}, x.options().dtype(at::kByte));
}

at::Tensor geom_color_cuda(const at::Tensor& images, const std::optional<at::Tensor>& G_,
                           const std::optional<at::Tensor>& C_) {
  check_geom_color_args("ada_geom_color", images, G_, C_);
  const c10::cuda::CUDAGuard guard(images.device());
  const at::Tensor G = opmath_matrix(G_, images), Cm = opmath_matrix(C_, images);
  at::Tensor out = at::empty(images.sizes(), images.options());
  if (out.numel() == 0) return out;
  auto stream = at::cuda::getCurrentCUDAStream();
  const at::Tensor mbuf = margin_buffer(images);
  Margin* m = reinterpret_cast<Margin*>(mbuf.mutable_data_ptr<uint8_t>());
  PYOPS_ADA_DISPATCH(images.scalar_type(), "ada_geom_color_cuda", [&] {
    using T = at::opmath_type<scalar_t>;
    const T* g = G.defined() ? G.const_data_ptr<T>() : nullptr;
    const T* c = Cm.defined() ? Cm.const_data_ptr<T>() : nullptr;
    const auto x = image_of(images, images.const_data_ptr<scalar_t>());
    const auto o = image_of(out, out.mutable_data_ptr<scalar_t>());
    check_launch(launch_geom_color<scalar_t, T>(x, o, g, c, m, stream), "ada_geom_color");
  });
  return out;
}

at::Tensor geom_color_backward_cuda(const at::Tensor& grad, const std::optional<at::Tensor>& G_,
                                    const std::optional<at::Tensor>& C_) {
  check_geom_color_args("ada_geom_color_backward", grad, G_, C_);
  const c10::cuda::CUDAGuard guard(grad.device());
  const at::Tensor G = opmath_matrix(G_, grad), Cm = opmath_matrix(C_, grad);
  at::Tensor out = at::empty(grad.sizes(), grad.options());
  if (out.numel() == 0) return out;
  auto stream = at::cuda::getCurrentCUDAStream();
  PYOPS_ADA_DISPATCH(grad.scalar_type(), "ada_geom_color_backward_cuda", [&] {
    using T = at::opmath_type<scalar_t>;
    const T* g = G.defined() ? G.const_data_ptr<T>() : nullptr;
    const T* c = Cm.defined() ? Cm.const_data_ptr<T>() : nullptr;
    const auto gy = image_of(grad, grad.const_data_ptr<scalar_t>());
    const auto o = image_of(out, out.mutable_data_ptr<scalar_t>());
    if (!g) {
      check_launch(launch_geom_color_backward<scalar_t, T>(gy, o, g, c, nullptr, nullptr, stream),
                   "ada_geom_color_backward");
      return;
    }
    const at::Tensor mbuf = margin_buffer(grad);
    Margin* m = reinterpret_cast<Margin*>(mbuf.mutable_data_ptr<uint8_t>());
    const int64_t Hg = 2 * gy.H + 4 * kGeomPad, Wg = 2 * gy.W + 4 * kGeomPad;
    at::Tensor gv = at::empty({gy.B, gy.C, Hg, Wg}, grad.options().dtype(c10::CppTypeToScalarType<T>::value));
    check_launch(launch_geom_color_backward<scalar_t, T>(gy, o, g, c, m, gv.mutable_data_ptr<T>(), stream),
                 "ada_geom_color_backward");
  });
  return out;
}

at::Tensor filter_noise_cutout_cuda(const at::Tensor& images, const std::optional<at::Tensor>& filters_,
                                    const std::optional<at::Tensor>& sigma_, const std::optional<at::Tensor>& noise,
                                    const std::optional<at::Tensor>& boxes_) {
  check_filter_args("ada_filter_noise_cutout", images, filters_, sigma_, noise, boxes_);
  const c10::cuda::CUDAGuard guard(images.device());
  const at::Tensor h = opmath_matrix(filters_, images), sg = opmath_matrix(sigma_, images);
  const at::Tensor bx = opmath_matrix(boxes_, images);
  at::Tensor out = at::empty(images.sizes(), images.options());
  if (out.numel() == 0) return out;
  auto stream = at::cuda::getCurrentCUDAStream();
  PYOPS_ADA_DISPATCH(images.scalar_type(), "ada_filter_noise_cutout_cuda", [&] {
    using T = at::opmath_type<scalar_t>;
    const auto x = image_of(images, images.const_data_ptr<scalar_t>());
    const auto o = image_of(out, out.mutable_data_ptr<scalar_t>());
    const at::Tensor nz = noise.has_value() ? noise->to(c10::CppTypeToScalarType<T>::value) : at::Tensor();
    const auto n = nz.defined() ? image_of(nz, nz.const_data_ptr<T>()) : Image<const T>{};
    check_launch(launch_filter_noise_cutout<scalar_t, T>(
                     x, o, h.defined() ? h.const_data_ptr<T>() : nullptr,
                     sg.defined() ? sg.const_data_ptr<T>() : nullptr, n,
                     bx.defined() ? bx.const_data_ptr<T>() : nullptr, stream),
                 "ada_filter_noise_cutout");
  });
  return out;
}

at::Tensor filter_noise_cutout_backward_cuda(const at::Tensor& grad, const std::optional<at::Tensor>& filters_,
                                             const std::optional<at::Tensor>& boxes_) {
  check_filter_args("ada_filter_noise_cutout_backward", grad, filters_, std::nullopt, std::nullopt, boxes_);
  const c10::cuda::CUDAGuard guard(grad.device());
  const at::Tensor h = opmath_matrix(filters_, grad), bx = opmath_matrix(boxes_, grad);
  at::Tensor out = at::empty(grad.sizes(), grad.options());
  if (out.numel() == 0) return out;
  auto stream = at::cuda::getCurrentCUDAStream();
  PYOPS_ADA_DISPATCH(grad.scalar_type(), "ada_filter_noise_cutout_backward_cuda", [&] {
    using T = at::opmath_type<scalar_t>;
    const auto g = image_of(grad, grad.const_data_ptr<scalar_t>());
    const auto o = image_of(out, out.mutable_data_ptr<scalar_t>());
    check_launch(launch_filter_noise_cutout_backward<scalar_t, T>(
                     g, o, h.defined() ? h.const_data_ptr<T>() : nullptr,
                     bx.defined() ? bx.const_data_ptr<T>() : nullptr, stream),
                 "ada_filter_noise_cutout_backward");
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(pyops, CUDA, m) {
  m.impl("ada_geom_color", &geom_color_cuda);
  m.impl("ada_geom_color_backward", &geom_color_backward_cuda);
  m.impl("ada_filter_noise_cutout", &filter_noise_cutout_cuda);
  m.impl("ada_filter_noise_cutout_backward", &filter_noise_cutout_backward_cuda);
}

}  // namespace ada
}  // namespace pyops

// CPU handlers of the pyops.jax XLA FFI targets (float32). The per-point / per-row / per-pixel
// math is the code the torch CPU and CUDA kernels run (point_sample.h, linformer.h, ada.h);
// these handlers only loop over it on one thread (XLA's CPU client runs independent ops in
// parallel itself).
#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "../ada/ada_cpu_loops.h"
#include "../linformer/linformer_cpu_loops.h"
#include "../pointrend/point_sample.h"
#include "checks.h"
#include "ffi_common.h"
#include "targets.h"

namespace pyops {
namespace jaxffi {
namespace {

// The `pfor` of the shared CPU loops (ada_cpu_loops.h, linformer_cpu_loops.h): one serial pass.
const auto serial = [](int64_t n, int64_t, const auto& body) { body(int64_t(0), n); };

using pointrend::BilinearTaps;
using pointrend::PointValues;
using pointrend::SampleArgs;

// ---- point_sample ---------------------------------------------------------------------------

ffi::Error point_sample_cpu(F32 input, F32 coords, F32Out out, bool align_corners) {
  PYOPS_FFI_RETURN_IF_ERROR(check_point_sample(input, coords));
  const auto a = sample_args(input, coords, align_corners);
  const auto o = dense_points(out->typed_data(), a.C, a.P);
  for (int64_t n = 0; n < a.N; ++n)
    for (int64_t p = 0; p < a.P; ++p) pointrend::sample_point(a, o, n, p, int64_t(0), a.C, int64_t(1));
  return ffi::Error::Success();
}

ffi::Error point_sample_backward_coords_cpu(F32 grad, F32 input, F32 coords, F32Out grad_coords,
                                            bool align_corners) {
  PYOPS_FFI_RETURN_IF_ERROR(check_point_grad(grad, input, coords));
  const auto a = sample_args(input, coords, align_corners);
  const auto g = dense_points<const float*>(grad.typed_data(), a.C, a.P);
  float* gc = grad_coords->typed_data();
  for (int64_t i = 0; i < a.N * a.P; ++i) {
    const int64_t n = i / a.P, p = i % a.P;
    const BilinearTaps<float> t = a.taps(n, p);
    float d[4] = {0.f, 0.f, 0.f, 0.f};
    pointrend::corner_dots(a, t, g, n, p, int64_t(0), a.C, int64_t(1), d);
    pointrend::coords_grad(a, t, d, gc + 2 * i, gc + 2 * i + 1);
  }
  return ffi::Error::Success();
}

// The deterministic gather of point_sample.h: corner keys, a stable sort, one writer per pixel.
ffi::Error point_sample_backward_input_cpu(F32 grad, F32 input, F32 coords, F32Out grad_input,
                                           bool align_corners) {
  PYOPS_FFI_RETURN_IF_ERROR(check_point_grad(grad, input, coords));
  const auto a = sample_args(input, coords, align_corners);
  const auto g = dense_points<const float*>(grad.typed_data(), a.C, a.P);
  float* gi = grad_input->typed_data();
  std::fill(gi, gi + a.B * a.C * a.H * a.W, 0.f);
  const int64_t M = 4 * a.N * a.P;
  if (M == 0 || a.C == 0) return ffi::Error::Success();
  std::vector<int64_t> keys(M), order(M), sorted(M);
  std::vector<float> weights(M);
  for (int64_t i = 0; i < a.N * a.P; ++i) pointrend::corner_keys(a, i / a.P, i % a.P, keys.data(), weights.data());
  std::iota(order.begin(), order.end(), int64_t(0));
  std::stable_sort(order.begin(), order.end(), [&](int64_t l, int64_t r) { return keys[l] < keys[r]; });
  for (int64_t i = 0; i < M; ++i) sorted[i] = keys[order[i]];
  const int64_t sentinel = a.B * a.H * a.W;
  for (int64_t i = 0; i < M; ++i) {
    if (!pointrend::segment_start(sorted.data(), i, sentinel)) continue;
    pointrend::reduce_segment(a, g, sorted.data(), order.data(), weights.data(), M, i, gi, a.C * a.H * a.W,
                              a.H * a.W, a.W, int64_t(1), int64_t(0), a.C, int64_t(1));
  }
  return ffi::Error::Success();
}

// ---- linformer attention ----------------------------------------------------------------------

ffi::Error attend_cpu(F32 q, F32 kp, F32 vp, F32Out out, F32Out lse, double scale, double dropout_p,
                      int64_t seed) {
  PYOPS_FFI_RETURN_IF_ERROR(check_attend(q, kp, vp));
  const int64_t BH = dim(q, 0) * dim(q, 1), n = dim(q, 2), d = dim(q, 3), k = dim(kp, 2);
  linformer::attend_loops(linformer::make_attend_params<float>(d, scale, dropout_p, seed), q.typed_data(),
                          kp.typed_data(), vp.typed_data(), out->typed_data(), lse->typed_data(), BH, n, d, k,
                          serial);
  return ffi::Error::Success();
}

ffi::Error attend_backward_cpu(F32 grad, F32 q, F32 kp, F32 vp, F32 lse, F32 delta, F32Out dq, F32Out dk,
                               F32Out dv, double scale, double dropout_p, int64_t seed) {
  PYOPS_FFI_RETURN_IF_ERROR(check_attend_grad(grad, q, kp, vp, lse, delta));
  const int64_t BH = dim(q, 0) * dim(q, 1), n = dim(q, 2), d = dim(q, 3), k = dim(kp, 2);
  float *dqs = dq->typed_data(), *dks = dk->typed_data(), *dvs = dv->typed_data();
  std::fill(dqs, dqs + BH * n * d, 0.f);
  std::fill(dks, dks + BH * k * d, 0.f);
  std::fill(dvs, dvs + BH * k * d, 0.f);
  linformer::attend_backward_loops(linformer::make_attend_params<float>(d, scale, dropout_p, seed), q.typed_data(),
                                   kp.typed_data(), vp.typed_data(), grad.typed_data(), lse.typed_data(),
                                   delta.typed_data(), dqs, dks, dvs, BH, n, d, k, serial);
  return ffi::Error::Success();
}

// ---- ADA --------------------------------------------------------------------------------------

ffi::Error geom_color_cpu(F32 images, F32 G, F32 Cm, F32Out out, bool has_g, bool has_c) {
  PYOPS_FFI_RETURN_IF_ERROR(check_geom_color(images, G, Cm, has_g, has_c));
  const int64_t B = dim(images, 0), C = dim(images, 1), H = dim(images, 2), W = dim(images, 3);
  ada::geom_color_loops(dense_image<const float>(images.typed_data(), B, C, H, W),
                        dense_image<float>(out->typed_data(), B, C, H, W), if_used<float>(G, has_g),
                        if_used<float>(Cm, has_c), serial);
  return ffi::Error::Success();
}

ffi::Error geom_color_backward_cpu(F32 grad, F32 G, F32 Cm, F32Out out, bool has_g, bool has_c) {
  PYOPS_FFI_RETURN_IF_ERROR(check_geom_color(grad, G, Cm, has_g, has_c));
  const int64_t B = dim(grad, 0), C = dim(grad, 1), H = dim(grad, 2), W = dim(grad, 3);
  std::vector<float> gv(has_g ? ada::geom_color_adjoint_scratch(B, C, H, W) : 0);
  ada::geom_color_adjoint_loops(dense_image<const float>(grad.typed_data(), B, C, H, W),
                                dense_image<float>(out->typed_data(), B, C, H, W), if_used<float>(G, has_g),
                                if_used<float>(Cm, has_c), gv.data(), serial);
  return ffi::Error::Success();
}

ffi::Error filter_cpu(F32 images, F32 filters, F32 sigma, F32 noise, F32 boxes, F32Out out, bool has_filter,
                      bool has_noise, bool has_boxes) {
  PYOPS_FFI_RETURN_IF_ERROR(check_filter(images, filters, sigma, noise, boxes, has_filter, has_noise, has_boxes));
  const int64_t B = dim(images, 0), C = dim(images, 1), H = dim(images, 2), W = dim(images, 3);
  const float* np_ = if_used<float>(noise, has_noise);
  ada::filter_noise_cutout_loops(dense_image<const float>(images.typed_data(), B, C, H, W),
                                 dense_image<float>(out->typed_data(), B, C, H, W), if_used<float>(filters, has_filter),
                                 if_used<float>(sigma, has_noise),
                                 np_ ? dense_image<const float>(np_, B, C, H, W) : ada::Image<const float>{},
                                 if_used<float>(boxes, has_boxes), serial);
  return ffi::Error::Success();
}

ffi::Error filter_backward_cpu(F32 grad, F32 filters, F32 boxes, F32Out out, bool has_filter, bool has_boxes) {
  PYOPS_FFI_RETURN_IF_ERROR(check_filter(grad, filters, grad, grad, boxes, has_filter, false, has_boxes));
  const int64_t B = dim(grad, 0), C = dim(grad, 1), H = dim(grad, 2), W = dim(grad, 3);
  ada::filter_noise_cutout_adjoint_loops(dense_image<const float>(grad.typed_data(), B, C, H, W),
                                         dense_image<float>(out->typed_data(), B, C, H, W),
                                         if_used<float>(filters, has_filter), if_used<float>(boxes, has_boxes), serial);
  return ffi::Error::Success();
}

}  // namespace
}  // namespace jaxffi
}  // namespace pyops

using namespace pyops::jaxffi;  // NOLINT: the handler symbols are extern "C" at global scope

XLA_FFI_DEFINE_HANDLER_SYMBOL(PyopsPointSampleCpu, point_sample_cpu,
                              ffi::Ffi::Bind().Arg<F32>().Arg<F32>().Ret<F32>().Attr<bool>("align_corners"));
XLA_FFI_DEFINE_HANDLER_SYMBOL(PyopsPointSampleBackwardCoordsCpu, point_sample_backward_coords_cpu,
                              ffi::Ffi::Bind().Arg<F32>().Arg<F32>().Arg<F32>().Ret<F32>().Attr<bool>("align_corners"));
XLA_FFI_DEFINE_HANDLER_SYMBOL(PyopsPointSampleBackwardInputCpu, point_sample_backward_input_cpu,
                              ffi::Ffi::Bind().Arg<F32>().Arg<F32>().Arg<F32>().Ret<F32>().Attr<bool>("align_corners"));
XLA_FFI_DEFINE_HANDLER_SYMBOL(PyopsLinformerAttendCpu, attend_cpu,
                              ffi::Ffi::Bind()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Ret<F32>()
                                  .Ret<F32>()
                                  .Attr<double>("scale")
                                  .Attr<double>("dropout_p")
                                  .Attr<int64_t>("seed"));
XLA_FFI_DEFINE_HANDLER_SYMBOL(PyopsLinformerAttendBackwardCpu, attend_backward_cpu,
                              ffi::Ffi::Bind()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Ret<F32>()
                                  .Ret<F32>()
                                  .Ret<F32>()
                                  .Attr<double>("scale")
                                  .Attr<double>("dropout_p")
                                  .Attr<int64_t>("seed"));
XLA_FFI_DEFINE_HANDLER_SYMBOL(PyopsAdaGeomColorCpu, geom_color_cpu,
                              ffi::Ffi::Bind().Arg<F32>().Arg<F32>().Arg<F32>().Ret<F32>().Attr<bool>("has_g").Attr<bool>(
                                  "has_c"));
XLA_FFI_DEFINE_HANDLER_SYMBOL(PyopsAdaGeomColorBackwardCpu, geom_color_backward_cpu,
                              ffi::Ffi::Bind().Arg<F32>().Arg<F32>().Arg<F32>().Ret<F32>().Attr<bool>("has_g").Attr<bool>(
                                  "has_c"));
XLA_FFI_DEFINE_HANDLER_SYMBOL(PyopsAdaFilterCpu, filter_cpu,
                              ffi::Ffi::Bind()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Ret<F32>()
                                  .Attr<bool>("has_filter")
                                  .Attr<bool>("has_noise")
                                  .Attr<bool>("has_boxes"));
XLA_FFI_DEFINE_HANDLER_SYMBOL(PyopsAdaFilterBackwardCpu, filter_backward_cpu,
                              ffi::Ffi::Bind().Arg<F32>().Arg<F32>().Arg<F32>().Ret<F32>().Attr<bool>("has_filter").Attr<bool>(
                                  "has_boxes"));

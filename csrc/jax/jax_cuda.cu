// CUDA handlers of the pyops.jax XLA FFI targets (float32): the kernels and launches the torch
// registration runs (point_sample_kernels.cuh, linformer_kernels.cuh, ada_kernels.cuh), on XLA's
// stream, with temporary buffers from XLA's scratch allocator. No ATen, no libtorch.
#include <cuda_runtime.h>

#include <cub/device/device_radix_sort.cuh>

#include <string>

#include "../ada/ada_kernels.cuh"
#include "../linformer/linformer_kernels.cuh"
#include "../pointrend/point_sample_kernels.cuh"
#include "checks.h"
#include "ffi_common.h"
#include "targets.h"

namespace pyops {
namespace jaxffi {
namespace {

using Stream = ffi::PlatformStream<cudaStream_t>;

ffi::Error cuda_error(cudaError_t err, const char* op) {
  if (err == cudaSuccess) return ffi::Error::Success();
  if (err == cudaErrorInvalidConfiguration)
    return invalid(std::string(op) + ": the arrays are too large for one CUDA launch; split the batch");
  return ffi::Error(ffi::ErrorCode::kInternal, std::string("pyops.jax: ") + op + ": CUDA error: " +
                                                   cudaGetErrorString(err));
}

// `count` elements of T from XLA's scratch memory (freed by XLA after the call).
template <typename T>
T* scratch_array(ffi::ScratchAllocator& scratch, int64_t count) {
  const auto p = scratch.Allocate(sizeof(T) * static_cast<size_t>(count > 0 ? count : 1), 16);
  return p.has_value() ? static_cast<T*>(*p) : nullptr;
}

ffi::Error out_of_memory(const char* op) {
  return ffi::Error(ffi::ErrorCode::kResourceExhausted,
                    std::string("pyops.jax: ") + op + ": could not allocate CUDA scratch memory");
}

// ---- point_sample ---------------------------------------------------------------------------

ffi::Error point_sample_cuda(cudaStream_t stream, F32 input, F32 coords, F32Out out, bool align_corners) {
  PYOPS_FFI_RETURN_IF_ERROR(check_point_sample(input, coords));
  const auto a = sample_args(input, coords, align_corners);
  if (a.N * a.P * a.C == 0) return ffi::Error::Success();
  return cuda_error(pointrend::kernels::launch_sample(a, dense_points(out->typed_data(), a.C, a.P), false, stream),
                    "point_sample");
}

ffi::Error point_sample_backward_coords_cuda(cudaStream_t stream, F32 grad, F32 input, F32 coords, F32Out grad_coords,
                                             bool align_corners) {
  PYOPS_FFI_RETURN_IF_ERROR(check_point_grad(grad, input, coords));
  const auto a = sample_args(input, coords, align_corners);
  if (a.N * a.P == 0) return ffi::Error::Success();
  const auto g = dense_points<const float*>(grad.typed_data(), a.C, a.P);
  return cuda_error(pointrend::kernels::launch_coords_grad(a, g, grad_coords->typed_data(), false, stream),
                    "point_sample backward");
}

__global__ void iota_kernel(int64_t* out, int64_t n) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) out[i] = i;
}

// Bits needed for the keys 0 ... max_key.
int key_bits(int64_t max_key) {
  int bits = 1;
  while (bits < 63 && (int64_t(1) << bits) <= max_key) ++bits;
  return bits;
}

// The deterministic gather: corner keys, a stable radix sort (cub), one writer per pixel.
ffi::Error point_sample_backward_input_cuda(cudaStream_t stream, ffi::ScratchAllocator scratch, F32 grad, F32 input,
                                            F32 coords, F32Out grad_input, bool align_corners) {
  const char* op = "point_sample backward";
  PYOPS_FFI_RETURN_IF_ERROR(check_point_grad(grad, input, coords));
  const auto a = sample_args(input, coords, align_corners);
  float* gi = grad_input->typed_data();
  const int64_t numel = a.B * a.C * a.H * a.W;
  if (numel > 0) PYOPS_FFI_RETURN_IF_ERROR(cuda_error(cudaMemsetAsync(gi, 0, sizeof(float) * numel, stream), op));
  const int64_t M = 4 * a.N * a.P;
  if (M == 0 || a.C == 0) return ffi::Error::Success();
  if (M > std::numeric_limits<int32_t>::max())
    return invalid(std::string(op) + ": " + std::to_string(M) + " point corners are too many for one sort; split the batch");
  int64_t* keys = scratch_array<int64_t>(scratch, M);
  int64_t* sorted = scratch_array<int64_t>(scratch, M);
  int64_t* order_in = scratch_array<int64_t>(scratch, M);
  int64_t* order = scratch_array<int64_t>(scratch, M);
  float* weights = scratch_array<float>(scratch, M);
  if (!keys || !sorted || !order_in || !order || !weights) return out_of_memory(op);
  PYOPS_FFI_RETURN_IF_ERROR(cuda_error(pointrend::kernels::launch_corner_keys(a, keys, weights, stream), op));
  iota_kernel<<<(M + 255) / 256, 256, 0, stream>>>(order_in, M);
  PYOPS_FFI_RETURN_IF_ERROR(cuda_error(cudaGetLastError(), op));
  // Keys are in [0, B * H * W] (the last one marks invalid corners): sort them as unsigned.
  const int bits = key_bits(a.B * a.H * a.W);
  auto* ukeys = reinterpret_cast<uint64_t*>(keys);
  auto* usorted = reinterpret_cast<uint64_t*>(sorted);
  size_t temp_bytes = 0;
  PYOPS_FFI_RETURN_IF_ERROR(cuda_error(cub::DeviceRadixSort::SortPairs(nullptr, temp_bytes, ukeys, usorted, order_in,
                                                                       order, static_cast<int>(M), 0, bits, stream),
                                       op));
  void* temp = scratch_array<unsigned char>(scratch, static_cast<int64_t>(temp_bytes));
  if (!temp) return out_of_memory(op);
  PYOPS_FFI_RETURN_IF_ERROR(cuda_error(cub::DeviceRadixSort::SortPairs(temp, temp_bytes, ukeys, usorted, order_in,
                                                                       order, static_cast<int>(M), 0, bits, stream),
                                       op));
  const auto g = dense_points<const float*>(grad.typed_data(), a.C, a.P);
  const pointrend::kernels::GradInput strides{a.C * a.H * a.W, a.H * a.W, a.W, 1};
  return cuda_error(pointrend::kernels::launch_segments(a, g, sorted, order, weights, M, gi, strides, false, stream), op);
}

// ---- linformer attention ----------------------------------------------------------------------

ffi::Error check_head_dim(const F32& q) {
  if (dim(q, 3) > linformer::cuda::kMaxHeadDim)
    return invalid("linformer_attention (CUDA): the head dim d must be at most " +
                   std::to_string(linformer::cuda::kMaxHeadDim) + ", got " + std::to_string(dim(q, 3)) +
                   " (the CPU kernel has no limit)");
  return ffi::Error::Success();
}

ffi::Error attend_cuda(cudaStream_t stream, F32 q, F32 kp, F32 vp, F32Out out, F32Out lse, double scale,
                       double dropout_p, int64_t seed) {
  PYOPS_FFI_RETURN_IF_ERROR(check_attend(q, kp, vp));
  PYOPS_FFI_RETURN_IF_ERROR(check_head_dim(q));
  const int64_t BH = dim(q, 0) * dim(q, 1), n = dim(q, 2), d = dim(q, 3), k = dim(kp, 2);
  if (BH * n == 0) return ffi::Error::Success();
  const auto a = linformer::make_attend_params<float>(d, scale, dropout_p, seed);
  return cuda_error(linformer::cuda::launch_attend_forward<float, float>(a, q.typed_data(), kp.typed_data(),
                                                                         vp.typed_data(), out->typed_data(),
                                                                         lse->typed_data(), BH, n, k, stream),
                    "linformer_attention");
}

ffi::Error attend_backward_cuda(cudaStream_t stream, ffi::ScratchAllocator scratch, F32 grad, F32 q, F32 kp, F32 vp,
                                F32 lse, F32 delta, F32Out dq, F32Out dk, F32Out dv, double scale, double dropout_p,
                                int64_t seed) {
  const char* op = "linformer_attention backward";
  PYOPS_FFI_RETURN_IF_ERROR(check_attend_grad(grad, q, kp, vp, lse, delta));
  PYOPS_FFI_RETURN_IF_ERROR(check_head_dim(q));
  const int64_t BH = dim(q, 0) * dim(q, 1), n = dim(q, 2), d = dim(q, 3), k = dim(kp, 2);
  const int64_t kv = BH * k * d;
  if (BH * n == 0) {
    if (kv > 0) {
      PYOPS_FFI_RETURN_IF_ERROR(cuda_error(cudaMemsetAsync(dk->typed_data(), 0, sizeof(float) * kv, stream), op));
      PYOPS_FFI_RETURN_IF_ERROR(cuda_error(cudaMemsetAsync(dv->typed_data(), 0, sizeof(float) * kv, stream), op));
    }
    return ffi::Error::Success();
  }
  int device = 0, sms = 0;
  PYOPS_FFI_RETURN_IF_ERROR(cuda_error(cudaGetDevice(&device), op));
  PYOPS_FFI_RETURN_IF_ERROR(cuda_error(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device), op));
  const int64_t splits = linformer::cuda::attend_backward_splits(BH, n, k, sms);
  float* part_k = scratch_array<float>(scratch, splits * kv);
  float* part_v = scratch_array<float>(scratch, splits * kv);
  if (!part_k || !part_v) return out_of_memory(op);
  const auto a = linformer::make_attend_params<float>(d, scale, dropout_p, seed);
  PYOPS_FFI_RETURN_IF_ERROR(cuda_error(
      linformer::cuda::launch_attend_backward<float, float>(a, grad.typed_data(), q.typed_data(), kp.typed_data(),
                                                            vp.typed_data(), lse.typed_data(), delta.typed_data(),
                                                            dq->typed_data(), part_k, part_v, BH, n, k, splits, stream),
      op));
  const unsigned int blocks = static_cast<unsigned int>((kv + 255) / 256);
  linformer::cuda::sum_splits_kernel<float, float><<<blocks, 256, 0, stream>>>(part_k, dk->typed_data(), kv, splits);
  linformer::cuda::sum_splits_kernel<float, float><<<blocks, 256, 0, stream>>>(part_v, dv->typed_data(), kv, splits);
  return cuda_error(cudaGetLastError(), op);
}

// ---- ADA --------------------------------------------------------------------------------------

ffi::Error geom_color_cuda(cudaStream_t stream, ffi::ScratchAllocator scratch, F32 images, F32 G, F32 Cm, F32Out out,
                           bool has_g, bool has_c) {
  const char* op = "ada_geometric_color";
  PYOPS_FFI_RETURN_IF_ERROR(check_geom_color(images, G, Cm, has_g, has_c));
  const int64_t B = dim(images, 0), C = dim(images, 1), H = dim(images, 2), W = dim(images, 3);
  if (B == 0) return ffi::Error::Success();
  ada::Margin* margin = scratch_array<ada::Margin>(scratch, 1);
  if (!margin) return out_of_memory(op);
  return cuda_error(ada::kernels::launch_geom_color<float, float>(
                        dense_image<const float>(images.typed_data(), B, C, H, W),
                        dense_image<float>(out->typed_data(), B, C, H, W), if_used<float>(G, has_g),
                        if_used<float>(Cm, has_c), margin, stream),
                    op);
}

ffi::Error geom_color_backward_cuda(cudaStream_t stream, ffi::ScratchAllocator scratch, F32 grad, F32 G, F32 Cm,
                                    F32Out out, bool has_g, bool has_c) {
  const char* op = "ada_geometric_color backward";
  PYOPS_FFI_RETURN_IF_ERROR(check_geom_color(grad, G, Cm, has_g, has_c));
  const int64_t B = dim(grad, 0), C = dim(grad, 1), H = dim(grad, 2), W = dim(grad, 3);
  if (B == 0) return ffi::Error::Success();
  ada::Margin* margin = nullptr;
  float* grid_grad = nullptr;
  if (has_g) {
    margin = scratch_array<ada::Margin>(scratch, 1);
    grid_grad = scratch_array<float>(scratch, B * C * (2 * H + 4 * ada::kGeomPad) * (2 * W + 4 * ada::kGeomPad));
    if (!margin || !grid_grad) return out_of_memory(op);
  }
  return cuda_error(ada::kernels::launch_geom_color_backward<float, float>(
                        dense_image<const float>(grad.typed_data(), B, C, H, W),
                        dense_image<float>(out->typed_data(), B, C, H, W), if_used<float>(G, has_g),
                        if_used<float>(Cm, has_c), margin, grid_grad, stream),
                    op);
}

ffi::Error filter_cuda(cudaStream_t stream, F32 images, F32 filters, F32 sigma, F32 noise, F32 boxes, F32Out out,
                       bool has_filter, bool has_noise, bool has_boxes) {
  PYOPS_FFI_RETURN_IF_ERROR(check_filter(images, filters, sigma, noise, boxes, has_filter, has_noise, has_boxes));
  const int64_t B = dim(images, 0), C = dim(images, 1), H = dim(images, 2), W = dim(images, 3);
  if (B == 0) return ffi::Error::Success();
  const auto nz = has_noise ? dense_image<const float>(noise.typed_data(), B, C, H, W) : ada::Image<const float>{};
  return cuda_error(ada::kernels::launch_filter_noise_cutout<float, float>(
                        dense_image<const float>(images.typed_data(), B, C, H, W),
                        dense_image<float>(out->typed_data(), B, C, H, W), if_used<float>(filters, has_filter),
                        if_used<float>(sigma, has_noise), nz, if_used<float>(boxes, has_boxes), stream),
                    "ada_filter_noise_cutout");
}

ffi::Error filter_backward_cuda(cudaStream_t stream, F32 grad, F32 filters, F32 boxes, F32Out out, bool has_filter,
                                bool has_boxes) {
  PYOPS_FFI_RETURN_IF_ERROR(check_filter(grad, filters, grad, grad, boxes, has_filter, false, has_boxes));
  const int64_t B = dim(grad, 0), C = dim(grad, 1), H = dim(grad, 2), W = dim(grad, 3);
  if (B == 0) return ffi::Error::Success();
  return cuda_error(ada::kernels::launch_filter_noise_cutout_backward<float, float>(
                        dense_image<const float>(grad.typed_data(), B, C, H, W),
                        dense_image<float>(out->typed_data(), B, C, H, W), if_used<float>(filters, has_filter),
                        if_used<float>(boxes, has_boxes), stream),
                    "ada_filter_noise_cutout backward");
}

}  // namespace
}  // namespace jaxffi
}  // namespace pyops

using namespace pyops::jaxffi;  // NOLINT: the handler symbols are extern "C" at global scope

XLA_FFI_DEFINE_HANDLER_SYMBOL(PyopsPointSampleCuda, point_sample_cuda,
                              ffi::Ffi::Bind().Ctx<Stream>().Arg<F32>().Arg<F32>().Ret<F32>().Attr<bool>(
                                  "align_corners"));
XLA_FFI_DEFINE_HANDLER_SYMBOL(PyopsPointSampleBackwardCoordsCuda, point_sample_backward_coords_cuda,
                              ffi::Ffi::Bind().Ctx<Stream>().Arg<F32>().Arg<F32>().Arg<F32>().Ret<F32>().Attr<bool>(
                                  "align_corners"));
XLA_FFI_DEFINE_HANDLER_SYMBOL(PyopsPointSampleBackwardInputCuda, point_sample_backward_input_cuda,
                              ffi::Ffi::Bind()
                                  .Ctx<Stream>()
                                  .Ctx<ffi::ScratchAllocator>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Ret<F32>()
                                  .Attr<bool>("align_corners"));
XLA_FFI_DEFINE_HANDLER_SYMBOL(PyopsLinformerAttendCuda, attend_cuda,
                              ffi::Ffi::Bind()
                                  .Ctx<Stream>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Ret<F32>()
                                  .Ret<F32>()
                                  .Attr<double>("scale")
                                  .Attr<double>("dropout_p")
                                  .Attr<int64_t>("seed"));
XLA_FFI_DEFINE_HANDLER_SYMBOL(PyopsLinformerAttendBackwardCuda, attend_backward_cuda,
                              ffi::Ffi::Bind()
                                  .Ctx<Stream>()
                                  .Ctx<ffi::ScratchAllocator>()
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
XLA_FFI_DEFINE_HANDLER_SYMBOL(PyopsAdaGeomColorCuda, geom_color_cuda,
                              ffi::Ffi::Bind()
                                  .Ctx<Stream>()
                                  .Ctx<ffi::ScratchAllocator>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Ret<F32>()
                                  .Attr<bool>("has_g")
                                  .Attr<bool>("has_c"));
XLA_FFI_DEFINE_HANDLER_SYMBOL(PyopsAdaGeomColorBackwardCuda, geom_color_backward_cuda,
                              ffi::Ffi::Bind()
                                  .Ctx<Stream>()
                                  .Ctx<ffi::ScratchAllocator>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Ret<F32>()
                                  .Attr<bool>("has_g")
                                  .Attr<bool>("has_c"));
XLA_FFI_DEFINE_HANDLER_SYMBOL(PyopsAdaFilterCuda, filter_cuda,
                              ffi::Ffi::Bind()
                                  .Ctx<Stream>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Ret<F32>()
                                  .Attr<bool>("has_filter")
                                  .Attr<bool>("has_noise")
                                  .Attr<bool>("has_boxes"));
XLA_FFI_DEFINE_HANDLER_SYMBOL(PyopsAdaFilterBackwardCuda, filter_backward_cuda,
                              ffi::Ffi::Bind()
                                  .Ctx<Stream>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Ret<F32>()
                                  .Attr<bool>("has_filter")
                                  .Attr<bool>("has_boxes"));

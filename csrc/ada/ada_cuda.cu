// CUDA kernels of the ADA geometric + colour stage. The per-pixel math lives in ada.h and is
// shared with the CPU kernels; this file maps it onto threads:
//  - margin_kernel: one thread computes the batch-wide reflect margin into a device buffer
//    (the reference reads it on the host; here nothing synchronises with the host);
//  - forward: one block per 16 x 16 output tile; its 42 x 42 grid samples (each through the
//    chain's reflect pad, upsampling and bilinear resampling) go to shared memory once, then
//    each thread correlates one output pixel's 12 x 12 window (colour-only: one thread per pixel);
//  - adjoint: one thread per grid sample (colour transposed + downsampling transposed, into a
//    float buffer), then one thread per input pixel gathering from it. No atomics: deterministic.
#include <limits>

#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "ada_host.h"

namespace pyops {
namespace ada {
namespace {

constexpr int kThreads = 256;

int64_t blocks_for(int64_t items) {
  const int64_t blocks = (items + kThreads - 1) / kThreads;
  TORCH_CHECK(blocks <= std::numeric_limits<int32_t>::max(), "ada: ", items,
              " pixels are too many for one CUDA launch; split the batch");
  return blocks;
}

template <typename T>
__global__ void margin_kernel(const T* G, int64_t B, int64_t H, int64_t W, Margin* out) {
  if (blockIdx.x == 0 && threadIdx.x == 0) *out = batch_margin(G, B, H, W);
}

template <typename scalar_t, typename T>
__global__ void forward_kernel(Image<const scalar_t> x, Image<scalar_t> o, const T* G, const T* Cm,
                               const Margin* margin) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= x.B * x.H * x.W) return;
  const int64_t b = i / (x.H * x.W), y = (i / x.W) % x.H, xx = i % x.W;
  T v[kMaxChannels];
  if (G) {
    const UpMap<T> u = make_upmap(G + 9 * b, *margin, x.H, x.W);
    geom_pixel(x, u, b, y, xx, v);
  } else {
    for (int64_t c = 0; c < x.C; ++c) v[c] = static_cast<T>(x.data[x.at(b, c, y, xx)]);
  }
  if (Cm) apply_color(make_color(Cm + 16 * b, x.C), x.C, v, true);
  for (int64_t c = 0; c < x.C; ++c) o.data[o.at(b, c, y, xx)] = static_cast<scalar_t>(v[c]);
}

// One block per kTile x kTile output tile: the threads fill the tile's grid samples in shared
// memory, then each thread computes one output pixel from them.
template <typename scalar_t, typename T>
__global__ void forward_tiled_kernel(Image<const scalar_t> x, Image<scalar_t> o, const T* G, const T* Cm,
                                     const Margin* margin, int64_t tiles_y, int64_t tiles_x) {
  extern __shared__ __align__(16) unsigned char smem[];
  T* tile = reinterpret_cast<T*>(smem);
  const int64_t t = blockIdx.x;
  const int64_t b = t / (tiles_y * tiles_x);
  const int64_t oy0 = ((t / tiles_x) % tiles_y) * kTile, ox0 = (t % tiles_x) * kTile;
  const UpMap<T> u = make_upmap(G + 9 * b, *margin, x.H, x.W);
  for (int j = threadIdx.x; j < kGridTileSize; j += blockDim.x) tile_grid_sample(x, u, b, oy0, ox0, j, tile);
  __syncthreads();
  const int ty = threadIdx.x / kTile, tx = threadIdx.x % kTile;
  const int64_t y = oy0 + ty, xx = ox0 + tx;
  if (y >= x.H || xx >= x.W) return;
  T v[kMaxChannels];
  tile_output(tile, x.C, ty, tx, v);
  if (Cm) apply_color(make_color(Cm + 16 * b, x.C), x.C, v, true);
  for (int64_t c = 0; c < x.C; ++c) o.data[o.at(b, c, y, xx)] = static_cast<scalar_t>(v[c]);
}

template <typename scalar_t, typename T>
__global__ void color_t_kernel(Image<const scalar_t> g, Image<scalar_t> o, const T* Cm) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= g.B * g.H * g.W) return;
  const int64_t b = i / (g.H * g.W), y = (i / g.W) % g.H, xx = i % g.W;
  T v[kMaxChannels];
  for (int64_t c = 0; c < g.C; ++c) v[c] = static_cast<T>(g.data[g.at(b, c, y, xx)]);
  if (Cm) apply_color_t(make_color(Cm + 16 * b, g.C), g.C, v);
  for (int64_t c = 0; c < g.C; ++c) o.data[o.at(b, c, y, xx)] = static_cast<scalar_t>(v[c]);
}

template <typename scalar_t, typename T>
__global__ void grid_adjoint_kernel(Image<const scalar_t> g, const T* Cm, T* gv) {
  const int64_t Hg = 2 * g.H + 4 * kGeomPad, Wg = 2 * g.W + 4 * kGeomPad;
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= g.B * Hg * Wg) return;
  const int64_t b = i / (Hg * Wg), yy = (i / Wg) % Hg, xx = i % Wg;
  const Color<T> k = make_color(Cm ? Cm + 16 * b : nullptr, g.C);
  T v[kMaxChannels];
  grid_adjoint(g, k, Cm != nullptr, b, yy, xx, v);
  for (int64_t c = 0; c < g.C; ++c) gv[((b * g.C + c) * Hg + yy) * Wg + xx] = v[c];
}

template <typename scalar_t, typename T>
__global__ void pixel_adjoint_kernel(const T* gv, Image<scalar_t> o, const T* G, const Margin* margin) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= o.B * o.H * o.W) return;
  const int64_t b = i / (o.H * o.W), y = (i / o.W) % o.H, xx = i % o.W;
  const Margin m = *margin;
  const UpMap<T> u = make_upmap(G + 9 * b, m, o.H, o.W);
  T v[kMaxChannels];
  pixel_adjoint(gv, o.C, o.H, o.W, u, m, b, y, xx, v);
  for (int64_t c = 0; c < o.C; ++c) o.data[o.at(b, c, y, xx)] = static_cast<scalar_t>(v[c]);
}

template <typename scalar_t, typename T>
__global__ void filter_forward_kernel(Image<const scalar_t> x, Image<scalar_t> o, const T* h, const T* sigma,
                                      Image<const T> noise, const T* boxes) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= x.B * x.C * x.H * x.W) return;
  const int64_t b = i / (x.C * x.H * x.W), c = (i / (x.H * x.W)) % x.C, y = (i / x.W) % x.H, xx = i % x.W;
  T v = h ? filter_pixel(x, h + kFilterTaps * b, b, c, y, xx) : static_cast<T>(x.data[x.at(b, c, y, xx)]);
  if (sigma) v = v + noise.data[noise.at(b, c, y, xx)] * sigma[b];
  if (boxes && !cutout_keep(boxes + 4 * b, y, xx, x.H, x.W)) v = T(0);
  o.data[o.at(b, c, y, xx)] = static_cast<scalar_t>(v);
}

template <typename scalar_t, typename T>
__global__ void filter_adjoint_kernel(Image<const scalar_t> g, Image<scalar_t> o, const T* h, const T* boxes) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= g.B * g.C * g.H * g.W) return;
  const int64_t b = i / (g.C * g.H * g.W), c = (i / (g.H * g.W)) % g.C, y = (i / g.W) % g.H, xx = i % g.W;
  const T* box = boxes ? boxes + 4 * b : nullptr;
  T v;
  if (h) {
    v = filter_adjoint_pixel(g, h + kFilterTaps * b, box, b, c, y, xx);
  } else {
    v = (box && !cutout_keep(box, y, xx, g.H, g.W)) ? T(0) : static_cast<T>(g.data[g.at(b, c, y, xx)]);
  }
  o.data[o.at(b, c, y, xx)] = static_cast<scalar_t>(v);
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
    if (!g) {  // colour only: per pixel
      forward_kernel<scalar_t, T><<<blocks_for(x.B * x.H * x.W), kThreads, 0, stream>>>(x, o, g, c, m);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      return;
    }
    margin_kernel<T><<<1, 1, 0, stream>>>(g, x.B, x.H, x.W, m);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    const int64_t tiles_y = (x.H + kTile - 1) / kTile, tiles_x = (x.W + kTile - 1) / kTile;
    const int64_t blocks = x.B * tiles_y * tiles_x;
    TORCH_CHECK(blocks <= std::numeric_limits<int32_t>::max(), "ada_geom_color: ", blocks,
                " tiles are too many for one CUDA launch; split the batch");
    const size_t smem = sizeof(T) * x.C * kGridTileSize;  // at most 3 * 1764 doubles = 42 KB
    forward_tiled_kernel<scalar_t, T><<<blocks, kTile * kTile, smem, stream>>>(x, o, g, c, m, tiles_y, tiles_x);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
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
    const int64_t n = gy.B * gy.H * gy.W;
    if (!g) {
      color_t_kernel<scalar_t, T><<<blocks_for(n), kThreads, 0, stream>>>(gy, o, c);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      return;
    }
    const at::Tensor mbuf = margin_buffer(grad);
    Margin* m = reinterpret_cast<Margin*>(mbuf.mutable_data_ptr<uint8_t>());
    margin_kernel<T><<<1, 1, 0, stream>>>(g, gy.B, gy.H, gy.W, m);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    const int64_t Hg = 2 * gy.H + 4 * kGeomPad, Wg = 2 * gy.W + 4 * kGeomPad;
    at::Tensor gv = at::empty({gy.B, gy.C, Hg, Wg}, grad.options().dtype(c10::CppTypeToScalarType<T>::value));
    grid_adjoint_kernel<scalar_t, T><<<blocks_for(gy.B * Hg * Wg), kThreads, 0, stream>>>(
        gy, c, gv.mutable_data_ptr<T>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    pixel_adjoint_kernel<scalar_t, T><<<blocks_for(n), kThreads, 0, stream>>>(gv.const_data_ptr<T>(), o, g, m);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
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
    filter_forward_kernel<scalar_t, T><<<blocks_for(out.numel()), kThreads, 0, stream>>>(
        x, o, h.defined() ? h.const_data_ptr<T>() : nullptr, sg.defined() ? sg.const_data_ptr<T>() : nullptr, n,
        bx.defined() ? bx.const_data_ptr<T>() : nullptr);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
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
    filter_adjoint_kernel<scalar_t, T><<<blocks_for(out.numel()), kThreads, 0, stream>>>(
        g, o, h.defined() ? h.const_data_ptr<T>() : nullptr, bx.defined() ? bx.const_data_ptr<T>() : nullptr);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
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

// CPU kernels of the deformable convolution (math in deform.h), plugged into deform_host.h.
// Each kernel works on rows of one (image, offset group, kernel point, output row): the taps of
// the row's Wo samples are computed once and reused for every channel of the group, and the
// inner loop runs along the row (contiguous in the columns). The input gradient is scattered by
// tasks that own disjoint channel blocks of one image, so it needs no atomics and every sum has a
// fixed order (deterministic).
#include <algorithm>
#include <vector>

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "deform_host.h"

namespace pyops {
namespace deform {
namespace {

constexpr int64_t kGrain = 4096;     // samples per task, roughly
constexpr int64_t kChannelBlock = 16;  // channels per task of the input gradient

// The taps of output row oy of kernel point k, offset group a, image n.
template <typename scalar_t, typename T>
void row_taps(const Sampler<scalar_t, T>& s, int64_t n, int64_t a, int64_t k, int64_t oy,
              std::vector<BilinearTaps<T>>& taps) {
  taps.resize(s.g.Wo);
  for (int64_t ox = 0; ox < s.g.Wo; ++ox) taps[ox] = s.taps(n, a, k, oy * s.g.Wo + ox);
}

void im2col_cpu(const at::Tensor& input, const at::Tensor& offset, const Geometry& g, int64_t n0, at::Tensor& cols) {
  const int64_t b = cols.size(0), K = g.K(), L = g.L(), Cog = g.group_channels();
  const int64_t rows = b * g.offset_groups * K * g.Ho;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "deform_im2col_cpu", [&] {
    using T = opmath<scalar_t>;
    const auto s = make_sampler<scalar_t>(input, offset, g);
    scalar_t* out = cols.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, rows, std::max<int64_t>(1, kGrain / (g.Wo * Cog)), [&](int64_t begin, int64_t end) {
      std::vector<BilinearTaps<T>> taps;
      for (int64_t r = begin; r < end; ++r) {
        const int64_t oy = r % g.Ho, k = r / g.Ho % K, a = r / (g.Ho * K) % g.offset_groups;
        const int64_t nl = r / (g.Ho * K * g.offset_groups), n = n0 + nl;
        row_taps(s, n, a, k, oy, taps);
        for (int64_t c = a * Cog; c < (a + 1) * Cog; ++c) {
          scalar_t* dst = out + (nl * g.C + c) * K * L + k * L + oy * g.Wo;
          for (int64_t ox = 0; ox < g.Wo; ++ox) dst[ox] = static_cast<scalar_t>(s.sample(taps[ox], n, c));
        }
      }
    });
  });
}

void col_grad_cpu(const at::Tensor& input, const at::Tensor& offset, const Geometry& g, int64_t n0,
                  const at::Tensor& grad_cols, at::Tensor& grad_input, at::Tensor& grad_offset) {
  const int64_t b = grad_cols.size(0), K = g.K(), L = g.L(), Cog = g.group_channels();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "deform_col_grad_cpu", [&] {
    using T = opmath<scalar_t>;
    const auto s = make_sampler<scalar_t>(input, offset, g);
    const scalar_t* gcols = grad_cols.const_data_ptr<scalar_t>();
    // offset gradient: per row, the corner dot products with the column gradients over the
    // group's channels, then the bilinear slopes
    scalar_t* goff = grad_offset.mutable_data_ptr<scalar_t>();
    const int64_t rows = b * g.offset_groups * K * g.Ho;
    at::parallel_for(0, rows, std::max<int64_t>(1, kGrain / (g.Wo * Cog)), [&](int64_t begin, int64_t end) {
      std::vector<BilinearTaps<T>> taps;
      std::vector<T> dots;
      for (int64_t r = begin; r < end; ++r) {
        const int64_t oy = r % g.Ho, k = r / g.Ho % K, a = r / (g.Ho * K) % g.offset_groups;
        const int64_t nl = r / (g.Ho * K * g.offset_groups), n = n0 + nl;
        row_taps(s, n, a, k, oy, taps);
        dots.assign(4 * g.Wo, T(0));
        for (int64_t c = a * Cog; c < (a + 1) * Cog; ++c) {
          const scalar_t* src = gcols + (nl * g.C + c) * K * L + k * L + oy * g.Wo;
          for (int64_t ox = 0; ox < g.Wo; ++ox) {
            const T gv = static_cast<T>(src[ox]);
            for (int q = 0; q < 4; ++q) dots[4 * ox + q] += gv * s.corner(taps[ox], q, n, c);
          }
        }
        const int64_t ch = 2 * (a * K + k);
        scalar_t* dy = goff + ((n * (2 * g.offset_groups * K) + ch) * g.Ho + oy) * g.Wo;
        scalar_t* dx = dy + L;
        for (int64_t ox = 0; ox < g.Wo; ++ox) {
          T gy, gx;
          offset_grad(taps[ox], &dots[4 * ox], &gy, &gx);
          dy[ox] = static_cast<scalar_t>(gy);
          dx[ox] = static_cast<scalar_t>(gx);
        }
      }
    });
    // input gradient: each task owns a block of channels of one image and offset group
    T* gin = grad_input.mutable_data_ptr<T>();
    const int64_t blocks_per_group = (Cog + kChannelBlock - 1) / kChannelBlock;
    const int64_t tasks = b * g.offset_groups * blocks_per_group;
    at::parallel_for(0, tasks, 1, [&](int64_t begin, int64_t end) {
      std::vector<BilinearTaps<T>> taps;
      for (int64_t t = begin; t < end; ++t) {
        const int64_t blk = t % blocks_per_group, a = t / blocks_per_group % g.offset_groups;
        const int64_t nl = t / (blocks_per_group * g.offset_groups), n = n0 + nl;
        const int64_t c0 = a * Cog + blk * kChannelBlock, c1 = std::min(c0 + kChannelBlock, (a + 1) * Cog);
        for (int64_t k = 0; k < K; ++k) {
          for (int64_t oy = 0; oy < g.Ho; ++oy) {
            row_taps(s, n, a, k, oy, taps);
            for (int64_t c = c0; c < c1; ++c) {
              const scalar_t* src = gcols + (nl * g.C + c) * K * L + k * L + oy * g.Wo;
              T* plane = gin + (n * g.C + c) * g.H * g.W;
              for (int64_t ox = 0; ox < g.Wo; ++ox) {
                const T gv = static_cast<T>(src[ox]);
                for (int q = 0; q < 4; ++q)
                  if (taps[ox].valid(q)) plane[taps[ox].pixel(q, g.W)] += gv * taps[ox].weight(q);
              }
            }
          }
        }
      }
    });
  });
}

const Kernels kCpuKernels{&im2col_cpu, &col_grad_cpu};

at::Tensor deform_conv2d_cpu(const at::Tensor& input, const at::Tensor& offset, const at::Tensor& weight,
                             const std::optional<at::Tensor>& bias, at::IntArrayRef stride, at::IntArrayRef padding,
                             at::IntArrayRef dilation, int64_t groups, int64_t offset_groups) {
  return forward(kCpuKernels, input, offset, weight, bias, stride, padding, dilation, groups, offset_groups);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> deform_conv2d_backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& input, const at::Tensor& offset, const at::Tensor& weight,
    at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups, int64_t offset_groups) {
  return backward(kCpuKernels, grad_out, input, offset, weight, stride, padding, dilation, groups, offset_groups);
}

}  // namespace

TORCH_LIBRARY_IMPL(pyops, CPU, m) {
  m.impl("deform_conv2d", &deform_conv2d_cpu);
  m.impl("deform_conv2d_backward", &deform_conv2d_backward_cpu);
}

}  // namespace deform
}  // namespace pyops

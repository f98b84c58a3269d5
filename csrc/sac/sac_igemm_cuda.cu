// CUDA kernels of the "igemm" algorithm of the switchable atrous convolution: both branch
// convolutions (dilation d and 3d) and the blend in one kernel with two accumulators.
//
// half / bfloat16: tensor cores (WMMA 16x16x16, fp32 accumulation). A block computes an output
// tile of kTileRows x kTileCols pixels of one image and kBlockN output channels of one group. For
// every block of kBlockK input channels it stages the input halo that both branches' taps need
// (sac.h: DualConvGeom, one halo for both dilations) in shared memory, then for every tap (i, j)
// the two weight tiles; a warp's A fragment is 16 consecutive output pixels of one output row,
// i.e. 16 halo pixels `stride` apart (a regular row stride, so load_matrix_sync reads it directly).
// The epilogue stages both accumulators in shared memory, writes y = A_l + s (A_s - A_l) + bias and
// A_s - A_l, and the per-tile column sums of y (for the post-context mean) to a small buffer that
// the host reduces afterwards (deterministic; no atomics).
//
// float / double (and halos too large for shared memory): one thread per output element, the
// direct convolution of sac.h (dual_conv_at), the same code the CPU kernel runs.
//
// x' and the outputs are channels_last here (the host converts); weights of the tensor-core path
// are re-laid out as (kh, kw, C/g, O) so a weight tile row is contiguous in output channels.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <mma.h>

#include <limits>

#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include "sac_host.h"

namespace pyops {
namespace sac {
namespace {

constexpr int kTileRows = 4;                     // output rows of a block tile
constexpr int kTileCols = 16;                    // output columns of a block tile (one WMMA M)
constexpr int kBlockM = kTileRows * kTileCols;   // 64 pixels
constexpr int kBlockN = 64;                      // output channels
constexpr int kBlockK = 32;                      // input channels per halo
constexpr int kPadN = kBlockN + 16;              // weight tile row stride (keeps 32-byte alignment)
constexpr int kPadC = kBlockN + 4;               // accumulator staging row stride (floats)
constexpr int kWarpsM = 2, kWarpsN = 2;          // each warp: 32 pixels x 32 channels
constexpr int kThreads = 32 * kWarpsM * kWarpsN;
constexpr int kSimtThreads = 256;

static_assert(kBlockM == kWarpsM * 32 && kBlockN == kWarpsN * 32, "warp layout must cover the tile");
static_assert(kBlockK % 16 == 0, "kBlockK must be a multiple of the WMMA K (16)");

// The WMMA element type of an ATen 16-bit type (same bits).
template <typename scalar_t>
struct Wmma;
template <>
struct Wmma<at::Half> {
  using type = __half;
};
template <>
struct Wmma<at::BFloat16> {
  using type = __nv_bfloat16;
};

struct DualConvParams {
  const void* x;        // (N, H, W, C)
  const void* w_small;  // tensor cores: (kh, kw, C/g, O); SIMT: (O, C/g, kh, kw)
  const void* w_large;
  const void* s;        // (N, Ho, Wo) op-math
  const void* bias;     // (O,) op-math or nullptr
  void* y;              // (N, Ho, Wo, O)
  void* diff;
  float* y_part;        // tensor cores: (N, tiles_h * tiles_w, O) column sums of y per tile
  DualConvGeom g;
  int64_t tiles_h, tiles_w, tiles_n;  // output tiles per image (rows, columns), channel tiles per group
  int64_t halo_h, halo_w;             // halo extent of one tile
};

struct SmemLayout {
  int64_t halo, weights, staging, total;  // bytes
};

// Dynamic shared memory of the tensor-core kernel: the halo and the two weight tiles during the
// main loop, the two fp32 accumulator tiles in the epilogue (same memory).
PYOPS_HD SmemLayout smem_layout(int64_t halo_h, int64_t halo_w, int64_t elem_bytes) {
  SmemLayout l;
  l.halo = halo_h * halo_w * kBlockK * elem_bytes;
  l.weights = 2 * int64_t(kBlockK) * kPadN * elem_bytes;
  l.staging = 2 * int64_t(kBlockM) * kPadC * int64_t(sizeof(float));
  l.total = l.halo + l.weights > l.staging ? l.halo + l.weights : l.staging;
  return l;
}

template <typename scalar_t>
__global__ void __launch_bounds__(kThreads) dual_conv_wmma_kernel(DualConvParams P) {
  using namespace nvcuda;
  using E = typename Wmma<scalar_t>::type;
  extern __shared__ __align__(128) unsigned char smem[];
  const DualConvGeom& g = P.g;
  const int64_t Cg = g.Cg(), Og = g.Og();
  const int64_t tiles = P.tiles_h * P.tiles_w;
  const int64_t n = blockIdx.x / tiles, tile = blockIdx.x % tiles;
  const int64_t h0 = (tile / P.tiles_w) * kTileRows, w0 = (tile % P.tiles_w) * kTileCols;
  const int64_t grp = blockIdx.y / P.tiles_n, n0 = (blockIdx.y % P.tiles_n) * kBlockN;
  const int tid = threadIdx.x, warp = tid / 32;
  const int wm = warp / kWarpsN, wn = warp % kWarpsN;

  static_assert(sizeof(E) == sizeof(scalar_t), "WMMA type must have the ATen type's bits");
  const SmemLayout L = smem_layout(P.halo_h, P.halo_w, sizeof(scalar_t));
  // copies use the ATen type (host/device conversions), the fragments read the same bits as E
  scalar_t* halo = reinterpret_cast<scalar_t*>(smem);  // (halo_h, halo_w, kBlockK)
  scalar_t* b_small = reinterpret_cast<scalar_t*>(smem + L.halo);  // (kBlockK, kPadN)
  scalar_t* b_large = b_small + kBlockK * kPadN;
  const E* halo_e = reinterpret_cast<const E*>(halo);
  const E* b_small_e = reinterpret_cast<const E*>(b_small);
  const E* b_large_e = reinterpret_cast<const E*>(b_large);
  float* c_small = reinterpret_cast<float*>(smem);  // (kBlockM, kPadC), after the main loop
  float* c_large = c_small + kBlockM * kPadC;

  const scalar_t* x = static_cast<const scalar_t*>(P.x);
  const scalar_t* ws = static_cast<const scalar_t*>(P.w_small);
  const scalar_t* wl = static_cast<const scalar_t*>(P.w_large);
  const int64_t row0 = g.halo_row0(h0), col0 = g.halo_col0(w0);
  const int64_t halo_elems = P.halo_h * P.halo_w * kBlockK;
  const scalar_t zero(0.0f);

  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc_s[2][2], acc_l[2][2];
  for (int fi = 0; fi < 2; ++fi) {
    for (int fj = 0; fj < 2; ++fj) {
      wmma::fill_fragment(acc_s[fi][fj], 0.0f);
      wmma::fill_fragment(acc_l[fi][fj], 0.0f);
    }
  }
  const unsigned lda = unsigned(g.SW * kBlockK);  // halo pixels of consecutive output columns

  for (int64_t c0 = 0; c0 < Cg; c0 += kBlockK) {
    __syncthreads();  // the previous channel block's halo is no longer read
    for (int64_t e = tid; e < halo_elems; e += kThreads) {
      const int64_t c = e % kBlockK, pix = e / kBlockK;
      const int64_t h = row0 + pix / P.halo_w, w = col0 + pix % P.halo_w;
      scalar_t v = zero;
      if (g.inside(h, w) && c0 + c < Cg) v = x[((n * g.H + h) * g.W + w) * g.C + grp * Cg + c0 + c];
      halo[e] = v;
    }
    for (int64_t tap = 0; tap < g.KH * g.KW; ++tap) {
      const int64_t i = tap / g.KW, j = tap % g.KW;
      __syncthreads();  // the previous tap's weight tiles are no longer read
      for (int e = tid; e < kBlockK * kBlockN; e += kThreads) {
        const int k = e / kBlockN, col = e % kBlockN;
        const int64_t c = c0 + k, oc = n0 + col;
        scalar_t vs = zero, vl = zero;
        if (c < Cg && oc < Og) {
          const int64_t wi = (tap * Cg + c) * g.O + grp * Og + oc;
          vs = ws[wi];
          vl = wl[wi];
        }
        b_small[k * kPadN + col] = vs;
        b_large[k * kPadN + col] = vl;
      }
      __syncthreads();  // halo (first tap) and weight tiles are in place
      const int64_t rs = DualConvGeom::halo_offset(i, g.PH, g.DH, false);
      const int64_t cs = DualConvGeom::halo_offset(j, g.PW, g.DW, false);
      const int64_t rl = DualConvGeom::halo_offset(i, g.PH, g.DH, true);
      const int64_t cl = DualConvGeom::halo_offset(j, g.PW, g.DW, true);
      for (int kk = 0; kk < kBlockK; kk += 16) {
        wmma::fragment<wmma::matrix_b, 16, 16, 16, E, wmma::row_major> fb_s[2], fb_l[2];
        for (int fj = 0; fj < 2; ++fj) {
          const int col = wn * 32 + fj * 16;
          wmma::load_matrix_sync(fb_s[fj], b_small_e + kk * kPadN + col, kPadN);
          wmma::load_matrix_sync(fb_l[fj], b_large_e + kk * kPadN + col, kPadN);
        }
        for (int fi = 0; fi < 2; ++fi) {
          const int64_t th = wm * 2 + fi;  // output row of this fragment inside the tile
          wmma::fragment<wmma::matrix_a, 16, 16, 16, E, wmma::row_major> fa_s, fa_l;
          wmma::load_matrix_sync(fa_s, halo_e + ((th * g.SH + rs) * P.halo_w + cs) * kBlockK + kk, lda);
          wmma::load_matrix_sync(fa_l, halo_e + ((th * g.SH + rl) * P.halo_w + cl) * kBlockK + kk, lda);
          for (int fj = 0; fj < 2; ++fj) {
            wmma::mma_sync(acc_s[fi][fj], fa_s, fb_s[fj], acc_s[fi][fj]);
            wmma::mma_sync(acc_l[fi][fj], fa_l, fb_l[fj], acc_l[fi][fj]);
          }
        }
      }
    }
  }

  __syncthreads();  // every warp is done reading the halo and weights: reuse them for staging
  for (int fi = 0; fi < 2; ++fi) {
    for (int fj = 0; fj < 2; ++fj) {
      const int off = (wm * 32 + fi * 16) * kPadC + wn * 32 + fj * 16;
      wmma::store_matrix_sync(c_small + off, acc_s[fi][fj], kPadC, wmma::mem_row_major);
      wmma::store_matrix_sync(c_large + off, acc_l[fi][fj], kPadC, wmma::mem_row_major);
    }
  }
  __syncthreads();
  const float* s = static_cast<const float*>(P.s);
  const float* bias = static_cast<const float*>(P.bias);
  scalar_t* y = static_cast<scalar_t*>(P.y);
  scalar_t* diff = static_cast<scalar_t*>(P.diff);
  for (int e = tid; e < kBlockM * kBlockN; e += kThreads) {
    const int r = e / kBlockN, col = e % kBlockN;  // consecutive threads: consecutive channels
    const int64_t ho = h0 + r / kTileCols, wo = w0 + r % kTileCols, oc = n0 + col;
    float yv = 0.0f;
    if (ho < g.Ho && wo < g.Wo && oc < Og) {
      const int64_t o = grp * Og + oc;
      const int64_t pix = (n * g.Ho + ho) * g.Wo + wo;
      float d;
      yv = dual_blend(c_small[r * kPadC + col], c_large[r * kPadC + col], s[pix],
                      bias != nullptr ? bias[o] : 0.0f, d);
      y[pix * g.O + o] = static_cast<scalar_t>(yv);
      diff[pix * g.O + o] = static_cast<scalar_t>(d);
    }
    c_small[r * kPadC + col] = yv;  // each element is owned by exactly one thread
  }
  __syncthreads();
  if (tid < kBlockN && n0 + tid < Og) {
    float total = 0.0f;
    for (int r = 0; r < kBlockM; ++r) total += c_small[r * kPadC + tid];
    P.y_part[(n * tiles + tile) * g.O + grp * Og + n0 + tid] = total;
  }
}

// One thread per output element (n, ho, wo, o), o fastest.
template <typename scalar_t, typename T>
__global__ void dual_conv_simt_kernel(DualConvParams P) {
  const DualConvGeom& g = P.g;
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= g.N * g.Ho * g.Wo * g.O) return;
  const int64_t o = i % g.O, pix = i / g.O;
  const int64_t wo = pix % g.Wo, ho = (pix / g.Wo) % g.Ho, n = pix / (g.Wo * g.Ho);
  const Dense4d Lx{g.N, g.C, g.H * g.W, true};
  T acc_s, acc_l, d;
  dual_conv_at(static_cast<const scalar_t*>(P.x), Lx, static_cast<const scalar_t*>(P.w_small),
               static_cast<const scalar_t*>(P.w_large), g, n, o, ho, wo, acc_s, acc_l);
  const T* bias = static_cast<const T*>(P.bias);
  const T yv = dual_blend(acc_s, acc_l, static_cast<const T*>(P.s)[pix], bias != nullptr ? bias[o] : T(0), d);
  static_cast<scalar_t*>(P.y)[i] = static_cast<scalar_t>(yv);
  static_cast<scalar_t*>(P.diff)[i] = static_cast<scalar_t>(d);
}

int64_t smem_optin_limit() {
  return int64_t(at::cuda::getCurrentDeviceProperties()->sharedMemPerBlockOptin);
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> dual_conv_cuda(const at::Tensor& xp_, const at::Tensor& w_small,
                                                              const at::Tensor& w_large, const at::Tensor& s,
                                                              const OptTensor& bias, const DualConvGeom& g,
                                                              bool channels_last) {
  const c10::cuda::CUDAGuard guard(xp_.device());
  const auto cl_fmt = at::MemoryFormat::ChannelsLast;
  const at::Tensor xp = xp_.contiguous(cl_fmt);
  const auto opts = xp.options().memory_format(cl_fmt);
  at::Tensor y = at::empty({g.N, g.O, g.Ho, g.Wo}, opts);
  at::Tensor diff = at::empty({g.N, g.O, g.Ho, g.Wo}, opts);
  const auto acc = s.scalar_type();
  const int64_t elems = g.N * g.O * g.Ho * g.Wo;
  if (elems == 0) {
    return {y.contiguous(format_of(channels_last)), diff.contiguous(format_of(channels_last)),
            at::zeros({g.N, g.O}, s.options())};
  }
  auto stream = at::cuda::getCurrentCUDAStream();
  DualConvParams P{};
  P.x = xp.const_data_ptr();
  P.s = s.const_data_ptr();
  P.bias = bias.has_value() ? bias->const_data_ptr() : nullptr;
  P.y = y.mutable_data_ptr();
  P.diff = diff.mutable_data_ptr();
  P.g = g;
  P.halo_h = DualConvGeom::halo_extent(kTileRows, g.SH, g.PH);
  P.halo_w = DualConvGeom::halo_extent(kTileCols, g.SW, g.PW);
  const bool low = xp.scalar_type() == at::kHalf || xp.scalar_type() == at::kBFloat16;
  const SmemLayout L = smem_layout(P.halo_h, P.halo_w, 2);
  at::Tensor y_sum;
  if (low && L.total <= smem_optin_limit()) {
    P.tiles_h = (g.Ho + kTileRows - 1) / kTileRows;
    P.tiles_w = (g.Wo + kTileCols - 1) / kTileCols;
    P.tiles_n = (g.Og() + kBlockN - 1) / kBlockN;
    const int64_t tiles = P.tiles_h * P.tiles_w;
    TORCH_CHECK(g.N * tiles <= std::numeric_limits<int32_t>::max() && g.groups * P.tiles_n <= 65535,
                "sac_conv2d (igemm): the output is too large for one CUDA launch; split the batch");
    // weights as (kh, kw, C/g, O): a tap's tile rows are contiguous in output channels
    const at::Tensor ws = w_small.permute({2, 3, 1, 0}).contiguous();
    const at::Tensor wl = w_large.permute({2, 3, 1, 0}).contiguous();
    at::Tensor y_part = at::empty({g.N, tiles, g.O}, s.options().dtype(at::kFloat));
    P.w_small = ws.const_data_ptr();
    P.w_large = wl.const_data_ptr();
    P.y_part = y_part.mutable_data_ptr<float>();
    const dim3 grid(unsigned(g.N * tiles), unsigned(g.groups * P.tiles_n));
    AT_DISPATCH_REDUCED_FLOATING_TYPES(xp.scalar_type(), "sac_dual_conv_wmma", [&] {
      auto kernel = dual_conv_wmma_kernel<scalar_t>;
      C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(L.total)));
      kernel<<<grid, kThreads, size_t(L.total), stream>>>(P);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
    y_sum = y_part.sum(1).to(acc);
  } else {
    const at::Tensor ws = w_small.contiguous(), wl = w_large.contiguous();
    P.w_small = ws.const_data_ptr();
    P.w_large = wl.const_data_ptr();
    const int64_t blocks = (elems + kSimtThreads - 1) / kSimtThreads;
    TORCH_CHECK(blocks <= std::numeric_limits<int32_t>::max(),
                "sac_conv2d (igemm): the output is too large for one CUDA launch; split the batch");
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, xp.scalar_type(), "sac_dual_conv_simt", [&] {
      using T = opmath_t<scalar_t>;
      dual_conv_simt_kernel<scalar_t, T><<<unsigned(blocks), kSimtThreads, 0, stream>>>(P);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
    y_sum = y.sum({2, 3}, false, acc);
  }
  const auto fmt = format_of(channels_last);
  return {y.contiguous(fmt), diff.contiguous(fmt), y_sum};
}

}  // namespace sac
}  // namespace pyops

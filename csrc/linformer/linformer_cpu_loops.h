// The CPU loops of the Linformer attention over the row math of linformer.h, shared by the torch
// CPU kernels (linformer_cpu.cpp, in parallel) and the JAX CPU handlers (csrc/jax/jax_cpu.cpp,
// serially). No ATen: `pfor(n, grain, body)` runs body(begin, end) over chunks of [0, n) (the
// grain is a hint). Tensors are contiguous (BH, n, d) / (BH, k, d) in the op-math type T.
#pragma once

#include <algorithm>
#include <cmath>
#include <vector>

#include "linformer.h"

namespace pyops {
namespace linformer {

constexpr int64_t kCpuKeyTile = 64;
constexpr int64_t kCpuRowGrain = 16;

// out (BH, n, d) and lse (BH, n): one query row per task; only per-row state is kept, never
// the n x k scores.
template <typename T, typename PFor>
void attend_loops(const AttendParams<T>& a, const T* qs, const T* ks, const T* vs, T* os, T* ls, int64_t BH,
                  int64_t n, int64_t d, int64_t k, PFor pfor) {
  pfor(BH * n, kCpuRowGrain, [&](int64_t begin, int64_t end) {
    std::vector<T> acc(d);
    for (int64_t i = begin; i < end; ++i) {
      const int64_t bh = i / n;
      const T* kt = ks + bh * k * d;
      const T* vt = vs + bh * k * d;
      std::fill(acc.begin(), acc.end(), T(0));
      T m = -INFINITY, l = T(0);
      for (int64_t j0 = 0; j0 < k; j0 += kCpuKeyTile) {
        const int64_t cnt = std::min<int64_t>(kCpuKeyTile, k - j0);
        forward_tile<T, 0>(a, qs + i * d, acc.data(), m, l, kt + j0 * d, vt + j0 * d, d, cnt, j0,
                           static_cast<uint64_t>(i));
      }
      for (int64_t c = 0; c < d; ++c) os[i * d + c] = acc[c] / l;
      ls[i] = finish_row(m, l);
    }
  });
}

// dq (BH, n, d), dk and dv (BH, k, d), all zero-filled by the caller, from the output gradient
// gs, the saved log-sum-exps ls and delta_i = <dO_i, O_i>.
template <typename T, typename PFor>
void attend_backward_loops(const AttendParams<T>& a, const T* qs, const T* ks, const T* vs, const T* gs,
                           const T* ls, const T* ds, T* dqs, T* dks, T* dvs, int64_t BH, int64_t n, int64_t d,
                           int64_t k, PFor pfor) {
  // dQ: one query row per task
  pfor(BH * n, kCpuRowGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t bh = i / n;
      T* dqi = dqs + i * d;
      dq_tile<T, 0>(a, qs + i * d, gs + i * d, dqi, ls[i], ds[i], ks + bh * k * d, vs + bh * k * d, d, k, 0,
                    static_cast<uint64_t>(i));
      for (int64_t c = 0; c < d; ++c) dqi[c] *= a.scale;
    }
  });
  // dK', dV': one projected key per task, summing over every query row
  pfor(BH * k, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t bh = t / k, j = t % k;
      T* dkj = dks + t * d;
      dkv_rows<T, 0>(a, ks + t * d, vs + t * d, dkj, dvs + t * d, qs + bh * n * d, gs + bh * n * d, ls + bh * n,
                     ds + bh * n, d, n, static_cast<uint64_t>(bh * n), j);
      for (int64_t c = 0; c < d; ++c) dkj[c] *= a.scale;
    }
  });
}

}  // namespace linformer
}  // namespace pyops

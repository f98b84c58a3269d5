// Linformer attention math shared by the CPU and CUDA kernels.
//
// After the projection (K' = E^T K, V' = F^T V, done with GEMMs), every query row i of a
// (batch, head) pair attends to the k projected keys:
//   s_j = scale * <q_i, K'_j>,  P_j = softmax(s)_j,  O_i = sum_j P_j Z_ij V'_j
// where Z_ij is the dropout factor (0 or 1 / (1 - p)). The forward keeps a running max and
// normalizer per row (one-pass "online" softmax over key tiles) and saves the log-sum-exp,
// so the n x k score matrix is never stored; the backward recomputes P from it:
//   D_i = <dO_i, O_i>,  dP_ij = Z_ij <dO_i, V'_j>,  dS_ij = P_ij (dP_ij - D_i)
//   dQ_i = scale sum_j dS_ij K'_j,  dK'_j = scale sum_i dS_ij Q_i,  dV'_j = sum_i P_ij Z_ij dO_i
//
// Every function works on plain pointers to rows of length `d`, in the op-math type T (float
// for half/bfloat16/float, double for double). The template bound DM is the compile-time
// row length the CUDA kernels use (rows padded with zeros up to DM, so loops unroll and
// rows live in registers); the CPU kernels pass DM = 0 and loop to the runtime `d`.
#pragma once

#include <math.h>

#include <cmath>
#include <cstdint>

#include "../common.h"

#if defined(__CUDACC__)
#define PYOPS_UNROLL _Pragma("unroll")
#else
#define PYOPS_UNROLL
#endif

namespace pyops {
namespace linformer {

// ---- dropout ------------------------------------------------------------------------------
// A counter-based generator: the keep decision of score (row, col) is a pure function of the
// seed and the indices, so the backward recomputes the forward's mask without storing it, and
// the CPU, CUDA, Triton and reference implementations all draw the same mask. `row` is the
// global query row (b * H + h) * n_q + i and `col` the projected key j, both taken mod 2^32.
PYOPS_HD uint32_t mix32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7feb352dU;
  x ^= x >> 15;
  x *= 0x5bd1e995U;
  x ^= x >> 16;
  return x;
}

struct Dropout {
  uint32_t seed;       // low 32 bits of the op's seed
  uint32_t threshold;  // keep when the 24-bit draw >= threshold = round(p * 2^24)
  bool enabled;        // p > 0

  PYOPS_HD bool keep(uint64_t row, int64_t col) const {
    if (!enabled) return true;
    const uint32_t h = mix32(mix32(seed + static_cast<uint32_t>(row)) + static_cast<uint32_t>(col));
    return (h >> 8) >= threshold;
  }
};

// ---- rows ---------------------------------------------------------------------------------
template <int DM>
PYOPS_HD int64_t row_len(int64_t d) {
  return DM > 0 ? int64_t(DM) : d;
}

template <typename T, int DM>
PYOPS_HD T dot(const T* a, const T* b, int64_t d) {
  T s = T(0);
  PYOPS_UNROLL
  for (int64_t c = 0; c < row_len<DM>(d); ++c) s += a[c] * b[c];
  return s;
}

// acc += w * x
template <typename T, int DM>
PYOPS_HD void axpy(T w, const T* x, T* acc, int64_t d) {
  PYOPS_UNROLL
  for (int64_t c = 0; c < row_len<DM>(d); ++c) acc[c] += w * x[c];
}

// exp/log with the float overloads on host and device alike.
PYOPS_HD float exp_t(float x) { return expf(x); }
PYOPS_HD double exp_t(double x) { return ::exp(x); }
PYOPS_HD float log_t(float x) { return logf(x); }
PYOPS_HD double log_t(double x) { return ::log(x); }

template <typename T>
PYOPS_HD T max_of(T a, T b) {
  return a > b ? a : b;
}

// Common scalars of one attention call.
template <typename T>
struct AttendParams {
  int64_t d;       // head dim (row length in memory; tiles use their own stride)
  T scale;         // score scale
  T keep_scale;    // 1 / (1 - p), or 0 when p == 1 (everything dropped)
  Dropout drop;
};

// Parameters of one call from the op's arguments (host only).
template <typename T>
inline AttendParams<T> make_attend_params(int64_t d, double scale, double dropout_p, int64_t seed) {
  AttendParams<T> a;
  a.d = d;
  a.scale = static_cast<T>(scale);
  a.keep_scale = dropout_p < 1.0 ? static_cast<T>(1.0 / (1.0 - dropout_p)) : T(0);
  a.drop.enabled = dropout_p > 0.0;
  a.drop.seed = static_cast<uint32_t>(static_cast<uint64_t>(seed));
  a.drop.threshold = static_cast<uint32_t>(std::llround(dropout_p * 16777216.0));
  return a;
}

// ---- forward ------------------------------------------------------------------------------
// Running state of one query row: max score m, normalizer l (sum of exp(s - m) over the keys
// seen, dropout not applied) and the unnormalized output acc (dropout applied). Adds the keys
// [j0, j0 + cnt) whose rows are kt + j * ld, vt + j * ld (j relative to the tile). The state is
// rescaled only when the running max grows (a few times per row), so there is no per-tile
// score buffer and the key loop need not be unrolled.
template <typename T, int DM>
PYOPS_HD void forward_tile(const AttendParams<T>& a, const T* q, T* acc, T& m, T& l, const T* kt,
                           const T* vt, int64_t ld, int64_t cnt, int64_t j0, uint64_t row) {
  for (int64_t j = 0; j < cnt; ++j) {
    const T s = dot<T, DM>(q, kt + j * ld, a.d) * a.scale;
    if (s > m) {
      const T corr = exp_t(m - s);  // 0 for the first key (m = -inf)
      l *= corr;
      PYOPS_UNROLL
      for (int64_t c = 0; c < row_len<DM>(a.d); ++c) acc[c] *= corr;
      m = s;
    }
    const T p = exp_t(s - m);
    l += p;
    if (a.drop.keep(row, j0 + j)) axpy<T, DM>(p * a.keep_scale, vt + j * ld, acc, a.d);
  }
}

// Output row and log-sum-exp from the final state.
template <typename T>
PYOPS_HD T finish_row(T m, T l) {
  return m + log_t(l);
}

// ---- backward -----------------------------------------------------------------------------
// dQ row: adds sum_j dS_ij K'_j over a tile of keys (the caller multiplies by scale at the end).
template <typename T, int DM>
PYOPS_HD void dq_tile(const AttendParams<T>& a, const T* q, const T* dout, T* dq, T lse, T delta,
                      const T* kt, const T* vt, int64_t ld, int64_t cnt, int64_t j0, uint64_t row) {
  for (int64_t j = 0; j < cnt; ++j) {
    const T* kj = kt + j * ld;
    const T p = exp_t(dot<T, DM>(q, kj, a.d) * a.scale - lse);
    const T dp = a.drop.keep(row, j0 + j) ? dot<T, DM>(dout, vt + j * ld, a.d) * a.keep_scale : T(0);
    axpy<T, DM>(p * (dp - delta), kj, dq, a.d);
  }
}

// dK', dV' rows of key j: add the contributions of a tile of `cnt` query rows (rows qt + r *
// ld, dot + r * ld; their lse and delta; global row indices row0 + r). The caller multiplies
// dk by scale at the end.
template <typename T, int DM>
PYOPS_HD void dkv_rows(const AttendParams<T>& a, const T* kj, const T* vj, T* dk, T* dv,
                       const T* qt, const T* dot_, const T* lse, const T* delta, int64_t ld,
                       int64_t cnt, uint64_t row0, int64_t j) {
  for (int64_t r = 0; r < cnt; ++r) {
    const T* qr = qt + r * ld;
    const T* dor = dot_ + r * ld;
    const T p = exp_t(dot<T, DM>(qr, kj, a.d) * a.scale - lse[r]);
    const bool keep = a.drop.keep(row0 + r, j);
    const T pz = keep ? p * a.keep_scale : T(0);
    axpy<T, DM>(pz, dor, dv, a.d);
    const T dp = keep ? dot<T, DM>(dor, vj, a.d) * a.keep_scale : T(0);
    axpy<T, DM>(p * (dp - delta[r]), qr, dk, a.d);
  }
}

}  // namespace linformer
}  // namespace pyops

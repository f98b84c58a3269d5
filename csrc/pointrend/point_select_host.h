// Host-side checks and plumbing of the point-selection ops, shared by CPU and CUDA.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/topk.h>
#include <c10/util/Exception.h>
#include <c10/util/Optional.h>

#include "point_sample_host.h"
#include "point_select.h"

namespace pyops {
namespace pointrend {

inline void check_logits(const at::Tensor& logits, const char* op) {
  TORCH_CHECK(logits.dim() == 4 && logits.size(2) > 0 && logits.size(3) > 0, op,
              ": logits must be a (R, C, H, W) tensor with non-empty H and W, got shape ",
              logits.sizes());
  TORCH_CHECK(at::isFloatingType(logits.scalar_type()), op,
              ": logits must be floating-point, got ", logits.scalar_type());
}

inline void check_uncertain_point_args(const at::Tensor& logits,
                                       const std::optional<at::Tensor>& classes,
                                       const std::optional<at::Tensor>& candidates,
                                       const at::Tensor& seed, int64_t num_points,
                                       int64_t num_candidates, int64_t num_uncertain) {
  const char* op = "uncertain_point_coords";
  check_logits(logits, op);
  const int64_t R = logits.size(0);
  TORCH_CHECK(num_points >= 1, op, ": num_points must be >= 1, got ", num_points);
  TORCH_CHECK(num_uncertain >= 0 && num_uncertain <= num_points && num_uncertain <= num_candidates,
              op, ": need 0 <= num_uncertain <= min(num_points, num_candidates), got ",
              num_uncertain, " with num_points=", num_points, ", num_candidates=", num_candidates);
  TORCH_CHECK(seed.numel() == 1 && seed.scalar_type() == at::kLong && seed.device() == logits.device(),
              op, ": seed must be a one-element int64 tensor on the logits' device");
  if (classes.has_value()) {
    TORCH_CHECK(classes->dim() == 1 && classes->size(0) == R && classes->scalar_type() == at::kLong &&
                    classes->device() == logits.device(),
                op, ": classes must be an int64 tensor of shape (", R, ",) on ", logits.device(),
                ", got ", classes->scalar_type(), " ", classes->sizes(), " on ", classes->device());
  } else {
    TORCH_CHECK(logits.size(1) == 1, op, ": logits has ", logits.size(1),
                " channels: pass classes to choose one per row");
  }
  if (candidates.has_value()) {
    TORCH_CHECK(candidates->dim() == 3 && candidates->size(0) == R &&
                    candidates->size(1) == num_candidates && candidates->size(2) == 2 &&
                    candidates->scalar_type() == at::kFloat &&
                    candidates->device() == logits.device(),
                op, ": candidates must be float32 of shape (", R, ", ", num_candidates,
                ", 2) on ", logits.device(), ", got ", candidates->scalar_type(), " ",
                candidates->sizes());
  }
}

template <typename scalar_t>
SelectArgs<scalar_t> make_select_args(const at::Tensor& logits, const std::optional<at::Tensor>& classes,
                                      const std::optional<at::Tensor>& candidates_in,
                                      at::Tensor& candidates, at::Tensor& uncertainty,
                                      const at::Tensor& seed) {
  SelectArgs<scalar_t> s;
  s.logits = make_sample_args<scalar_t, float>(logits, candidates, std::nullopt, false);
  s.classes = classes.has_value() ? classes->const_data_ptr<int64_t>() : nullptr;
  s.candidates_in = candidates_in.has_value() ? candidates_in->const_data_ptr<float>() : nullptr;
  s.candidates = candidates.mutable_data_ptr<float>();
  s.uncertainty = uncertainty.mutable_data_ptr<float>();
  s.num_candidates = candidates.size(1);
  s.seed = seed.const_data_ptr<int64_t>();
  return s;
}

inline void check_subdivision_args(const at::Tensor& logits, int64_t num_points) {
  TORCH_CHECK(logits.dim() == 3 && logits.size(1) > 0 && logits.size(2) > 0,
              "subdivision_step: logits must be a (R, h, w) tensor with non-empty h and w, got shape ",
              logits.sizes());
  TORCH_CHECK(at::isFloatingType(logits.scalar_type()),
              "subdivision_step: logits must be floating-point, got ", logits.scalar_type());
  TORCH_CHECK(num_points >= 1, "subdivision_step: num_points must be >= 1, got ", num_points);
}

}  // namespace pointrend
}  // namespace pyops

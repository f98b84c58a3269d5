// CPU kernels of the PointRend point-selection ops (math in point_select.h).
#include <algorithm>
#include <tuple>

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/topk.h>
#include <torch/library.h>

#include "point_select_host.h"

namespace pyops {
namespace pointrend {
namespace {

using OptTensor = std::optional<at::Tensor>;

at::Tensor uncertain_point_coords_cpu(const at::Tensor& logits_, const OptTensor& classes_,
                                      const OptTensor& candidates_in, const at::Tensor& seed,
                                      int64_t num_points, int64_t num_candidates,
                                      int64_t num_uncertain) {
  check_uncertain_point_args(logits_, classes_, candidates_in, seed, num_points, num_candidates,
                             num_uncertain);
  const at::Tensor logits = logits_.contiguous();
  const OptTensor classes = classes_.has_value() ? OptTensor(classes_->contiguous()) : std::nullopt;
  const int64_t R = logits.size(0);
  const auto f32 = logits.options().dtype(at::kFloat);
  at::Tensor candidates = candidates_in.has_value() ? candidates_in->contiguous()
                                                    : at::empty({R, num_candidates, 2}, f32);
  const OptTensor supplied = candidates_in.has_value() ? OptTensor(candidates) : std::nullopt;
  at::Tensor uncertainty = at::empty({R, num_candidates}, f32);
  at::Tensor out = at::empty({R, num_points, 2}, f32);
  if (R == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(), "uncertain_point_coords_cpu", [&] {
    const auto s = make_select_args<scalar_t>(logits, classes, supplied, candidates, uncertainty, seed);
    at::parallel_for(0, R * num_candidates, 1024, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) score_candidate(s, i / num_candidates, i % num_candidates);
    });
  });
  const at::Tensor top = std::get<1>(at::topk(uncertainty, num_uncertain, 1, true, false)).contiguous();
  const float* cand = candidates.const_data_ptr<float>();
  const int64_t* t = top.const_data_ptr<int64_t>();
  float* o = out.mutable_data_ptr<float>();
  const int64_t* sd = seed.const_data_ptr<int64_t>();
  at::parallel_for(0, R * num_points, 1024, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i)
      pick_point(cand, t, num_candidates, num_uncertain, num_points, sd, i / num_points, i % num_points, o);
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> subdivision_step_cpu(const at::Tensor& logits,
                                                                    int64_t num_points) {
  check_subdivision_args(logits, num_points);
  const int64_t R = logits.size(0), h = logits.size(1), w = logits.size(2), H = 2 * h, W = 2 * w;
  const int64_t P = std::min(num_points, H * W);
  at::Tensor up = at::empty({R, H, W}, logits.options());
  at::Tensor uncertainty = at::empty({R, H * W}, logits.options().dtype(at::kFloat));
  if (R == 0)
    return {up, at::empty({0, P}, logits.options().dtype(at::kLong)),
            at::empty({0, P, 2}, logits.options().dtype(at::kFloat))};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(), "subdivision_step_cpu", [&] {
    const scalar_t* in = logits.const_data_ptr<scalar_t>();
    scalar_t* u = up.mutable_data_ptr<scalar_t>();
    float* unc = uncertainty.mutable_data_ptr<float>();
    at::parallel_for(0, R * H * W, 4096, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const int64_t r = i / (H * W), y = (i / W) % H, x = i % W;
        const auto v = upsample2x<scalar_t, upsample_t<scalar_t>>(in, h, w, logits.stride(0), logits.stride(1),
                                                                  logits.stride(2), r, y, x);
        u[i] = static_cast<scalar_t>(v);
        unc[i] = -std::fabs(static_cast<float>(u[i]));
      }
    });
  });
  at::Tensor indices = std::get<1>(at::topk(uncertainty, P, 1, true, false)).contiguous();
  at::Tensor coords = at::empty({R, P, 2}, logits.options().dtype(at::kFloat));
  const int64_t* idx = indices.const_data_ptr<int64_t>();
  float* c = coords.mutable_data_ptr<float>();
  at::parallel_for(0, R * P, 4096, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) grid_point(idx[i], H, W, c + 2 * i, c + 2 * i + 1);
  });
  return {up, indices, coords};
}

}  // namespace

TORCH_LIBRARY_IMPL(pyops, CPU, m) {
  m.impl("uncertain_point_coords", &uncertain_point_coords_cpu);
  m.impl("subdivision_step", &subdivision_step_cpu);
}

}  // namespace pointrend
}  // namespace pyops

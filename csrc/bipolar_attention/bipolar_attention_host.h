// Host-side glue shared by the CPU and CUDA launchers of bipolar attention: the tensor checks both
// run before any kernel starts, and the output allocation, so the two paths cannot drift apart.
#pragma once
#include <torch/types.h>

#include "bipolar_attention/bipolar_attention_math.h"

namespace spikeops {
namespace bipolar {

// Row statistics (lse, row sums, delta) are float64 for float64 input, float32 otherwise.
inline at::ScalarType stats_dtype(const at::Tensor& q) {
  return q.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

inline AttentionParams check_forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale,
                                     int64_t norm, bool pow2_denominator) {
  TORCH_CHECK(q.dim() == 3 && q.is_contiguous(), "spikeops: q must be a contiguous [H, N, d] tensor, got ",
              q.sizes());
  TORCH_CHECK(k.sizes() == q.sizes() && k.is_contiguous(), "spikeops: k must be contiguous with q's shape ",
              q.sizes(), ", got ", k.sizes());
  TORCH_CHECK(v.dim() == 3 && v.size(0) == q.size(0) && v.size(1) == q.size(1) && v.is_contiguous(),
              "spikeops: v must be a contiguous [H, N, dv] tensor matching q ", q.sizes(), ", got ", v.sizes());
  for (const at::Tensor* t : {&k, &v})
    TORCH_CHECK(t->scalar_type() == q.scalar_type() && t->device() == q.device(),
                "spikeops: q, k and v must share dtype and device");
  TORCH_CHECK(q.size(2) <= kMaxHeadDim && v.size(2) <= kMaxHeadDim, "spikeops: head dimensions must be <= ",
              kMaxHeadDim, ", got d=", q.size(2), " dv=", v.size(2));
  TORCH_CHECK(norm >= 0 && norm <= 2, "spikeops: norm code ", norm, " out of range [0, 2]");
  return {q.size(1), q.size(2), v.size(2), scale, static_cast<int32_t>(norm), pow2_denominator ? 1 : 0};
}

inline void check_backward(const at::Tensor& dy, const at::Tensor& y, const at::Tensor& v, const at::Tensor& lse,
                           const at::Tensor& rowsum, const at::Tensor& q) {
  TORCH_CHECK(dy.sizes() == v.sizes() && y.sizes() == v.sizes() && dy.is_contiguous() && y.is_contiguous() &&
                  dy.scalar_type() == v.scalar_type() && y.scalar_type() == v.scalar_type() &&
                  dy.device() == v.device() && y.device() == v.device(),
              "spikeops: dy and y must be contiguous, shaped, typed and placed like v ", v.sizes(), " ",
              v.scalar_type(), " on ", v.device(), "; got dy ", dy.sizes(), " ", dy.scalar_type(), " on ", dy.device(),
              ", y ", y.sizes(), " ", y.scalar_type(), " on ", y.device());
  for (const at::Tensor* t : {&lse, &rowsum})
    TORCH_CHECK(t->dim() == 2 && t->size(0) == q.size(0) && t->size(1) == q.size(1) && t->is_contiguous() &&
                    t->scalar_type() == stats_dtype(q) && t->device() == q.device(),
                "spikeops: saved row statistics must be contiguous [H, N] ", stats_dtype(q));
}

struct ForwardResult {
  at::Tensor y, lse, rowsum;
  std::tuple<at::Tensor, at::Tensor, at::Tensor> as_tuple() const { return {y, lse, rowsum}; }
};

inline ForwardResult allocate_forward(const at::Tensor& q, const at::Tensor& v) {
  const auto stats = q.options().dtype(stats_dtype(q));
  return {at::empty_like(v), at::empty({q.size(0), q.size(1)}, stats), at::ones({q.size(0), q.size(1)}, stats)};
}

}  // namespace bipolar
}  // namespace spikeops

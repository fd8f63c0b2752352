// Bipolar self-attention on the CPU: schemas of the operator, and its kernels parallel over query
// (and, in backward, key) rows. Per-row math is bipolar_attention_math.h, shared with CUDA.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "bipolar_attention_host.h"

TORCH_LIBRARY_FRAGMENT(spikeops, m) {
  // q, k [H, N, d] ternary, v [H, N, dv]; norm: 0 none, 1 shiftmax, 2 softmax.
  // Returns (y [H, N, dv], lse [H, N], rowsum [H, N]); the statistics are float64 for float64 input.
  m.def(
      "bipolar_attention_forward(Tensor q, Tensor k, Tensor v, float scale, int norm, bool pow2_denominator) "
      "-> (Tensor, Tensor, Tensor)");
  // Returns (dq, dk, dv).
  m.def(
      "bipolar_attention_backward(Tensor dy, Tensor q, Tensor k, Tensor v, Tensor y, Tensor lse, Tensor rowsum, "
      "float scale, int norm) -> (Tensor, Tensor, Tensor)");
}

namespace spikeops {
namespace bipolar {
namespace {

constexpr int64_t kRowGrain = 8;  // rows per task: each row already sweeps all N keys

template <typename scalar_t>
using acc_type = typename std::conditional<std::is_same<scalar_t, double>::value, double, float>::type;

std::tuple<at::Tensor, at::Tensor, at::Tensor> forward_cpu(const at::Tensor& q, const at::Tensor& k,
                                                           const at::Tensor& v, double scale, int64_t norm,
                                                           bool pow2_denominator) {
  const AttentionParams p = check_forward(q, k, v, scale, norm, pow2_denominator);
  const ForwardResult out = allocate_forward(q, v);
  const int64_t H = q.size(0);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, q.scalar_type(), "bipolar_attention_forward_cpu", [&] {
    using acc_t = acc_type<scalar_t>;
    const scalar_t* qp = q.data_ptr<scalar_t>();
    const scalar_t* kp = k.data_ptr<scalar_t>();
    const scalar_t* vp = v.data_ptr<scalar_t>();
    scalar_t* yp = out.y.data_ptr<scalar_t>();
    acc_t* lse = out.lse.data_ptr<acc_t>();
    acc_t* rowsum = out.rowsum.data_ptr<acc_t>();
    at::parallel_for(0, H * p.N, kRowGrain, [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) {
        const int64_t head = row / p.N;
        forward_row<scalar_t, acc_t>(qp + row * p.D, kp + head * p.N * p.D, vp + head * p.N * p.DV,
                                     yp + row * p.DV, lse + row, rowsum + row, p);
      }
    });
  });
  return out.as_tuple();
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_cpu(const at::Tensor& dy, const at::Tensor& q,
                                                            const at::Tensor& k, const at::Tensor& v,
                                                            const at::Tensor& y, const at::Tensor& lse,
                                                            const at::Tensor& rowsum, double scale, int64_t norm) {
  const AttentionParams p = check_forward(q, k, v, scale, norm, false);
  check_backward(dy, y, v, lse, rowsum, q);
  at::Tensor dq = at::empty_like(q), dk = at::empty_like(k), dv = at::empty_like(v);
  at::Tensor delta = at::empty_like(lse);
  const int64_t H = q.size(0);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, q.scalar_type(), "bipolar_attention_backward_cpu", [&] {
    using acc_t = acc_type<scalar_t>;
    const scalar_t* qp = q.data_ptr<scalar_t>();
    const scalar_t* kp = k.data_ptr<scalar_t>();
    const scalar_t* vp = v.data_ptr<scalar_t>();
    const scalar_t* yp = y.data_ptr<scalar_t>();
    const scalar_t* dyp = dy.data_ptr<scalar_t>();
    const acc_t* lsep = lse.data_ptr<acc_t>();
    const acc_t* rowsump = rowsum.data_ptr<acc_t>();
    acc_t* deltap = delta.data_ptr<acc_t>();
    at::parallel_for(0, H * p.N, kRowGrain, [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) {
        const int64_t head = row / p.N;
        backward_query_row<scalar_t, acc_t>(qp + row * p.D, kp + head * p.N * p.D, vp + head * p.N * p.DV,
                                            yp + row * p.DV, dyp + row * p.DV, lsep[row], rowsump[row],
                                            dq.data_ptr<scalar_t>() + row * p.D, deltap + row, p);
      }
    });
    at::parallel_for(0, H * p.N, kRowGrain, [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) {
        const int64_t head = row / p.N;
        backward_key_row<scalar_t, acc_t>(qp + head * p.N * p.D, kp + row * p.D, vp + row * p.DV,
                                          dyp + head * p.N * p.DV, lsep + head * p.N, deltap + head * p.N,
                                          dk.data_ptr<scalar_t>() + row * p.D, dv.data_ptr<scalar_t>() + row * p.DV,
                                          p);
      }
    });
  });
  return {dq, dk, dv};
}

}  // namespace
}  // namespace bipolar
}  // namespace spikeops

TORCH_LIBRARY_IMPL(spikeops, CPU, m) {
  m.impl("bipolar_attention_forward", &spikeops::bipolar::forward_cpu);
  m.impl("bipolar_attention_backward", &spikeops::bipolar::backward_cpu);
}

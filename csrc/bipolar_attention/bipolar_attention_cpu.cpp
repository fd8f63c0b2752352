// Bipolar self-attention on the CPU: schemas of the operator, and its kernels, parallel over heads.
// Per head the ternary product Q K^T is exact in floating point (integers of magnitude <= d), so it runs
// as a GEMM, as do the products with V and the backward's four products; the row math in between
// (scores, Shiftmax / softmax normaliser, straight-through gradient) is bipolar_attention_math.h,
// shared with CUDA, and the exponentials run through ATen's vectorised exp2. One head's [N, N] block
// is the only scratch, per thread, so memory stays O(threads * N^2) whatever the batch.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <vector>

#include "bipolar_attention/bipolar_attention_host.h"
#include "common/cpu_row_sums.h"

namespace spikeops {
namespace bipolar {
namespace {

template <typename scalar_t>
using acc_type = typename std::conditional<std::is_same<scalar_t, double>::value, double, float>::type;

// One head of q/k/v/y/dy ([H, N, x]) in the accumulation dtype: a view for float32/float64, a copy for
// half precision (exact: the values fit float32).
at::Tensor head_in(const at::Tensor& t, int64_t head, at::ScalarType acc_dtype) {
  return t.select(0, head).to(acc_dtype);
}

// The row pass shared by forward and backward: scores[i, j] <- c * A_ij - shift_i, then exp2 in place,
// where A_ij = scale * dot_ij. With shift_i = nullptr the row maximum is used and stored in row_max.
template <typename acc_t>
void exponentiate_rows(at::Tensor& scores, const acc_t* shift, acc_t* row_max, const AttentionParams& p) {
  acc_t* s = scores.data_ptr<acc_t>();
  const acc_t c_exp = exponent_scale<acc_t>(p);
  for (int64_t i = 0; i < p.N; ++i) {
    acc_t* row = s + i * p.N;
    for (int64_t j = 0; j < p.N; ++j) row[j] = scaled_score<acc_t>(row[j], p) * c_exp;
    acc_t offset;
    if (shift == nullptr) {
      offset = static_cast<acc_t>(-INFINITY);
      for (int64_t j = 0; j < p.N; ++j) offset = row[j] > offset ? row[j] : offset;
      row_max[i] = offset;
    } else {
      offset = shift[i];
    }
    for (int64_t j = 0; j < p.N; ++j) row[j] -= offset;
  }
  scores.exp2_();
}

template <typename acc_t>
void scale_scores(at::Tensor& scores, const AttentionParams& p) {
  acc_t* s = scores.data_ptr<acc_t>();
  for (int64_t e = 0; e < p.N * p.N; ++e) s[e] = scaled_score<acc_t>(s[e], p);
}

template <typename scalar_t, typename acc_t>
void forward_head(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t head, scalar_t* y,
                  acc_t* lse, acc_t* rowsum, at::Tensor& scores, at::Tensor& y_acc, const AttentionParams& p) {
  const at::ScalarType acc_dtype = scores.scalar_type();
  at::mm_out(scores, head_in(q, head, acc_dtype), head_in(k, head, acc_dtype).t());
  const bool normalised = static_cast<Norm>(p.norm) != Norm::None;
  std::vector<acc_t> row_max(p.N), total(p.N);
  if (normalised) {
    exponentiate_rows<acc_t>(scores, nullptr, row_max.data(), p);
    cpu::row_sums<acc_t, acc_t>(scores.data_ptr<acc_t>(), nullptr, 0, p.N, p.N, total.data());
  } else {
    scale_scores<acc_t>(scores, p);
  }
  at::mm_out(y_acc, scores, head_in(v, head, acc_dtype));
  const acc_t* acc = y_acc.data_ptr<acc_t>();
  for (int64_t i = 0; i < p.N; ++i) {
    acc_t denominator = 1;
    if (normalised) {
      const RowNormaliser<acc_t> normaliser = row_normaliser(total[i], p);
      denominator = normaliser.denominator;
      lse[i] = row_max[i] + normaliser.log2_denominator;
      rowsum[i] = total[i] / denominator;
    }
    for (int64_t c = 0; c < p.DV; ++c)
      y[i * p.DV + c] = static_cast<scalar_t>(normalised ? acc[i * p.DV + c] / denominator : acc[i * p.DV + c]);
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> forward_cpu(const at::Tensor& q, const at::Tensor& k,
                                                           const at::Tensor& v, double scale, int64_t norm,
                                                           bool pow2_denominator) {
  const AttentionParams p = check_forward(q, k, v, scale, norm, pow2_denominator);
  const ForwardResult out = allocate_forward(q, v);
  const at::ScalarType acc_dtype = stats_dtype(q);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, q.scalar_type(), "bipolar_attention_forward_cpu", [&] {
    using acc_t = acc_type<scalar_t>;
    scalar_t* yp = out.y.data_ptr<scalar_t>();
    acc_t* lse = out.lse.data_ptr<acc_t>();
    acc_t* rowsum = out.rowsum.data_ptr<acc_t>();
    at::parallel_for(0, q.size(0), 1, [&](int64_t begin, int64_t end) {
      // The GEMMs are ATen calls from inside this kernel, on worker threads that do not inherit the
      // caller's dispatch state: they must not re-enter autograd.
      const at::AutoDispatchBelowADInplaceOrView below_autograd;
      at::Tensor scores = at::empty({p.N, p.N}, q.options().dtype(acc_dtype));
      at::Tensor y_acc = at::empty({p.N, p.DV}, q.options().dtype(acc_dtype));
      for (int64_t head = begin; head < end; ++head)
        forward_head<scalar_t, acc_t>(q, k, v, head, yp + head * p.N * p.DV, lse + head * p.N,
                                      rowsum + head * p.N, scores, y_acc, p);
    });
  });
  return out.as_tuple();
}

// Writes dQ, dK, dV of one head. probs/dscores are [N, N] scratch: P (or A) and dL/dA.
template <typename scalar_t, typename acc_t>
void backward_head(const at::Tensor& dy, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                   const at::Tensor& y, const acc_t* lse, const acc_t* rowsum, int64_t head, at::Tensor& probs,
                   at::Tensor& dscores, at::Tensor& dq, at::Tensor& dk, at::Tensor& dv, const AttentionParams& p) {
  const at::ScalarType acc_dtype = probs.scalar_type();
  const at::Tensor qh = head_in(q, head, acc_dtype), kh = head_in(k, head, acc_dtype);
  const at::Tensor dyh = head_in(dy, head, acc_dtype);
  at::mm_out(probs, qh, kh.t());
  at::mm_out(dscores, dyh, head_in(v, head, acc_dtype).t());  // dL/dP
  if (static_cast<Norm>(p.norm) == Norm::None) {
    scale_scores<acc_t>(probs, p);  // P = A, dL/dA = dL/dP
  } else {
    exponentiate_rows<acc_t>(probs, lse, nullptr, p);
    const acc_t* prob = probs.data_ptr<acc_t>();
    acc_t* ds = dscores.data_ptr<acc_t>();
    const scalar_t* dy_rows = dy.data_ptr<scalar_t>() + head * p.N * p.DV;
    const scalar_t* y_rows = y.data_ptr<scalar_t>() + head * p.N * p.DV;
    for (int64_t i = 0; i < p.N; ++i) {
      const acc_t delta = row_delta<scalar_t, acc_t>(dy_rows + i * p.DV, y_rows + i * p.DV, rowsum[i], p);
      for (int64_t j = 0; j < p.N; ++j)
        ds[i * p.N + j] = dscore_from_prob<acc_t>(prob[i * p.N + j], ds[i * p.N + j], delta, p);
    }
  }
  const double scale = p.scale;
  dq.select(0, head).copy_(at::mm(dscores, kh).mul_(scale));
  dk.select(0, head).copy_(at::mm(dscores.t(), qh).mul_(scale));
  dv.select(0, head).copy_(at::mm(probs.t(), dyh));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_cpu(const at::Tensor& dy, const at::Tensor& q,
                                                            const at::Tensor& k, const at::Tensor& v,
                                                            const at::Tensor& y, const at::Tensor& lse,
                                                            const at::Tensor& rowsum, double scale, int64_t norm) {
  const AttentionParams p = check_forward(q, k, v, scale, norm, false);
  check_backward(dy, y, v, lse, rowsum, q);
  at::Tensor dq = at::empty_like(q), dk = at::empty_like(k), dv = at::empty_like(v);
  const at::ScalarType acc_dtype = stats_dtype(q);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, q.scalar_type(), "bipolar_attention_backward_cpu", [&] {
    using acc_t = acc_type<scalar_t>;
    const acc_t* lsep = lse.data_ptr<acc_t>();
    const acc_t* rowsump = rowsum.data_ptr<acc_t>();
    at::parallel_for(0, q.size(0), 1, [&](int64_t begin, int64_t end) {
      const at::AutoDispatchBelowADInplaceOrView below_autograd;
      at::Tensor probs = at::empty({p.N, p.N}, q.options().dtype(acc_dtype));
      at::Tensor dscores = at::empty({p.N, p.N}, q.options().dtype(acc_dtype));
      for (int64_t head = begin; head < end; ++head)
        backward_head<scalar_t, acc_t>(dy, q, k, v, y, lsep + head * p.N, rowsump + head * p.N, head, probs,
                                       dscores, dq, dk, dv, p);
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

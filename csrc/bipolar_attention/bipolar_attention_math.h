// The single definition of bipolar self-attention's per-row math (scores, Shiftmax normaliser and
// the straight-through backward), shared by bipolar_attention_cpu.cpp and bipolar_attention_cuda.cu.
// The formulas and their reading of the paper are spikeops/ops/bipolar_attention/naive.py's; the
// Triton twin is kernels/bipolar_attention.py. One call handles one query (or key) row and walks all
// keys (queries), so no [N, N] matrix exists anywhere; the two-pass row (max, then sum) costs one
// extra sweep of ternary dot products instead of rescaling the accumulators.
#pragma once
#include <cmath>
#include <cstdint>

#include "common/host_device.h"

namespace spikeops {
namespace bipolar {

using std::exp2;
using std::frexp;
using std::log2;

constexpr int kMaxHeadDim = 256;  // one row of accumulators per thread; the Python side checks d, dv
constexpr double kLn2 = 0.6931471805599453;
constexpr double kLog2e = 1.4426950408889634;

// Order must match spikeops/ops/bipolar_attention/op.py::NORM_CODES.
enum class Norm : int32_t { None = 0, Shiftmax = 1, Softmax = 2 };

struct AttentionParams {
  int64_t N, D, DV;
  double scale;
  int32_t norm;
  int32_t pow2_denominator;  // Shiftmax only: round the row total up to a power of two
};

// Numerators are exp2(c * A): c = 1 makes Shiftmax's integer shifts, log2(e) makes a softmax.
template <typename acc_t>
SPIKEOPS_HD acc_t exponent_scale(const AttentionParams& p) {
  return static_cast<Norm>(p.norm) == Norm::Softmax ? acc_t(kLog2e) : acc_t(1);
}

// Q and K are ternary spikes: their product is exact integer arithmetic.
template <typename scalar_t>
SPIKEOPS_HD int32_t ternary_dot(const scalar_t* a, const scalar_t* b, int64_t D) {
  int32_t sum = 0;
  for (int64_t c = 0; c < D; ++c)
    sum += static_cast<int32_t>(static_cast<float>(a[c])) * static_cast<int32_t>(static_cast<float>(b[c]));
  return sum;
}

// A_ij from the integer product Q_i . K_j (a ternary dot here, an exact float GEMM on the CPU).
template <typename acc_t>
SPIKEOPS_HD acc_t scaled_score(acc_t dot, const AttentionParams& p) {
  return dot * static_cast<acc_t>(p.scale);
}

template <typename scalar_t, typename acc_t>
SPIKEOPS_HD acc_t score(const scalar_t* q_row, const scalar_t* k_row, const AttentionParams& p) {
  return scaled_score<acc_t>(static_cast<acc_t>(ternary_dot(q_row, k_row, p.D)), p);
}

template <typename scalar_t, typename acc_t>
SPIKEOPS_HD acc_t row_dot(const scalar_t* a, const scalar_t* b, int64_t n) {
  acc_t sum = 0;
  for (int64_t c = 0; c < n; ++c) sum += static_cast<acc_t>(a[c]) * static_cast<acc_t>(b[c]);
  return sum;
}

// log2 of the Shiftmax denominator: ceil(log2 z), exact for z > 0 (z = m 2^e with m in [0.5, 1)).
template <typename acc_t>
SPIKEOPS_HD acc_t pow2_ceil_log2(acc_t z) {
  int e = 0;
  const acc_t mantissa = frexp(z, &e);
  return static_cast<acc_t>(mantissa == acc_t(0.5) ? e - 1 : e);
}

// The normaliser of a row from its numerator total Z: log2 of the denominator and the denominator
// (Shiftmax with pow2_denominator rounds Z up to a power of two; otherwise the denominator is Z).
template <typename acc_t>
struct RowNormaliser {
  acc_t log2_denominator, denominator;
};

template <typename acc_t>
SPIKEOPS_HD RowNormaliser<acc_t> row_normaliser(acc_t total, const AttentionParams& p) {
  const bool pow2 = static_cast<Norm>(p.norm) == Norm::Shiftmax && p.pow2_denominator;
  const acc_t log2_denominator = pow2 ? pow2_ceil_log2(total) : log2(total);
  return {log2_denominator, pow2 ? exp2(log2_denominator) : total};
}

// Y_i = norm(A_i) V, and the row statistics the backward needs: lse_i (P_ij = exp2(c A_ij - lse_i))
// and r_i = Z_i / D_i, the row sum of P.
template <typename scalar_t, typename acc_t>
SPIKEOPS_HD void forward_row(const scalar_t* q_row, const scalar_t* k, const scalar_t* v, scalar_t* y_row,
                             acc_t* lse, acc_t* rowsum, const AttentionParams& p) {
  acc_t acc[kMaxHeadDim];
  for (int64_t c = 0; c < p.DV; ++c) acc[c] = acc_t(0);
  const Norm norm = static_cast<Norm>(p.norm);
  if (norm == Norm::None) {
    for (int64_t j = 0; j < p.N; ++j) {
      const acc_t a = score<scalar_t, acc_t>(q_row, k + j * p.D, p);
      for (int64_t c = 0; c < p.DV; ++c) acc[c] += a * static_cast<acc_t>(v[j * p.DV + c]);
    }
    for (int64_t c = 0; c < p.DV; ++c) y_row[c] = static_cast<scalar_t>(acc[c]);
    return;
  }
  const acc_t c_exp = exponent_scale<acc_t>(p);
  acc_t row_max = static_cast<acc_t>(-INFINITY);
  for (int64_t j = 0; j < p.N; ++j) {
    const acc_t e = score<scalar_t, acc_t>(q_row, k + j * p.D, p) * c_exp;
    row_max = e > row_max ? e : row_max;
  }
  acc_t total = 0;
  for (int64_t j = 0; j < p.N; ++j) {
    const acc_t numerator = exp2(score<scalar_t, acc_t>(q_row, k + j * p.D, p) * c_exp - row_max);
    total += numerator;
    for (int64_t c = 0; c < p.DV; ++c) acc[c] += numerator * static_cast<acc_t>(v[j * p.DV + c]);
  }
  const RowNormaliser<acc_t> normaliser = row_normaliser(total, p);
  for (int64_t c = 0; c < p.DV; ++c) y_row[c] = static_cast<scalar_t>(acc[c] / normaliser.denominator);
  *lse = row_max + normaliser.log2_denominator;
  *rowsum = total / normaliser.denominator;
}

// dL/dA_ij from P_ij and dL/dP_ij (normalised rows).
template <typename acc_t>
SPIKEOPS_HD acc_t dscore_from_prob(acc_t prob, acc_t dprob, acc_t delta, const AttentionParams& p) {
  return prob * (dprob - delta) * (exponent_scale<acc_t>(p) * acc_t(kLn2));
}

// delta_i = sum_c dY_ic Y_ic / r_i, the row term of the normalised gradient (0 without a normaliser).
template <typename scalar_t, typename acc_t>
SPIKEOPS_HD acc_t row_delta(const scalar_t* dy_row, const scalar_t* y_row, acc_t rowsum, const AttentionParams& p) {
  return static_cast<Norm>(p.norm) == Norm::None ? acc_t(0) : row_dot<scalar_t, acc_t>(dy_row, y_row, p.DV) / rowsum;
}

// (P_ij, dL/dA_ij) from the recomputed score; the Shiftmax form passes r_i straight through
// (delta_i already holds sum_c dY_ic Y_ic / r_i).
template <typename acc_t>
SPIKEOPS_HD void score_grad(acc_t a, acc_t dprob, acc_t lse, acc_t delta, const AttentionParams& p, acc_t* prob,
                            acc_t* dscore) {
  if (static_cast<Norm>(p.norm) == Norm::None) {
    *prob = a;
    *dscore = dprob;
    return;
  }
  const acc_t c_exp = exponent_scale<acc_t>(p);
  *prob = exp2(a * c_exp - lse);
  *dscore = dscore_from_prob<acc_t>(*prob, dprob, delta, p);
}

// dQ_i = scale * sum_j dA_ij K_j; also writes delta_i for the key pass.
template <typename scalar_t, typename acc_t>
SPIKEOPS_HD void backward_query_row(const scalar_t* q_row, const scalar_t* k, const scalar_t* v,
                                    const scalar_t* y_row, const scalar_t* dy_row, acc_t lse, acc_t rowsum,
                                    scalar_t* dq_row, acc_t* delta_out, const AttentionParams& p) {
  acc_t dq[kMaxHeadDim];
  for (int64_t c = 0; c < p.D; ++c) dq[c] = acc_t(0);
  const acc_t delta = row_delta<scalar_t, acc_t>(dy_row, y_row, rowsum, p);
  *delta_out = delta;
  for (int64_t j = 0; j < p.N; ++j) {
    const acc_t a = score<scalar_t, acc_t>(q_row, k + j * p.D, p);
    acc_t prob, dscore;
    score_grad<acc_t>(a, row_dot<scalar_t, acc_t>(dy_row, v + j * p.DV, p.DV), lse, delta, p, &prob, &dscore);
    for (int64_t c = 0; c < p.D; ++c) dq[c] += dscore * static_cast<acc_t>(k[j * p.D + c]);
  }
  for (int64_t c = 0; c < p.D; ++c) dq_row[c] = static_cast<scalar_t>(dq[c] * static_cast<acc_t>(p.scale));
}

// dK_j = scale * sum_i dA_ij Q_i and dV_j = sum_i P_ij dY_i.
template <typename scalar_t, typename acc_t>
SPIKEOPS_HD void backward_key_row(const scalar_t* q, const scalar_t* k_row, const scalar_t* v_row,
                                  const scalar_t* dy, const acc_t* lse, const acc_t* delta, scalar_t* dk_row,
                                  scalar_t* dv_row, const AttentionParams& p) {
  acc_t dk[kMaxHeadDim];
  acc_t dv[kMaxHeadDim];
  for (int64_t c = 0; c < p.D; ++c) dk[c] = acc_t(0);
  for (int64_t c = 0; c < p.DV; ++c) dv[c] = acc_t(0);
  const bool normalised = static_cast<Norm>(p.norm) != Norm::None;
  for (int64_t i = 0; i < p.N; ++i) {
    const scalar_t* dy_row = dy + i * p.DV;
    const acc_t a = score<scalar_t, acc_t>(q + i * p.D, k_row, p);
    acc_t prob, dscore;
    score_grad<acc_t>(a, row_dot<scalar_t, acc_t>(dy_row, v_row, p.DV), normalised ? lse[i] : acc_t(0),
                      normalised ? delta[i] : acc_t(0), p, &prob, &dscore);
    for (int64_t c = 0; c < p.DV; ++c) dv[c] += prob * static_cast<acc_t>(dy_row[c]);
    for (int64_t c = 0; c < p.D; ++c) dk[c] += dscore * static_cast<acc_t>(q[i * p.D + c]);
  }
  for (int64_t c = 0; c < p.D; ++c) dk_row[c] = static_cast<scalar_t>(dk[c] * static_cast<acc_t>(p.scale));
  for (int64_t c = 0; c < p.DV; ++c) dv_row[c] = static_cast<scalar_t>(dv[c]);
}

}  // namespace bipolar
}  // namespace spikeops

// The single definition of the spiking experts mixture (SEMM, docs/attention.md) per token, shared by
// experts_mixture_cpu.cpp and experts_mixture_cuda.cu (Triton twin: kernels/experts_mixture.py):
//   Y[t, c] = sum_i R[t, i] * A[t, i, c]     (router spikes gate the expert outputs; no softmax, no top-k)
// An expert whose router spike is zero for a token is skipped: its output row is never read.
// Experts are summed in index order on every backend, so the results agree bit for bit.
#pragma once
#include <cstdint>

#include "common/host_device.h"

namespace spikeops {
namespace experts {

// One output channel of one token: router [E], experts [E, C] for that token.
template <typename scalar_t, typename acc_t>
SPIKEOPS_HD acc_t gated_sum(const scalar_t* router, const scalar_t* experts, int64_t E, int64_t C, int64_t c) {
  acc_t sum = 0;
  for (int64_t i = 0; i < E; ++i) {
    const acc_t gate = static_cast<acc_t>(router[i]);
    if (gate != acc_t(0)) sum += gate * static_cast<acc_t>(experts[i * C + c]);
  }
  return sum;
}

// gated_sum for every channel of one token at once: acc[c] (zeroed by the caller) gets the same
// additions in the same expert order, expert-major so that a CPU's channel loop is unit-stride.
template <typename scalar_t, typename acc_t>
SPIKEOPS_HD void accumulate_gated_row(const scalar_t* router, const scalar_t* experts, int64_t E, int64_t C,
                                      acc_t* acc) {
  for (int64_t i = 0; i < E; ++i) {
    const acc_t gate = static_cast<acc_t>(router[i]);
    if (gate != acc_t(0))
      for (int64_t c = 0; c < C; ++c) acc[c] += gate * static_cast<acc_t>(experts[i * C + c]);
  }
}

// dL/dR[t, i] = sum_c dY[t, c] A[t, i, c]: the router's gradient needs every expert row, gated or not.
template <typename scalar_t, typename acc_t>
SPIKEOPS_HD acc_t router_grad(const scalar_t* dy, const scalar_t* expert_row, int64_t C) {
  acc_t sum = 0;
  for (int64_t c = 0; c < C; ++c) sum += static_cast<acc_t>(dy[c]) * static_cast<acc_t>(expert_row[c]);
  return sum;
}

}  // namespace experts
}  // namespace spikeops

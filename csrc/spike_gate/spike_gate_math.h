// Shared pieces of the spiking-attention kernels (spike_gate_cpu.cpp, spike_gate_cuda.cu): the index map
// of the "spike gate" operators and one LIF step forward and backward, composed from neuron/neuron_math.h so
// the neuron math stays defined once. The Python twin of the index map is
// spikeops/ops/attention/layout.py::Geometry (same field order).
#pragma once
#include <cstdint>

#include "neuron/neuron_math.h"

namespace spikeops {

// Neuron m of a time slice (group g = m / L, lane l = m % L) sums the R elements at
// g*stride_g + l*stride_l + r*stride_r; a time slice holds M*R elements.
struct GateGeometry {
  int64_t T, M, R, L, stride_g, stride_r, stride_l;
  SPIKEOPS_HD int64_t slice() const { return M * R; }
  SPIKEOPS_HD int64_t base(int64_t m) const { return (m / L) * stride_g + (m % L) * stride_l; }
};

template <typename acc_t>
SPIKEOPS_HD acc_t resting_potential(const NeuronParams& p) {
  return static_cast<acc_t>(p.v_rest);
}

// One time step of an attention neuron (a LIF: attention_params checks the law): charge with x, fire,
// reset. Returns the spike; h receives the charged membrane (what backward needs), v the membrane after
// reset. leaky_charge rather than charge keeps the other laws' code (and registers) out of the kernels.
template <typename acc_t>
SPIKEOPS_HD acc_t lif_step(acc_t x, acc_t& v, acc_t& h, const NeuronParams& p) {
  h = leaky_charge<acc_t>(v, x, p);
  const acc_t s = fire<acc_t>(h, p);
  v = reset<acc_t>(h, s, p);
  return s;
}

// One BPTT step back through lif_step: from dL/dS[t] and dL/dV[t] (in grad_v, flowing back from t+1)
// returns dL/dX[t] and leaves dL/dV[t-1] in grad_v.
template <typename acc_t>
SPIKEOPS_HD acc_t lif_step_backward(acc_t grad_s, acc_t& grad_v, acc_t h, acc_t s, const NeuronParams& p) {
  const acc_t ds_dh = spike_grad<acc_t>(h, p);
  const acc_t grad_h = grad_s * ds_dh + grad_v * reset_grad<acc_t>(h, s, ds_dh, p);
  grad_v = grad_h * charge_grad_v<acc_t>(acc_t(0), p);  // the attention LIF: a constant of V
  return grad_h * charge_grad_x<acc_t>(p);
}

}  // namespace spikeops

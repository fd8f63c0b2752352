// Schemas of the spike-gate attention operators (token / channel Q-K attention, spike-driven
// self-attention); kernels: spike_gate_cpu.cpp, spike_gate_cuda.cu, kernels/spike_gate.py.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(spikeops, m) {
  // out = LIF_T(sum_r a (* a2)) * gate over the geometry's reduced axis. Returns (out like gate,
  // membrane H [T, M] float32 (float64 for float64 input), spikes int8 [T, M]).
  m.def("spike_gate_forward(Tensor a, Tensor? a2, Tensor gate, SymInt[] geometry, float[] cfg) "
        "-> (Tensor, Tensor, Tensor)");
  // Returns (grad_a, grad_a2 or empty, grad_gate).
  m.def("spike_gate_backward(Tensor grad_out, Tensor a, Tensor? a2, Tensor gate, Tensor h, Tensor spikes, "
        "SymInt[] geometry, float[] cfg) -> (Tensor, Tensor, Tensor)");
}

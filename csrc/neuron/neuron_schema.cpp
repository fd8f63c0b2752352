// Schemas of the fused multi-step neuron operators; kernels: neuron_cpu.cpp, neuron_cuda.cu,
// kernels/neuron.py. `cfg` is the neuron configuration, its fields in the order neuron_host.h lists them.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(spikeops, m) {
  // Returns (spikes [T,N] in x's dtype, v_last [N], v_seq [T,N] or empty, spikes as int8 [T,N]).
  m.def(
      "neuron_forward(Tensor x, Tensor v0, Tensor? leak, float[] cfg, bool store_v_seq) "
      "-> (Tensor, Tensor, Tensor, Tensor)");
  // Returns (grad_x [T,N], grad_v0 [N], grad_leak per neuron [N] float32, or empty when not asked).
  m.def(
      "neuron_backward(Tensor grad_spikes, Tensor? grad_v_seq, Tensor? grad_v_last, Tensor x, Tensor v0, "
      "Tensor spikes, Tensor? leak, float[] cfg, bool need_leak_grad) -> (Tensor, Tensor, Tensor)");
}

// Schemas of the fused multi-step neuron operators; kernels: neuron_cpu.cpp, neuron_cuda.cu,
// kernels/neuron.py. `cfg` is the neuron configuration, its fields in the order of neuron_math.h's
// SPIKEOPS_NEURON_CONFIG_FIELDS (spikeops/ops/neuron/config.py::NeuronConfig).
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(spikeops, m) {
  // x [T,N] contiguous, v0 [N]. Returns (spikes [T,N] in x's dtype, v_last [N] or empty, v_seq [T,N] or empty).
  // store_v_last defaults to true so that callers and graphs saved before it existed still run.
  m.def(
      "neuron_forward(Tensor x, Tensor v0, Tensor? leak, float[] cfg, bool store_v_seq, bool store_v_last=True) "
      "-> (Tensor, Tensor, Tensor)");
  // Recomputes H and the spikes from x and v0. Returns (grad_x [T,N], grad_v0 [N], grad_leak per neuron
  // [N] (float64 for float64 x, else float32), or empty when not asked).
  m.def(
      "neuron_backward(Tensor grad_spikes, Tensor? grad_v_seq, Tensor? grad_v_last, Tensor x, Tensor v0, "
      "Tensor? leak, float[] cfg, bool need_leak_grad) -> (Tensor, Tensor, Tensor)");
}

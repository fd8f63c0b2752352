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
  // CPU, float32: the neuron on x * scale[c] + shift[c] instead of x, c = (n / inner) % C the channel of neuron n
  // (x [T, N], T <= 64, N = B * C * inner; scale, shift [C]), the product and sum rounded once
  // (fused_multiply_add) or twice: a training BatchNorm fused in front whose output is never stored. The
  // backward's first output is the gradient of that normalised input (what BatchNorm's backward takes).
  m.def(
      "normalised_neuron_forward(Tensor x, Tensor scale, Tensor shift, int inner, bool fused_multiply_add, "
      "Tensor v0, Tensor? leak, float[] cfg, bool store_v_seq, bool store_v_last) -> (Tensor, Tensor, Tensor)");
  m.def(
      "normalised_neuron_backward(Tensor grad_spikes, Tensor? grad_v_seq, Tensor? grad_v_last, Tensor x, "
      "Tensor scale, Tensor shift, int inner, bool fused_multiply_add, Tensor v0, Tensor? leak, float[] cfg, "
      "bool need_leak_grad) -> (Tensor, Tensor, Tensor)");
}

// Operator schemas of spikeops._C and the Python module. Kernels register themselves per device in
// neuron_cpu.cpp and neuron_cuda.cu; fake (meta) kernels and autograd live in spikeops/ops/.
#include <torch/extension.h>

#include "neuron.h"

TORCH_LIBRARY(spikeops, m) {
  // Returns (spikes [T,N] in x's dtype, v_last [N], v_seq [T,N] or empty, spikes as int8 [T,N]).
  m.def(
      "neuron_forward(Tensor x, Tensor v0, Tensor? leak, float[] cfg, bool store_v_seq) "
      "-> (Tensor, Tensor, Tensor, Tensor)");
  // Returns (grad_x [T,N], grad_v0 [N], grad_leak per neuron [N] float32, or empty when not asked).
  m.def(
      "neuron_backward(Tensor grad_spikes, Tensor? grad_v_seq, Tensor? grad_v_last, Tensor x, Tensor v0, "
      "Tensor spikes, Tensor? leak, float[] cfg, bool need_leak_grad) -> (Tensor, Tensor, Tensor)");
}

namespace {
std::vector<std::string> surrogate_names() {
  return {std::begin(spikeops::kSurrogateNames), std::end(spikeops::kSurrogateNames)};
}
bool cuda_compiled() {
#ifdef SPIKEOPS_WITH_CUDA
  return true;
#else
  return false;
#endif
}
}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {
  module.def("surrogate_names", &surrogate_names, "Surrogate ids of csrc/neuron.h, in id order");
  module.def("cuda_compiled", &cuda_compiled, "Whether the CUDA kernels were compiled into this build");
}

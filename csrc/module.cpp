// Operator schemas of spikeops._C and the Python module. Kernels register themselves per device in
// neuron_cpu.cpp and neuron_cuda.cu; fake (meta) kernels and autograd live in spikeops/ops/.
#include <torch/extension.h>

#include "neuron/neuron_math.h"

// The library itself; every operator defines its schema in csrc/<op>/<op>_schema.cpp as a fragment.
TORCH_LIBRARY(spikeops, m) {}

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

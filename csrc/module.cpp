// The spikeops._C library (schemas: csrc/<op>/<op>_schema.cpp) and the Python module. Kernels register
// themselves per device in csrc/<op>/<op>_cpu.cpp and <op>_cuda.cu; fake (meta) kernels and autograd
// live in spikeops/ops/.
#include <torch/extension.h>

#include "neuron/neuron_host.h"

// The library itself; every operator defines its schema in csrc/<op>/<op>_schema.cpp as a fragment.
TORCH_LIBRARY(spikeops, m) {}

namespace {
std::vector<std::string> surrogate_names() {
  return {std::begin(spikeops::kSurrogateNames), std::end(spikeops::kSurrogateNames)};
}
std::vector<std::string> charge_law_names() {
  return {std::begin(spikeops::kChargeLawNames), std::end(spikeops::kChargeLawNames)};
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
  module.def("surrogate_names", &surrogate_names, "Surrogate names of neuron/neuron_math.h, in id order");
  module.def("charge_law_names", &charge_law_names, "Charge-law names of neuron/neuron_math.h, in id order");
  module.def("neuron_config_fields", &spikeops::neuron_config_fields,
             "Neuron configuration field names, in the order the operators read their cfg list");
  module.def("cuda_compiled", &cuda_compiled, "Whether the CUDA kernels were compiled into this build");
}

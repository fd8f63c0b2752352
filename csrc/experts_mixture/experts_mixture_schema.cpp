// Schemas of the spiking experts-mixture operators; kernels: experts_mixture_cpu.cpp,
// experts_mixture_cuda.cu, kernels/experts_mixture.py.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(spikeops, m) {
  // router [M, E], experts [M, E, C] -> Y [M, C].
  m.def("experts_mixture_forward(Tensor router, Tensor experts) -> Tensor");
  // Returns (grad_router [M, E], grad_experts [M, E, C]).
  m.def("experts_mixture_backward(Tensor grad_y, Tensor router, Tensor experts) -> (Tensor, Tensor)");
}

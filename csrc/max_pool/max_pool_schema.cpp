// Schemas of the index-free 2-D max-pool (spikeops/ops/max_pool.py documents them); kernels: max_pool_cpu.cpp.
// The arguments are aten.max_pool2d's: kernel_size, stride (empty: the kernel size), padding and dilation take
// one int for both sides or (height, width).
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(spikeops, m) {
  // aten.max_pool2d's values, bit for bit, without writing indices.
  m.def("max_pool2d_values(Tensor input, int[2] kernel_size, int[2] stride=[], int[2] padding=0, "
        "int[2] dilation=1, bool ceil_mode=False) -> Tensor");
  // aten.max_pool2d_with_indices_backward(grad_output, input, ..., indices) bit for bit, with the indices
  // aten.max_pool2d_with_indices(input, ...) would return recomputed on the fly.
  m.def("max_pool2d_recompute_backward(Tensor grad_output, Tensor input, int[2] kernel_size, int[2] stride=[], "
        "int[2] padding=0, int[2] dilation=1, bool ceil_mode=False) -> Tensor");
}

// Schema of the batch-norm training statistics (spikeops/ops/batchnorm_neuron/statistics.py documents it);
// kernel: batchnorm_stats_cpu.cpp.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(spikeops, m) {
  // (mean, invstd) of a contiguous float32 [N, C, *] input over all dims but C, and the running statistics updated in
  // place: aten._native_batch_norm_legit(input, ..., training=True, momentum, eps)'s, bit for bit.
  m.def("batch_norm_statistics(Tensor input, Tensor(a!)? running_mean, Tensor(b!)? running_var, float momentum, "
        "float eps) -> (Tensor, Tensor)");
}

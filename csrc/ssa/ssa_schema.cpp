// Schema of the fused spiking self-attention forward (CUDA only, ssa_cuda.cu; CPU tensors take the
// two-launch ATen path of spikeops/ops/attention/ssa.py).
#include <torch/library.h>

// Only a CUDA build registers it: a schema without any kernel would be a public op that cannot run.
#ifdef SPIKEOPS_WITH_CUDA
TORCH_LIBRARY_FRAGMENT(spikeops, m) {
  // shape = (T, B, heads, N, d, heads_split); integer_bound = max |q|, |k|, |v| (all integers).
  // Returns (spikes in q's dtype and layout, the same spikes as int8).
  m.def(
      "ssa_forward(Tensor q, Tensor k, Tensor v, SymInt[] shape, float[] cfg, float scale, bool order_q_kv, "
      "int integer_bound) -> (Tensor, Tensor)");
}
#endif

// Schemas of the bipolar self-attention operators; kernels: bipolar_attention_cpu.cpp,
// bipolar_attention_cuda.cu, kernels/bipolar_attention.py.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(spikeops, m) {
  // q, k [H, N, d] ternary, v [H, N, dv]; norm: 0 none, 1 shiftmax, 2 softmax.
  // Returns (y [H, N, dv], lse [H, N], rowsum [H, N]); the statistics are float64 for float64 input.
  m.def(
      "bipolar_attention_forward(Tensor q, Tensor k, Tensor v, float scale, int norm, bool pow2_denominator) "
      "-> (Tensor, Tensor, Tensor)");
  // Returns (dq, dk, dv).
  m.def(
      "bipolar_attention_backward(Tensor dy, Tensor q, Tensor k, Tensor v, Tensor y, Tensor lse, Tensor rowsum, "
      "float scale, int norm) -> (Tensor, Tensor, Tensor)");
}

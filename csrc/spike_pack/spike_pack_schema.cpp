// Schemas of the bit-plane packing of spike tensors (spikeops/ops/spike_pack/bits.py documents the format);
// kernels: spike_pack_cpu.cpp. Other devices pack with torch operations (bits.py).
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(spikeops, m) {
  // values: a contiguous floating tensor of spikes of `kind` ("binary", "ternary", "integer" with levels D
  // and an optional divisor norm), read in row-major order -> planes uint8 [bits, ceil(n / 8)]; bit i of
  // planes[j][b] is bit j of the code of element 8 b + i.
  m.def("pack_spike_values(Tensor values, str kind, int? levels=None, float? norm=None) -> Tensor");
  // The inverse: planes uint8 [bits, m] -> the n values (1-D, dtype), 8 (m - 1) < n <= 8 m.
  m.def("unpack_spike_values(Tensor planes, SymInt n, ScalarType dtype, str kind, float? norm=None) -> Tensor");
}

// Schemas of the bit-plane packing of spike codes (spikeops/ops/spike_pack/bits.py documents the format);
// kernels: spike_pack_cpu.cpp. Other devices pack with torch operations (bits.py).
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(spikeops, m) {
  // codes: uint8 [n], every code < 2**bits -> planes uint8 [bits, ceil(n / 8)]; bit i of planes[j][b] is
  // bit j of codes[8 b + i].
  m.def("pack_spike_codes(Tensor codes, int bits) -> Tensor");
  // The inverse: planes uint8 [bits, m] -> codes uint8 [n], 8 (m - 1) < n <= 8 m.
  m.def("unpack_spike_codes(Tensor planes, SymInt n) -> Tensor");
}

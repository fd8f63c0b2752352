// The whole format of spikeops/ops/spike_pack/bits.py for the CPU kernels (spike_pack_cpu.cpp): the code of a
// spike value and the value of a code (bits.py's encode / decode, operation for operation, so packing is
// exact), and eight codes <-> one byte of every bit plane.
#pragma once
#include <cmath>
#include <cstdint>

#include "common/host_device.h"

namespace spikeops {

// The kinds of spikes, in the order of bits.py's KINDS.
enum SpikeKind : int { kBinarySpikes = 0, kTernarySpikes = 1, kIntegerSpikes = 2 };

// The code of spike value v (acc_t: float, double for double tensors, as bits.py's encode computes) and
// whether v is a spike of the kind: false where encode's code would not fit in the planes (or encode's
// conversion to an integer is undefined: NaN, infinities, huge values); the code is then 0.
//   binary:  v != 0 (any value: bits.py's ne(0) refuses none)
//   ternary: trunc(v) + 1, a spike when -2 < v < 3 (the codes 0..3 of two bits)
//   integer: trunc(v), or round-half-even(v * norm) with norm in acc_t, a spike when the code is below
//            code_limit = 2**bits
template <int kKind, bool kNormed, typename acc_t>
SPIKEOPS_HD uint8_t spike_code(acc_t v, acc_t norm, acc_t code_limit, bool& is_spike) {
  if constexpr (kKind == kBinarySpikes) {
    is_spike = true;
    return static_cast<uint8_t>(v != acc_t(0));
  } else if constexpr (kKind == kTernarySpikes) {
    is_spike = v > acc_t(-2) && v < acc_t(3);
    return static_cast<uint8_t>(static_cast<int>(is_spike ? v : acc_t(0)) + 1);
  } else {
    const acc_t level = kNormed ? std::nearbyint(v * norm) : v;
    is_spike = level > acc_t(-1) && level < code_limit;
    return static_cast<uint8_t>(static_cast<int>(is_spike ? level : acc_t(0)));
  }
}

// The value of a code, in acc_t, to be rounded to the tensor's dtype: bits.py's decode, code.to(dtype) - 1
// or code.to(dtype) / norm, where torch divides a float16 / bfloat16 tensor by a Python scalar in float.
template <int kKind, bool kNormed, typename acc_t>
SPIKEOPS_HD acc_t spike_value(uint8_t code, acc_t norm) {
  if constexpr (kKind == kTernarySpikes) {
    return static_cast<acc_t>(static_cast<int>(code) - 1);
  } else if constexpr (kNormed) {
    return static_cast<acc_t>(code) / norm;
  } else {
    return static_cast<acc_t>(code);
  }
}

// Eight codes as one little-endian word (code i in byte i) -> byte of plane j (bit i: bit j of code i).
// The multiply moves bit 0 of byte i to bit 56 + i; no two partial products overlap, so nothing carries.
SPIKEOPS_HD uint8_t plane_byte(uint64_t codes, int j) {
  return static_cast<uint8_t>((((codes >> j) & 0x0101010101010101ull) * 0x0102040810204080ull) >> 56);
}

// One byte of a plane -> a word with bit i of the byte as bit 0 of byte i (the inverse of plane_byte).
SPIKEOPS_HD uint64_t spread_plane_byte(uint8_t byte) {
  uint64_t x = byte;
  x = (x | (x << 28)) & 0x0000000F0000000Full;
  x = (x | (x << 14)) & 0x0003000300030003ull;
  x = (x | (x << 7)) & 0x0101010101010101ull;
  return x;
}

}  // namespace spikeops

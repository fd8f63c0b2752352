// One byte of bit planes from eight codes and back: the whole format of spikeops/ops/spike_pack/bits.py,
// for the CPU kernels (spike_pack_cpu.cpp).
#pragma once
#include <cstdint>

#include "common/host_device.h"

namespace spikeops {

// Bit j of codes[0..count) gathered into one byte (bit i from codes[i]); count <= 8.
SPIKEOPS_HD uint8_t plane_byte(const uint8_t* codes, int count, int j) {
  uint8_t byte = 0;
  for (int i = 0; i < count; ++i) byte |= static_cast<uint8_t>(((codes[i] >> j) & 1u) << i);
  return byte;
}

// Code i of a group of eight: bit j from bit i of planes[j * plane_stride].
SPIKEOPS_HD uint8_t group_code(const uint8_t* planes, int64_t plane_stride, int bits, int i) {
  uint8_t code = 0;
  for (int j = 0; j < bits; ++j) code |= static_cast<uint8_t>(((planes[j * plane_stride] >> i) & 1u) << j);
  return code;
}

}  // namespace spikeops

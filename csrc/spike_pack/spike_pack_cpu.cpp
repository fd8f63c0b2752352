// Bit-plane packing of spike codes on the CPU: one pass over the codes (or the planes), parallel over groups of
// eight codes, where torch operations take two to four passes per plane.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>

#include "spike_pack/spike_pack_math.h"

namespace spikeops {
namespace {

constexpr int64_t kGroupsPerTask = 1 << 14;

void check_bits(int64_t bits) {
  TORCH_CHECK(bits >= 1 && bits <= 8, "pack_spike_codes: bits must be in 1..8 (codes are uint8), got ", bits);
}

at::Tensor pack_spike_codes_cpu(const at::Tensor& codes, int64_t bits) {
  check_bits(bits);
  TORCH_CHECK(codes.scalar_type() == at::kByte, "pack_spike_codes: codes must be uint8, got ", codes.scalar_type());
  TORCH_CHECK(codes.dim() == 1 && codes.is_contiguous(),
              "pack_spike_codes: codes must be a contiguous 1-D tensor, got shape ", codes.sizes(), " strides ",
              codes.strides());
  const int64_t n = codes.numel(), groups = (n + 7) / 8;
  auto planes = at::empty({bits, groups}, codes.options());
  const uint8_t* in = codes.data_ptr<uint8_t>();
  uint8_t* out = planes.data_ptr<uint8_t>();
  const int planes_count = static_cast<int>(bits);
  std::atomic<uint8_t> seen{0};  // OR of every code: a bit above `bits` would be lost, so it is refused
  at::parallel_for(0, groups, kGroupsPerTask, [&](int64_t begin, int64_t end) {
    uint8_t any = 0;
    for (int64_t g = begin; g < end; ++g) {
      const int count = static_cast<int>(std::min<int64_t>(8, n - 8 * g));
      const uint8_t* group = in + 8 * g;
      for (int i = 0; i < count; ++i) any |= group[i];
      for (int j = 0; j < planes_count; ++j) out[j * groups + g] = plane_byte(group, count, j);
    }
    seen.fetch_or(any);
  });
  TORCH_CHECK((seen.load() >> bits) == 0, "pack_spike_codes: codes must be < 2**bits = ", 1 << bits,
              ", got a code with bits ", static_cast<int>(seen.load()), " set");
  return planes;
}

at::Tensor unpack_spike_codes_cpu(const at::Tensor& planes, int64_t n) {
  TORCH_CHECK(planes.scalar_type() == at::kByte, "unpack_spike_codes: planes must be uint8, got ",
              planes.scalar_type());
  TORCH_CHECK(planes.dim() == 2 && planes.is_contiguous(),
              "unpack_spike_codes: planes must be a contiguous [bits, groups] tensor, got shape ", planes.sizes());
  const int64_t bits = planes.size(0), groups = planes.size(1);
  TORCH_CHECK(bits >= 1 && bits <= 8, "unpack_spike_codes: planes must have 1..8 rows (bits), got ", bits);
  TORCH_CHECK(n >= 0 && (n + 7) / 8 == groups, "unpack_spike_codes: n must satisfy ceil(n / 8) == groups = ",
              groups, ", got n = ", n);
  auto codes = at::empty({n}, planes.options());
  const uint8_t* in = planes.data_ptr<uint8_t>();
  uint8_t* out = codes.data_ptr<uint8_t>();
  const int planes_count = static_cast<int>(bits);
  at::parallel_for(0, groups, kGroupsPerTask, [&](int64_t begin, int64_t end) {
    for (int64_t g = begin; g < end; ++g) {
      const int count = static_cast<int>(std::min<int64_t>(8, n - 8 * g));
      for (int i = 0; i < count; ++i) out[8 * g + i] = group_code(in + g, groups, planes_count, i);
    }
  });
  return codes;
}

}  // namespace
}  // namespace spikeops

TORCH_LIBRARY_IMPL(spikeops, CPU, m) {
  m.impl("pack_spike_codes", &spikeops::pack_spike_codes_cpu);
  m.impl("unpack_spike_codes", &spikeops::unpack_spike_codes_cpu);
}

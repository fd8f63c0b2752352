// Bit-plane packing of spike tensors on the CPU in one pass: floating values -> planes and planes ->
// floating values, where torch operations take an encode pass (a uint8 code tensor), a packing pass and,
// back, an unpacking pass and a decode pass. Parallel over groups of eight elements; inside a task, blocks of
// codes stay in L1 between the two halves of a block's work (values <-> codes, codes <-> plane bytes), and the
// values <-> codes loops are plain element-wise loops that gcc vectorises.
//
// Trapping math off, as in neuron/neuron_cpu.cpp: spike_code's selects are then evaluated as vector blends.
// IEEE results do not change (only FP exception flags could). The pragma precedes every include so that all
// inlined code shares the same options.
#pragma GCC optimize("no-trapping-math")

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <optional>
#include <sstream>
#include <string>
#include <type_traits>

#include "common/cpu_clones.h"
#include "spike_pack/spike_pack_math.h"

namespace spikeops {
namespace {

constexpr int64_t kGroupsPerBlock = 64;    // 512 codes: a block's codes and values stay in L1
constexpr int64_t kGroupsPerTask = 4096;   // 32768 elements a parallel task: enough to amortise a task
constexpr int64_t kMaxLevels = 255;        // codes are uint8 (bits.py's MAX_LEVELS)

template <typename scalar_t>
using acc_type = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;

// What one call packs or unpacks: the kind of spikes and the format's parameters.
struct SpikeFormat {
  int kind;
  int bits;
  std::optional<double> norm;
};

int kind_id(const std::string& op, const std::string& kind) {
  if (kind == "binary") return kBinarySpikes;
  if (kind == "ternary") return kTernarySpikes;
  if (kind == "integer") return kIntegerSpikes;
  TORCH_CHECK(false, op, ": kind: expected one of \"binary\", \"ternary\", \"integer\", got \"", kind, "\"");
}

void check_norm(const std::string& op, int kind, const std::string& kind_name, std::optional<double> norm) {
  if (!norm.has_value()) return;
  TORCH_CHECK(kind == kIntegerSpikes, op, ": norm: only integer spikes take norm, got norm=", *norm, " for ",
              kind_name, " spikes");
  TORCH_CHECK(std::isfinite(*norm) && *norm > 0, op, ": norm: expected None or a finite number > 0, got ", *norm);
}

void check_floating(const std::string& op, const char* name, at::ScalarType dtype) {
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble || dtype == at::kHalf || dtype == at::kBFloat16, op,
              ": ", name, ": expected float32, float64, float16 or bfloat16, got ", dtype);
}

// Validated format of pack_spike_values' arguments (bits.py's check_kind and bits_per_spike).
SpikeFormat pack_format(const std::string& kind_name, std::optional<int64_t> levels, std::optional<double> norm) {
  const std::string op = "pack_spike_values";
  const int kind = kind_id(op, kind_name);
  int bits = kind == kTernarySpikes ? 2 : 1;
  if (kind == kIntegerSpikes) {
    TORCH_CHECK(levels.has_value() && *levels >= 1 && *levels <= kMaxLevels, op,
                ": levels: expected an integer D in 1..", kMaxLevels, " for integer spikes, got ",
                levels.has_value() ? std::to_string(*levels) : std::string("None"));
    bits = 0;
    for (int64_t rest = *levels; rest > 0; rest >>= 1) ++bits;
  } else {
    TORCH_CHECK(!levels.has_value() || (kind == kBinarySpikes && *levels == 1), op,
                ": levels: only integer spikes take levels, got levels=", levels.value_or(0), " for ", kind_name,
                " spikes");
  }
  check_norm(op, kind, kind_name, norm);
  return {kind, bits, norm};
}

// Runtime (kind, whether divided by norm) -> template constants, so the loops hold no branch on them.
template <typename F>
void with_kind(const SpikeFormat& format, F&& f) {
  switch (format.kind) {
    case kBinarySpikes: return f(std::integral_constant<int, kBinarySpikes>{}, std::false_type{});
    case kTernarySpikes: return f(std::integral_constant<int, kTernarySpikes>{}, std::false_type{});
    default:
      if (format.norm.has_value()) return f(std::integral_constant<int, kIntegerSpikes>{}, std::true_type{});
      return f(std::integral_constant<int, kIntegerSpikes>{}, std::false_type{});
  }
}

// Packs `count` values (a block: at most 8 kGroupsPerBlock) into the bytes of every plane from `planes`
// (plane j at planes[j * plane_stride]). Returns whether some value is not a spike of the kind.
template <int kKind, bool kNormed, typename scalar_t>
SPIKEOPS_CPU_CLONES bool pack_block(const scalar_t* __restrict__ values, int64_t count, uint8_t* __restrict__ planes,
                                    int64_t plane_stride, int bits, acc_type<scalar_t> norm,
                                    acc_type<scalar_t> code_limit) {
  using acc_t = acc_type<scalar_t>;
  alignas(64) uint8_t codes[8 * kGroupsPerBlock];
  int not_spike = 0;
  for (int64_t i = 0; i < count; ++i) {
    bool is_spike;
    codes[i] = spike_code<kKind, kNormed, acc_t>(static_cast<acc_t>(values[i]), norm, code_limit, is_spike);
    not_spike |= !is_spike;
  }
  const int64_t groups = (count + 7) / 8;
  std::memset(codes + count, 0, 8 * groups - count);  // the last group's missing elements: zero bits
  for (int64_t g = 0; g < groups; ++g) {
    uint64_t word;
    std::memcpy(&word, codes + 8 * g, 8);
    for (int j = 0; j < bits; ++j) planes[j * plane_stride + g] = plane_byte(word, j);
  }
  return not_spike != 0;
}

// The inverse of pack_block: `count` values from the bytes of every plane from `planes`.
template <int kKind, bool kNormed, typename scalar_t>
SPIKEOPS_CPU_CLONES void unpack_block(const uint8_t* __restrict__ planes, int64_t plane_stride, int bits,
                                      int64_t count, scalar_t* __restrict__ values, acc_type<scalar_t> norm) {
  using acc_t = acc_type<scalar_t>;
  alignas(64) uint8_t codes[8 * kGroupsPerBlock];
  const int64_t groups = (count + 7) / 8;
  for (int64_t g = 0; g < groups; ++g) {
    uint64_t word = 0;
    for (int j = 0; j < bits; ++j) word |= spread_plane_byte(planes[j * plane_stride + g]) << j;
    std::memcpy(codes + 8 * g, &word, 8);
  }
  for (int64_t i = 0; i < count; ++i) {
    values[i] = static_cast<scalar_t>(spike_value<kKind, kNormed, acc_t>(codes[i], norm));
  }
}

// Calls block(first group, element count) for every block of the n elements, in parallel.
template <typename F>
void for_each_block(int64_t n, F&& block) {
  const int64_t groups = (n + 7) / 8;
  at::parallel_for(0, groups, kGroupsPerTask, [&](int64_t begin, int64_t end) {
    for (int64_t g = begin; g < end; g += kGroupsPerBlock) {
      const int64_t block_groups = std::min(kGroupsPerBlock, end - g);
      block(g, std::min(8 * block_groups, n - 8 * g));
    }
  });
}

// What pack_spike_values accepts, for its refusal (binary spikes: any value, v != 0 gives code 1).
std::string spike_description(const SpikeFormat& format) {
  std::ostringstream text;
  if (format.kind == kTernarySpikes) return "ternary spikes (code trunc(value) + 1 in 0..3)";
  text << "integer spikes (code " << (format.norm ? "round(value * norm)" : "trunc(value)") << " in 0.."
       << (1 << format.bits) - 1 << ", " << format.bits << " bits";
  if (format.norm) text << ", norm = " << *format.norm;
  text << ")";
  return text.str();
}

at::Tensor pack_spike_values_cpu(const at::Tensor& values, c10::string_view kind_view, std::optional<int64_t> levels,
                                 std::optional<double> norm) {
  const std::string op = "pack_spike_values", kind_name(kind_view);
  const SpikeFormat format = pack_format(kind_name, levels, norm);
  check_floating(op, "values", values.scalar_type());
  TORCH_CHECK(values.is_contiguous(), op, ": values: expected a contiguous tensor, got shape ", values.sizes(),
              " strides ", values.strides());
  const int64_t n = values.numel(), groups = (n + 7) / 8;
  auto planes = at::empty({format.bits, groups}, values.options().dtype(at::kByte));
  uint8_t* out = planes.data_ptr<uint8_t>();
  std::atomic<bool> found_non_spike{false};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, values.scalar_type(), "pack_spike_values", [&] {
    using acc_t = acc_type<scalar_t>;
    const scalar_t* in = values.const_data_ptr<scalar_t>();
    const acc_t acc_norm = static_cast<acc_t>(norm.value_or(1.0));
    const acc_t code_limit = static_cast<acc_t>(1 << format.bits);
    with_kind(format, [&](auto kind, auto normed) {
      for_each_block(n, [&](int64_t g, int64_t count) {
        if (pack_block<decltype(kind)::value, decltype(normed)::value>(in + 8 * g, count, out + g, groups,
                                                                        format.bits, acc_norm, code_limit))
          found_non_spike.store(true, std::memory_order_relaxed);
      });
      if (!found_non_spike.load()) return;
      // Refused: name the first value that is no spike of the kind (a rare path: one more scan).
      for (int64_t i = 0; i < n; ++i) {
        bool is_spike;
        spike_code<decltype(kind)::value, decltype(normed)::value, acc_t>(static_cast<acc_t>(in[i]), acc_norm,
                                                                          code_limit, is_spike);
        TORCH_CHECK(is_spike, op, ": values: expected ", spike_description(format), ", got ",
                    static_cast<double>(in[i]), " at element ", i);
      }
    });
  });
  return planes;
}

at::Tensor unpack_spike_values_cpu(const at::Tensor& planes, int64_t n, at::ScalarType dtype,
                                   c10::string_view kind_view, std::optional<double> norm) {
  const std::string op = "unpack_spike_values", kind_name(kind_view);
  const int kind = kind_id(op, kind_name);
  check_norm(op, kind, kind_name, norm);
  check_floating(op, "dtype", dtype);
  TORCH_CHECK(planes.scalar_type() == at::kByte, op, ": planes: expected uint8, got ", planes.scalar_type());
  TORCH_CHECK(planes.dim() == 2 && planes.is_contiguous(), op,
              ": planes: expected a contiguous [bits, groups] tensor, got shape ", planes.sizes(), " strides ",
              planes.strides());
  const int64_t bits = planes.size(0), groups = planes.size(1);
  const int64_t min_bits = kind == kTernarySpikes ? 2 : 1, max_bits = kind == kIntegerSpikes ? 8 : min_bits;
  TORCH_CHECK(bits >= min_bits && bits <= max_bits, op, ": planes: expected ",
              min_bits == max_bits ? std::to_string(min_bits) : std::string("1..8"), " rows (bits) for ", kind_name,
              " spikes, got ", bits);
  TORCH_CHECK(n >= 0 && (n + 7) / 8 == groups, op, ": n: expected ceil(n / 8) == planes.size(1) = ", groups,
              ", got n = ", n);
  auto values = at::empty({n}, planes.options().dtype(dtype));
  const uint8_t* in = planes.const_data_ptr<uint8_t>();
  const SpikeFormat format{kind, static_cast<int>(bits), norm};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "unpack_spike_values", [&] {
    using acc_t = acc_type<scalar_t>;
    scalar_t* out = values.data_ptr<scalar_t>();
    const acc_t acc_norm = static_cast<acc_t>(norm.value_or(1.0));
    with_kind(format, [&](auto kind_constant, auto normed) {
      for_each_block(n, [&](int64_t g, int64_t count) {
        unpack_block<decltype(kind_constant)::value, decltype(normed)::value>(in + g, groups, format.bits, count,
                                                                               out + 8 * g, acc_norm);
      });
    });
  });
  return values;
}

}  // namespace
}  // namespace spikeops

TORCH_LIBRARY_IMPL(spikeops, CPU, m) {
  m.impl("pack_spike_values", &spikeops::pack_spike_values_cpu);
  m.impl("unpack_spike_values", &spikeops::unpack_spike_values_cpu);
}

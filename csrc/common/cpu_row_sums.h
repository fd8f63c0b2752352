// Row reductions for the CPU kernels (spike_gate/spike_gate_cpu.cpp, bipolar_attention/bipolar_attention_cpu.cpp,
// experts_mixture/experts_mixture_cpu.cpp). A sum along contiguous memory cannot vectorise without reordering its
// additions, and every backend sums each row in increasing index order so that results agree bit for
// bit. Instead, several rows are summed side by side: their addition chains are independent, so the
// CPU overlaps them, while each row keeps its own order (and its bits).
#pragma once
#include <cstdint>
#include <type_traits>

namespace spikeops {
namespace cpu {

constexpr int64_t kRowTile = 8;

// sums[i] = sum over r < R of a[i*R + r] (times b[i*b_row_stride + r] when b is given), for i < count,
// each in increasing r. b_row_stride = 0 multiplies every row of a by the same row b.
template <typename scalar_t, typename acc_t>
void row_sums(const scalar_t* a, const scalar_t* b, int64_t b_row_stride, int64_t count, int64_t R, acc_t* sums) {
  const auto tile = [&](int64_t first, auto width) {
    constexpr int64_t kWidth = decltype(width)::value;
    acc_t acc[kWidth] = {};
    const scalar_t* rows = a + first * R;
    if (b == nullptr) {
      for (int64_t r = 0; r < R; ++r)
        for (int64_t k = 0; k < kWidth; ++k) acc[k] += static_cast<acc_t>(rows[k * R + r]);
    } else {
      const scalar_t* others = b + first * b_row_stride;
      for (int64_t r = 0; r < R; ++r)
        for (int64_t k = 0; k < kWidth; ++k)
          acc[k] += static_cast<acc_t>(rows[k * R + r]) * static_cast<acc_t>(others[k * b_row_stride + r]);
    }
    for (int64_t k = 0; k < kWidth; ++k) sums[first + k] = acc[k];
  };
  int64_t i = 0;
  for (; i + kRowTile <= count; i += kRowTile) tile(i, std::integral_constant<int64_t, kRowTile>{});
  for (; i + 4 <= count; i += 4) tile(i, std::integral_constant<int64_t, 4>{});
  for (; i < count; ++i) tile(i, std::integral_constant<int64_t, 1>{});
}

}  // namespace cpu
}  // namespace spikeops

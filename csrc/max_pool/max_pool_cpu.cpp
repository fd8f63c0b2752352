// Index-free 2-D max-pool on the CPU (schemas: max_pool_schema.cpp), exact to ATen's contiguous CPU max-pool.
//
// ATen scans a window row by row, left to right, from a running maximum of -inf whose index starts at the
// window's first in-bounds element; an element replaces the maximum when it is greater or NaN. So the winner
// is the last NaN when there is one, else the first element equal to the maximum (-0.0 and +0.0 compare
// equal: whichever comes first wins). Its backward zeroes grad_input and adds grad_output into it at the
// indices, outputs in row-major order. max_pool2d_values returns the same maxima without writing indices;
// max_pool2d_recompute_backward finds the same argmax and adds in the same order, so both are bit-identical
// to ATen. The one difference: a window with no element inside the input (possible with dilation) gets index
// "first in-bounds element" past the input in ATen, whose backward then writes out of bounds; here such a
// gradient is dropped (an index that still lands inside the plane is honoured, as ATen does).
//
// Speed: ATen's kernel is scalar and branchy. Here each output row is computed 32 bytes of outputs at a time
// (8 floats or 4 doubles) with per-lane running maxima and branch-free selects, on a copy of the input plane padded with -inf
// columns: -inf never replaces a running maximum, so border columns, ceil mode's overhang and the lanes past
// the last output run the same code and read in bounds. Planes run in parallel.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <type_traits>
#include <utility>
#include <vector>

#include "common/cpu_clones.h"

namespace spikeops {
namespace {

struct PoolGeometry {
  int64_t planes, height, width, out_height, out_width;
  int64_t kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w;
};

// ---------------------------------------------------------------------------------------- argument checks
constexpr int64_t kIntMax = std::numeric_limits<int32_t>::max();  // ATen narrows every pool argument to int

int64_t floor_div(int64_t numerator, int64_t positive_denominator) {
  return numerator >= 0 ? numerator / positive_denominator
                        : -((-numerator + positive_denominator - 1) / positive_denominator);
}

// ATen's output size rule (Pool.h): floor (or ceil) of the sliding range, and in ceil mode the last window
// must start inside the input or its left padding.
int64_t pooled_size(int64_t size, int64_t kernel, int64_t stride, int64_t pad, int64_t dilation, bool ceil_mode) {
  int64_t out = floor_div(size + 2 * pad - dilation * (kernel - 1) - 1 + (ceil_mode ? stride - 1 : 0), stride) + 1;
  if (ceil_mode && (out - 1) * stride >= size + pad) --out;
  return out;
}

// (height, width) of a pair argument given as one int (both) or two.
std::pair<int64_t, int64_t> pair_argument(const char* op, const char* name, at::IntArrayRef value) {
  TORCH_CHECK(value.size() == 1 || value.size() == 2, op, ": ", name,
              " must be one int or two (height, width), got ", value.size(), " values ", value);
  return {value[0], value.size() == 2 ? value[1] : value[0]};
}

void check_range(const char* op, const char* name, std::pair<int64_t, int64_t> value, int64_t low,
                 const char* expected) {
  TORCH_CHECK(value.first >= low && value.second >= low && value.first <= kIntMax && value.second <= kIntMax, op,
              ": ", name, " must be ", expected, " and at most ", kIntMax, " (as aten.max_pool2d takes it), got (",
              value.first, ", ", value.second, ")");
}

// Everything aten.max_pool2d checks, naming the argument, before any kernel runs.
PoolGeometry check_pool(const char* op, const at::Tensor& input, at::IntArrayRef kernel_size, at::IntArrayRef stride,
                        at::IntArrayRef padding, at::IntArrayRef dilation, bool ceil_mode) {
  TORCH_CHECK(input.scalar_type() == at::kFloat || input.scalar_type() == at::kDouble, op,
              ": input must be float32 or float64 (other dtypes: aten.max_pool2d), got ", input.scalar_type());
  TORCH_CHECK(input.layout() == at::kStrided, op, ": input must be a strided (dense) tensor, got layout ",
              input.layout());
  const int64_t dim = input.dim();
  TORCH_CHECK((dim == 3 || dim == 4) && input.size(-3) > 0 && input.size(-2) > 0 && input.size(-1) > 0 &&
                  (dim == 4 || input.size(0) > 0),
              op, ": input must be [N, C, H, W] (N may be 0) or [C, H, W] with C, H, W > 0, got shape ",
              input.sizes());
  const auto kernel = pair_argument(op, "kernel_size", kernel_size);
  TORCH_CHECK(stride.size() <= 2, op, ": stride must be empty (the kernel size), one int or two (height, width), got ",
              stride.size(), " values ", stride);
  const auto step = stride.empty() ? kernel : pair_argument(op, "stride", stride);
  const auto pad = pair_argument(op, "padding", padding);
  const auto dil = pair_argument(op, "dilation", dilation);
  check_range(op, "kernel_size", kernel, 1, ">= 1");
  check_range(op, "stride", step, 1, ">= 1");
  check_range(op, "padding", pad, 0, ">= 0");
  check_range(op, "dilation", dil, 1, ">= 1");
  TORCH_CHECK(pad.first <= kernel.first / 2 && pad.second <= kernel.second / 2, op,
              ": padding must be at most half the kernel size, got padding (", pad.first, ", ", pad.second,
              ") for kernel_size (", kernel.first, ", ", kernel.second, ")");
  PoolGeometry g{};
  g.height = input.size(-2);
  g.width = input.size(-1);
  g.planes = g.height * g.width == 0 ? 0 : input.numel() / (g.height * g.width);
  g.kernel_h = kernel.first, g.kernel_w = kernel.second, g.stride_h = step.first, g.stride_w = step.second;
  g.pad_h = pad.first, g.pad_w = pad.second, g.dilation_h = dil.first, g.dilation_w = dil.second;
  g.out_height = pooled_size(g.height, g.kernel_h, g.stride_h, g.pad_h, g.dilation_h, ceil_mode);
  g.out_width = pooled_size(g.width, g.kernel_w, g.stride_w, g.pad_w, g.dilation_w, ceil_mode);
  TORCH_CHECK(g.out_height >= 1 && g.out_width >= 1, op, ": input of spatial size (", g.height, ", ", g.width,
              ") is too small for kernel_size (", g.kernel_h, ", ", g.kernel_w, "), stride (", g.stride_h, ", ",
              g.stride_w, "), padding (", g.pad_h, ", ", g.pad_w, "), dilation (", g.dilation_h, ", ",
              g.dilation_w, "): the output would be (", g.out_height, ", ", g.out_width, ")");
  return g;
}

std::vector<int64_t> pooled_shape(const at::Tensor& input, const PoolGeometry& g) {
  std::vector<int64_t> shape(input.sizes().begin(), input.sizes().end());
  shape[shape.size() - 2] = g.out_height;
  shape[shape.size() - 1] = g.out_width;
  return shape;
}

// ---------------------------------------------------------------------------------------- window geometry
template <typename T>
constexpr T kMinusInf = -std::numeric_limits<T>::infinity();

// ATen's update rule.
template <typename T>
inline bool replaces(T value, T running_max) {
  return (value > running_max) | (value != value);
}

// The taps [begin, end) of one window along one dimension that land inside [0, size); tap k reads
// start + k * dilation.
struct Taps {
  int64_t start, begin, end;
  int64_t first_inside(int64_t dilation) const { return start + begin * dilation; }
};

inline Taps window_taps(int64_t out_index, int64_t stride, int64_t pad, int64_t dilation, int64_t kernel,
                        int64_t size) {
  const int64_t start = out_index * stride - pad;
  const int64_t begin = start < 0 ? (-start + dilation - 1) / dilation : 0;
  const int64_t end = start >= size ? 0 : std::min(kernel, (size - 1 - start) / dilation + 1);
  return {start, begin, std::max(begin, end)};
}

// Where ATen's index starts (and stays when nothing replaces the -inf): the window's first in-bounds row and
// column, even past the input when the window has none.
inline int64_t initial_index(const PoolGeometry& g, const Taps& rows, const Taps& cols) {
  return rows.first_inside(g.dilation_h) * g.width + cols.first_inside(g.dilation_w);
}

inline Taps row_taps(const PoolGeometry& g, int64_t oh) {
  return window_taps(oh, g.stride_h, g.pad_h, g.dilation_h, g.kernel_h, g.height);
}
inline Taps col_taps(const PoolGeometry& g, int64_t ow) {
  return window_taps(ow, g.stride_w, g.pad_w, g.dilation_w, g.kernel_w, g.width);
}

template <typename T>
inline void add_gradient(const PoolGeometry& g, int64_t index, T grad, T* grad_input) {
  if (index >= 0 && index < g.height * g.width) grad_input[index] += grad;
}

// ---------------------------------------------------------------------------------------- scalar path
// For windows so wide that a padded copy of the plane would dwarf the input, and float planes whose offsets
// overflow int32: ATen's loops over the in-bounds taps alone.
template <typename T>
std::pair<T, int64_t> window_max(const T* plane, const PoolGeometry& g, int64_t oh, int64_t ow) {
  const Taps rows = row_taps(g, oh), cols = col_taps(g, ow);
  T best = kMinusInf<T>;
  int64_t index = initial_index(g, rows, cols);
  for (int64_t kh = rows.begin; kh < rows.end; ++kh) {
    const int64_t row_offset = (rows.start + kh * g.dilation_h) * g.width;
    for (int64_t kw = cols.begin; kw < cols.end; ++kw) {
      const int64_t offset = row_offset + cols.start + kw * g.dilation_w;
      if (replaces(plane[offset], best)) best = plane[offset], index = offset;
    }
  }
  return {best, index};
}

template <typename T>
void values_plane_scalar(const T* plane, const PoolGeometry& g, T* out) {
  for (int64_t oh = 0; oh < g.out_height; ++oh)
    for (int64_t ow = 0; ow < g.out_width; ++ow) out[oh * g.out_width + ow] = window_max(plane, g, oh, ow).first;
}

template <typename T>
void backward_plane_scalar(const T* plane, const PoolGeometry& g, const T* grad_output, T* grad_input) {
  std::fill(grad_input, grad_input + g.height * g.width, T(0));
  for (int64_t oh = 0; oh < g.out_height; ++oh)
    for (int64_t ow = 0; ow < g.out_width; ++ow)
      add_gradient(g, window_max(plane, g, oh, ow).second, grad_output[oh * g.out_width + ow], grad_input);
}

// ---------------------------------------------------------------------------------------- vector path
// GCC/Clang vector extensions, one AVX2 register of outputs (8 floats, 4 doubles): the compiler's own loop
// vectoriser turned the lane loops into branches on random data (slower than ATen). The SSE2 clone splits
// each vector in two. Index: the integers of T's width that comparisons yield and offsets are carried in.
template <typename T>
struct Lanes;
template <>
struct Lanes<float> {
  typedef float Vec __attribute__((vector_size(32)));
  typedef int32_t Index __attribute__((vector_size(32)));
};
template <>
struct Lanes<double> {
  typedef double Vec __attribute__((vector_size(32)));
  typedef int64_t Index __attribute__((vector_size(32)));
};

template <typename T>
constexpr int64_t kLanes = 32 / sizeof(T);

// __builtin_shufflevector came to GCC in 12 (Clang has long had it); an older host compiler (a GPU machine's)
// takes the per-lane gather, the same values.
#if defined(__has_builtin)
#if __has_builtin(__builtin_shufflevector)
constexpr bool kHasShuffleVector = true;
#define SPIKEOPS_SHUFFLE_EVEN(low, high, ...) __builtin_shufflevector(low, high, __VA_ARGS__)
#endif
#endif
#ifndef SPIKEOPS_SHUFFLE_EVEN
constexpr bool kHasShuffleVector = false;
#define SPIKEOPS_SHUFFLE_EVEN(low, high, ...) low
#endif

// Lanes l = 0..kLanes-1 of src[l * stride]; kStride: the stride as a constant (1, 2) or 0 (read `stride`).
// Stride 2 reads one element past the last lane. An out-parameter, not a return value: a 32-byte vector
// returned by value has another ABI in the baseline clone than in the AVX2 one.
template <typename T, int kStride>
inline void load_lanes(const T* src, int64_t stride, typename Lanes<T>::Vec& v) {
  using Vec = typename Lanes<T>::Vec;
  if constexpr (kStride == 1) {
    std::memcpy(&v, src, sizeof(Vec));
  } else if constexpr (kStride == 2 && kHasShuffleVector) {
    Vec low, high;
    std::memcpy(&low, src, sizeof(Vec));
    std::memcpy(&high, src + kLanes<T>, sizeof(Vec));
    if constexpr (kLanes<T> == 8) {
      v = SPIKEOPS_SHUFFLE_EVEN(low, high, 0, 2, 4, 6, 8, 10, 12, 14);
    } else {
      v = SPIKEOPS_SHUFFLE_EVEN(low, high, 0, 2, 4, 6);
    }
  } else {
    for (int64_t l = 0; l < kLanes<T>; ++l) v[l] = src[l * stride];
  }
}

// An input plane with -inf columns left (the padding) and right (padding, ceil-mode overhang, the lanes of
// the last block past the last output, and the element a stride-2 load reads past its last lane); padded
// column 0 is input column -pad_w.
template <typename T>
class PaddedPlane {
 public:
  static int64_t row_width(const PoolGeometry& g) {
    const int64_t blocks = (g.out_width + kLanes<T> - 1) / kLanes<T>;
    return std::max(g.pad_w + g.width,
                    (blocks * kLanes<T> - 1) * g.stride_w + (g.kernel_w - 1) * g.dilation_w + 2);
  }

  explicit PaddedPlane(const PoolGeometry& g)
      : g_(g), width_(row_width(g)), data_(static_cast<size_t>(g.height * width_), kMinusInf<T>) {}

  void load(const T* plane) {  // the -inf columns are never written
    for (int64_t r = 0; r < g_.height; ++r)
      std::memcpy(data_.data() + r * width_ + g_.pad_w, plane + r * g_.width, g_.width * sizeof(T));
  }
  const T* row(int64_t r) const { return data_.data() + r * width_; }

 private:
  const PoolGeometry& g_;
  int64_t width_;
  std::vector<T> data_;
};

template <typename T, int kStride>
SPIKEOPS_CPU_CLONES void values_plane_vectorised(const PaddedPlane<T>& padded, const PoolGeometry& g, T* out) {
  using Vec = typename Lanes<T>::Vec;
  constexpr int64_t L = kLanes<T>;
  const int64_t stride = kStride > 0 ? kStride : g.stride_w;
  for (int64_t oh = 0; oh < g.out_height; ++oh) {
    const Taps rows = row_taps(g, oh);
    T* out_row = out + oh * g.out_width;
    for (int64_t ow0 = 0; ow0 < g.out_width; ow0 += L) {
      Vec best = Vec{} + kMinusInf<T>;
      for (int64_t kh = rows.begin; kh < rows.end; ++kh) {
        const T* base = padded.row(rows.start + kh * g.dilation_h) + ow0 * stride;
        for (int64_t kw = 0; kw < g.kernel_w; ++kw) {
          Vec value;
          load_lanes<T, kStride>(base + kw * g.dilation_w, stride, value);
          best = ((value > best) | (value != value)) ? value : best;  // ATen's update rule, per lane
        }
      }
      if (ow0 + L <= g.out_width) {
        std::memcpy(out_row + ow0, &best, sizeof(Vec));
      } else {
        for (int64_t l = 0; l < g.out_width - ow0; ++l) out_row[ow0 + l] = best[l];
      }
    }
  }
}

template <typename T, int kStride>
SPIKEOPS_CPU_CLONES void backward_plane_vectorised(const PaddedPlane<T>& padded, const PoolGeometry& g,
                                                   const T* grad_output, T* grad_input) {
  using Vec = typename Lanes<T>::Vec;
  using Index = typename Lanes<T>::Index;
  using Offset = std::remove_reference_t<decltype(Index{}[0])>;
  constexpr int64_t L = kLanes<T>;
  constexpr Offset kNone = -1;  // no element replaced the -inf: ATen's initial index holds
  const int64_t stride = kStride > 0 ? kStride : g.stride_w;
  Index lane_columns;  // each lane's column relative to the block's first
  for (int64_t l = 0; l < L; ++l) lane_columns[l] = static_cast<Offset>(l * stride);
  std::fill(grad_input, grad_input + g.height * g.width, T(0));
  for (int64_t oh = 0; oh < g.out_height; ++oh) {
    const Taps rows = row_taps(g, oh);
    for (int64_t ow0 = 0; ow0 < g.out_width; ow0 += L) {
      Vec best = Vec{} + kMinusInf<T>;
      Index winner = Index{} + kNone;
      for (int64_t kh = rows.begin; kh < rows.end; ++kh) {
        const int64_t r = rows.start + kh * g.dilation_h;
        const T* base = padded.row(r) + ow0 * stride;
        const Index block_offsets = lane_columns + static_cast<Offset>(r * g.width + ow0 * stride - g.pad_w);
        for (int64_t kw = 0; kw < g.kernel_w; ++kw) {
          Vec value;
          load_lanes<T, kStride>(base + kw * g.dilation_w, stride, value);
          const Index take = (value > best) | (value != value);
          best = take ? value : best;
          winner = take ? block_offsets + static_cast<Offset>(kw * g.dilation_w) : winner;
        }
      }
      const int64_t count = std::min(L, g.out_width - ow0);
      for (int64_t l = 0; l < count; ++l) {  // in output order: the order ATen adds in
        const int64_t ow = ow0 + l;
        const int64_t index = winner[l] != kNone ? winner[l] : initial_index(g, rows, col_taps(g, ow));
        add_gradient(g, index, grad_output[oh * g.out_width + ow], grad_input);
      }
    }
  }
}

template <typename Fn>
void with_constant_stride(int64_t stride, Fn&& fn) {
  if (stride == 1) {
    fn(std::integral_constant<int, 1>{});
  } else if (stride == 2) {
    fn(std::integral_constant<int, 2>{});
  } else {
    fn(std::integral_constant<int, 0>{});
  }
}

// The padded copy is worth it unless the window is far wider than the input (huge kernel or padding).
template <typename T>
bool padded_plane_fits(const PoolGeometry& g) {
  return PaddedPlane<T>::row_width(g) <= 4 * (g.width + 2 * kLanes<T>);
}

// Offsets the lanes carry reach about height * row_width.
template <typename T>
bool offsets_fit_lanes(const PoolGeometry& g) {
  using Offset = std::remove_reference_t<decltype(typename Lanes<T>::Index{}[0])>;
  return (g.height + 1) * PaddedPlane<T>::row_width(g) < std::numeric_limits<Offset>::max();
}

// Planes per parallel task: enough window taps to amortise a task.
int64_t planes_per_task(const PoolGeometry& g) {
  const int64_t work = std::max<int64_t>(1, g.out_height * g.out_width * g.kernel_h * g.kernel_w);
  return std::max<int64_t>(1, (int64_t{1} << 16) / work);
}

template <typename T>
void pool_values(const T* input, const PoolGeometry& g, T* out) {
  const int64_t in_plane = g.height * g.width, out_plane = g.out_height * g.out_width;
  const bool vectorised = padded_plane_fits<T>(g);
  at::parallel_for(0, g.planes, planes_per_task(g), [&](int64_t begin, int64_t end) {
    if (!vectorised) {
      for (int64_t p = begin; p < end; ++p) values_plane_scalar(input + p * in_plane, g, out + p * out_plane);
      return;
    }
    PaddedPlane<T> padded(g);
    with_constant_stride(g.stride_w, [&](auto stride) {
      for (int64_t p = begin; p < end; ++p) {
        padded.load(input + p * in_plane);
        values_plane_vectorised<T, decltype(stride)::value>(padded, g, out + p * out_plane);
      }
    });
  });
}

template <typename T>
void pool_backward(const T* input, const T* grad_output, const PoolGeometry& g, T* grad_input) {
  const int64_t in_plane = g.height * g.width, out_plane = g.out_height * g.out_width;
  const bool vectorised = padded_plane_fits<T>(g) && offsets_fit_lanes<T>(g);
  at::parallel_for(0, g.planes, planes_per_task(g), [&](int64_t begin, int64_t end) {
    if (!vectorised) {
      for (int64_t p = begin; p < end; ++p)
        backward_plane_scalar(input + p * in_plane, g, grad_output + p * out_plane, grad_input + p * in_plane);
      return;
    }
    PaddedPlane<T> padded(g);
    with_constant_stride(g.stride_w, [&](auto stride) {
      for (int64_t p = begin; p < end; ++p) {
        padded.load(input + p * in_plane);
        backward_plane_vectorised<T, decltype(stride)::value>(padded, g, grad_output + p * out_plane,
                                                              grad_input + p * in_plane);
      }
    });
  });
}

// ---------------------------------------------------------------------------------------- operators
at::Tensor max_pool2d_values_cpu(const at::Tensor& input, at::IntArrayRef kernel_size, at::IntArrayRef stride,
                                 at::IntArrayRef padding, at::IntArrayRef dilation, bool ceil_mode) {
  const PoolGeometry g = check_pool("max_pool2d_values", input, kernel_size, stride, padding, dilation, ceil_mode);
  const at::Tensor x = input.contiguous();
  at::Tensor out = at::empty(pooled_shape(input, g), x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "max_pool2d_values", [&] {
    pool_values<scalar_t>(x.const_data_ptr<scalar_t>(), g, out.mutable_data_ptr<scalar_t>());
  });
  return out;
}

at::Tensor max_pool2d_recompute_backward_cpu(const at::Tensor& grad_output, const at::Tensor& input,
                                             at::IntArrayRef kernel_size, at::IntArrayRef stride,
                                             at::IntArrayRef padding, at::IntArrayRef dilation, bool ceil_mode) {
  const char* op = "max_pool2d_recompute_backward";
  const PoolGeometry g = check_pool(op, input, kernel_size, stride, padding, dilation, ceil_mode);
  TORCH_CHECK(grad_output.scalar_type() == input.scalar_type(), op, ": grad_output must have input's dtype ",
              input.scalar_type(), ", got ", grad_output.scalar_type());
  TORCH_CHECK(grad_output.layout() == at::kStrided, op, ": grad_output must be a strided (dense) tensor, got layout ",
              grad_output.layout());
  const std::vector<int64_t> expected = pooled_shape(input, g);
  TORCH_CHECK(grad_output.sizes() == at::IntArrayRef(expected), op,
              ": grad_output must have the pooled shape ", at::IntArrayRef(expected), ", got ", grad_output.sizes());
  const at::Tensor x = input.contiguous(), grad = grad_output.contiguous();
  at::Tensor grad_input = at::empty(input.sizes(), x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "max_pool2d_recompute_backward", [&] {
    pool_backward<scalar_t>(x.const_data_ptr<scalar_t>(), grad.const_data_ptr<scalar_t>(), g,
                            grad_input.mutable_data_ptr<scalar_t>());
  });
  return grad_input;
}

}  // namespace
}  // namespace spikeops

TORCH_LIBRARY_IMPL(spikeops, CPU, m) {
  m.impl("max_pool2d_values", &spikeops::max_pool2d_values_cpu);
  m.impl("max_pool2d_recompute_backward", &spikeops::max_pool2d_recompute_backward_cpu);
}

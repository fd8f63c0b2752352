// Fused multi-step neuron on the CPU: parallel over neurons (at::parallel_for), and inside a task
// over blocks of kBlock neurons (a long forward: over row sweeps, see kRowSweepSteps). A block's state
// (membrane, incoming gradient) and, in backward, its recomputed H for all T stay in cache, so each tensor
// is streamed from memory once; the inner loops run over the block's contiguous neurons so gcc vectorises
// them.
//
// Trapping math off for this file: neuron_math.h's formulas have conditional arithmetic (soft/hard reset,
// piecewise surrogates), and with -ftrapping-math gcc may not evaluate both arms and select, so those
// loops stayed scalar. IEEE results do not change (only FP exception flags could), so spikes stay
// bit-identical to the CUDA and Triton kernels. The pragma precedes every include so that all inlined
// code shares the same options.
#pragma GCC optimize("no-trapping-math")

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <optional>
#include <type_traits>
#include <utility>
#include <vector>

#include "common/cpu_clones.h"
#include "neuron/neuron_math.h"
#include "neuron/neuron_host.h"

// SPIKEOPS_CPU_CLONES (common/cpu_clones.h): AVX2 and baseline clones of the hot loops. flatten matters
// here: gcc's inliner left surrogate_grad out of line in the per-step BPTT of PLIF's leak gradient, a scalar
// call per neuron-step that made that backward 7x slower.

namespace spikeops {
namespace {

constexpr int64_t kGrain = 2048;  // neurons per parallel task: enough work to amortise a task
constexpr int64_t kBlock = 256;   // neurons per sweep: state, and T rows of H in backward, stay in L1/L2
// From kRowSweepSteps steps on, forward runs one step at a time over kRowSweep neurons instead of all T
// steps of a block: a block streams 2T rows at once (x and the spikes, one row a step), and from 8 steps on
// that is more streams than the cache's ways and prefetchers keep apart (rows N floats apart share cache
// sets whenever N is a multiple of 1024): on the 2-core EPYC of the report, forward at 6.4M neuron-steps
// took 2.2-2.5 ms in blocks against 1.7-1.9 in row sweeps at T = 8, 2.7 against 1.8 at T = 16, 3.4 against
// 2.0 at T = 32, while at T = 4 blocks were the faster (membranes in L1, not L2). The sweep's membranes
// (256 KB in float32) stay in L2 between steps.
constexpr int64_t kRowSweepSteps = 8;
constexpr int64_t kRowSweep = 65536;

template <typename scalar_t>
using acc_type = typename std::conditional<std::is_same<scalar_t, double>::value, double, float>::type;

// Pointers below point at a block's first neuron; rows (time steps) are `stride` apart.

// A block's initial membrane: one value shared by every neuron (v0_stride 0, the usual resting membrane) or
// one a neuron. The shared value is a plain fill, which vectorises; a load at a run-time stride does not, and
// at T = 1 that scalar loop cost as much as the block's step.
template <typename scalar_t, typename acc_t>
inline void load_membrane(const scalar_t* __restrict__ v0, int64_t v0_stride, int64_t n, acc_t* __restrict__ v) {
  if (v0_stride == 0) {
    std::fill_n(v, n, static_cast<acc_t>(v0[0]));
  } else {
    for (int64_t i = 0; i < n; ++i) v[i] = static_cast<acc_t>(v0[i * v0_stride]);
  }
}

// neuron_math.h branches on the configuration at every step. Pinning the branches that are not simple
// selects (charge law, fire mode, whether V[t] and V[T-1] are stored) as template constants lets the
// compiler fold them away and vectorise the loop over neurons; the arithmetic is still neuron_math.h's.
template <typename scalar_t, int kCharge, int kFire, bool kStoreVSeq, bool kStoreVLast>
SPIKEOPS_CPU_CLONES void forward_block(const scalar_t* __restrict__ x, const scalar_t* __restrict__ v0, int64_t v0_stride,
                                       scalar_t* __restrict__ spikes, scalar_t* __restrict__ v_seq,
                                       scalar_t* __restrict__ v_last, int64_t n,
                                       int64_t T, int64_t stride, int64_t x_stride, NeuronParams p,
                                       acc_type<scalar_t>* __restrict__ v) {
  using acc_t = acc_type<scalar_t>;
  p.charge_law = kCharge;
  p.fire_mode = kFire;
  load_membrane(v0, v0_stride, n, v);
  for (int64_t t = 0; t < T; ++t) {
    const int64_t row = t * stride;
    for (int64_t i = 0; i < n; ++i) {
      const acc_t h = charge<acc_t>(v[i], static_cast<acc_t>(x[t * x_stride + i]), p);
      const acc_t s = fire<acc_t>(h, p);
      const acc_t vn = reset<acc_t>(h, s, p);
      v[i] = vn;
      spikes[row + i] = static_cast<scalar_t>(s);
      if constexpr (kStoreVSeq) v_seq[row + i] = static_cast<scalar_t>(vn);
    }
  }
  if constexpr (kStoreVLast)
    for (int64_t i = 0; i < n; ++i) v_last[i] = static_cast<scalar_t>(v[i]);
}

// Runtime value -> template constant, for the enums and flags the blocks are specialised on.
template <int kCount, typename F, int kValue = 0>
auto with_constant(int value, F&& f) {
  if constexpr (kValue + 1 < kCount) {
    if (value != kValue) return with_constant<kCount, F, kValue + 1>(value, std::forward<F>(f));
  }
  return f(std::integral_constant<int, kValue>{});
}

// A BatchNorm fused in front (the normalised_neuron ops): the neuron's input is x * scale[c] + shift[c] for
// the channel c of each neuron, rounded as ATen's batch norm rounds it on this build, once (a fused
// multiply-add) or twice. Its values live only in a task's buffer, a block's T rows, and are never stored.
struct InputAffine {
  const float* scale;
  const float* shift;
  int64_t inner, channels;  // neuron n has channel (n / inner) % channels
  bool fused_multiply_add;
};

// Rows [0, T) of the block of n neurons starting at neuron `first`, normalised, into out [T, kBlock].
SPIKEOPS_CPU_FMA_CLONES void normalise_rows(const InputAffine& affine, const float* __restrict__ x, int64_t first,
                                            int64_t n, int64_t T, int64_t stride, float* __restrict__ out) {
  float scale[kBlock], shift[kBlock];
  // Channel by channel from the block's first neuron: two divisions a block, not two a neuron.
  int64_t c = (first / affine.inner) % affine.channels;
  for (int64_t i = 0, run = affine.inner - first % affine.inner; i < n; run = affine.inner) {
    for (const int64_t stop = std::min(n, i + run); i < stop; ++i) {
      scale[i] = affine.scale[c];
      shift[i] = affine.shift[c];
    }
    c = c + 1 == affine.channels ? 0 : c + 1;
  }
  for (int64_t t = 0; t < T; ++t) {
    const float* __restrict__ row = x + t * stride;
    float* __restrict__ normalised = out + t * kBlock;
    if (affine.fused_multiply_add) {
      for (int64_t i = 0; i < n; ++i) normalised[i] = std::fma(row[i], scale[i], shift[i]);
    } else {
      for (int64_t i = 0; i < n; ++i) normalised[i] = row[i] * scale[i] + shift[i];
    }
  }
}

// The neuron's input for the block at neuron b: x itself (rows N apart), or its normalised rows in `buffer`
// (kBlock apart). The affine is float32 only: other dtypes never get one.
template <typename scalar_t>
std::pair<const scalar_t*, int64_t> block_input(const scalar_t* x, const InputAffine* affine, int64_t b, int64_t n,
                                                int64_t T, int64_t N, std::vector<scalar_t>& buffer) {
  if constexpr (std::is_same<scalar_t, float>::value) {
    if (affine != nullptr) {
      normalise_rows(*affine, x + b, b, n, T, N, buffer.data());
      return {buffer.data(), kBlock};
    }
  }
  return {x + b, N};
}

template <typename scalar_t>
void forward_kernel(const scalar_t* x, const scalar_t* v0, int64_t v0_stride, scalar_t* spikes, scalar_t* v_last,
                    scalar_t* v_seq, int64_t T, int64_t N, NeuronParams p, const InputAffine* affine = nullptr) {
  const auto block = with_constant<kNumChargeLaws>(p.charge_law, [&](auto charge) {
    return with_constant<3>(p.fire_mode, [&](auto fire) {
      return with_constant<2>(v_seq != nullptr, [&](auto store_v_seq) {
        return with_constant<2>(v_last != nullptr, [&](auto store_v_last) {
          return &forward_block<scalar_t, decltype(charge)::value, decltype(fire)::value,
                                decltype(store_v_seq)::value != 0, decltype(store_v_last)::value != 0>;
        });
      });
    });
  });
  // The normalised input is buffered a block at a time, so a fused affine keeps to blocks.
  const int64_t span = T >= kRowSweepSteps && affine == nullptr ? kRowSweep : kBlock;
  at::parallel_for(0, N, kGrain, [&](int64_t begin, int64_t end) {
    std::vector<scalar_t> buffer(affine != nullptr ? T * kBlock : 0);
    std::vector<acc_type<scalar_t>> membrane(std::min(span, end - begin));
    for (int64_t b = begin; b < end; b += span) {
      const int64_t n = std::min(span, end - b);
      const auto [input, input_stride] = block_input(x, affine, b, n, T, N, buffer);
      block(input, v0 + b * v0_stride, v0_stride, spikes + b, v_seq ? v_seq + b : nullptr,
            v_last ? v_last + b : nullptr, n, T, N, input_stride, p, membrane.data());
    }
  });
}

// Backward runs over chunks of kChunk steps, last chunk first, so its scratch is bounded whatever T:
// the membrane V at each chunk's start (recomputed by a forward sweep, T / kChunk + 1 rows of a block)
// and one chunk of recomputed H ([kChunk, kBlock], in cache). With T <= kChunk, the common case, there
// is one chunk and the only recompute is the one BPTT needs anyway. Spikes are recomputed from H by the
// same fire() forward ran, so they are bit for bit forward's and nothing but x and v0 is saved.
constexpr int64_t kChunk = 64;

// H for steps [t0, t1) of a block, from the membrane v (V[t0-1]) into h ([t1 - t0, kBlock]); v is left
// holding V[t1-1]. The charge law and fire mode are template constants so the loop has no branch left
// (as in forward_block).
template <typename scalar_t, int kCharge, int kFire>
SPIKEOPS_CPU_CLONES void recompute_block(const scalar_t* __restrict__ x, acc_type<scalar_t>* __restrict__ v,
                                         acc_type<scalar_t>* __restrict__ h, int64_t n, int64_t t0, int64_t t1,
                                         int64_t stride, NeuronParams p) {
  using acc_t = acc_type<scalar_t>;
  p.charge_law = kCharge;
  p.fire_mode = kFire;
  for (int64_t t = t0; t < t1; ++t) {
    const int64_t row = t * stride;
    acc_t* __restrict__ h_t = h + (t - t0) * kBlock;
    for (int64_t i = 0; i < n; ++i) {
      const acc_t h_i = charge<acc_t>(v[i], static_cast<acc_t>(x[row + i]), p);
      h_t[i] = h_i;
      v[i] = reset<acc_t>(h_i, fire<acc_t>(h_i, p), p);
    }
  }
}

// BPTT over steps [t0, t1) of a block, from t1-1 down to t0: grad_v carries dL/dV[t] in and leaves
// dL/dV[t0-1]; v_start is V[t0-1]; h holds the chunk's H. The fire mode and surrogate are template
// constants so their switches fold away (same reason as forward_block). kReset pins (hard_reset,
// detach_reset) = (kReset >> 1, kReset & 1): gcc does not vectorise a select on a run-time flag inside
// this loop (reset_grad has two). -1 reads them at run time, which is what the dtypes other than
// float32 do, to keep the number of instances (and the build time) down. kPerStep instances need
// V[t-1] at every step: for PLIF's leak gradient and for charge laws whose dH/dV[t-1] depends on V
// (evaluated per step into dh_dv_t); the others use constant derivatives.
template <typename scalar_t, int kFire, int kSurrogate, bool kPerStep, int kReset>
SPIKEOPS_CPU_CLONES void bptt_block(const scalar_t* __restrict__ grad_spikes, const scalar_t* __restrict__ grad_v_seq,
                                    const scalar_t* __restrict__ x, const acc_type<scalar_t>* __restrict__ v_start,
                                    const acc_type<scalar_t>* __restrict__ h, scalar_t* __restrict__ grad_x,
                                    acc_type<scalar_t>* __restrict__ grad_v, acc_type<scalar_t>* __restrict__ leak_acc,
                                    int64_t n, int64_t t0, int64_t t1, int64_t stride, int64_t x_stride,
                                    NeuronParams p) {
  using acc_t = acc_type<scalar_t>;
  p.fire_mode = kFire;
  p.surrogate = kSurrogate;
  if constexpr (kReset >= 0) {
    p.hard_reset = kReset >> 1;
    p.detach_reset = kReset & 1;
  }
  const acc_t dh_dv = charge_grad_v<acc_t>(acc_t(0), p);  // the constant of the laws that ignore V
  const acc_t dh_dx = charge_grad_x<acc_t>(p);
  const bool grad_v_varies = charge_grad_varies(p.charge_law);
  acc_t v_prev[kPerStep ? kBlock : 1], dh_dv_t[kPerStep ? kBlock : 1];
  for (int64_t t = t1 - 1; t >= t0; --t) {
    const int64_t row = t * stride;
    const acc_t* __restrict__ h_t = h + (t - t0) * kBlock;
    if (grad_v_seq != nullptr)
      for (int64_t i = 0; i < n; ++i) grad_v[i] += static_cast<acc_t>(grad_v_seq[row + i]);
    // V[t-1] and dH/dV[t-1], in their own loops: choosing between the chunk's start and H[t-1], or
    // between charge laws, inside the main loop would be control flow there, which gcc does not vectorise.
    if constexpr (kPerStep) {
      if (t == t0) {
        for (int64_t i = 0; i < n; ++i) v_prev[i] = v_start[i];
      } else {
        const acc_t* __restrict__ h_before = h + (t - 1 - t0) * kBlock;
        for (int64_t i = 0; i < n; ++i) v_prev[i] = reset<acc_t>(h_before[i], fire<acc_t>(h_before[i], p), p);
      }
      if (grad_v_varies) {
        for (int64_t i = 0; i < n; ++i) dh_dv_t[i] = charge_grad_v<acc_t>(v_prev[i], p);
      } else {
        for (int64_t i = 0; i < n; ++i) dh_dv_t[i] = dh_dv;
      }
    }
    for (int64_t i = 0; i < n; ++i) {
      const acc_t s = fire<acc_t>(h_t[i], p);
      const acc_t ds_dh = spike_grad<acc_t>(h_t[i], p);
      const acc_t grad_h =
          static_cast<acc_t>(grad_spikes[row + i]) * ds_dh + grad_v[i] * reset_grad<acc_t>(h_t[i], s, ds_dh, p);
      grad_x[row + i] = static_cast<scalar_t>(grad_h * dh_dx);
      if constexpr (kPerStep) {
        // Accumulated whether or not it is asked for (a select here would stop vectorisation); the caller
        // stores it only when the leak gradient is asked for.
        leak_acc[i] += grad_h * charge_grad_leak<acc_t>(v_prev[i], static_cast<acc_t>(x[t * x_stride + i]), p);
        grad_v[i] = grad_h * dh_dv_t[i];
      } else {
        grad_v[i] = grad_h * dh_dv;
      }
    }
  }
}

template <typename scalar_t>
void backward_kernel(const scalar_t* grad_spikes, const scalar_t* grad_v_seq, const scalar_t* grad_v_last,
                     const scalar_t* x, const scalar_t* v0, int64_t v0_stride, scalar_t* grad_x, scalar_t* grad_v0,
                     acc_type<scalar_t>* grad_leak, int64_t T, int64_t N, NeuronParams p,
                     const InputAffine* affine = nullptr) {
  using acc_t = acc_type<scalar_t>;
  const auto recompute = with_constant<kNumChargeLaws>(p.charge_law, [&](auto charge) {
    return with_constant<3>(p.fire_mode, [](auto fire) {
      return &recompute_block<scalar_t, decltype(charge)::value, decltype(fire)::value>;
    });
  });
  const bool per_step = grad_leak != nullptr || charge_grad_varies(p.charge_law);
  const auto bptt = with_constant<3>(p.fire_mode, [&](auto fire) {
    return with_constant<kNumSurrogates>(p.surrogate, [&](auto surrogate) {
      constexpr int kFire = decltype(fire)::value;
      // Integer spikes use the straight-through estimator, not the surrogate: one instance serves all.
      constexpr int kSurrogate = kFire == static_cast<int>(FireMode::Integer) ? 0 : decltype(surrogate)::value;
      return with_constant<4>((p.hard_reset != 0) * 2 + (p.detach_reset != 0), [&](auto reset) {
        constexpr int kReset = std::is_same<scalar_t, float>::value ? decltype(reset)::value : -1;
        return per_step ? &bptt_block<scalar_t, kFire, kSurrogate, true, kReset>
                        : &bptt_block<scalar_t, kFire, kSurrogate, false, kReset>;
      });
    });
  });
  const int64_t chunks = (T + kChunk - 1) / kChunk;
  at::parallel_for(0, N, kGrain, [&](int64_t begin, int64_t end) {
    // Per task: V at each chunk's start and one chunk of H, for at most `width` neurons.
    const int64_t width = std::min(kBlock, end - begin);
    std::vector<acc_t> starts(chunks * width), h(std::min(T, kChunk) * kBlock);
    std::vector<scalar_t> buffer(affine != nullptr ? T * kBlock : 0);  // T <= kChunk with an affine
    acc_t grad_v[kBlock], leak_acc[kBlock];
    for (int64_t b = begin; b < end; b += kBlock) {
      const int64_t n = std::min(kBlock, end - b);
      const auto [input, input_stride] = block_input(x, affine, b, n, T, N, buffer);
      load_membrane(v0 + b * v0_stride, v0_stride, n, starts.data());
      for (int64_t c = 1; c < chunks; ++c) {
        std::copy_n(&starts[(c - 1) * width], n, &starts[c * width]);
        recompute(input, &starts[c * width], h.data(), n, (c - 1) * kChunk, c * kChunk, input_stride, p);
      }
      for (int64_t i = 0; i < n; ++i) {
        grad_v[i] = grad_v_last ? static_cast<acc_t>(grad_v_last[b + i]) : acc_t(0);
        leak_acc[i] = acc_t(0);
      }
      for (int64_t c = chunks - 1; c >= 0; --c) {
        const int64_t t0 = c * kChunk, t1 = std::min(T, t0 + kChunk);
        acc_t v[kBlock];
        std::copy_n(&starts[c * width], n, v);
        recompute(input, v, h.data(), n, t0, t1, input_stride, p);
        bptt(grad_spikes + b, grad_v_seq ? grad_v_seq + b : nullptr, input, &starts[c * width], h.data(),
             grad_x + b, grad_v, leak_acc, n, t0, t1, N, input_stride, p);
      }
      for (int64_t i = 0; i < n; ++i) grad_v0[b + i] = static_cast<scalar_t>(grad_v[i]);
      if (grad_leak != nullptr) std::copy_n(leak_acc, n, grad_leak + b);
    }
  });
}

// The parameters the kernels run with: PLIF's leak read from its tensor, and a fixed tau that is a power of
// two run as the multiplying law. x / tau and x * (1 / tau) round to the same number when 1 / tau is exact
// (and a normal float), and a multiply costs a fraction of the divide, the costliest instruction of the
// forward loop; every other formula of the two laws is the same (neuron_math.h).
NeuronParams kernel_params(c10::ArrayRef<double> cfg, const c10::optional<at::Tensor>& leak, const at::Tensor& x) {
  NeuronParams p = params_from_config(cfg, leak, x);
  if (leak.has_value()) p.leak = leak->item<double>();
  int exponent = 0;
  if (p.charge_law == static_cast<int32_t>(ChargeLaw::DivideByTau) && std::frexp(p.tau, &exponent) == 0.5 &&
      exponent <= 127)  // tau = 2^(exponent - 1), so 1 / tau >= 2^-126, the smallest normal float
    p.charge_law = static_cast<int32_t>(ChargeLaw::MultiplyLeak);
  return p;
}

// The arguments by which the normalised_neuron ops differ from neuron_forward / neuron_backward.
struct AffineArguments {
  const at::Tensor& scale;
  const at::Tensor& shift;
  int64_t inner;
  bool fused_multiply_add;
};

// Their affine, checked (after check_sequence): float32 x [T, N] with T <= kChunk (one backward chunk, whose
// normalised rows a task buffers), scale and shift [C] float32 contiguous on the CPU, N a multiple of C * inner.
std::optional<InputAffine> input_affine(const at::Tensor& x, const AffineArguments* arguments) {
  if (arguments == nullptr) return std::nullopt;
  const auto& [scale, shift, inner, fused_multiply_add] = *arguments;
  const char* op = "spikeops::normalised_neuron";
  TORCH_CHECK(x.scalar_type() == at::kFloat, op, ": x must be float32, got ", x.scalar_type());
  TORCH_CHECK(x.size(0) <= kChunk, op, ": x must have at most ", kChunk, " time steps, got ", x.size(0));
  for (const auto& [name, t] : {std::pair<const char*, const at::Tensor&>{"scale", scale}, {"shift", shift}})
    TORCH_CHECK(t.dim() == 1 && t.size(0) >= 1 && t.size(0) == scale.size(0) && t.scalar_type() == at::kFloat &&
                    t.device().is_cpu() && t.is_contiguous(),
                op, ": ", name, " must be a contiguous float32 CPU tensor [C] (C >= 1, scale's length), got ",
                t.sizes(), " ", t.scalar_type(), " on ", t.device());
  TORCH_CHECK(inner >= 1, op, ": inner must be >= 1 (the neurons of one channel and sample), got ", inner);
  const int64_t channels = scale.size(0);
  TORCH_CHECK(x.size(1) % (channels * inner) == 0, op, ": x's ", x.size(1), " neurons per step are not a whole "
              "number of samples of ", channels, " channels x inner ", inner);
  return InputAffine{scale.data_ptr<float>(), shift.data_ptr<float>(), inner, channels, fused_multiply_add};
}

// neuron_forward, and with `normalise` normalised_neuron_forward.
std::tuple<at::Tensor, at::Tensor, at::Tensor> forward_cpu(
    const at::Tensor& x, const at::Tensor& v0, const c10::optional<at::Tensor>& leak, c10::ArrayRef<double> cfg,
    bool store_v_seq, bool store_v_last, const AffineArguments* normalise = nullptr) {
  check_sequence(x, v0);
  const std::optional<InputAffine> affine = input_affine(x, normalise);
  const NeuronParams p = kernel_params(cfg, leak, x);
  const ForwardOutputs out = allocate_forward(x, v0, store_v_seq, store_v_last);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "neuron_forward_cpu", [&] {
    forward_kernel<scalar_t>(x.data_ptr<scalar_t>(), v0.data_ptr<scalar_t>(), membrane_stride(x, v0),
                             out.spikes.data_ptr<scalar_t>(),
                             store_v_last ? out.v_last.data_ptr<scalar_t>() : nullptr,
                             store_v_seq ? out.v_seq.data_ptr<scalar_t>() : nullptr,
                             x.size(0), x.size(1), p, affine ? &*affine : nullptr);
  });
  return out.as_tuple();
}

// neuron_backward, and with `normalise` normalised_neuron_backward.
std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_cpu(
    const at::Tensor& grad_spikes, const c10::optional<at::Tensor>& grad_v_seq,
    const c10::optional<at::Tensor>& grad_v_last, const at::Tensor& x, const at::Tensor& v0,
    const c10::optional<at::Tensor>& leak, c10::ArrayRef<double> cfg, bool need_leak_grad,
    const AffineArguments* normalise = nullptr) {
  check_backward_inputs(grad_spikes, grad_v_seq, grad_v_last, x, v0);
  const std::optional<InputAffine> affine = input_affine(x, normalise);
  const NeuronParams p = kernel_params(cfg, leak, x);
  const BackwardOutputs out = allocate_backward(x, v0, need_leak_grad);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "neuron_backward_cpu", [&] {
    backward_kernel<scalar_t>(grad_spikes.data_ptr<scalar_t>(), data_or_null<scalar_t>(grad_v_seq),
                              data_or_null<scalar_t>(grad_v_last), x.data_ptr<scalar_t>(), v0.data_ptr<scalar_t>(),
                              membrane_stride(x, v0), out.grad_x.data_ptr<scalar_t>(), out.grad_v0.data_ptr<scalar_t>(),
                              need_leak_grad ? out.grad_leak.data_ptr<acc_type<scalar_t>>() : nullptr, x.size(0),
                              x.size(1), p, affine ? &*affine : nullptr);
  });
  return out.as_tuple();
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> neuron_forward_cpu(
    const at::Tensor& x, const at::Tensor& v0, const c10::optional<at::Tensor>& leak, c10::ArrayRef<double> cfg,
    bool store_v_seq, bool store_v_last) {
  return forward_cpu(x, v0, leak, cfg, store_v_seq, store_v_last);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> neuron_backward_cpu(
    const at::Tensor& grad_spikes, const c10::optional<at::Tensor>& grad_v_seq,
    const c10::optional<at::Tensor>& grad_v_last, const at::Tensor& x, const at::Tensor& v0,
    const c10::optional<at::Tensor>& leak, c10::ArrayRef<double> cfg, bool need_leak_grad) {
  return backward_cpu(grad_spikes, grad_v_seq, grad_v_last, x, v0, leak, cfg, need_leak_grad);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> normalised_neuron_forward_cpu(
    const at::Tensor& x, const at::Tensor& scale, const at::Tensor& shift, int64_t inner, bool fused_multiply_add,
    const at::Tensor& v0, const c10::optional<at::Tensor>& leak, c10::ArrayRef<double> cfg, bool store_v_seq,
    bool store_v_last) {
  const AffineArguments normalise{scale, shift, inner, fused_multiply_add};
  return forward_cpu(x, v0, leak, cfg, store_v_seq, store_v_last, &normalise);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> normalised_neuron_backward_cpu(
    const at::Tensor& grad_spikes, const c10::optional<at::Tensor>& grad_v_seq,
    const c10::optional<at::Tensor>& grad_v_last, const at::Tensor& x, const at::Tensor& scale,
    const at::Tensor& shift, int64_t inner, bool fused_multiply_add, const at::Tensor& v0,
    const c10::optional<at::Tensor>& leak, c10::ArrayRef<double> cfg, bool need_leak_grad) {
  const AffineArguments normalise{scale, shift, inner, fused_multiply_add};
  return backward_cpu(grad_spikes, grad_v_seq, grad_v_last, x, v0, leak, cfg, need_leak_grad, &normalise);
}

// The host exp of the surrogate formulas, element-wise over a float32 tensor, so that a test can
// sweep it against torch.exp. Its own namespace keeps it out of the spikeops operator set.
at::Tensor host_exp_cpu(const at::Tensor& x) {
  TORCH_CHECK(x.scalar_type() == at::kFloat, "spikeops_host_math::exp: x must be float32, got ", x.scalar_type());
  const at::Tensor input = x.contiguous();
  at::Tensor out = at::empty_like(input);
  const float* in = input.data_ptr<float>();
  float* res = out.data_ptr<float>();
  at::parallel_for(0, input.numel(), 1 << 16, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) res[i] = surrogate_exp<float>(in[i]);
  });
  return out;
}

}  // namespace
}  // namespace spikeops

TORCH_LIBRARY_IMPL(spikeops, CPU, m) {
  m.impl("neuron_forward", &spikeops::neuron_forward_cpu);
  m.impl("neuron_backward", &spikeops::neuron_backward_cpu);
  m.impl("normalised_neuron_forward", &spikeops::normalised_neuron_forward_cpu);
  m.impl("normalised_neuron_backward", &spikeops::normalised_neuron_backward_cpu);
}

TORCH_LIBRARY(spikeops_host_math, m) {
  m.def("exp(Tensor x) -> Tensor");
  m.impl("exp", c10::DispatchKey::CPU, &spikeops::host_exp_cpu);
}

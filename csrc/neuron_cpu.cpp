// Fused multi-step neuron on the CPU: parallel over neurons (at::parallel_for), sequential over T,
// and within a block of neurons the inner loop runs over contiguous neurons so it vectorises.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <vector>

#include "neuron.h"
#include "neuron_params.h"

namespace spikeops {
namespace {

constexpr int64_t kGrain = 2048;  // neurons per task: enough work to amortise a task, fits L1/L2

template <typename scalar_t>
using acc_type = typename std::conditional<std::is_same<scalar_t, double>::value, double, float>::type;

// neuron.h branches on the configuration at every step. Pinning the branches that are not simple
// selects (charge kind, fire mode, whether V is stored) as template constants lets the compiler fold
// them away and vectorise the loop over neurons; the arithmetic is still neuron.h's.
template <typename scalar_t, int kCharge, int kFire, bool kStoreV>
void forward_block(const scalar_t* __restrict__ x, scalar_t* __restrict__ spikes, scalar_t* __restrict__ v_seq,
                   int8_t* __restrict__ spikes_i8, acc_type<scalar_t>* __restrict__ v, int64_t begin, int64_t end,
                   int64_t T, int64_t N, NeuronParams p) {
  using acc_t = acc_type<scalar_t>;
  p.charge_kind = kCharge;
  p.fire_mode = kFire;
  for (int64_t t = 0; t < T; ++t) {
    const int64_t row = t * N;
    for (int64_t i = begin; i < end; ++i) {
      const acc_t h = charge<acc_t>(v[i - begin], static_cast<acc_t>(x[row + i]), p);
      const acc_t s = fire<acc_t>(h, p);
      const acc_t vn = reset<acc_t>(h, s, p);
      v[i - begin] = vn;
      spikes[row + i] = static_cast<scalar_t>(s);
      spikes_i8[row + i] = static_cast<int8_t>(s);
      if constexpr (kStoreV) v_seq[row + i] = static_cast<scalar_t>(vn);
    }
  }
}

// Runtime value -> template constant, for the enums the blocks above are specialised on.
template <int kCount, typename F, int kValue = 0>
auto with_constant(int value, F&& f) {
  if constexpr (kValue + 1 < kCount) {
    if (value != kValue) return with_constant<kCount, F, kValue + 1>(value, std::forward<F>(f));
  }
  return f(std::integral_constant<int, kValue>{});
}

template <typename scalar_t>
void forward_kernel(const scalar_t* x, const scalar_t* v0, scalar_t* spikes, scalar_t* v_last, scalar_t* v_seq,
                    int8_t* spikes_i8, int64_t T, int64_t N, NeuronParams p) {
  using acc_t = acc_type<scalar_t>;
  const auto block = with_constant<3>(p.charge_kind, [&](auto charge) {
    return with_constant<3>(p.fire_mode, [&](auto fire) {
      constexpr int kCharge = decltype(charge)::value, kFire = decltype(fire)::value;
      return v_seq ? &forward_block<scalar_t, kCharge, kFire, true> : &forward_block<scalar_t, kCharge, kFire, false>;
    });
  });
  at::parallel_for(0, N, kGrain, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> v(end - begin);
    for (int64_t i = begin; i < end; ++i) v[i - begin] = static_cast<acc_t>(v0[i]);
    block(x, spikes, v_seq, spikes_i8, v.data(), begin, end, T, N, p);
    for (int64_t i = begin; i < end; ++i) v_last[i] = static_cast<scalar_t>(v[i - begin]);
  });
}

// Backward sweep 1: H recomputed from x and the saved spikes, written into grad_x (overwritten by the
// gradient at the same index in sweep 2, so it costs no extra buffer).
template <typename scalar_t, int kCharge>
void recompute_block(const scalar_t* __restrict__ x, const int8_t* __restrict__ spikes, scalar_t* __restrict__ h_out,
                     acc_type<scalar_t>* __restrict__ v, int64_t begin, int64_t end, int64_t T, int64_t N,
                     NeuronParams p) {
  using acc_t = acc_type<scalar_t>;
  p.charge_kind = kCharge;
  for (int64_t t = 0; t < T; ++t) {
    const int64_t row = t * N;
    for (int64_t i = begin; i < end; ++i) {
      const acc_t h = charge<acc_t>(v[i - begin], static_cast<acc_t>(x[row + i]), p);
      h_out[row + i] = static_cast<scalar_t>(h);
      v[i - begin] = reset<acc_t>(h, static_cast<acc_t>(spikes[row + i]), p);
    }
  }
}

// Backward sweep 2: BPTT from T-1 down to 0; grad_v carries dL/dV[t] from step t+1. The fire mode and
// surrogate are template constants so their switches fold away (same reason as forward_block).
template <typename scalar_t, int kFire, int kSurrogate, bool kLeakGrad>
void bptt_block(const scalar_t* __restrict__ grad_spikes, const scalar_t* __restrict__ grad_v_seq,
                const scalar_t* __restrict__ x, const scalar_t* __restrict__ v0, const int8_t* __restrict__ spikes,
                scalar_t* __restrict__ grad_x, acc_type<scalar_t>* __restrict__ grad_v,
                acc_type<scalar_t>* __restrict__ leak_acc, int64_t begin, int64_t end, int64_t T, int64_t N,
                NeuronParams p) {
  using acc_t = acc_type<scalar_t>;
  p.fire_mode = kFire;
  p.surrogate = kSurrogate;
  const acc_t dh_dv = charge_grad_v<acc_t>(p);
  const acc_t dh_dx = charge_grad_x<acc_t>(p);
  for (int64_t t = T - 1; t >= 0; --t) {
    const int64_t row = t * N;
    if (grad_v_seq != nullptr)
      for (int64_t i = begin; i < end; ++i) grad_v[i - begin] += static_cast<acc_t>(grad_v_seq[row + i]);
    for (int64_t i = begin; i < end; ++i) {
      const acc_t h = static_cast<acc_t>(grad_x[row + i]);
      const acc_t s = static_cast<acc_t>(spikes[row + i]);
      const acc_t ds_dh = spike_grad<acc_t>(h, p);
      const acc_t grad_h =
          static_cast<acc_t>(grad_spikes[row + i]) * ds_dh + grad_v[i - begin] * reset_grad<acc_t>(h, s, ds_dh, p);
      if constexpr (kLeakGrad) {
        const acc_t v_prev = t == 0 ? static_cast<acc_t>(v0[i])
                                    : reset<acc_t>(static_cast<acc_t>(grad_x[row - N + i]),
                                                   static_cast<acc_t>(spikes[row - N + i]), p);
        leak_acc[i - begin] += grad_h * charge_grad_leak<acc_t>(v_prev, static_cast<acc_t>(x[row + i]), p);
      }
      grad_x[row + i] = static_cast<scalar_t>(grad_h * dh_dx);
      grad_v[i - begin] = grad_h * dh_dv;
    }
  }
}

template <typename scalar_t>
void backward_kernel(const scalar_t* grad_spikes, const scalar_t* grad_v_seq, const scalar_t* grad_v_last,
                     const scalar_t* x, const scalar_t* v0, const int8_t* spikes, scalar_t* grad_x,
                     scalar_t* grad_v0, float* grad_leak, int64_t T, int64_t N, NeuronParams p) {
  using acc_t = acc_type<scalar_t>;
  const auto recompute = with_constant<3>(p.charge_kind, [](auto charge) {
    return &recompute_block<scalar_t, decltype(charge)::value>;
  });
  const auto bptt = with_constant<3>(p.fire_mode, [&](auto fire) {
    return with_constant<kNumSurrogates>(p.surrogate, [&](auto surrogate) {
      constexpr int kFire = decltype(fire)::value, kSurrogate = decltype(surrogate)::value;
      return grad_leak ? &bptt_block<scalar_t, kFire, kSurrogate, true> : &bptt_block<scalar_t, kFire, kSurrogate, false>;
    });
  });
  at::parallel_for(0, N, kGrain, [&](int64_t begin, int64_t end) {
    const int64_t n = end - begin;
    std::vector<acc_t> state(n), leak_acc(grad_leak ? n : 0, acc_t(0));
    for (int64_t i = begin; i < end; ++i) state[i - begin] = static_cast<acc_t>(v0[i]);
    recompute(x, spikes, grad_x, state.data(), begin, end, T, N, p);
    for (int64_t i = begin; i < end; ++i) state[i - begin] = grad_v_last ? static_cast<acc_t>(grad_v_last[i]) : acc_t(0);
    bptt(grad_spikes, grad_v_seq, x, v0, spikes, grad_x, state.data(), leak_acc.data(), begin, end, T, N, p);
    for (int64_t i = begin; i < end; ++i) {
      grad_v0[i] = static_cast<scalar_t>(state[i - begin]);
      if (grad_leak) grad_leak[i] = static_cast<float>(leak_acc[i - begin]);
    }
  });
}

NeuronParams resolve_leak(NeuronParams p, const c10::optional<at::Tensor>& leak) {
  if (leak.has_value()) p.leak = leak->item<double>();
  return p;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> neuron_forward_cpu(
    const at::Tensor& x, const at::Tensor& v0, const c10::optional<at::Tensor>& leak, c10::ArrayRef<double> cfg,
    bool store_v_seq) {
  check_sequence(x, v0);
  const NeuronParams p = resolve_leak(params_from_config(cfg, leak, x), leak);
  const ForwardOutputs out = allocate_forward(x, v0, store_v_seq);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "neuron_forward_cpu", [&] {
    forward_kernel<scalar_t>(x.data_ptr<scalar_t>(), v0.data_ptr<scalar_t>(), out.spikes.data_ptr<scalar_t>(),
                             out.v_last.data_ptr<scalar_t>(), store_v_seq ? out.v_seq.data_ptr<scalar_t>() : nullptr,
                             out.spikes_i8.data_ptr<int8_t>(), x.size(0), x.size(1), p);
  });
  return out.as_tuple();
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> neuron_backward_cpu(
    const at::Tensor& grad_spikes, const c10::optional<at::Tensor>& grad_v_seq,
    const c10::optional<at::Tensor>& grad_v_last, const at::Tensor& x, const at::Tensor& v0,
    const at::Tensor& spikes, const c10::optional<at::Tensor>& leak, c10::ArrayRef<double> cfg,
    bool need_leak_grad) {
  check_backward_inputs(grad_spikes, grad_v_seq, grad_v_last, x, v0, spikes);
  const NeuronParams p = resolve_leak(params_from_config(cfg, leak, x), leak);
  const BackwardOutputs out = allocate_backward(x, v0, need_leak_grad);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "neuron_backward_cpu", [&] {
    backward_kernel<scalar_t>(grad_spikes.data_ptr<scalar_t>(), data_or_null<scalar_t>(grad_v_seq),
                              data_or_null<scalar_t>(grad_v_last), x.data_ptr<scalar_t>(), v0.data_ptr<scalar_t>(),
                              spikes.data_ptr<int8_t>(), out.grad_x.data_ptr<scalar_t>(),
                              out.grad_v0.data_ptr<scalar_t>(),
                              need_leak_grad ? out.grad_leak.data_ptr<float>() : nullptr, x.size(0), x.size(1), p);
  });
  return out.as_tuple();
}

}  // namespace
}  // namespace spikeops

TORCH_LIBRARY_IMPL(spikeops, CPU, m) {
  m.impl("neuron_forward", &spikeops::neuron_forward_cpu);
  m.impl("neuron_backward", &spikeops::neuron_backward_cpu);
}

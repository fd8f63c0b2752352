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

template <typename scalar_t>
void forward_kernel(const scalar_t* x, const scalar_t* v0, scalar_t* spikes, scalar_t* v_last, scalar_t* v_seq,
                    int8_t* spikes_i8, int64_t T, int64_t N, NeuronParams p) {
  using acc_t = acc_type<scalar_t>;
  at::parallel_for(0, N, kGrain, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> v(end - begin);
    for (int64_t i = begin; i < end; ++i) v[i - begin] = static_cast<acc_t>(v0[i]);
    for (int64_t t = 0; t < T; ++t) {
      const int64_t row = t * N;
      for (int64_t i = begin; i < end; ++i) {
        const acc_t h = charge<acc_t>(v[i - begin], static_cast<acc_t>(x[row + i]), p);
        const acc_t s = fire<acc_t>(h, p);
        const acc_t vn = reset<acc_t>(h, s, p);
        v[i - begin] = vn;
        spikes[row + i] = static_cast<scalar_t>(s);
        spikes_i8[row + i] = static_cast<int8_t>(s);
        if (v_seq) v_seq[row + i] = static_cast<scalar_t>(vn);
      }
    }
    for (int64_t i = begin; i < end; ++i) v_last[i] = static_cast<scalar_t>(v[i - begin]);
  });
}

// BPTT in one pass per block of neurons: first recompute H forward into grad_x (it is overwritten by
// the gradient at the same index on the way back, so no extra buffer), then walk T backwards.
template <typename scalar_t>
void backward_kernel(const scalar_t* grad_spikes, const scalar_t* grad_v_seq, const scalar_t* grad_v_last,
                     const scalar_t* x, const scalar_t* v0, const int8_t* spikes, scalar_t* grad_x,
                     scalar_t* grad_v0, float* grad_leak, int64_t T, int64_t N, NeuronParams p) {
  using acc_t = acc_type<scalar_t>;
  const acc_t dh_dv = charge_grad_v<acc_t>(p);
  const acc_t dh_dx = p.leak == 0.0 || !p.decay_input ? acc_t(1) : static_cast<acc_t>(p.leak);
  at::parallel_for(0, N, kGrain, [&](int64_t begin, int64_t end) {
    const int64_t n = end - begin;
    std::vector<acc_t> state(n);
    for (int64_t i = begin; i < end; ++i) state[i - begin] = static_cast<acc_t>(v0[i]);
    for (int64_t t = 0; t < T; ++t) {
      const int64_t row = t * N;
      for (int64_t i = begin; i < end; ++i) {
        const acc_t h = charge<acc_t>(state[i - begin], static_cast<acc_t>(x[row + i]), p);
        grad_x[row + i] = static_cast<scalar_t>(h);
        state[i - begin] = reset<acc_t>(h, static_cast<acc_t>(spikes[row + i]), p);
      }
    }
    // state now carries dL/dV[t] flowing back from step t+1.
    std::vector<acc_t> leak_acc(grad_leak ? n : 0, acc_t(0));
    for (int64_t i = begin; i < end; ++i)
      state[i - begin] = grad_v_last ? static_cast<acc_t>(grad_v_last[i]) : acc_t(0);
    for (int64_t t = T - 1; t >= 0; --t) {
      const int64_t row = t * N;
      for (int64_t i = begin; i < end; ++i) {
        const acc_t h = static_cast<acc_t>(grad_x[row + i]);
        const acc_t s = static_cast<acc_t>(spikes[row + i]);
        const acc_t ds_dh = spike_grad<acc_t>(h, p);
        acc_t grad_v = state[i - begin];
        if (grad_v_seq) grad_v += static_cast<acc_t>(grad_v_seq[row + i]);
        const acc_t grad_h = static_cast<acc_t>(grad_spikes[row + i]) * ds_dh + grad_v * reset_grad<acc_t>(h, s, ds_dh, p);
        if (grad_leak) {
          const acc_t v_prev = t == 0 ? static_cast<acc_t>(v0[i])
                                      : reset<acc_t>(static_cast<acc_t>(grad_x[row - N + i]),
                                                     static_cast<acc_t>(spikes[row - N + i]), p);
          leak_acc[i - begin] += grad_h * charge_grad_leak<acc_t>(v_prev, static_cast<acc_t>(x[row + i]), p);
        }
        grad_x[row + i] = static_cast<scalar_t>(grad_h * dh_dx);
        state[i - begin] = grad_h * dh_dv;
      }
    }
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

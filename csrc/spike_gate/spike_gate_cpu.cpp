// Fused spike-gate attention on the CPU (Q-K token / channel attention, spike-driven self-attention),
// and the schemas of every attention operator of spikeops._C. Parallel over blocks of attention
// neurons, sequential over T; per step a block reduces its inputs, runs the LIF (spike_gate_math.h) and
// writes the gated output, so each input is read once per direction.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <vector>

#include "spike_gate/spike_gate_math.h"
#include "spike_gate/spike_gate_host.h"
#include "common/cpu_row_sums.h"

namespace spikeops {
namespace {

constexpr int64_t kNeuronBlock = 64;  // neurons a task handles together: contiguous lanes vectorise

template <typename scalar_t>
using acc_type = typename std::conditional<std::is_same<scalar_t, double>::value, double, float>::type;

// A run of neurons of one block whose bases are consecutive (same group, stride_l == 1): for a given
// r their elements are adjacent, so the innermost loop is unit-stride and vectorises. Neurons whose
// own inputs are contiguous (stride_r == 1) form runs of one and walk r contiguously instead.
struct Run {
  int64_t first_j, length, base;
};

std::vector<Run> block_runs(const GateGeometry& g, int64_t begin, int64_t end) {
  std::vector<Run> runs;
  for (int64_t m = begin; m < end; ++m) {
    const int64_t base = g.base(m);
    if (!runs.empty() && g.stride_l == 1 && runs.back().base + runs.back().length == base)
      ++runs.back().length;
    else
      runs.push_back({m - begin, 1, base});
  }
  return runs;
}

// Visits every (neuron j of the block, element offset) pair of one time slice. Each neuron sees its
// r in increasing order, so every backend that sums sequentially gets the same sums.
template <typename Fn>
void for_each_element(const std::vector<Run>& runs, int64_t R, int64_t stride_r, int64_t t_offset, Fn&& fn) {
  for (const Run& run : runs)
    for (int64_t r = 0; r < R; ++r) {
      const int64_t row = t_offset + run.base + r * stride_r;
      for (int64_t i = 0; i < run.length; ++i) fn(run.first_j + i, row + i);
    }
}

template <typename scalar_t>
void forward_runs(const scalar_t* a, const scalar_t* a2, const scalar_t* gate, scalar_t* out,
                  acc_type<scalar_t>* h_out, int8_t* spikes, GateGeometry g, NeuronParams p) {
  using acc_t = acc_type<scalar_t>;
  at::parallel_for(0, g.M, kNeuronBlock, [&](int64_t begin, int64_t end) {
    const std::vector<Run> runs = block_runs(g, begin, end);
    std::vector<acc_t> v(end - begin, resting_potential<acc_t>(p)), x(end - begin), s(end - begin);
    for (int64_t t = 0; t < g.T; ++t) {
      const int64_t t_offset = t * g.slice();
      std::fill(x.begin(), x.end(), acc_t(0));
      for_each_element(runs, g.R, g.stride_r, t_offset, [&](int64_t j, int64_t at) {
        const acc_t value = static_cast<acc_t>(a[at]);
        x[j] += a2 ? value * static_cast<acc_t>(a2[at]) : value;
      });
      for (int64_t j = 0; j < end - begin; ++j) {
        acc_t h;
        s[j] = lif_step<acc_t>(x[j], v[j], h, p);
        h_out[t * g.M + begin + j] = h;
        spikes[t * g.M + begin + j] = static_cast<int8_t>(s[j]);
      }
      for_each_element(runs, g.R, g.stride_r, t_offset, [&](int64_t j, int64_t at) {
        out[at] = static_cast<scalar_t>(s[j] * static_cast<acc_t>(gate[at]));
      });
    }
  });
}

template <typename scalar_t>
void backward_runs(const scalar_t* grad_out, const scalar_t* a, const scalar_t* a2, const scalar_t* gate,
                   const acc_type<scalar_t>* h_in, const int8_t* spikes, scalar_t* grad_a, scalar_t* grad_a2,
                   scalar_t* grad_gate, GateGeometry g, NeuronParams p) {
  using acc_t = acc_type<scalar_t>;
  at::parallel_for(0, g.M, kNeuronBlock, [&](int64_t begin, int64_t end) {
    const std::vector<Run> runs = block_runs(g, begin, end);
    std::vector<acc_t> grad_v(end - begin, acc_t(0)), grad_s(end - begin), grad_x(end - begin), s(end - begin);
    for (int64_t t = g.T - 1; t >= 0; --t) {
      const int64_t t_offset = t * g.slice();
      for (int64_t j = 0; j < end - begin; ++j) s[j] = static_cast<acc_t>(spikes[t * g.M + begin + j]);
      std::fill(grad_s.begin(), grad_s.end(), acc_t(0));
      for_each_element(runs, g.R, g.stride_r, t_offset, [&](int64_t j, int64_t at) {
        const acc_t go = static_cast<acc_t>(grad_out[at]);
        grad_s[j] += go * static_cast<acc_t>(gate[at]);
        grad_gate[at] = static_cast<scalar_t>(go * s[j]);
      });
      for (int64_t j = 0; j < end - begin; ++j)
        grad_x[j] = lif_step_backward<acc_t>(grad_s[j], grad_v[j], h_in[t * g.M + begin + j], s[j], p);
      for_each_element(runs, g.R, g.stride_r, t_offset, [&](int64_t j, int64_t at) {
        if (a2) {
          grad_a[at] = static_cast<scalar_t>(grad_x[j] * static_cast<acc_t>(a2[at]));
          grad_a2[at] = static_cast<scalar_t>(grad_x[j] * static_cast<acc_t>(a[at]));
        } else {
          grad_a[at] = static_cast<scalar_t>(grad_x[j]);
        }
      });
    }
  });
}

// ---- Row layout: neuron m's R inputs are row m of a row-major [M, R] time slice (stride_r == 1), as in
// the channel reduction of [T, B, C, N] and the token reduction of [T, B, h, N, d]. The per-neuron sums
// are cpu::row_sums (rows side by side, each in its own order); every other pass over a row is
// element-wise and unit-stride, so it vectorises.
bool is_row_layout(const GateGeometry& g) { return g.stride_r == 1 && g.L == 1 && g.stride_g == g.R; }

template <typename scalar_t, typename acc_t>
inline void scale_row(const scalar_t* in, acc_t factor, int64_t R, scalar_t* out) {
  for (int64_t r = 0; r < R; ++r) out[r] = static_cast<scalar_t>(factor * static_cast<acc_t>(in[r]));
}

template <bool kProduct, typename scalar_t>
void forward_rows(const scalar_t* a, const scalar_t* a2, const scalar_t* gate, scalar_t* out,
                  acc_type<scalar_t>* h_out, int8_t* spikes, GateGeometry g, NeuronParams p) {
  using acc_t = acc_type<scalar_t>;
  const int64_t R = g.R;
  at::parallel_for(0, g.M, kNeuronBlock, [&](int64_t begin, int64_t end) {
    const int64_t n = end - begin;
    std::vector<acc_t> v(n, resting_potential<acc_t>(p)), x(n);
    for (int64_t t = 0; t < g.T; ++t) {
      const int64_t first = t * g.slice() + begin * R;
      cpu::row_sums<scalar_t, acc_t>(a + first, kProduct ? a2 + first : nullptr, R, n, R, x.data());
      for (int64_t j = 0; j < n; ++j) {
        acc_t h;
        const acc_t s = lif_step<acc_t>(x[j], v[j], h, p);
        h_out[t * g.M + begin + j] = h;
        spikes[t * g.M + begin + j] = static_cast<int8_t>(s);
        scale_row<scalar_t, acc_t>(gate + first + j * R, s, R, out + first + j * R);
      }
    }
  });
}

template <bool kProduct, typename scalar_t>
void backward_rows(const scalar_t* grad_out, const scalar_t* a, const scalar_t* a2, const scalar_t* gate,
                   const acc_type<scalar_t>* h_in, const int8_t* spikes, scalar_t* grad_a, scalar_t* grad_a2,
                   scalar_t* grad_gate, GateGeometry g, NeuronParams p) {
  using acc_t = acc_type<scalar_t>;
  const int64_t R = g.R;
  at::parallel_for(0, g.M, kNeuronBlock, [&](int64_t begin, int64_t end) {
    const int64_t n = end - begin;
    std::vector<acc_t> grad_v(n, acc_t(0)), grad_s(n);
    for (int64_t t = g.T - 1; t >= 0; --t) {
      const int64_t first = t * g.slice() + begin * R;
      cpu::row_sums<scalar_t, acc_t>(grad_out + first, gate + first, R, n, R, grad_s.data());
      for (int64_t j = 0; j < n; ++j) {
        const int64_t row = first + j * R, neuron = t * g.M + begin + j;
        const acc_t s = static_cast<acc_t>(spikes[neuron]);
        scale_row<scalar_t, acc_t>(grad_out + row, s, R, grad_gate + row);
        const acc_t grad_x = lif_step_backward<acc_t>(grad_s[j], grad_v[j], h_in[neuron], s, p);
        if constexpr (kProduct) {
          scale_row<scalar_t, acc_t>(a2 + row, grad_x, R, grad_a + row);
          scale_row<scalar_t, acc_t>(a + row, grad_x, R, grad_a2 + row);
        } else {
          std::fill(grad_a + row, grad_a + row + R, static_cast<scalar_t>(grad_x));
        }
      }
    }
  });
}

template <typename scalar_t>
void forward_kernel(const scalar_t* a, const scalar_t* a2, const scalar_t* gate, scalar_t* out,
                    acc_type<scalar_t>* h_out, int8_t* spikes, GateGeometry g, NeuronParams p) {
  if (!is_row_layout(g)) return forward_runs<scalar_t>(a, a2, gate, out, h_out, spikes, g, p);
  if (a2) return forward_rows<true, scalar_t>(a, a2, gate, out, h_out, spikes, g, p);
  forward_rows<false, scalar_t>(a, a2, gate, out, h_out, spikes, g, p);
}

template <typename scalar_t>
void backward_kernel(const scalar_t* grad_out, const scalar_t* a, const scalar_t* a2, const scalar_t* gate,
                     const acc_type<scalar_t>* h_in, const int8_t* spikes, scalar_t* grad_a, scalar_t* grad_a2,
                     scalar_t* grad_gate, GateGeometry g, NeuronParams p) {
  if (!is_row_layout(g))
    return backward_runs<scalar_t>(grad_out, a, a2, gate, h_in, spikes, grad_a, grad_a2, grad_gate, g, p);
  if (a2) return backward_rows<true, scalar_t>(grad_out, a, a2, gate, h_in, spikes, grad_a, grad_a2, grad_gate, g, p);
  backward_rows<false, scalar_t>(grad_out, a, a2, gate, h_in, spikes, grad_a, grad_a2, grad_gate, g, p);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> spike_gate_forward_cpu(const at::Tensor& a,
                                                                      const c10::optional<at::Tensor>& a2,
                                                                      const at::Tensor& gate,
                                                                      c10::ArrayRef<int64_t> geometry,
                                                                      c10::ArrayRef<double> cfg) {
  check_gate_inputs(a, a2, gate);
  const GateGeometry g = gate_geometry(geometry, a);
  const NeuronParams p = attention_params(cfg, a);
  const GateForwardOutputs out = allocate_gate_forward(a, gate, g);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.scalar_type(), "spike_gate_forward_cpu", [&] {
    forward_kernel<scalar_t>(a.data_ptr<scalar_t>(), data_or_null<scalar_t>(a2), gate.data_ptr<scalar_t>(),
                             out.out.data_ptr<scalar_t>(), out.h.data_ptr<acc_type<scalar_t>>(),
                             out.spikes.data_ptr<int8_t>(), g, p);
  });
  return out.as_tuple();
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> spike_gate_backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& a, const c10::optional<at::Tensor>& a2, const at::Tensor& gate,
    const at::Tensor& h, const at::Tensor& spikes, c10::ArrayRef<int64_t> geometry, c10::ArrayRef<double> cfg) {
  check_gate_inputs(a, a2, gate);
  check_like(grad_out, gate, "grad_out");
  const GateGeometry g = gate_geometry(geometry, a);
  check_gate_state(h, spikes, g, a);
  const NeuronParams p = attention_params(cfg, a);
  const GateBackwardOutputs out = allocate_gate_backward(a, a2, gate);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.scalar_type(), "spike_gate_backward_cpu", [&] {
    backward_kernel<scalar_t>(grad_out.data_ptr<scalar_t>(), a.data_ptr<scalar_t>(), data_or_null<scalar_t>(a2),
                              gate.data_ptr<scalar_t>(), h.data_ptr<acc_type<scalar_t>>(), spikes.data_ptr<int8_t>(),
                              out.grad_a.data_ptr<scalar_t>(),
                              a2.has_value() ? out.grad_a2.data_ptr<scalar_t>() : nullptr,
                              out.grad_gate.data_ptr<scalar_t>(), g, p);
  });
  return out.as_tuple();
}

}  // namespace
}  // namespace spikeops

TORCH_LIBRARY_IMPL(spikeops, CPU, m) {
  m.impl("spike_gate_forward", &spikeops::spike_gate_forward_cpu);
  m.impl("spike_gate_backward", &spikeops::spike_gate_backward_cpu);
}

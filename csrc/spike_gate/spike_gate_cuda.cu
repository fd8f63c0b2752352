// Fused spike-gate attention on CUDA. Two mappings of attention neurons to threads, chosen by the
// layout so global accesses coalesce: when a neuron's R inputs are contiguous (channel sums over
// tokens, token sums in [.., N, d]) a warp owns the neuron and its lanes stride over r, reducing with
// shuffles; otherwise (token sums in [.., d, N], where neighbouring neurons are neighbours in memory)
// a thread owns a neuron and walks r. The LIF step is spike_gate_math.h's, the same the CPU runs.
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "spike_gate/spike_gate_math.h"
#include "spike_gate/spike_gate_host.h"

namespace spikeops {
namespace {

constexpr int kThreads = 256;
constexpr int kWarp = 32;

template <typename T>
using acc_type = typename std::conditional<std::is_same<T, double>::value, double, float>::type;

template <typename acc_t>
__device__ __forceinline__ acc_t warp_sum(acc_t x) {
#pragma unroll
  for (int offset = kWarp / 2; offset > 0; offset /= 2) x += __shfl_xor_sync(0xffffffffu, x, offset);
  return x;
}

// LANES = 32: a warp per neuron (lane strides over r); LANES = 1: a thread per neuron.
template <typename scalar_t, int LANES>
__global__ void forward_kernel(const scalar_t* __restrict__ a, const scalar_t* __restrict__ a2,
                               const scalar_t* __restrict__ gate, scalar_t* __restrict__ out,
                               acc_type<scalar_t>* __restrict__ h_out, int8_t* __restrict__ spikes, GateGeometry g,
                               NeuronParams p) {
  using acc_t = acc_type<scalar_t>;
  const int64_t thread = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t m = thread / LANES;
  const int lane = static_cast<int>(thread % LANES);
  if (m >= g.M) return;  // whole warps leave together: M is counted in warps when LANES = 32
  const int64_t base = g.base(m);
  acc_t v = resting_potential<acc_t>(p);
  for (int64_t t = 0; t < g.T; ++t) {
    const int64_t first = t * g.slice() + base;
    acc_t x = acc_t(0);
    for (int64_t r = lane; r < g.R; r += LANES) {
      const int64_t at = first + r * g.stride_r;
      const acc_t value = static_cast<acc_t>(a[at]);
      x += a2 != nullptr ? value * static_cast<acc_t>(a2[at]) : value;
    }
    if (LANES > 1) x = warp_sum(x);
    acc_t h;
    const acc_t s = lif_step<acc_t>(x, v, h, p);
    if (lane == 0) {
      h_out[t * g.M + m] = h;
      spikes[t * g.M + m] = static_cast<int8_t>(s);
    }
    for (int64_t r = lane; r < g.R; r += LANES) {
      const int64_t at = first + r * g.stride_r;
      out[at] = static_cast<scalar_t>(s * static_cast<acc_t>(gate[at]));
    }
  }
}

template <typename scalar_t, int LANES>
__global__ void backward_kernel(const scalar_t* __restrict__ grad_out, const scalar_t* __restrict__ a,
                                const scalar_t* __restrict__ a2, const scalar_t* __restrict__ gate,
                                const acc_type<scalar_t>* __restrict__ h_in, const int8_t* __restrict__ spikes,
                                scalar_t* __restrict__ grad_a, scalar_t* __restrict__ grad_a2,
                                scalar_t* __restrict__ grad_gate, GateGeometry g, NeuronParams p) {
  using acc_t = acc_type<scalar_t>;
  const int64_t thread = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t m = thread / LANES;
  const int lane = static_cast<int>(thread % LANES);
  if (m >= g.M) return;
  const int64_t base = g.base(m);
  acc_t grad_v = acc_t(0);
  for (int64_t t = g.T - 1; t >= 0; --t) {
    const int64_t first = t * g.slice() + base;
    const acc_t s = static_cast<acc_t>(spikes[t * g.M + m]);
    acc_t grad_s = acc_t(0);
    for (int64_t r = lane; r < g.R; r += LANES) {
      const int64_t at = first + r * g.stride_r;
      const acc_t go = static_cast<acc_t>(grad_out[at]);
      grad_s += go * static_cast<acc_t>(gate[at]);
      grad_gate[at] = static_cast<scalar_t>(go * s);
    }
    if (LANES > 1) grad_s = warp_sum(grad_s);
    const acc_t grad_x = lif_step_backward<acc_t>(grad_s, grad_v, h_in[t * g.M + m], s, p);
    for (int64_t r = lane; r < g.R; r += LANES) {
      const int64_t at = first + r * g.stride_r;
      if (a2 != nullptr) {
        grad_a[at] = static_cast<scalar_t>(grad_x * static_cast<acc_t>(a2[at]));
        grad_a2[at] = static_cast<scalar_t>(grad_x * static_cast<acc_t>(a[at]));
      } else {
        grad_a[at] = static_cast<scalar_t>(grad_x);
      }
    }
  }
}

bool warp_per_neuron(const GateGeometry& g) { return g.stride_r == 1 && g.R > 1; }

dim3 grid_for(const GateGeometry& g, int lanes) {
  const int64_t threads = g.M * lanes;
  return dim3(static_cast<unsigned>((threads + kThreads - 1) / kThreads));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> spike_gate_forward_cuda(const at::Tensor& a,
                                                                       const c10::optional<at::Tensor>& a2,
                                                                       const at::Tensor& gate,
                                                                       c10::ArrayRef<int64_t> geometry,
                                                                       c10::ArrayRef<double> cfg) {
  check_gate_inputs(a, a2, gate);
  const GateGeometry g = gate_geometry(geometry, a);
  const NeuronParams p = attention_params(cfg, a);
  const at::cuda::CUDAGuard guard(a.device());
  const GateForwardOutputs out = allocate_gate_forward(a, gate, g);
  if (g.M == 0) return out.as_tuple();
  auto stream = at::cuda::getCurrentCUDAStream();
  const int lanes = warp_per_neuron(g) ? kWarp : 1;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.scalar_type(), "spike_gate_forward_cuda", [&] {
    auto kernel = lanes == 1 ? forward_kernel<scalar_t, 1> : forward_kernel<scalar_t, kWarp>;
    kernel<<<grid_for(g, lanes), kThreads, 0, stream>>>(
        a.data_ptr<scalar_t>(), data_or_null<scalar_t>(a2), gate.data_ptr<scalar_t>(), out.out.data_ptr<scalar_t>(),
        out.h.data_ptr<acc_type<scalar_t>>(), out.spikes.data_ptr<int8_t>(), g, p);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out.as_tuple();
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> spike_gate_backward_cuda(
    const at::Tensor& grad_out, const at::Tensor& a, const c10::optional<at::Tensor>& a2, const at::Tensor& gate,
    const at::Tensor& h, const at::Tensor& spikes, c10::ArrayRef<int64_t> geometry, c10::ArrayRef<double> cfg) {
  check_gate_inputs(a, a2, gate);
  check_like(grad_out, gate, "grad_out");
  const GateGeometry g = gate_geometry(geometry, a);
  check_gate_state(h, spikes, g, a);
  const NeuronParams p = attention_params(cfg, a);
  const at::cuda::CUDAGuard guard(a.device());
  const GateBackwardOutputs out = allocate_gate_backward(a, a2, gate);
  if (g.M == 0) return out.as_tuple();
  auto stream = at::cuda::getCurrentCUDAStream();
  const int lanes = warp_per_neuron(g) ? kWarp : 1;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.scalar_type(), "spike_gate_backward_cuda", [&] {
    auto kernel = lanes == 1 ? backward_kernel<scalar_t, 1> : backward_kernel<scalar_t, kWarp>;
    kernel<<<grid_for(g, lanes), kThreads, 0, stream>>>(
        grad_out.data_ptr<scalar_t>(), a.data_ptr<scalar_t>(), data_or_null<scalar_t>(a2), gate.data_ptr<scalar_t>(),
        h.data_ptr<acc_type<scalar_t>>(), spikes.data_ptr<int8_t>(), out.grad_a.data_ptr<scalar_t>(),
        a2.has_value() ? out.grad_a2.data_ptr<scalar_t>() : nullptr, out.grad_gate.data_ptr<scalar_t>(), g, p);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out.as_tuple();
}

}  // namespace
}  // namespace spikeops

TORCH_LIBRARY_IMPL(spikeops, CUDA, m) {
  m.impl("spike_gate_forward", &spikeops::spike_gate_forward_cuda);
  m.impl("spike_gate_backward", &spikeops::spike_gate_backward_cuda);
}

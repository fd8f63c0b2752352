// Fused multi-step neuron on CUDA: one thread owns VEC adjacent neurons for all T steps, so every
// global access is a coalesced (and, when aligned, vectorised) row segment and the membrane lives in
// registers. Math comes from neuron_math.h, the same code the CPU kernels run.
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "neuron/neuron_math.h"
#include "neuron/neuron_host.h"

namespace spikeops {
namespace {

constexpr int kThreads = 256;

template <typename T>
using acc_type = typename std::conditional<std::is_same<T, double>::value, double, float>::type;

// VEC elements moved as one aligned transaction (16 bytes for float32 x4, bfloat16 x8).
template <typename T, int VEC>
struct alignas(sizeof(T) * VEC) Pack {
  T v[VEC];
};

template <typename T, int VEC>
__device__ __forceinline__ Pack<T, VEC> load(const T* p) {
  return *reinterpret_cast<const Pack<T, VEC>*>(p);
}
template <typename T, int VEC>
__device__ __forceinline__ void store(T* p, const Pack<T, VEC>& v) {
  *reinterpret_cast<Pack<T, VEC>*>(p) = v;
}

// The initial membranes of neurons [first, first + VEC): their own (v0_stride 1) or one shared value (0).
template <typename scalar_t, int VEC>
__device__ __forceinline__ Pack<scalar_t, VEC> load_membrane(const scalar_t* v0, int64_t first, int64_t v0_stride) {
  if (v0_stride != 0) return load<scalar_t, VEC>(v0 + first);
  Pack<scalar_t, VEC> shared;
#pragma unroll
  for (int j = 0; j < VEC; ++j) shared.v[j] = v0[0];
  return shared;
}

template <typename acc_t>
__device__ __forceinline__ NeuronParams with_leak(NeuronParams p, const acc_t* leak) {
  if (leak != nullptr) p.leak = static_cast<double>(*leak);
  return p;
}

// N must be a multiple of VEC (the launcher picks VEC = 1 otherwise). v_seq and v_last are null when the
// caller does not want them.
template <typename scalar_t, int VEC>
__global__ void forward_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ v0, int64_t v0_stride,
                               scalar_t* __restrict__ spikes, scalar_t* __restrict__ v_last,
                               scalar_t* __restrict__ v_seq, int64_t T, int64_t N,
                               NeuronParams params, const acc_type<scalar_t>* __restrict__ leak) {
  using acc_t = acc_type<scalar_t>;
  const NeuronParams p = with_leak(params, leak);
  const int64_t first = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) * VEC;
  if (first >= N) return;
  acc_t v[VEC];
  const Pack<scalar_t, VEC> v_init = load_membrane<scalar_t, VEC>(v0, first, v0_stride);
#pragma unroll
  for (int j = 0; j < VEC; ++j) v[j] = static_cast<acc_t>(v_init.v[j]);
  for (int64_t t = 0; t < T; ++t) {
    const int64_t at = t * N + first;
    const Pack<scalar_t, VEC> xin = load<scalar_t, VEC>(x + at);
    Pack<scalar_t, VEC> s_out, v_out;
#pragma unroll
    for (int j = 0; j < VEC; ++j) {
      const acc_t h = charge<acc_t>(v[j], static_cast<acc_t>(xin.v[j]), p);
      const acc_t s = fire<acc_t>(h, p);
      v[j] = reset<acc_t>(h, s, p);
      s_out.v[j] = static_cast<scalar_t>(s);
      v_out.v[j] = static_cast<scalar_t>(v[j]);
    }
    store<scalar_t, VEC>(spikes + at, s_out);
    if (v_seq != nullptr) store<scalar_t, VEC>(v_seq + at, v_out);
  }
  if (v_last == nullptr) return;
  Pack<scalar_t, VEC> v_end;
#pragma unroll
  for (int j = 0; j < VEC; ++j) v_end.v[j] = static_cast<scalar_t>(v[j]);
  store<scalar_t, VEC>(v_last + first, v_end);
}

// Backward keeps the H of up to K steps in registers: per chunk of K steps, last chunk first, it rebuilds
// V at the chunk's start from v0 (a forward sweep over the earlier steps), recomputes the chunk's H and
// spikes (the same charge and fire forward ran, so bit for bit forward's), then runs BPTT through it. With
// T <= K, the usual case, that is one forward sweep and one backward sweep with no H in memory; longer
// sequences trade recompute (T^2 / 2K steps) for memory.
template <int VEC>
constexpr int kRegisterSteps = VEC >= 4 ? 4 : 8;  // 4 x 4 float32 or 4 x 8 16-bit values: ~32 registers

template <typename scalar_t, int VEC>
__global__ void backward_kernel(const scalar_t* __restrict__ grad_spikes, const scalar_t* __restrict__ grad_v_seq,
                                const scalar_t* __restrict__ grad_v_last, const scalar_t* __restrict__ x,
                                const scalar_t* __restrict__ v0, int64_t v0_stride, scalar_t* __restrict__ grad_x,
                                scalar_t* __restrict__ grad_v0, acc_type<scalar_t>* __restrict__ grad_leak, int64_t T,
                                int64_t N, NeuronParams params, const acc_type<scalar_t>* __restrict__ leak) {
  using acc_t = acc_type<scalar_t>;
  constexpr int K = kRegisterSteps<VEC>;
  const NeuronParams p = with_leak(params, leak);
  const int64_t first = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) * VEC;
  if (first >= N) return;
  const acc_t dh_dv = charge_grad_v<acc_t>(acc_t(0), p);  // the constant of the laws that ignore V
  const acc_t dh_dx = charge_grad_x<acc_t>(p);
  const bool grad_v_varies = charge_grad_varies(p.charge_law);
  // V[t-1] is rebuilt from H[t-1] for PLIF's leak gradient and for laws whose dH/dV depends on V.
  const bool need_v_prev = grad_leak != nullptr || grad_v_varies;
  acc_t grad_v[VEC], leak_acc[VEC];
#pragma unroll
  for (int j = 0; j < VEC; ++j) {
    grad_v[j] = grad_v_last != nullptr ? static_cast<acc_t>(grad_v_last[first + j]) : acc_t(0);
    leak_acc[j] = acc_t(0);
  }
  for (int64_t t0 = (T - 1) / K * K; t0 >= 0; t0 -= K) {
    acc_t v[VEC];
    const Pack<scalar_t, VEC> v_init = load_membrane<scalar_t, VEC>(v0, first, v0_stride);
#pragma unroll
    for (int j = 0; j < VEC; ++j) v[j] = static_cast<acc_t>(v_init.v[j]);
    for (int64_t t = 0; t < t0; ++t) {
      const Pack<scalar_t, VEC> xin = load<scalar_t, VEC>(x + t * N + first);
#pragma unroll
      for (int j = 0; j < VEC; ++j) {
        const acc_t h = charge<acc_t>(v[j], static_cast<acc_t>(xin.v[j]), p);
        v[j] = reset<acc_t>(h, fire<acc_t>(h, p), p);
      }
    }
    acc_t start[VEC], h[K][VEC];
#pragma unroll
    for (int j = 0; j < VEC; ++j) start[j] = v[j];
#pragma unroll
    for (int k = 0; k < K; ++k) {
      if (t0 + k < T) {
        const Pack<scalar_t, VEC> xin = load<scalar_t, VEC>(x + (t0 + k) * N + first);
#pragma unroll
        for (int j = 0; j < VEC; ++j) {
          h[k][j] = charge<acc_t>(v[j], static_cast<acc_t>(xin.v[j]), p);
          v[j] = reset<acc_t>(h[k][j], fire<acc_t>(h[k][j], p), p);
        }
      }
    }
#pragma unroll
    for (int k = K - 1; k >= 0; --k) {
      const int64_t t = t0 + k;
      if (t >= T) continue;
      const int64_t at = t * N + first;
      const Pack<scalar_t, VEC> gs = load<scalar_t, VEC>(grad_spikes + at);
      Pack<scalar_t, VEC> gv_seq;
      if (grad_v_seq != nullptr) gv_seq = load<scalar_t, VEC>(grad_v_seq + at);
      Pack<scalar_t, VEC> gx;
#pragma unroll
      for (int j = 0; j < VEC; ++j) {
        const acc_t h_t = h[k][j];
        const acc_t s = fire<acc_t>(h_t, p);
        const acc_t ds_dh = spike_grad<acc_t>(h_t, p);
        const acc_t dl_dv = grad_v[j] + (grad_v_seq != nullptr ? static_cast<acc_t>(gv_seq.v[j]) : acc_t(0));
        const acc_t grad_h = static_cast<acc_t>(gs.v[j]) * ds_dh + dl_dv * reset_grad<acc_t>(h_t, s, ds_dh, p);
        acc_t dh_dv_t = dh_dv;
        if (need_v_prev) {
          const acc_t h_before = h[k > 0 ? k - 1 : 0][j];
          const acc_t v_prev = k == 0 ? start[j] : reset<acc_t>(h_before, fire<acc_t>(h_before, p), p);
          if (grad_leak != nullptr) leak_acc[j] += grad_h * charge_grad_leak<acc_t>(v_prev, static_cast<acc_t>(x[at + j]), p);
          if (grad_v_varies) dh_dv_t = charge_grad_v<acc_t>(v_prev, p);
        }
        gx.v[j] = static_cast<scalar_t>(grad_h * dh_dx);
        grad_v[j] = grad_h * dh_dv_t;
      }
      store<scalar_t, VEC>(grad_x + at, gx);
    }
  }
#pragma unroll
  for (int j = 0; j < VEC; ++j) {
    grad_v0[first + j] = static_cast<scalar_t>(grad_v[j]);
    if (grad_leak != nullptr) grad_leak[first + j] = leak_acc[j];
  }
}

// 16-byte transactions: float32 x4, float16/bfloat16 x8, float64 x2.
template <typename scalar_t>
constexpr int kVecWidth = 16 / sizeof(scalar_t) > 8 ? 8 : static_cast<int>(16 / sizeof(scalar_t));

// Vectorise only when every row start of every tensor stays aligned; otherwise one neuron a thread.
template <typename scalar_t>
int pick_vector_width(int64_t N, std::initializer_list<const void*> ptrs) {
  constexpr int vec = kVecWidth<scalar_t>;
  if (N % vec != 0) return 1;
  for (const void* ptr : ptrs)
    if (ptr != nullptr && reinterpret_cast<uintptr_t>(ptr) % (vec * sizeof(scalar_t)) != 0) return 1;
  return vec;
}

template <typename scalar_t>
const acc_type<scalar_t>* leak_ptr(const c10::optional<at::Tensor>& leak) {
  return leak.has_value() ? leak->data_ptr<acc_type<scalar_t>>() : nullptr;
}

dim3 grid_for(int64_t N, int vec) {
  const int64_t threads_needed = (N + vec - 1) / vec;
  return dim3(static_cast<unsigned>((threads_needed + kThreads - 1) / kThreads));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> neuron_forward_cuda(
    const at::Tensor& x, const at::Tensor& v0, const c10::optional<at::Tensor>& leak, c10::ArrayRef<double> cfg,
    bool store_v_seq, bool store_v_last) {
  check_sequence(x, v0);
  const NeuronParams p = params_from_config(cfg, leak, x);
  const at::cuda::CUDAGuard guard(x.device());
  const ForwardOutputs out = allocate_forward(x, v0, store_v_seq, store_v_last);
  const int64_t T = x.size(0), N = x.size(1);
  if (N == 0 || T == 0) {
    if (N > 0 && store_v_last) out.v_last.copy_(v0.expand({N}));
    return out.as_tuple();
  }
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "neuron_forward_cuda", [&] {
    scalar_t* v_seq = store_v_seq ? out.v_seq.data_ptr<scalar_t>() : nullptr;
    scalar_t* v_last = store_v_last ? out.v_last.data_ptr<scalar_t>() : nullptr;
    const int vec = pick_vector_width<scalar_t>(
        N, {x.data_ptr(), membrane_stride(x, v0) ? v0.data_ptr() : nullptr, out.spikes.data_ptr(), v_seq, v_last});
    auto kernel = vec == 1 ? forward_kernel<scalar_t, 1> : forward_kernel<scalar_t, kVecWidth<scalar_t>>;
    kernel<<<grid_for(N, vec), kThreads, 0, stream>>>(x.data_ptr<scalar_t>(), v0.data_ptr<scalar_t>(), membrane_stride(x, v0),
                                                      out.spikes.data_ptr<scalar_t>(), v_last, v_seq, T, N, p,
                                                      leak_ptr<scalar_t>(leak));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out.as_tuple();
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> neuron_backward_cuda(
    const at::Tensor& grad_spikes, const c10::optional<at::Tensor>& grad_v_seq,
    const c10::optional<at::Tensor>& grad_v_last, const at::Tensor& x, const at::Tensor& v0,
    const c10::optional<at::Tensor>& leak, c10::ArrayRef<double> cfg, bool need_leak_grad) {
  check_backward_inputs(grad_spikes, grad_v_seq, grad_v_last, x, v0);
  const NeuronParams p = params_from_config(cfg, leak, x);
  const at::cuda::CUDAGuard guard(x.device());
  const BackwardOutputs out = allocate_backward(x, v0, need_leak_grad);
  const int64_t T = x.size(0), N = x.size(1);
  if (N == 0) return out.as_tuple();
  if (T == 0) {
    if (grad_v_last.has_value()) out.grad_v0.copy_(*grad_v_last); else out.grad_v0.zero_();
    if (need_leak_grad) out.grad_leak.zero_();
    return out.as_tuple();
  }
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "neuron_backward_cuda", [&] {
    const scalar_t* gv_seq = data_or_null<scalar_t>(grad_v_seq);
    const scalar_t* gv_last = data_or_null<scalar_t>(grad_v_last);
    acc_type<scalar_t>* g_leak = need_leak_grad ? out.grad_leak.data_ptr<acc_type<scalar_t>>() : nullptr;
    const int vec = pick_vector_width<scalar_t>(N, {grad_spikes.data_ptr(), gv_seq, x.data_ptr(),
                                                    membrane_stride(x, v0) ? v0.data_ptr() : nullptr,
                                                    out.grad_x.data_ptr()});
    auto kernel = vec == 1 ? backward_kernel<scalar_t, 1> : backward_kernel<scalar_t, kVecWidth<scalar_t>>;
    kernel<<<grid_for(N, vec), kThreads, 0, stream>>>(
        grad_spikes.data_ptr<scalar_t>(), gv_seq, gv_last, x.data_ptr<scalar_t>(), v0.data_ptr<scalar_t>(),
        membrane_stride(x, v0),
        out.grad_x.data_ptr<scalar_t>(), out.grad_v0.data_ptr<scalar_t>(), g_leak, T, N, p,
        leak_ptr<scalar_t>(leak));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out.as_tuple();
}

}  // namespace
}  // namespace spikeops

TORCH_LIBRARY_IMPL(spikeops, CUDA, m) {
  m.impl("neuron_forward", &spikeops::neuron_forward_cuda);
  m.impl("neuron_backward", &spikeops::neuron_backward_cuda);
}

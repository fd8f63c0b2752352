// Spiking experts mixture on CUDA. Forward: one thread per (token, channel), consecutive threads on
// consecutive channels, so each gated expert row is a coalesced read and a zero router spike skips it.
// Backward: one warp per (token, expert) reduces the router gradient over channels and writes the
// expert gradient on the way. Math is experts_mixture_math.h, the code the CPU kernels run.
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>
#include <torch/types.h>

#include "experts_mixture/experts_mixture_math.h"

namespace spikeops {
namespace experts {

void check_inputs(const at::Tensor& router, const at::Tensor& experts);  // experts_mixture_cpu.cpp
void check_grad(const at::Tensor& grad_y, const at::Tensor& experts);

namespace {

constexpr int kThreads = 256;
constexpr int kWarp = 32;

template <typename T>
using acc_type = typename std::conditional<std::is_same<T, double>::value, double, float>::type;

template <typename scalar_t>
__global__ void forward_kernel(const scalar_t* __restrict__ router, const scalar_t* __restrict__ experts,
                               scalar_t* __restrict__ y, int64_t M, int64_t E, int64_t C) {
  using acc_t = acc_type<scalar_t>;
  const int64_t index = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (index >= M * C) return;
  const int64_t t = index / C, c = index % C;
  y[index] = static_cast<scalar_t>(gated_sum<scalar_t, acc_t>(router + t * E, experts + t * E * C, E, C, c));
}

template <typename scalar_t>
__global__ void backward_kernel(const scalar_t* __restrict__ grad_y, const scalar_t* __restrict__ router,
                                const scalar_t* __restrict__ experts, scalar_t* __restrict__ grad_router,
                                scalar_t* __restrict__ grad_experts, int64_t M, int64_t E, int64_t C) {
  using acc_t = acc_type<scalar_t>;
  const int64_t row = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / kWarp;  // token * E + expert
  const int lane = threadIdx.x % kWarp;
  if (row >= M * E) return;
  const int64_t t = row / E;
  const acc_t gate = static_cast<acc_t>(router[row]);
  acc_t partial = 0;
  for (int64_t c = lane; c < C; c += kWarp) {
    const acc_t dy = static_cast<acc_t>(grad_y[t * C + c]);
    partial += dy * static_cast<acc_t>(experts[row * C + c]);
    grad_experts[row * C + c] = static_cast<scalar_t>(gate * dy);
  }
  for (int offset = kWarp / 2; offset > 0; offset /= 2) partial += __shfl_down_sync(0xffffffffu, partial, offset);
  if (lane == 0) grad_router[row] = static_cast<scalar_t>(partial);
}

at::Tensor forward_cuda(const at::Tensor& router, const at::Tensor& experts) {
  check_inputs(router, experts);
  const c10::cuda::CUDAGuard guard(experts.device());
  const int64_t M = experts.size(0), E = experts.size(1), C = experts.size(2);
  at::Tensor y = at::empty({M, C}, experts.options());
  if (M * C == 0) return y;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, experts.scalar_type(), "experts_mixture_forward_cuda", [&] {
    forward_kernel<scalar_t><<<(M * C + kThreads - 1) / kThreads, kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
        router.data_ptr<scalar_t>(), experts.data_ptr<scalar_t>(), y.data_ptr<scalar_t>(), M, E, C);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return y;
}

std::tuple<at::Tensor, at::Tensor> backward_cuda(const at::Tensor& grad_y, const at::Tensor& router,
                                                 const at::Tensor& experts) {
  check_inputs(router, experts);
  check_grad(grad_y, experts);
  const c10::cuda::CUDAGuard guard(experts.device());
  const int64_t M = experts.size(0), E = experts.size(1), C = experts.size(2);
  at::Tensor grad_router = at::empty_like(router), grad_experts = at::empty_like(experts);
  if (M * E == 0) return {grad_router, grad_experts};
  const int64_t threads = M * E * kWarp;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, experts.scalar_type(), "experts_mixture_backward_cuda", [&] {
    backward_kernel<scalar_t><<<(threads + kThreads - 1) / kThreads, kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
        grad_y.data_ptr<scalar_t>(), router.data_ptr<scalar_t>(), experts.data_ptr<scalar_t>(),
        grad_router.data_ptr<scalar_t>(), grad_experts.data_ptr<scalar_t>(), M, E, C);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {grad_router, grad_experts};
}

}  // namespace
}  // namespace experts
}  // namespace spikeops

TORCH_LIBRARY_IMPL(spikeops, CUDA, m) {
  m.impl("experts_mixture_forward", &spikeops::experts::forward_cuda);
  m.impl("experts_mixture_backward", &spikeops::experts::backward_cuda);
}

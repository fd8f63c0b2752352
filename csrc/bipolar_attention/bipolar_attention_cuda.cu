// Bipolar self-attention on CUDA: one thread per query row (forward, dQ) or key row (dK, dV), each
// running the per-row routine of bipolar_attention_math.h that the CPU kernels run, so both backends
// share one definition of the arithmetic (integer ternary products, exact power-of-two Shiftmax).
// Simple rather than tensor-core tiled: the Triton kernels are the fast GPU path.
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "bipolar_attention/bipolar_attention_host.h"

namespace spikeops {
namespace bipolar {
namespace {

constexpr int kThreads = 128;

template <typename T>
using acc_type = typename std::conditional<std::is_same<T, double>::value, double, float>::type;

template <typename scalar_t, typename acc_t>
__global__ void forward_kernel(const scalar_t* __restrict__ q, const scalar_t* __restrict__ k,
                               const scalar_t* __restrict__ v, scalar_t* __restrict__ y, acc_t* __restrict__ lse,
                               acc_t* __restrict__ rowsum, int64_t rows, AttentionParams p) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (row >= rows) return;
  const int64_t head = row / p.N;
  forward_row<scalar_t, acc_t>(q + row * p.D, k + head * p.N * p.D, v + head * p.N * p.DV, y + row * p.DV,
                               lse + row, rowsum + row, p);
}

template <typename scalar_t, typename acc_t>
__global__ void backward_query_kernel(const scalar_t* __restrict__ q, const scalar_t* __restrict__ k,
                                      const scalar_t* __restrict__ v, const scalar_t* __restrict__ y,
                                      const scalar_t* __restrict__ dy, const acc_t* __restrict__ lse,
                                      const acc_t* __restrict__ rowsum, scalar_t* __restrict__ dq,
                                      acc_t* __restrict__ delta, int64_t rows, AttentionParams p) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (row >= rows) return;
  const int64_t head = row / p.N;
  backward_query_row<scalar_t, acc_t>(q + row * p.D, k + head * p.N * p.D, v + head * p.N * p.DV, y + row * p.DV,
                                      dy + row * p.DV, lse[row], rowsum[row], dq + row * p.D, delta + row, p);
}

template <typename scalar_t, typename acc_t>
__global__ void backward_key_kernel(const scalar_t* __restrict__ q, const scalar_t* __restrict__ k,
                                    const scalar_t* __restrict__ v, const scalar_t* __restrict__ dy,
                                    const acc_t* __restrict__ lse, const acc_t* __restrict__ delta,
                                    scalar_t* __restrict__ dk, scalar_t* __restrict__ dv, int64_t rows,
                                    AttentionParams p) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (row >= rows) return;
  const int64_t head = row / p.N;
  backward_key_row<scalar_t, acc_t>(q + head * p.N * p.D, k + row * p.D, v + row * p.DV, dy + head * p.N * p.DV,
                                    lse + head * p.N, delta + head * p.N, dk + row * p.D, dv + row * p.DV, p);
}

int64_t blocks_for(int64_t rows) { return (rows + kThreads - 1) / kThreads; }

std::tuple<at::Tensor, at::Tensor, at::Tensor> forward_cuda(const at::Tensor& q, const at::Tensor& k,
                                                            const at::Tensor& v, double scale, int64_t norm,
                                                            bool pow2_denominator) {
  const AttentionParams p = check_forward(q, k, v, scale, norm, pow2_denominator);
  const c10::cuda::CUDAGuard guard(q.device());
  const ForwardResult out = allocate_forward(q, v);
  const int64_t rows = q.size(0) * p.N;
  if (rows == 0) return out.as_tuple();
  const auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, q.scalar_type(), "bipolar_attention_forward_cuda", [&] {
    using acc_t = acc_type<scalar_t>;
    forward_kernel<scalar_t, acc_t><<<blocks_for(rows), kThreads, 0, stream>>>(
        q.data_ptr<scalar_t>(), k.data_ptr<scalar_t>(), v.data_ptr<scalar_t>(), out.y.data_ptr<scalar_t>(),
        out.lse.data_ptr<acc_t>(), out.rowsum.data_ptr<acc_t>(), rows, p);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out.as_tuple();
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_cuda(const at::Tensor& dy, const at::Tensor& q,
                                                             const at::Tensor& k, const at::Tensor& v,
                                                             const at::Tensor& y, const at::Tensor& lse,
                                                             const at::Tensor& rowsum, double scale, int64_t norm) {
  const AttentionParams p = check_forward(q, k, v, scale, norm, false);
  check_backward(dy, y, v, lse, rowsum, q);
  const c10::cuda::CUDAGuard guard(q.device());
  at::Tensor dq = at::empty_like(q), dk = at::empty_like(k), dv = at::empty_like(v);
  at::Tensor delta = at::empty_like(lse);
  const int64_t rows = q.size(0) * p.N;
  if (rows == 0) return {dq, dk, dv};
  const auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, q.scalar_type(), "bipolar_attention_backward_cuda", [&] {
    using acc_t = acc_type<scalar_t>;
    backward_query_kernel<scalar_t, acc_t><<<blocks_for(rows), kThreads, 0, stream>>>(
        q.data_ptr<scalar_t>(), k.data_ptr<scalar_t>(), v.data_ptr<scalar_t>(), y.data_ptr<scalar_t>(),
        dy.data_ptr<scalar_t>(), lse.data_ptr<acc_t>(), rowsum.data_ptr<acc_t>(), dq.data_ptr<scalar_t>(),
        delta.data_ptr<acc_t>(), rows, p);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    backward_key_kernel<scalar_t, acc_t><<<blocks_for(rows), kThreads, 0, stream>>>(
        q.data_ptr<scalar_t>(), k.data_ptr<scalar_t>(), v.data_ptr<scalar_t>(), dy.data_ptr<scalar_t>(),
        lse.data_ptr<acc_t>(), delta.data_ptr<acc_t>(), dk.data_ptr<scalar_t>(), dv.data_ptr<scalar_t>(), rows, p);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {dq, dk, dv};
}

}  // namespace
}  // namespace bipolar
}  // namespace spikeops

TORCH_LIBRARY_IMPL(spikeops, CUDA, m) {
  m.impl("bipolar_attention_forward", &spikeops::bipolar::forward_cuda);
  m.impl("bipolar_attention_backward", &spikeops::bipolar::backward_cuda);
}

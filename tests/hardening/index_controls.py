"""Negative and positive controls of the PTX index check: the same copy kernel indexed in 32 and in 64
bits. The checker must flag the first and pass the second, or its verdict on real kernels means nothing."""
import triton
import triton.language as tl


@triton.jit
def copy_rows_int32(src_ptr, dst_ptr, T, N, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)  # int32: wraps past 2**31
    mask = offs < N
    for t in range(T):
        value = tl.load(src_ptr + t * N + offs, mask=mask)
        tl.store(dst_ptr + t * N + offs, value, mask=mask)


@triton.jit
def copy_rows_int64(src_ptr, dst_ptr, T, N, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    n = tl.cast(N, tl.int64)
    for t in range(T):
        value = tl.load(src_ptr + t * n + offs, mask=mask)
        tl.store(dst_ptr + t * n + offs, value, mask=mask)


CUDA_INT32 = """
__global__ void copy_rows(const float* src, float* dst, int T, int N) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= N) return;
  for (int t = 0; t < T; ++t) dst[t * N + i] = src[t * N + i];
}
"""

CUDA_INT64 = """
__global__ void copy_rows(const float* src, float* dst, long long T, long long N) {
  long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= N) return;
  for (long long t = 0; t < T; ++t) dst[t * N + i] = src[t * N + i];
}
"""

// SPIKEOPS_HD marks the math shared by the CPU and CUDA kernels: compiled for host and device by nvcc,
// a plain inline function for the C++ compiler.
#pragma once

#if defined(__CUDACC__)
#define SPIKEOPS_HD __host__ __device__ __forceinline__
#else
#define SPIKEOPS_HD inline
#endif

// SPIKEOPS_CPU_CLONES: hot CPU loops are compiled twice, for AVX2 (8 floats a vector) and for the x86-64
// baseline (SSE2), and picked at load time, so one build runs everywhere and still vectorises wide where it
// can. "avx2" does not enable FMA, so neither clone can contract a multiply and an add into one rounding
// (gcc's C++ modes contract whenever the target has FMA): both round every operation exactly as the scalar
// code (and the CUDA kernels, --fmad=false) do. flatten inlines every call in them: a loop only vectorises
// with its helpers inlined, and gcc's inliner gives up on larger instances on its own.
//
// SPIKEOPS_CPU_FMA_CLONES: the same for loops that must round some products and sums once (std::fma) and
// others twice: the wide clone has FMA ("fma", which brings AVX's 8-float vectors; picked by the CPU's feature
// flags, where an "arch=" clone would be picked by its model name), and contraction is turned off so that only
// the explicit std::fma calls fuse.
#pragma once

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define SPIKEOPS_CPU_CLONES __attribute__((target_clones("avx2", "default"), flatten))
#define SPIKEOPS_CPU_FMA_CLONES \
  __attribute__((target_clones("fma", "default"), flatten, optimize("fp-contract=off")))
#elif defined(__GNUC__)
#define SPIKEOPS_CPU_CLONES __attribute__((flatten))
#define SPIKEOPS_CPU_FMA_CLONES __attribute__((flatten, optimize("fp-contract=off")))
#else
#define SPIKEOPS_CPU_CLONES
#define SPIKEOPS_CPU_FMA_CLONES
#endif

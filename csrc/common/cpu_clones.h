// SPIKEOPS_CPU_CLONES: hot CPU loops are compiled twice, for AVX2 (8 floats a vector) and for the x86-64
// baseline (SSE2), and picked at load time, so one build runs everywhere and still vectorises wide where it
// can. "avx2" does not enable FMA, and -std=c++20 keeps fp-contract off, so both clones round every
// operation exactly as the scalar code (and the CUDA kernels, --fmad=false) do. flatten inlines every call
// in them: a loop only vectorises with its helpers inlined, and gcc's inliner gives up on larger instances
// on its own.
#pragma once

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define SPIKEOPS_CPU_CLONES __attribute__((target_clones("avx2", "default"), flatten))
#elif defined(__GNUC__)
#define SPIKEOPS_CPU_CLONES __attribute__((flatten))
#else
#define SPIKEOPS_CPU_CLONES
#endif

// Spiking self-attention SN(Q K^T V * scale) on CUDA as one fused kernel for integer operands (spikes,
// SEW spike counts; the host proves |x| <= 127 and that no int32 sum can overflow):
//
//   * one block owns kQueries query tokens of one (batch, head) for all T steps; the block's membranes
//     stay in shared memory, each thread owning the same outputs every step, and the LIF step of
//     spike_gate/spike_gate_math.h (charge / fire / reset of neuron/neuron_math.h) is the epilogue of every step's products;
//   * products are int8 x int8 -> int32 `nvcuda::wmma` m16n16k16 tensor-core MMAs on tiles converted to
//     int8 while they are staged in shared memory;
//   * order Q (K^T V): K^T V [d, d] is accumulated in int32 fragments over 16-token tiles, then Q (K^T V)
//     runs on CUDA cores in int32 (K^T V entries exceed int8); nothing [N, N] exists;
//   * order (Q K^T) V: flash style, one [kQueries, kKeys] int32 score tile at a time, narrowed to int8
//     (the host proves |score| <= d * bound^2 <= 127) for the second MMA;
//   * zero-tile skipping: a time step whose Q tile is all zero has y = 0 and runs no product at all; a
//     key tile whose K or V part is all zero contributes nothing and its MMAs are skipped. The block
//     decides with __syncthreads_or, which is also the barrier after the tile's shared-memory stores.
//
// Real-valued operands, float64 and d > 64 stay on the two-launch ATen path of spikeops/ops/attention/ssa.py.
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/util/safe_numerics.h>
#include <mma.h>
#include <torch/library.h>

#include "spike_gate/spike_gate_host.h"

namespace spikeops {
namespace {

namespace wmma = nvcuda::wmma;

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kFrag = 16;          // m = n = k = 16 of the int8 WMMA shape
constexpr int kQueries = 64;       // query tokens per block
constexpr int kKeysKV = 16;        // tokens per K^T V accumulation step (one MMA deep)
constexpr int kKeysScores = 32;    // keys per score tile: 64 x 32 scores = one 16 x 16 fragment per warp
constexpr int kMaxHeadDim = 64;    // padded head dims 16, 32, 64 are compiled
constexpr int kInt8Max = 127;

// Everything about one head's [N, d] slice the kernel indexes with: slice (t, bh) starts at
// t * step_stride + bh * N * d in both input layouts (step_stride = BH * N * d, numel = T * step_stride,
// both computed by the host: see the kernel's time loop); element (token n, channel c) sits at
// n * stride_n + c * stride_c.
struct SsaGeometry {
  int64_t BH, N, d, stride_n, stride_c, step_stride, numel;
  // ceil(N / kQueries), computed and range-checked on the host: the block index arithmetic is 32-bit
  // (a 64-bit division would be a call) and no index is ever narrowed on the device.
  uint32_t query_tiles;
  __device__ bool tokens_contiguous() const { return stride_n == 1; }
};

// An int8 tile of ROWS x COLS whose COLS axis is an MMA's reduction axis, stored as COLS / 16 blocks of
// [ROWS][16]. Any 16 x 16 fragment (r0, c0) with r0, c0 multiples of 16 is then 256 contiguous,
// 256-byte-aligned bytes with ldm = 16: a row_major matrix_a when rows are m, a col_major matrix_b when
// rows are n. (A plain row-major int8 tile would put fragments 16 bytes apart, below WMMA's required
// 32-byte alignment.)
template <int ROWS, int COLS>
struct FragmentTile {
  static_assert(ROWS % kFrag == 0 && COLS % kFrag == 0, "tile sides must be multiples of the fragment");
  static constexpr int kSize = ROWS * COLS;
  __device__ static int index(int row, int col) { return ((col / kFrag) * ROWS + row) * kFrag + col % kFrag; }
  __device__ static const signed char* fragment(const signed char* tile, int row0, int col0) {
    return tile + index(row0, col0);
  }
};

// Output (row, col) of flat index e: neighbouring threads take neighbouring addresses of the input
// layout, so output stores coalesce. A thread keeps the same indices e (hence the same membranes) for
// the whole launch.
// How FRAGMENTS accumulator fragments spread over the warps: the first kWarpsUsed warps own kPerWarp
// each (fragments warp, warp + kWarpsUsed, ...), so no warp holds a fragment it does not compute.
template <int FRAGMENTS>
struct FragmentShare {
  static constexpr int kWarpsUsed = FRAGMENTS < kWarps ? FRAGMENTS : kWarps;
  static constexpr int kPerWarp = FRAGMENTS / kWarpsUsed;
  static_assert(FRAGMENTS % kWarpsUsed == 0, "fragments must split evenly over the warps");
  __device__ static bool owns(int warp) { return warp < kWarpsUsed; }
  __device__ static int fragment(int warp, int j) { return warp + j * kWarpsUsed; }
};

// threadIdx.x, read anew at every use: a volatile read cannot be hoisted, so neither can the per-thread
// index arithmetic built on it. Hoisted out of the kernel's time loop, that arithmetic had to stay alive
// across the division slow-path call of every step's LIF epilogue, and ptxas spilled it (see the kernel).
__device__ __forceinline__ int thread_rank() {
  int rank;
  asm volatile("mov.u32 %0, %%tid.x;" : "=r"(rank));
  return rank;
}

template <int D_PAD>
__device__ void output_at(int e, bool tokens_contiguous, int& row, int& col) {
  if (tokens_contiguous) {
    row = e % kQueries;
    col = e / kQueries;
  } else {
    col = e % D_PAD;
    row = e / D_PAD;
  }
}

// What the LIF epilogue of one block and step writes to.
template <typename scalar_t>
struct StepOutput {
  scalar_t* out;
  int8_t* spikes;
  float* membrane;  // shared, [kQueries * D_PAD], indexed by e
  int64_t slice, row0;
  float scale;
};

// The LIF step of neuron/neuron_math.h (through spike_gate/spike_gate_math.h) on every output of the block, y_at(row, col) giving
// the exact integer product. Not unrolled: the neuron parameters are runtime values, and an unrolled
// loop would be unswitched into one copy per parameter combination and output.
template <int D_PAD, typename scalar_t, typename YAt>
__device__ void lif_epilogue(const SsaGeometry& g, const NeuronParams& p, const StepOutput<scalar_t>& o, YAt y_at) {
#pragma unroll 1
  for (int e = thread_rank(); e < kQueries * D_PAD; e += kThreads) {
    int row, col;
    output_at<D_PAD>(e, g.tokens_contiguous(), row, col);
    // Scaling the exact integer in float32 is what the reference does to its float32 matmul result,
    // so the spikes agree bit for bit.
    float h;
    const float s = lif_step<float>(static_cast<float>(y_at(row, col)) * o.scale, o.membrane[e], h, p);
    const int64_t token = o.row0 + row;
    if (token < g.N && col < g.d) {
      const int64_t at = o.slice + token * g.stride_n + col * g.stride_c;
      o.out[at] = static_cast<scalar_t>(s);
      o.spikes[at] = static_cast<int8_t>(s);
    }
  }
}

// Stages tokens [first, first + TOKENS) x channels [0, D_PAD) of one head slice as int8, zero outside
// N x d, handing each value to put(token, channel, value). Returns whether this thread saw a non-zero.
template <int TOKENS, int D_PAD, typename scalar_t, typename Put>
__device__ bool stage_int8(const scalar_t* __restrict__ head, int64_t first, const SsaGeometry& g, Put put) {
  bool nonzero = false;
  for (int e = thread_rank(); e < TOKENS * D_PAD; e += kThreads) {
    int n, c;
    if (g.tokens_contiguous()) {  // walk the contiguous axis with neighbouring threads
      n = e % TOKENS;
      c = e / TOKENS;
    } else {
      c = e % D_PAD;
      n = e / D_PAD;
    }
    const int64_t token = first + n;
    signed char value = 0;
    if (token < g.N && c < g.d) {
      value = static_cast<signed char>(static_cast<int>(static_cast<float>(head[token * g.stride_n + c * g.stride_c])));
    }
    put(n, c, value);
    nonzero |= value != 0;
  }
  return nonzero;
}

// Stages key tokens [first, first + TOKENS) of K and V (see stage_int8) and tells every thread whether
// both tiles hold a non-zero; when not, the tile adds nothing to any product and is skipped.
template <int TOKENS, int D_PAD, typename scalar_t, typename PutK, typename PutV>
__device__ bool stage_key_tile(const scalar_t* __restrict__ k, const scalar_t* __restrict__ v, int64_t first,
                               const SsaGeometry& g, PutK put_k, PutV put_v) {
  const bool k_nonzero = stage_int8<TOKENS, D_PAD>(k, first, g, put_k);
  const bool v_nonzero = stage_int8<TOKENS, D_PAD>(v, first, g, put_v);
  const int k_any = __syncthreads_or(k_nonzero);  // also the barrier after the shared-memory stores
  const int v_any = __syncthreads_or(v_nonzero);
  return k_any && v_any;
}

// One step in the order Q (K^T V), then the LIF epilogue.
template <int D_PAD, typename scalar_t>
__device__ void step_q_kv(const scalar_t* __restrict__ q, const scalar_t* __restrict__ k,
                          const scalar_t* __restrict__ v, const SsaGeometry& g, const NeuronParams& p,
                          const StepOutput<scalar_t>& o) {
  using KVTile = FragmentTile<D_PAD, kKeysKV>;  // (channel, token): K^T as matrix_a, V as matrix_b
  constexpr int kFragsPerSide = D_PAD / kFrag;
  using KVShare = FragmentShare<kFragsPerSide * kFragsPerSide>;
  // Read by CUDA cores with the output map of output_at: transposed when neighbouring threads own
  // neighbouring tokens, so a warp's reads fall into distinct banks (or broadcast).
  __shared__ __align__(128) signed char q_s[kQueries * D_PAD];
  __shared__ __align__(128) signed char kt_s[KVTile::kSize];
  __shared__ __align__(128) signed char vt_s[KVTile::kSize];
  __shared__ __align__(128) int32_t kv_s[D_PAD * D_PAD];

  __syncthreads();  // the previous step's readers of the shared tiles are done
  const bool transposed = g.tokens_contiguous();
  const auto q_index = [transposed](int n, int c) { return transposed ? c * kQueries + n : n * D_PAD + c; };
  const bool q_nonzero = stage_int8<kQueries, D_PAD>(q, o.row0, g, [&](int n, int c, signed char x) {
    q_s[q_index(n, c)] = x;
  });
  if (!__syncthreads_or(q_nonzero)) {  // Q = 0: y = 0 whatever K^T V is
    lif_epilogue<D_PAD>(g, p, o, [](int, int) { return 0; });
    return;
  }

  // K^T V accumulates in shared memory, each fragment loaded, advanced and stored back by the warp that
  // owns it: accumulators held in registers across the token loop were spilled by ptxas when only
  // some warps own fragments (d <= 32).
  for (int e = thread_rank(); e < D_PAD * D_PAD; e += kThreads) kv_s[e] = 0;
  const int warp = thread_rank() / 32;
  for (int64_t n0 = 0; n0 < g.N; n0 += kKeysKV) {
    __syncthreads();  // every warp is done with the previous K, V tiles (and kv_s is zeroed)
    const bool nonzero = stage_key_tile<kKeysKV, D_PAD>(
        k, v, n0, g, [&](int n, int c, signed char x) { kt_s[KVTile::index(c, n)] = x; },
        [&](int n, int c, signed char x) { vt_s[KVTile::index(c, n)] = x; });
    if (!nonzero || !KVShare::owns(warp)) continue;
#pragma unroll
    for (int j = 0; j < KVShare::kPerWarp; ++j) {
      const int f = KVShare::fragment(warp, j);
      const int row0_kv = (f / kFragsPerSide) * kFrag, col0_kv = (f % kFragsPerSide) * kFrag;
      wmma::fragment<wmma::matrix_a, kFrag, kFrag, kFrag, signed char, wmma::row_major> kt;
      wmma::fragment<wmma::matrix_b, kFrag, kFrag, kFrag, signed char, wmma::col_major> vv;
      wmma::fragment<wmma::accumulator, kFrag, kFrag, kFrag, int> kv;
      int32_t* const kv_at = kv_s + row0_kv * D_PAD + col0_kv;
      wmma::load_matrix_sync(kv, kv_at, D_PAD, wmma::mem_row_major);
      wmma::load_matrix_sync(kt, KVTile::fragment(kt_s, row0_kv, 0), kFrag);
      wmma::load_matrix_sync(vv, KVTile::fragment(vt_s, col0_kv, 0), kFrag);
      wmma::mma_sync(kv, kt, vv, kv);
      wmma::store_matrix_sync(kv_at, kv, D_PAD, wmma::mem_row_major);
    }
  }
  __syncthreads();
  // K^T V entries reach N * bound^2, beyond int8: this product runs on CUDA cores in int32.
  lif_epilogue<D_PAD>(g, p, o, [&](int row, int col) {
    int32_t sum = 0;
#pragma unroll 16
    for (int c = 0; c < D_PAD; ++c) sum += static_cast<int32_t>(q_s[q_index(row, c)]) * kv_s[c * D_PAD + col];
    return sum;
  });
}

// One step in the order (Q K^T) V, one score tile at a time, then the LIF epilogue.
template <int D_PAD, typename scalar_t>
__device__ void step_qk_v(const scalar_t* __restrict__ q, const scalar_t* __restrict__ k,
                          const scalar_t* __restrict__ v, const SsaGeometry& g, const NeuronParams& p,
                          const StepOutput<scalar_t>& o) {
  using QTile = FragmentTile<kQueries, D_PAD>;      // (query, channel): matrix_a of the scores
  using KTile = FragmentTile<kKeysScores, D_PAD>;   // (key, channel): K^T as matrix_b
  using VTile = FragmentTile<D_PAD, kKeysScores>;   // (channel, key): V as matrix_b
  using STile = FragmentTile<kQueries, kKeysScores>;  // (query, key): scores as matrix_a
  constexpr int kScoreCols = kKeysScores / kFrag;
  constexpr int kScoreFrags = (kQueries / kFrag) * kScoreCols;
  using ScoreShare = FragmentShare<kScoreFrags>;
  constexpr int kOutCols = D_PAD / kFrag;
  constexpr int kOutFrags = (kQueries / kFrag) * kOutCols;
  using OutShare = FragmentShare<kOutFrags>;
  __shared__ __align__(128) signed char q_s[QTile::kSize];
  __shared__ __align__(128) signed char k_s[KTile::kSize];
  __shared__ __align__(128) signed char vt_s[VTile::kSize];
  // Row-major int32 scores inside the key loop, then the row-major int32 y after it: one buffer.
  constexpr int kInt32Buffer = kKeysScores > D_PAD ? kKeysScores : D_PAD;
  __shared__ __align__(128) int32_t int32_s[kQueries * kInt32Buffer];
  int32_t* const scores_s = int32_s;
  int32_t* const y_s = int32_s;
  __shared__ __align__(128) signed char scores8_s[STile::kSize];

  __syncthreads();  // the previous step's readers of the shared tiles are done
  const bool q_nonzero = stage_int8<kQueries, D_PAD>(q, o.row0, g, [&](int n, int c, signed char x) {
    q_s[QTile::index(n, c)] = x;
  });
  if (!__syncthreads_or(q_nonzero)) {  // Q = 0: every score, hence y, is 0
    lif_epilogue<D_PAD>(g, p, o, [](int, int) { return 0; });
    return;
  }

  const int warp = thread_rank() / 32;
  wmma::fragment<wmma::accumulator, kFrag, kFrag, kFrag, int> out[OutShare::kPerWarp];
#pragma unroll
  for (int j = 0; j < OutShare::kPerWarp; ++j) wmma::fill_fragment(out[j], 0);
  for (int64_t n0 = 0; n0 < g.N; n0 += kKeysScores) {
    __syncthreads();  // every warp is done with the previous K, V and score tiles
    const bool nonzero = stage_key_tile<kKeysScores, D_PAD>(
        k, v, n0, g, [&](int n, int c, signed char x) { k_s[KTile::index(n, c)] = x; },
        [&](int n, int c, signed char x) { vt_s[VTile::index(c, n)] = x; });
    if (!nonzero) continue;

#pragma unroll
    for (int j = 0; j < ScoreShare::kPerWarp && ScoreShare::owns(warp); ++j) {
      const int f = ScoreShare::fragment(warp, j);
      const int query0 = (f / kScoreCols) * kFrag, key0 = (f % kScoreCols) * kFrag;
      wmma::fragment<wmma::accumulator, kFrag, kFrag, kFrag, int> scores;
      wmma::fill_fragment(scores, 0);
#pragma unroll
      for (int c0 = 0; c0 < D_PAD; c0 += kFrag) {
        wmma::fragment<wmma::matrix_a, kFrag, kFrag, kFrag, signed char, wmma::row_major> qq;
        wmma::fragment<wmma::matrix_b, kFrag, kFrag, kFrag, signed char, wmma::col_major> kt;
        wmma::load_matrix_sync(qq, QTile::fragment(q_s, query0, c0), kFrag);
        wmma::load_matrix_sync(kt, KTile::fragment(k_s, key0, c0), kFrag);
        wmma::mma_sync(scores, qq, kt, scores);
      }
      wmma::store_matrix_sync(scores_s + query0 * kKeysScores + key0, scores, kKeysScores, wmma::mem_row_major);
    }
    __syncthreads();
    for (int e = thread_rank(); e < kQueries * kKeysScores; e += kThreads) {
      // |score| <= d * bound^2 <= 127, checked by the launcher: the narrowing is exact.
      scores8_s[STile::index(e / kKeysScores, e % kKeysScores)] = static_cast<signed char>(scores_s[e]);
    }
    __syncthreads();
#pragma unroll
    for (int j = 0; j < OutShare::kPerWarp && OutShare::owns(warp); ++j) {
      const int f = OutShare::fragment(warp, j);
      const int query0 = (f / kOutCols) * kFrag, col0 = (f % kOutCols) * kFrag;
#pragma unroll
      for (int key0 = 0; key0 < kKeysScores; key0 += kFrag) {
        wmma::fragment<wmma::matrix_a, kFrag, kFrag, kFrag, signed char, wmma::row_major> ss;
        wmma::fragment<wmma::matrix_b, kFrag, kFrag, kFrag, signed char, wmma::col_major> vv;
        wmma::load_matrix_sync(ss, STile::fragment(scores8_s, query0, key0), kFrag);
        wmma::load_matrix_sync(vv, VTile::fragment(vt_s, col0, key0), kFrag);
        wmma::mma_sync(out[j], ss, vv, out[j]);
      }
    }
  }
#pragma unroll
  for (int j = 0; j < OutShare::kPerWarp && OutShare::owns(warp); ++j) {
    const int f = OutShare::fragment(warp, j);
    const int query0 = (f / kOutCols) * kFrag, col0 = (f % kOutCols) * kFrag;
    wmma::store_matrix_sync(y_s + query0 * D_PAD + col0, out[j], D_PAD, wmma::mem_row_major);
  }
  __syncthreads();
  lif_epilogue<D_PAD>(g, p, o, [&](int row, int col) { return y_s[row * D_PAD + col]; });
}

template <typename scalar_t, int D_PAD, bool Q_KV>
__global__ void __launch_bounds__(kThreads)
    ssa_forward_kernel(const scalar_t* __restrict__ q, const scalar_t* __restrict__ k, const scalar_t* __restrict__ v,
                       scalar_t* __restrict__ out, int8_t* __restrict__ spikes, SsaGeometry g, float scale,
                       NeuronParams p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 720
  __trap();  // int8 WMMA needs sm_72+; the launcher refuses older devices before launching
#else
  __shared__ float membrane_s[kQueries * D_PAD];
  const uint32_t query_tiles = g.query_tiles;
  StepOutput<scalar_t> o{out, spikes, membrane_s, 0, static_cast<int64_t>(blockIdx.x % query_tiles) * kQueries, scale};
  // Each thread only ever touches its own membranes: no barrier needed around them.
  for (int e = thread_rank(); e < kQueries * D_PAD; e += kThreads) membrane_s[e] = resting_potential<float>(p);
  // The time loop advances o.slice by a stride up to an end that the host computed: both are kernel
  // parameters, read from the constant bank where used, so the loop keeps no state of its own. Why: each
  // step's LIF epilogue calls the IEEE float32 division slow path (neuron_math.h's `/ tau` and `/ theta`, exact
  // for bit-identical spikes), and ptxas spilled to local memory the loop state that had to survive that
  // call: a step counter, its exit predicate, the head index, a stride computed here (4-24 bytes per
  // kernel). thread_rank() keeps per-thread index arithmetic out of that state likewise.
  for (o.slice = (blockIdx.x / query_tiles) * g.N * g.d; o.slice < g.numel; o.slice += g.step_stride) {
    if constexpr (Q_KV) {
      step_q_kv<D_PAD>(q + o.slice, k + o.slice, v + o.slice, g, p, o);
    } else {
      step_qk_v<D_PAD>(q + o.slice, k + o.slice, v + o.slice, g, p, o);
    }
  }
#endif
}

template <typename scalar_t, int D_PAD, bool Q_KV>
void launch(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& out,
            const at::Tensor& spikes, const SsaGeometry& g, float scale, const NeuronParams& p) {
  const int64_t blocks = static_cast<int64_t>(g.query_tiles) * g.BH;
  TORCH_CHECK(blocks <= std::numeric_limits<int32_t>::max(), "spikeops: ssa_forward: ", blocks,
              " blocks exceed the CUDA grid limit");
  ssa_forward_kernel<scalar_t, D_PAD, Q_KV><<<static_cast<unsigned>(blocks), kThreads, 0,
                                               at::cuda::getCurrentCUDAStream()>>>(
      q.data_ptr<scalar_t>(), k.data_ptr<scalar_t>(), v.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(),
      spikes.data_ptr<int8_t>(), g, scale, p);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename scalar_t, bool Q_KV>
void launch_for_head_dim(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& out,
                         const at::Tensor& spikes, const SsaGeometry& g, float scale, const NeuronParams& p) {
  if (g.d <= 16) {
    launch<scalar_t, 16, Q_KV>(q, k, v, out, spikes, g, scale, p);
  } else if (g.d <= 32) {
    launch<scalar_t, 32, Q_KV>(q, k, v, out, spikes, g, scale, p);
  } else {
    launch<scalar_t, 64, Q_KV>(q, k, v, out, spikes, g, scale, p);
  }
}

template <typename scalar_t>
void launch_for_dtype(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& out,
                      const at::Tensor& spikes, const SsaGeometry& g, float scale, const NeuronParams& p,
                      bool order_q_kv) {
  if (order_q_kv) {
    launch_for_head_dim<scalar_t, true>(q, k, v, out, spikes, g, scale, p);
  } else {
    launch_for_head_dim<scalar_t, false>(q, k, v, out, spikes, g, scale, p);
  }
}

// The checks mirror spikeops/ops/attention/ssa.py::fused_cuda_order, which routes every other case to ATen.
SsaGeometry check_ssa_inputs(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                             c10::ArrayRef<int64_t> shape, bool order_q_kv, int64_t bound) {
  TORCH_CHECK(q.is_cuda() && q.is_contiguous(), "spikeops: ssa_forward: q must be a contiguous CUDA tensor");
  for (const auto& [name, x] : {std::pair<const char*, const at::Tensor&>{"k", k}, {"v", v}}) {
    TORCH_CHECK(x.sizes() == q.sizes() && x.scalar_type() == q.scalar_type() && x.device() == q.device() &&
                    x.is_contiguous(),
                "spikeops: ssa_forward: ", name, " must be contiguous and match q's shape ", q.sizes(), ", dtype ",
                q.scalar_type(), " and device ", q.device(), "; got ", x.sizes(), " ", x.scalar_type(), " on ",
                x.device());
  }
  const auto dtype = q.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kHalf || dtype == at::kBFloat16,
              "spikeops: ssa_forward: q must be float32, float16 or bfloat16 (float64 takes the ATen path), got ", dtype);
  TORCH_CHECK(shape.size() == 6, "spikeops: ssa_forward: shape must be (T, B, heads, N, d, heads_split), got ",
              shape.size(), " fields");
  const int64_t T = shape[0], B = shape[1], heads = shape[2], N = shape[3], d = shape[4];
  const bool heads_split = shape[5] != 0;
  int64_t elements = 1;
  bool overflow = false;
  for (const int64_t size : {T, B, heads, N, d}) overflow = overflow || size < 0 || c10::mul_overflows(elements, size, &elements);
  TORCH_CHECK(T >= 1 && B >= 0 && heads >= 1 && N >= 0 && d >= 1 && !overflow && q.numel() == elements &&
                  (shape[5] == 0 || shape[5] == 1),
              "spikeops: ssa_forward: shape: expected (T >= 1, B, heads >= 1, N, d >= 1, heads_split 0 or 1) with "
              "T*B*heads*N*d = the ", q.numel(), " elements of q (shape ", q.sizes(), "), got ", shape);
  TORCH_CHECK(d <= kMaxHeadDim, "spikeops: ssa_forward: head dim d must be <= ", kMaxHeadDim, ", got ", d);
  TORCH_CHECK(bound >= 0 && bound <= kInt8Max, "spikeops: ssa_forward: integer_bound must be in [0, ", kInt8Max,
              "], got ", bound);
  // |y| <= d * N * bound^3: every int32 partial sum of either order stays below it.
  TORCH_CHECK(d * N * bound * bound * bound <= std::numeric_limits<int32_t>::max(),
              "spikeops: ssa_forward: d * N * integer_bound^3 = ", d * N * bound * bound * bound,
              " could overflow the int32 accumulators");
  TORCH_CHECK(order_q_kv || d * bound * bound <= kInt8Max, "spikeops: ssa_forward: order (Q K^T) V needs scores "
              "d * integer_bound^2 <= 127 to fit int8, got ", d * bound * bound, "; use order Q (K^T V)");
  const int64_t BH = B * heads;
  const int64_t query_tiles = (N + kQueries - 1) / kQueries;
  TORCH_CHECK(query_tiles <= std::numeric_limits<uint32_t>::max(), "spikeops: ssa_forward: N = ", N,
              " gives more query tiles than 32-bit block arithmetic holds");
  return SsaGeometry{BH, N, d, heads_split ? d : 1, heads_split ? 1 : N, BH * N * d, T * BH * N * d,
                     static_cast<uint32_t>(query_tiles)};
}

std::tuple<at::Tensor, at::Tensor> ssa_forward_cuda(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                    c10::IntArrayRef shape, c10::ArrayRef<double> cfg, double scale,
                                                    bool order_q_kv, int64_t integer_bound) {
  const SsaGeometry g = check_ssa_inputs(q, k, v, shape, order_q_kv, integer_bound);
  const NeuronParams p = attention_params(cfg, q);
  const at::cuda::CUDAGuard guard(q.device());
  const cudaDeviceProp* props = at::cuda::getCurrentDeviceProperties();
  TORCH_CHECK(props->major * 10 + props->minor >= 72, "spikeops: ssa_forward needs int8 tensor cores (sm_72 or "
              "newer), got sm_", props->major, props->minor);
  at::Tensor out = at::empty_like(q);
  at::Tensor spikes = at::empty(q.sizes(), q.options().dtype(at::kChar));
  if (q.numel() == 0) return {out, spikes};
  const float scale_f = static_cast<float>(scale);
  switch (q.scalar_type()) {
    case at::kHalf:
      launch_for_dtype<at::Half>(q, k, v, out, spikes, g, scale_f, p, order_q_kv);
      break;
    case at::kBFloat16:
      launch_for_dtype<at::BFloat16>(q, k, v, out, spikes, g, scale_f, p, order_q_kv);
      break;
    default:
      launch_for_dtype<float>(q, k, v, out, spikes, g, scale_f, p, order_q_kv);
  }
  return {out, spikes};
}

}  // namespace
}  // namespace spikeops

TORCH_LIBRARY_IMPL(spikeops, CUDA, m) { m.impl("ssa_forward", &spikeops::ssa_forward_cuda); }

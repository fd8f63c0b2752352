// The single definition of the spiking-neuron math (charge, fire, reset, surrogate gradient and
// their derivatives). Both neuron_cpu.cpp and neuron_cuda.cu include this header, so the CPU test
// suite exercises exactly the arithmetic the CUDA kernels run. The Triton twin of this file is
// kernels/neuron_math.py; tests/test_surrogate_table.py keeps the two tables in step.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "common/host_device.h"

namespace spikeops {

using std::exp;
using std::floor;
using std::nearbyint;

#if !defined(__CUDA_ARCH__)
// e^x for float on the host without a libm call, so that gcc can vectorise the loops that use it
// (libm's expf is an opaque call). Cephes' expf: x = n ln2 + r with |r| <= ln2/2, e^r by a degree-7
// polynomial, 2^n built from exponent bits. Branch-free; within 2 ulp of the correctly rounded
// result; NaN stays NaN, +Inf and x > ln(FLT_MAX) give +Inf, -Inf and deep underflow give 0, and
// results in the subnormal range are rounded once (2^n is applied as two normal halves).
inline float exp_vectorizable(float x) {
  // Clamping keeps n inside int range; a NaN fails both compares and passes through unchanged.
  x = x > 89.0f ? 89.0f : x;
  x = x < -104.0f ? -104.0f : x;
  // Round x/ln2 to the nearest integer by adding 1.5 * 2^23: the sum's low mantissa bits are n.
  constexpr float kRoundMagic = 12582912.0f;
  const float shifted = x * 1.44269504088896341f + kRoundMagic;
  const float nf = shifted - kRoundMagic;
  int32_t shifted_bits;
  std::memcpy(&shifted_bits, &shifted, sizeof shifted_bits);
  int32_t magic_bits;
  std::memcpy(&magic_bits, &kRoundMagic, sizeof magic_bits);
  const int32_t n = shifted_bits - magic_bits;
  // ln2 split in two (Cephes C1 + C2) so n * C1 is exact and r keeps full precision without FMA.
  const float r = (x - nf * 0.693359375f) - nf * -2.12194440e-4f;
  float poly = 1.9875691500e-4f;
  poly = poly * r + 1.3981999507e-3f;
  poly = poly * r + 8.3334519073e-3f;
  poly = poly * r + 4.1665795894e-2f;
  poly = poly * r + 1.6666665459e-1f;
  poly = poly * r + 5.0000001201e-1f;
  const float e_r = poly * (r * r) + r + 1.0f;
  // n lies in [-150, 128]; 2^n = 2^half * 2^(n - half) keeps both factors normal floats.
  const int32_t half = n >> 1;
  const int32_t scale_lo_bits = (half + 127) << 23, scale_hi_bits = (n - half + 127) << 23;
  float scale_lo, scale_hi;
  std::memcpy(&scale_lo, &scale_lo_bits, sizeof scale_lo);
  std::memcpy(&scale_hi, &scale_hi_bits, sizeof scale_hi);
  return e_r * scale_lo * scale_hi;
}
#endif

// The exp of the surrogate formulas: exp_vectorizable for float on the host, libm/CUDA exp otherwise
// (double keeps the correctly rounded libm result that gradcheck-level tests compare against).
template <typename acc_t>
SPIKEOPS_HD acc_t surrogate_exp(acc_t x) {
#if defined(__CUDA_ARCH__)
  return exp(x);
#else
  if constexpr (std::is_same<acc_t, float>::value) {
    return exp_vectorizable(x);
  } else {
    return exp(x);
  }
#endif
}

// Order must match spikeops/surrogate.py::SURROGATES (checked by a test through surrogate_names()).
enum class Surrogate : int32_t {
  Sigmoid = 0,
  ATan = 1,
  PiecewiseQuadratic = 2,
  PiecewiseExp = 3,
  SoftSign = 4,
  SuperSpike = 5,
  Erf = 6,
  Rect = 7,
};
constexpr int kNumSurrogates = 8;
constexpr const char* kSurrogateNames[kNumSurrogates] = {
    "Sigmoid", "ATan", "PiecewiseQuadratic", "PiecewiseExp", "SoftSign", "SuperSpike", "Erf", "Rect"};

// How a neuron turns its charged membrane H into a spike value S.
enum class FireMode : int32_t {
  Binary = 0,   // S = 1[H >= theta]                         (IF, LIF, PLIF)
  Bipolar = 1,  // S = +1[H >= theta] - 1[H <= -theta]       (ternary spikes)
  Integer = 2,  // S = clamp(round(H / theta), 0, levels)    (IE-LIF multi-bit spikes)
};

// How the membrane charges; an integer so that a kernel can pin it at compile time.
enum class ChargeKind : int32_t {
  Integrate = 0,     // IF:   H = V + X
  DivideByTau = 1,   // LIF:  ... / tau, as SpikingJelly computes it
  MultiplyLeak = 2,  // PLIF: ... * leak, leak = sigmoid(w) learnable
};

// Everything a kernel needs besides the tensors. Plain old data so it can be passed by value to a
// CUDA kernel. `leak` is 1/tau (0 for IF); `charge_kind` says whether the charge divides by tau (LIF, as
// SpikingJelly computes it, so float32 results match bit for bit) or multiplies by leak (PLIF).
struct NeuronParams {
  int32_t charge_kind;  // ChargeKind, derived from leak/tau by params_from_config
  double leak;
  double tau;
  int32_t decay_input;  // the input is scaled by 1/tau too
  double v_threshold;
  double v_reset;       // only read when hard_reset
  int32_t hard_reset;   // 0: soft reset V = H - S*theta
  int32_t detach_reset;
  int32_t surrogate;
  double alpha;
  int32_t fire_mode;
  int32_t levels;       // Integer mode: largest spike value D
  int32_t round_half_even;
};

template <typename acc_t>
SPIKEOPS_HD acc_t charge(acc_t v, acc_t x, const NeuronParams& p) {
  const auto kind = static_cast<ChargeKind>(p.charge_kind);
  if (kind == ChargeKind::Integrate) return v + x;
  const acc_t rest = p.hard_reset ? static_cast<acc_t>(p.v_reset) : acc_t(0);
  const acc_t pull = p.decay_input ? x - (v - rest) : v - rest;
  const acc_t step = kind == ChargeKind::DivideByTau ? pull / static_cast<acc_t>(p.tau) : pull * static_cast<acc_t>(p.leak);
  return p.decay_input ? v + step : v - step + x;
}

template <typename acc_t>
SPIKEOPS_HD acc_t round_to_level(acc_t y, int32_t half_even) {
  if (half_even) return nearbyint(y);  // default FE_TONEAREST is half-to-even
  return floor(y + acc_t(0.5));
}

template <typename acc_t>
SPIKEOPS_HD acc_t fire(acc_t h, const NeuronParams& p) {
  const acc_t theta = static_cast<acc_t>(p.v_threshold);
  switch (static_cast<FireMode>(p.fire_mode)) {
    case FireMode::Bipolar:
      return (h - theta >= acc_t(0)) ? acc_t(1) : ((-h - theta >= acc_t(0)) ? acc_t(-1) : acc_t(0));
    case FireMode::Integer: {
      acc_t level = round_to_level<acc_t>(h / theta, p.round_half_even);
      level = level > acc_t(0) ? level : acc_t(0);  // NaN never spikes; -0 (round of a small negative H) is +0
      const acc_t top = static_cast<acc_t>(p.levels);
      return level > top ? top : level;
    }
    default:
      return (h - theta >= acc_t(0)) ? acc_t(1) : acc_t(0);
  }
}

// A NaN membrane compares false everywhere: it never spikes and stays NaN through the reset.
template <typename acc_t>
SPIKEOPS_HD acc_t reset(acc_t h, acc_t s, const NeuronParams& p) {
  const acc_t theta = static_cast<acc_t>(p.v_threshold);
  if (!p.hard_reset) return h - s * theta;
  const acc_t fired = s < acc_t(0) ? -s : s;  // bipolar spikes reset on either sign
  return static_cast<acc_t>(p.v_reset) * fired + (acc_t(1) - fired) * h;
}

// d(spike)/d(x) of the surrogate at x = H - theta. Formulas and alpha meaning as SpikingJelly's.
template <typename acc_t>
SPIKEOPS_HD acc_t surrogate_grad(acc_t x, int32_t kind, acc_t alpha) {
  const acc_t ax = x < acc_t(0) ? -x : x;
  switch (static_cast<Surrogate>(kind)) {
    case Surrogate::Sigmoid: {
      const acc_t sg = acc_t(1) / (acc_t(1) + surrogate_exp<acc_t>(-alpha * x));
      return (acc_t(1) - sg) * sg * alpha;
    }
    case Surrogate::ATan: {
      const acc_t z = acc_t(M_PI / 2) * alpha * x;
      return alpha / acc_t(2) / (acc_t(1) + z * z);
    }
    case Surrogate::PiecewiseQuadratic:
      return ax > acc_t(1) / alpha ? acc_t(0) : alpha - alpha * alpha * ax;
    case Surrogate::PiecewiseExp:
      return alpha / acc_t(2) * surrogate_exp<acc_t>(-alpha * ax);
    case Surrogate::SoftSign: {
      const acc_t z = acc_t(1) / alpha + ax;
      return acc_t(1) / (acc_t(2) * alpha * z * z);
    }
    case Surrogate::SuperSpike: {
      const acc_t z = ax + acc_t(1);
      return alpha / (z * z);
    }
    case Surrogate::Erf: {
      const acc_t z = alpha * x;
      return surrogate_exp<acc_t>(-z * z) * (alpha / acc_t(1.7724538509055159));  // sqrt(pi)
    }
    case Surrogate::Rect:
      return ax < acc_t(0.5) / alpha ? alpha : acc_t(0);
  }
  return acc_t(0);
}

// dS/dH: the surrogate for binary spikes, its mirror on |H| for bipolar ones, and the
// straight-through estimator (slope 1/theta inside [0, levels*theta]) for integer spikes.
template <typename acc_t>
SPIKEOPS_HD acc_t spike_grad(acc_t h, const NeuronParams& p) {
  const acc_t theta = static_cast<acc_t>(p.v_threshold);
  const acc_t alpha = static_cast<acc_t>(p.alpha);
  switch (static_cast<FireMode>(p.fire_mode)) {
    case FireMode::Bipolar: {
      const acc_t ah = h < acc_t(0) ? -h : h;
      return surrogate_grad<acc_t>(ah - theta, p.surrogate, alpha);
    }
    case FireMode::Integer:
      return (h >= acc_t(0) && h <= theta * static_cast<acc_t>(p.levels)) ? acc_t(1) / theta
                                                                          : acc_t(0);
    default:
      return surrogate_grad<acc_t>(h - theta, p.surrogate, alpha);
  }
}

// dV/dH of the reset, given the spike and dS/dH. A detached reset treats S as a constant.
template <typename acc_t>
SPIKEOPS_HD acc_t reset_grad(acc_t h, acc_t s, acc_t ds_dh, const NeuronParams& p) {
  const acc_t through_spike = p.detach_reset ? acc_t(0) : ds_dh;
  if (!p.hard_reset) return acc_t(1) - static_cast<acc_t>(p.v_threshold) * through_spike;
  const acc_t fired = s < acc_t(0) ? -s : s;
  // A detached S is a constant: drop the (v_reset - H) dS/dH term rather than multiply it by 0, which
  // is NaN at H = +-Inf where the reference (and SpikingJelly) give dV/dH = 1 - S.
  if (p.detach_reset) return acc_t(1) - fired;
  // |S| of a bipolar spike rises with |H|, so its slope carries the sign of H.
  const bool mirrored = static_cast<FireMode>(p.fire_mode) == FireMode::Bipolar && h < acc_t(0);
  const acc_t dfired = mirrored ? -through_spike : through_spike;
  return (acc_t(1) - fired) + (static_cast<acc_t>(p.v_reset) - h) * dfired;
}

// dH/dV[t-1] and dH/dX[t]: constants of the charge equation.
template <typename acc_t>
SPIKEOPS_HD acc_t charge_grad_v(const NeuronParams& p) {
  return acc_t(1) - static_cast<acc_t>(p.leak);
}

template <typename acc_t>
SPIKEOPS_HD acc_t charge_grad_x(const NeuronParams& p) {
  const bool scaled = static_cast<ChargeKind>(p.charge_kind) != ChargeKind::Integrate && p.decay_input;
  return scaled ? static_cast<acc_t>(p.leak) : acc_t(1);
}

// dH/d(leak) for PLIF's learnable 1/tau: H = V + (X - (V - rest)) k  or  V - (V - rest) k + X.
template <typename acc_t>
SPIKEOPS_HD acc_t charge_grad_leak(acc_t v, acc_t x, const NeuronParams& p) {
  const acc_t rest = p.hard_reset ? static_cast<acc_t>(p.v_reset) : acc_t(0);
  return (p.decay_input ? x : acc_t(0)) - (v - rest);
}

}  // namespace spikeops

// The single definition of the spiking-neuron math (charge, fire, reset, surrogate gradient and
// their derivatives). Both neuron_cpu.cpp and neuron_cuda.cu include this header, so the CPU test
// suite exercises exactly the arithmetic the CUDA kernels run. The Triton twin of this file is
// kernels/neuron_math.py; tests/test_registration.py (surrogate ids) and tests/test_neuron.py (every
// surrogate on every backend) keep the tables in step with spikeops/surrogate.py.
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

// How the membrane charges: spikeops/ops/neuron/table.py::CHARGE_LAWS, same order and names (checked
// by a test through charge_law_names()).
enum class ChargeLaw : int32_t {
  Integrate = 0,     // IF:   H = V + X
  DivideByTau = 1,   // LIF:  H = V + (X - (V - v_rest)) / tau, as SpikingJelly computes it
  MultiplyLeak = 2,  // PLIF: the same with * leak, leak = sigmoid(w) learnable
  Quadratic = 3,     // QIF:  H = V + (X + a0 (V - v_rest)(V - v_c)) / tau
  Exponential = 4,   // EIF:  H = V + (X + v_rest - V + delta_T exp((V - theta_rh) / delta_T)) / tau
};
constexpr int kNumChargeLaws = 5;
constexpr const char* kChargeLawNames[kNumChargeLaws] = {"integrate", "divide_by_tau", "multiply_leak", "quadratic",
                                                         "exponential"};

// The neuron configuration, field by field in the order of spikeops/ops/neuron/config.py::NeuronConfig:
// the Python side sends it as a float list in this order, neuron_config_fields() exports these names and
// a test checks them against NeuronConfig. A charge law reads only the parameters its table entry lists.
#define SPIKEOPS_NEURON_CONFIG_FIELDS(FIELD) \
  FIELD(int32_t, charge_law)                 \
  FIELD(double, tau)                         \
  FIELD(int32_t, decay_input)                \
  FIELD(double, v_rest)                      \
  FIELD(double, v_c)                         \
  FIELD(double, a0)                          \
  FIELD(double, delta_T)                     \
  FIELD(double, theta_rh)                    \
  FIELD(int32_t, fire_mode)                  \
  FIELD(double, v_threshold)                 \
  FIELD(int32_t, levels)                     \
  FIELD(int32_t, round_half_even)            \
  FIELD(int32_t, hard_reset)                 \
  FIELD(double, v_reset)                     \
  FIELD(int32_t, detach_reset)               \
  FIELD(int32_t, surrogate)                  \
  FIELD(double, alpha)

// Everything a kernel needs besides the tensors; plain old data, passed by value to CUDA kernels.
struct NeuronParams {
#define SPIKEOPS_DECLARE_FIELD(type, name) type name;
  SPIKEOPS_NEURON_CONFIG_FIELDS(SPIKEOPS_DECLARE_FIELD)
#undef SPIKEOPS_DECLARE_FIELD
  double leak;  // 1/tau of DivideByTau, PLIF's learnable leak of MultiplyLeak, 0 otherwise; set on the host
};

// Laws whose dH/dV[t-1] depends on V: BPTT evaluates it per step from V[t-1].
SPIKEOPS_HD bool charge_grad_varies(int32_t law) {
  return law == static_cast<int32_t>(ChargeLaw::Quadratic) || law == static_cast<int32_t>(ChargeLaw::Exponential);
}

// The leaky laws (LIF, PLIF): V decays toward v_rest by 1/tau, divided as SpikingJelly computes it
// (DivideByTau) or multiplied by the learnable leak (MultiplyLeak). Attention neurons call it directly.
template <typename acc_t>
SPIKEOPS_HD acc_t leaky_charge(acc_t v, acc_t x, const NeuronParams& p) {
  const acc_t rest = static_cast<acc_t>(p.v_rest);
  const acc_t pull = p.decay_input ? x - (v - rest) : v - rest;
  const acc_t step = static_cast<ChargeLaw>(p.charge_law) == ChargeLaw::DivideByTau
                         ? pull / static_cast<acc_t>(p.tau)
                         : pull * static_cast<acc_t>(p.leak);
  return p.decay_input ? v + step : v - step + x;
}

// The exp of a charge law is libm's / CUDA's precise exp, not surrogate_exp: the charge decides spikes,
// which must match the reference, while the surrogate only shapes gradients.
template <typename acc_t>
SPIKEOPS_HD acc_t charge(acc_t v, acc_t x, const NeuronParams& p) {
  const acc_t tau = static_cast<acc_t>(p.tau), rest = static_cast<acc_t>(p.v_rest);
  switch (static_cast<ChargeLaw>(p.charge_law)) {
    case ChargeLaw::Integrate:
      return v + x;
    case ChargeLaw::Quadratic:
      return v + (x + static_cast<acc_t>(p.a0) * (v - rest) * (v - static_cast<acc_t>(p.v_c))) / tau;
    case ChargeLaw::Exponential: {
      const acc_t delta = static_cast<acc_t>(p.delta_T);
      return v + (x + rest - v + delta * exp((v - static_cast<acc_t>(p.theta_rh)) / delta)) / tau;
    }
    default:
      return leaky_charge<acc_t>(v, x, p);
  }
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

// dH/dV[t-1] at V[t-1] = v: a constant of the integrating and leaky laws, which ignore v.
template <typename acc_t>
SPIKEOPS_HD acc_t charge_grad_v(acc_t v, const NeuronParams& p) {
  const acc_t tau = static_cast<acc_t>(p.tau);
  switch (static_cast<ChargeLaw>(p.charge_law)) {
    case ChargeLaw::Quadratic: {
      const acc_t slope = (v - static_cast<acc_t>(p.v_rest)) + (v - static_cast<acc_t>(p.v_c));
      return acc_t(1) + static_cast<acc_t>(p.a0) * slope / tau;
    }
    case ChargeLaw::Exponential: {
      const acc_t delta = static_cast<acc_t>(p.delta_T);
      return acc_t(1) + (exp((v - static_cast<acc_t>(p.theta_rh)) / delta) - acc_t(1)) / tau;
    }
    default:
      return acc_t(1) - static_cast<acc_t>(p.leak);  // leak is 0 for Integrate
  }
}

// dH/dX[t]: a constant of every law.
template <typename acc_t>
SPIKEOPS_HD acc_t charge_grad_x(const NeuronParams& p) {
  switch (static_cast<ChargeLaw>(p.charge_law)) {
    case ChargeLaw::Integrate:
      return acc_t(1);
    case ChargeLaw::Quadratic:
    case ChargeLaw::Exponential:
      return acc_t(1) / static_cast<acc_t>(p.tau);
    default:
      return p.decay_input ? static_cast<acc_t>(p.leak) : acc_t(1);
  }
}

// dH/d(leak) for PLIF's learnable 1/tau: H = V + (X - (V - rest)) k  or  V - (V - rest) k + X.
template <typename acc_t>
SPIKEOPS_HD acc_t charge_grad_leak(acc_t v, acc_t x, const NeuronParams& p) {
  const acc_t rest = static_cast<acc_t>(p.v_rest);
  return (p.decay_input ? x : acc_t(0)) - (v - rest);
}

}  // namespace spikeops

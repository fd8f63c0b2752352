"""Triton twin of csrc/neuron/neuron_math.h: the charge, fire, reset and surrogate math, once, for every Triton
kernel. Ids (surrogate, fire mode) are spikeops/surrogate.py's table; tests check all backends agree.
All arguments are float32 blocks; flags are tl.constexpr so each configuration compiles branch-free.
"""
import triton
import triton.language as tl

FIRE_BINARY = tl.constexpr(0)
FIRE_BIPOLAR = tl.constexpr(1)
FIRE_INTEGER = tl.constexpr(2)

# Charge laws by id: spikeops/ops/neuron/table.py::CHARGE_LAWS, same order (a test checks the names).
CHARGE_LAW_NAMES = ("integrate", "divide_by_tau", "multiply_leak", "quadratic", "exponential")
INTEGRATE = tl.constexpr(0)
DIVIDE_BY_TAU = tl.constexpr(1)
MULTIPLY_LEAK = tl.constexpr(2)
QUADRATIC = tl.constexpr(3)
EXPONENTIAL = tl.constexpr(4)

# The charge laws' parameters travel to the kernels as one tuple of float32 scalars, ordered as named
# here; launchers build it by name from a NeuronConfig (law_params), and the laws read it by name.
LAW_PARAMS = ("tau", "v_rest", "v_c", "a0", "delta_T", "theta_rh")
TAU = tl.constexpr(LAW_PARAMS.index("tau"))
V_REST = tl.constexpr(LAW_PARAMS.index("v_rest"))
V_C = tl.constexpr(LAW_PARAMS.index("v_c"))
A0 = tl.constexpr(LAW_PARAMS.index("a0"))
DELTA_T = tl.constexpr(LAW_PARAMS.index("delta_T"))
THETA_RH = tl.constexpr(LAW_PARAMS.index("theta_rh"))


def law_params(cfg) -> tuple:
    """The LAW_PARAMS tuple of a NeuronConfig."""
    return tuple(float(getattr(cfg, name)) for name in LAW_PARAMS)


@triton.jit
def leaky_charge(v, x, leak, tau, v_rest, DECAY_INPUT: tl.constexpr, DIVIDE_BY_TAU: tl.constexpr):
    if DECAY_INPUT:
        pull = x - (v - v_rest)
    else:
        pull = v - v_rest
    if DIVIDE_BY_TAU:
        step = tl.math.div_rn(pull, tau)  # `/` is div.full.f32 (approximate) on NVIDIA; C++ divides exactly
    else:
        step = pull * leak
    if DECAY_INPUT:
        h = v + step
    else:
        h = v - step + x
    return h


@triton.jit
def charge(v, x, leak, params, LAW: tl.constexpr, DECAY_INPUT: tl.constexpr):
    """H from V[t-1] and X[t]; ``leak`` is 1/tau (the learnable one for MULTIPLY_LEAK)."""
    if LAW == INTEGRATE:
        h = v + x
    elif LAW == QUADRATIC:
        h = v + tl.math.div_rn(x + params[A0] * (v - params[V_REST]) * (v - params[V_C]), params[TAU])
    elif LAW == EXPONENTIAL:
        rise = params[DELTA_T] * tl.exp(tl.math.div_rn(v - params[THETA_RH], params[DELTA_T]))
        h = v + tl.math.div_rn(x + params[V_REST] - v + rise, params[TAU])
    else:
        h = leaky_charge(v, x, leak, params[TAU], params[V_REST], DECAY_INPUT, LAW == DIVIDE_BY_TAU)
    return h


@triton.jit
def charge_grad_v(v, leak, params, LAW: tl.constexpr):
    """dH/dV[t-1] at V[t-1] = v (a constant of the integrating and leaky laws)."""
    if LAW == QUADRATIC:
        g = 1.0 + tl.math.div_rn(params[A0] * ((v - params[V_REST]) + (v - params[V_C])), params[TAU])
    elif LAW == EXPONENTIAL:
        g = 1.0 + tl.math.div_rn(tl.exp(tl.math.div_rn(v - params[THETA_RH], params[DELTA_T])) - 1.0, params[TAU])
    elif LAW == INTEGRATE:
        g = 1.0
    else:
        g = 1.0 - leak
    return g


@triton.jit
def charge_grad_x(leak, params, LAW: tl.constexpr, DECAY_INPUT: tl.constexpr):
    """dH/dX[t], a constant of every law."""
    if LAW == INTEGRATE:
        g = 1.0
    elif LAW == QUADRATIC or LAW == EXPONENTIAL:
        g = tl.math.div_rn(1.0, params[TAU])
    elif DECAY_INPUT:
        g = leak
    else:
        g = 1.0
    return g


@triton.jit
def round_half_up_or_even(y, HALF_EVEN: tl.constexpr):
    r = tl.floor(y + 0.5)
    if HALF_EVEN:
        # floor(y + .5) rounds ties up; pull the odd results of exact ties back to the even neighbour.
        tie = (r - y) == 0.5
        odd = (r - 2.0 * tl.floor(r * 0.5)) != 0.0
        r = tl.where(tie & odd, r - 1.0, r)
    return r


@triton.jit
def fire(h, theta, levels, FIRE_MODE: tl.constexpr, HALF_EVEN: tl.constexpr):
    if FIRE_MODE == 1:
        s = tl.where(h - theta >= 0.0, 1.0, tl.where(-h - theta >= 0.0, -1.0, 0.0))
    elif FIRE_MODE == 2:
        level = round_half_up_or_even(tl.math.div_rn(h, theta), HALF_EVEN)  # exact, as in C++: ties decide levels
        s = tl.minimum(tl.maximum(level, 0.0), levels)
    else:
        s = tl.where(h - theta >= 0.0, 1.0, 0.0)
    return s


@triton.jit
def reset(h, s, theta, v_reset, HARD_RESET: tl.constexpr):
    if HARD_RESET:
        fired = tl.abs(s)
        v = v_reset * fired + (1.0 - fired) * h
    else:
        v = h - s * theta
    return v


@triton.jit
def surrogate_grad(x, alpha, SURROGATE: tl.constexpr):
    ax = tl.abs(x)
    if SURROGATE == 0:  # Sigmoid
        sg = 1.0 / (1.0 + tl.exp(-alpha * x))
        g = (1.0 - sg) * sg * alpha
    elif SURROGATE == 1:  # ATan
        z = 1.5707963267948966 * alpha * x
        g = alpha / 2.0 / (1.0 + z * z)
    elif SURROGATE == 2:  # PiecewiseQuadratic
        g = tl.where(ax > 1.0 / alpha, 0.0, alpha - alpha * alpha * ax)
    elif SURROGATE == 3:  # PiecewiseExp
        g = alpha / 2.0 * tl.exp(-alpha * ax)
    elif SURROGATE == 4:  # SoftSign
        z = 1.0 / alpha + ax
        g = 1.0 / (2.0 * alpha * z * z)
    elif SURROGATE == 5:  # SuperSpike
        z = ax + 1.0
        g = alpha / (z * z)
    elif SURROGATE == 6:  # Erf
        z = alpha * x
        g = tl.exp(-z * z) * (alpha / 1.7724538509055159)
    else:  # Rect
        g = tl.where(ax < 0.5 / alpha, alpha, 0.0)
    return g


@triton.jit
def spike_grad(h, theta, alpha, levels, SURROGATE: tl.constexpr, FIRE_MODE: tl.constexpr):
    if FIRE_MODE == 1:
        g = surrogate_grad(tl.abs(h) - theta, alpha, SURROGATE)
    elif FIRE_MODE == 2:
        g = tl.where((h >= 0.0) & (h <= theta * levels), 1.0 / theta, 0.0)
    else:
        g = surrogate_grad(h - theta, alpha, SURROGATE)
    return g


@triton.jit
def reset_grad(h, s, ds_dh, theta, v_reset, HARD_RESET: tl.constexpr, DETACH_RESET: tl.constexpr,
               FIRE_MODE: tl.constexpr):
    if DETACH_RESET:
        through = ds_dh * 0.0
    else:
        through = ds_dh
    if HARD_RESET:
        if DETACH_RESET:
            # S is a constant: no (v_reset - H) term, which would be 0 * Inf = NaN at H = +-Inf.
            g = 1.0 - tl.abs(s)
        else:
            if FIRE_MODE == 1:
                through = tl.where(h < 0.0, -through, through)
            g = (1.0 - tl.abs(s)) + (v_reset - h) * through
    else:
        g = 1.0 - theta * through
    return g


@triton.jit
def charge_grad_leak(v, x, v_rest, DECAY_INPUT: tl.constexpr):
    if DECAY_INPUT:
        g = x - (v - v_rest)
    else:
        g = -(v - v_rest)
    return g

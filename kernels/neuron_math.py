"""Triton twin of csrc/neuron.h: the charge, fire, reset and surrogate math, once, for every Triton
kernel. Ids (surrogate, fire mode) are spikeops/surrogate.py's table; tests check all backends agree.
All arguments are float32 blocks; flags are tl.constexpr so each configuration compiles branch-free.
"""
import triton
import triton.language as tl

FIRE_BINARY: tl.constexpr = 0
FIRE_BIPOLAR: tl.constexpr = 1
FIRE_INTEGER: tl.constexpr = 2


@triton.jit
def charge(v, x, leak, tau, v_rest, IS_IF: tl.constexpr, DECAY_INPUT: tl.constexpr, DIVIDE_BY_TAU: tl.constexpr):
    if IS_IF:
        h = v + x
    else:
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

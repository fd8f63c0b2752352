"""The neuron table: every neuron spikeops runs is one charge law, one fire mode and one reset, each a
named entry here with the named configuration fields it reads.

One step of a neuron, for every backend:

    H[t] = charge(V[t-1], X[t])          the charge law (below)
    S[t] = fire(H[t])                    binary 1[H >= theta], bipolar (ternary) or integer levels
    V[t] = reset(H[t], S[t])             hard: v_reset where S fires, H elsewhere; soft: H - S * theta

The kernels (csrc/neuron/neuron_math.h for CPU and CUDA, kernels/neuron_math.py for Triton) implement
the same entries under the same names: the C++ extension exports its law names and configuration
field names, and tests/test_neuron_table.py checks both against this file. Backward runs BPTT with
dH/dV[t-1] evaluated per step, so a law whose charge depends on V (QIF, EIF) needs nothing beyond its
entry and its three formulas (reference here, C++, Triton); laws with constant derivatives fold them
at compile time.

Adding a neuron: see "Adding a neuron" in the README.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import torch


class ChargeLaw(NamedTuple):
    name: str
    params: tuple[str, ...]             # configuration fields the law reads
    varying_grad_v: bool                # dH/dV[t-1] depends on V[t-1]
    reference: Callable                 # (v, x, cfg, leak) -> H, differentiable PyTorch
    learnable_leak: bool = False        # 1/tau arrives as a tensor (the leak argument), not a field


def _integrate(v, x, cfg, leak):
    return v + x


def _leaky(v, x, cfg, leak):
    # SpikingJelly's LIF: the membrane decays toward v_rest (its v_reset, or 0 with a soft reset);
    # with decay_input the input is scaled by 1/tau too. A fixed tau divides, a learnable one multiplies.
    pull = x - (v - cfg.v_rest) if cfg.decay_input else v - cfg.v_rest
    step = pull / cfg.tau if leak is None else pull * leak
    return v + step if cfg.decay_input else v - step + x


def _quadratic(v, x, cfg, leak):
    return v + (x + cfg.a0 * (v - cfg.v_rest) * (v - cfg.v_c)) / cfg.tau


def _exponential(v, x, cfg, leak):
    return v + (x + cfg.v_rest - v + cfg.delta_T * torch.exp((v - cfg.theta_rh) / cfg.delta_T)) / cfg.tau


# Ids are positions in this tuple; csrc/neuron/neuron_math.h's ChargeLaw enum follows the same order.
CHARGE_LAWS: tuple[ChargeLaw, ...] = (
    # IF: H = V + X
    ChargeLaw("integrate", (), False, _integrate),
    # LIF: H = V + (X - (V - v_rest)) / tau   (decay_input=False: H = V - (V - v_rest) / tau + X)
    ChargeLaw("divide_by_tau", ("tau", "decay_input", "v_rest"), False, _leaky),
    # PLIF: as LIF with 1/tau = sigmoid(w) learnable, multiplied rather than divided
    ChargeLaw("multiply_leak", ("decay_input", "v_rest"), False, _leaky, learnable_leak=True),
    # QIF: H = V + (X + a0 (V - v_rest)(V - v_c)) / tau
    ChargeLaw("quadratic", ("tau", "v_rest", "v_c", "a0"), True, _quadratic),
    # EIF: H = V + (X + v_rest - V + delta_T exp((V - theta_rh) / delta_T)) / tau
    ChargeLaw("exponential", ("tau", "v_rest", "delta_T", "theta_rh"), True, _exponential),
)
CHARGE_LAW_IDS = {law.name: i for i, law in enumerate(CHARGE_LAWS)}

# How H becomes a spike; ids are positions (neuron_math.h's FireMode enum).
FIRE_MODES: tuple[str, ...] = ("binary", "bipolar", "integer")
FIRE_BINARY, FIRE_BIPOLAR, FIRE_INTEGER = range(len(FIRE_MODES))


class NeuronKind(NamedTuple):
    """A ready-made neuron: a charge law with the constructor arguments and defaults of the SpikingJelly
    2.0 class it stands in for (``spikingjelly`` names that class; ``convert`` maps it)."""
    name: str
    charge_law: str
    defaults: dict                      # law parameters with their constructor defaults, in argument order
    v_reset: float | None               # the constructor's v_reset default
    spikingjelly: str | None


# Neurons whose module is generated from this table (spikeops.nn.neurons.table_neuron); LIF, IF, PLIF
# and the multi-bit neurons have hand-written modules for their extra behaviour (learnable tau, levels).
NEURON_KINDS: tuple[NeuronKind, ...] = (
    NeuronKind("QIF", "quadratic", {"tau": 2.0, "v_c": 0.8, "a0": 1.0}, -0.1, "QIFNode"),
    NeuronKind("EIF", "exponential", {"tau": 2.0, "delta_T": 1.0, "theta_rh": 0.8}, -0.1, "EIFNode"),
)

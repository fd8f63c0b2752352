"""Public entry points of the spiking-attention operators: validate, pick a backend, run.

Every function takes time-major ``[T, B, C, N]`` inputs with ``heads`` or ``[T, B, h, N, d]`` inputs,
returns spikes-times-input in the layout and dtype it was given, and takes the attention neuron's
LIF hyper-parameters as keywords (SpikingJelly LIFNode meaning; defaults are the official models':
tau=2, threshold 0.5, hard reset to 0, detached reset, Sigmoid(alpha=4) surrogate).
"""
from __future__ import annotations

import math

import torch

from ... import backends
from .._observe import observable
from ..neuron.config import config_from_surrogate
from . import naive
from .layout import CHANNEL, TOKEN, check_attention_inputs, geometry
from .spike_gate import spike_gate
from ..promises import promises_checked
from ..spike_pack import mark_gated_spikes, mark_neuron_spikes
from .ssa import check_binary_operands, pick_order, spiking_self_attention_fused

__all__ = ["qk_token_attention", "qk_channel_attention", "spike_driven_attention", "spiking_self_attention",
           "attention_config"]


def attention_config(tau: float = 2.0, v_threshold: float = 0.5, v_reset: float | None = 0.0,
                     detach_reset: bool = True, surrogate_function=None, decay_input: bool = True):
    """The NeuronConfig of an attention LIF (validated; raises ValueError naming the bad argument)."""
    return config_from_surrogate(surrogate_function, tau=tau, decay_input=decay_input, v_threshold=v_threshold,
                                 v_reset=v_reset, detach_reset=detach_reset)


def _gate(reduce, a, a2, gate, shape, cfg, backend, reference):
    backend = backends.resolve(backend, a.device)
    # An empty input has no attention neuron to run (and a zero-size geometry the kernels refuse): the
    # reference gives the empty result, differentiable, without a launch.
    if backend == "torch" or a.numel() == 0:
        out = reference()
    else:
        out, _ = spike_gate(a, a2, gate, geometry(shape, reduce), cfg, backend)
    # spikes times the gate: spikes of the gate's kind when it is, kept as bits by the projection after it
    return mark_gated_spikes(out, gate)


# Observable under stable names: a tool above (spikeops.energy's profiler) may register an observer to see
# the work the fused kernels do out of autograd's sight; these entry points know nothing of it.
@observable("qk_token_attention")
def qk_token_attention(q: torch.Tensor, k: torch.Tensor, heads: int | None = None, *, tau: float = 2.0,
                       v_threshold: float = 0.5, v_reset: float | None = 0.0, detach_reset: bool = True,
                       surrogate_function=None, backend: str = "auto") -> torch.Tensor:
    """QKFormer Q-K token attention: ``SN(sum of Q over each head's channels) * K``, one attention neuron
    per (head, token) and time step, fused with the LIF over T and the mask."""
    shape = check_attention_inputs({"q": q, "k": k}, heads)
    cfg = attention_config(tau, v_threshold, v_reset, detach_reset, surrogate_function)
    return _gate(TOKEN, q, None, k, shape, cfg, backend, lambda: naive.qk_token_attention(q, k, shape, cfg))


@observable("qk_channel_attention")
def qk_channel_attention(q: torch.Tensor, k: torch.Tensor, heads: int | None = None, *, tau: float = 2.0,
                         v_threshold: float = 0.5, v_reset: float | None = 0.0, detach_reset: bool = True,
                         surrogate_function=None, backend: str = "auto") -> torch.Tensor:
    """QKFormer Q-K channel attention: ``SN(sum of Q over tokens) * K``, one neuron per channel."""
    shape = check_attention_inputs({"q": q, "k": k}, heads)
    cfg = attention_config(tau, v_threshold, v_reset, detach_reset, surrogate_function)
    return _gate(CHANNEL, q, None, k, shape, cfg, backend, lambda: naive.qk_channel_attention(q, k, shape, cfg))


@observable("spike_driven_attention")
def spike_driven_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int | None = None, *,
                           form: str = "code", tau: float = 2.0, v_threshold: float = 0.5,
                           v_reset: float | None = 0.0, detach_reset: bool = True, surrogate_function=None,
                           backend: str = "auto") -> torch.Tensor:
    """Spike-driven Transformer v1 SDSA. ``form="code"`` (default, the official code):
    ``Q * SN(sum over tokens of K * V)``; ``form="paper"``: ``SN(sum over tokens of Q * K) * V``."""
    if form not in ("code", "paper"):
        raise ValueError(f"form: expected 'code' or 'paper', got {form!r}")
    shape = check_attention_inputs({"q": q, "k": k, "v": v}, heads)
    cfg = attention_config(tau, v_threshold, v_reset, detach_reset, surrogate_function)
    a, a2, gate = (k, v, q) if form == "code" else (q, k, v)
    return _gate(CHANNEL, a, a2, gate, shape, cfg, backend,
                 lambda: naive.spike_driven_attention(q, k, v, shape, cfg, form))


@observable("spiking_self_attention")
def spiking_self_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int | None = None, *,
                           scale: float = 0.125, order: str = "auto", spike_operands: bool | None = None,
                           tau: float = 2.0, v_threshold: float = 0.5, v_reset: float | None = 0.0,
                           detach_reset: bool = True, surrogate_function=None, backend: str = "auto") -> torch.Tensor:
    """Spikformer SSA / SDT-v2 attention ``SN(Q K^T V * scale)`` per head, the LIF over T fused in.

    ``order``: "q_kv" = Q (K^T V), "qk_v" = (Q K^T) V, "auto" = the cheaper (q_kv when d <= N); the
    result is the same. ``spike_operands``: True promises binary {0, 1} operands (the Triton kernel
    then uses int8 tensor-core products without checking), False forces real-valued arithmetic, None
    detects integer operands at the cost of one pass over the inputs. The True promise is verified (ValueError
    naming the operand) only in debug mode (``SPIKEOPS_CHECK_PROMISES=1``, ``spikeops.ops.promises``):
    broken, it gives backend-dependent results otherwise."""
    shape = check_attention_inputs({"q": q, "k": k, "v": v}, heads)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
        raise ValueError(f"scale: expected a number (finite: not ±inf or nan), got {scale!r}")
    if spike_operands is not None and not isinstance(spike_operands, bool):
        raise ValueError(f"spike_operands: expected True, False or None, got {spike_operands!r}")
    order_q_kv = pick_order(order, shape)
    cfg = attention_config(tau, v_threshold, v_reset, detach_reset, surrogate_function)
    backend = backends.resolve(backend, q.device)
    if spike_operands is True and promises_checked():  # debug mode: the same error on every backend
        check_binary_operands(q=q, k=k, v=v)
    if backend == "torch" or q.numel() == 0:  # empty: nothing to launch, as in _gate
        out = naive.spiking_self_attention(q, k, v, shape, cfg, scale, "q_kv" if order_q_kv else "qk_v")
    else:
        out = spiking_self_attention_fused(q, k, v, shape, cfg, float(scale), order, spike_operands, backend)
    return mark_neuron_spikes(out, cfg)  # the attention neuron's spikes

"""Energy counters for the spikeops attention operators (spikeops.ops.attention), registered here for the
operators' observable names with ``spikeops.energy.hooks.register_counter`` (importing spikeops.energy
registers them; the operators know nothing of energy). Each takes the operator's (args, kwargs, output)
and returns the ops its fused kernel performs, in the same terms as the automatic count of the pure-PyTorch reference:

  * Q-K token / channel attention: the sum of Q over a head's channels (or over tokens) is one
    accumulate per Q element; the mask A * K is a logical AND, not an accumulate.
  * SDSA (Spike-driven Transformer v1): the column sum of K * V (code form; Q * K in the paper form) is
    one accumulate per element; the element-wise products and the final mask are ANDs.
  * SSA: the two matrix products in the order the operator evaluates them (K^T V then Q (K^T V), or
    Q K^T then (Q K^T) V), each driven by its sparser spike-valued operand.
"""
from __future__ import annotations

import torch

from ..ops.attention.layout import check_attention_inputs
from ..ops.attention.ssa import pick_order
from .counting import count_matmul, count_reduction
from .hooks import register_counter

__all__ = ["qk_attention_counts", "sdsa_counts", "ssa_counts", "ATTENTION_COUNTERS"]


def _bound(args, kwargs, names):
    values = dict(zip(names, args))
    for name in names[len(args):]:
        if name in kwargs:
            values[name] = kwargs[name]
    return values


def _token_major_heads(x: torch.Tensor, heads: int | None) -> torch.Tensor:
    """[T, B, C, N] -> [T, B, h, N, d]; [T, B, h, N, d] stays."""
    if x.dim() == 5:
        return x
    T, B, C, N = x.shape
    return x.reshape(T, B, heads, C // heads, N).transpose(-1, -2)


def qk_attention_counts(args, kwargs, output):
    """qk_token_attention / qk_channel_attention(q, k, heads=None, ...)."""
    q = _bound(args, kwargs, ("q", "k"))["q"]
    return [count_reduction(q, label="q_sum")]


def sdsa_counts(args, kwargs, output):
    """spike_driven_attention(q, k, v, heads=None, *, form="code", ...)."""
    a = _bound(args, kwargs, ("q", "k", "v"))
    if kwargs.get("form", "code") == "code":
        return [count_reduction(a["k"] * a["v"], label="kv_sum")]
    return [count_reduction(a["q"] * a["k"], label="qk_sum")]


def ssa_counts(args, kwargs, output):
    """spiking_self_attention(q, k, v, heads=None, *, order="auto", ...)."""
    a = _bound(args, kwargs, ("q", "k", "v", "heads"))
    heads = a.get("heads")
    shape = check_attention_inputs({"q": a["q"], "k": a["k"], "v": a["v"]}, heads)
    q, k, v = (_token_major_heads(a[n].float(), shape.heads) for n in ("q", "k", "v"))
    kt = k.transpose(-1, -2)
    if pick_order(kwargs.get("order", "auto"), shape):
        kv = kt @ v
        return [count_matmul(kt, v, kv, label="kv"), count_matmul(q, kv, label="q_kv")]
    qk = q @ kt
    return [count_matmul(q, kt, qk, label="qk"), count_matmul(qk, v, label="qk_v")]


# Observable op name (spikeops.ops.attention's entry points) -> counter.
ATTENTION_COUNTERS = {
    "qk_token_attention": qk_attention_counts,
    "qk_channel_attention": qk_attention_counts,
    "spike_driven_attention": sdsa_counts,
    "spiking_self_attention": ssa_counts,
}
for _name, _counter in ATTENTION_COUNTERS.items():
    register_counter(_name, _counter)

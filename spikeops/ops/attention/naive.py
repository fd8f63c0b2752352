"""Pure-PyTorch references of the spiking-attention operators (formulas and the choices
behind them: docs/attention.md): the oracles every fused backend is tested against. Readable, autograd does the
backward, any floating dtype. Sums run in float32 (float64 for float64 input) so that integer spike
counts stay exact in half precision; the attention neuron is the reference multi-step neuron.
"""
from __future__ import annotations

import torch

from ..neuron import naive as neuron_naive
from ..neuron.config import NeuronConfig
from .layout import AttentionShape


def _acc_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _heads_view(x: torch.Tensor, s: AttentionShape) -> torch.Tensor:
    """[T, B, C, N] -> [T, B, h, d, N]; [T, B, h, N, d] stays as it is."""
    return x if s.heads_split else x.reshape(s.T, s.B, s.heads, s.d, s.N)


def _channel_axis(s: AttentionShape) -> int:
    return 4 if s.heads_split else 3


def _token_axis(s: AttentionShape) -> int:
    return 3 if s.heads_split else 4


def attention_neuron(x: torch.Tensor, cfg: NeuronConfig) -> torch.Tensor:
    """Multi-step neuron over the leading T axis, starting from rest (V[-1] = v_reset, or 0 for soft reset)."""
    v0 = torch.full(x.shape[1:], cfg.v_reset if cfg.hard_reset else 0.0, dtype=x.dtype, device=x.device)
    return neuron_naive.multi_step(x, v0, cfg)[0]


def qk_token_attention(q, k, s: AttentionShape, cfg: NeuronConfig) -> torch.Tensor:
    """QKFormer token attention: A = SN(sum over each head's channels of Q), one neuron per (head, token);
    out = A * K with A broadcast over the head's channels."""
    qh, kh = _heads_view(q, s), _heads_view(k, s)
    attn = attention_neuron(qh.to(_acc_dtype(q)).sum(_channel_axis(s), keepdim=True), cfg)
    return (attn.to(k.dtype) * kh).reshape(k.shape)


def qk_channel_attention(q, k, s: AttentionShape, cfg: NeuronConfig) -> torch.Tensor:
    """QKFormer channel attention (paper only): A = SN(sum over tokens of Q), one neuron per channel;
    out = A * K with A broadcast over the tokens."""
    qh, kh = _heads_view(q, s), _heads_view(k, s)
    attn = attention_neuron(qh.to(_acc_dtype(q)).sum(_token_axis(s), keepdim=True), cfg)
    return (attn.to(k.dtype) * kh).reshape(k.shape)


def spike_driven_attention(q, k, v, s: AttentionShape, cfg: NeuronConfig, form: str = "code") -> torch.Tensor:
    """Spike-driven Transformer v1 SDSA. Code form: Q * SN(sum over tokens of K * V). Paper form:
    SN(sum over tokens of Q * K) * V. Both are one neuron per channel, so heads do not change the result."""
    if form == "code":
        reduced, gate = (k, v), q
    else:
        reduced, gate = (q, k), v
    acc = _acc_dtype(q)
    product = _heads_view(reduced[0], s).to(acc) * _heads_view(reduced[1], s).to(acc)
    attn = attention_neuron(product.sum(_token_axis(s), keepdim=True), cfg)
    return (attn.to(gate.dtype) * _heads_view(gate, s)).reshape(gate.shape)


def ssa_cost(s: AttentionShape) -> dict[str, int]:
    """Multiply-adds per (time step, batch, head) of the two evaluation orders of Q K^T V."""
    return {"qk_v": 2 * s.N * s.N * s.d, "q_kv": 2 * s.N * s.d * s.d}


def spiking_self_attention(q, k, v, s: AttentionShape, cfg: NeuronConfig, scale: float = 0.125,
                           order: str = "q_kv") -> torch.Tensor:
    """Spikformer SSA / SDT-v2 attention: SN(Q K^T V * scale), with Q, K, V the per-head [N, d] matrices.
    ``order`` picks (Q K^T) V ("qk_v") or Q (K^T V) ("q_kv"); on spike inputs both give the same integers."""
    acc = _acc_dtype(q)
    qh, kh, vh = (x.to(acc) if s.heads_split else x.to(acc).reshape(s.T, s.B, s.heads, s.d, s.N).transpose(-1, -2)
                  for x in (q, k, v))  # [T, B, h, N, d]
    if order == "qk_v":
        y = (qh @ kh.transpose(-1, -2)) @ vh
    else:
        y = qh @ (kh.transpose(-1, -2) @ vh)
    out = attention_neuron(y * scale, cfg)
    if not s.heads_split:
        out = out.transpose(-1, -2).reshape(q.shape)
    return out.to(q.dtype)

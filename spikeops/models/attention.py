"""Attention blocks of the reference backbones, with one switch point per attention core.

Each block owns its Conv-BN projections and neurons (laid out like the official code, so checkpoints map by
renaming); the spike-level core in between (token mask, Q·Kᵀ·V) is one call, ``token_qk_core`` /
``self_attention_core``, into the fused ``spikeops.ops.attention`` operators with the model's backend
(``backend="torch"`` runs their pure-PyTorch references).
"""
from __future__ import annotations

import torch
from torch import nn

from ..ops import attention as attention_ops
from .layers import ConvBN, LIFNeuron, check_backend

__all__ = ["QKTokenAttention", "SpikingSelfAttention", "token_qk_core", "self_attention_core"]

SSA_SCALE = 0.125


def token_qk_core(q: torch.Tensor, k: torch.Tensor, num_heads: int, backend: str) -> torch.Tensor:
    """QKTA core (SPEC §1): per head, ``A = SN_0.5(Σ_c Q)`` over the head's channels, output ``A ⊙ K``.
    q, k: spikes [T, B, C, N]; returns [T, B, C, N]."""
    return attention_ops.qk_token_attention(q, k, num_heads, backend=backend)


def self_attention_core(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_heads: int, scale: float,
                        backend: str) -> torch.Tensor:
    """Spikformer SSA core (SPEC §2): per head ``SN_0.5(Q Kᵀ V · scale)`` in token-major terms.
    q, k, v: LIF spikes [T, B, C, N] (channel-major, as the ImageNet code lays them out); returns [T, B, C, N]."""
    return attention_ops.spiking_self_attention(q, k, v, num_heads, scale=scale, spike_operands=True,
                                                backend=backend)


class QKTokenAttention(nn.Module):
    """QKFormer ``Token_QK_Attention`` (SPEC §1): Q, K = SN(BN(Conv1d(x))), token mask, SN(BN(Conv1d)) out."""

    def __init__(self, dim: int, num_heads: int, backend: str = "auto"):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"num_heads: must divide dim={dim}, got {num_heads}")
        self.num_heads = num_heads
        self.backend = check_backend(backend)
        self.q = ConvBN(dim, dim, dims=1)
        self.q_lif = LIFNeuron(backend=backend)
        self.k = ConvBN(dim, dim, dims=1)
        self.k_lif = LIFNeuron(backend=backend)
        self.proj = ConvBN(dim, dim, dims=1, bias=True)
        self.proj_lif = LIFNeuron(backend=backend)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x = x.flatten(3)
        q = self.q_lif(self.q(x))
        k = self.k_lif(self.k(x))
        y = token_qk_core(q, k, self.num_heads, self.backend)
        return self.proj_lif(self.proj(y)).reshape(shape)


class SpikingSelfAttention(nn.Module):
    """Spikformer SSA (SPEC §2), ImageNet layout: Conv1d projections on [T·B, C, N].

    ``proj_lif_over_batch=True`` reproduces the official QKFormer code, whose ``proj_lif`` receives the
    flattened [T·B, C, N] tensor and therefore integrates across T·B "time steps" (sample b's first step
    starts from sample b-1's last membrane); the default runs it over T only, as the paper intends.
    ``qkv_bias=True`` gives Q/K/V a bias, as the CIFAR code's ``nn.Linear`` layers have.
    """

    def __init__(self, dim: int, num_heads: int, backend: str = "auto", scale: float = SSA_SCALE,
                 proj_lif_over_batch: bool = False, qkv_bias: bool = False):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"num_heads: must divide dim={dim}, got {num_heads}")
        self.num_heads = num_heads
        self.scale = scale
        self.proj_lif_over_batch = proj_lif_over_batch
        self.backend = check_backend(backend)
        self.q = ConvBN(dim, dim, dims=1, bias=qkv_bias)
        self.q_lif = LIFNeuron(backend=backend)
        self.k = ConvBN(dim, dim, dims=1, bias=qkv_bias)
        self.k_lif = LIFNeuron(backend=backend)
        self.v = ConvBN(dim, dim, dims=1, bias=qkv_bias)
        self.v_lif = LIFNeuron(backend=backend)
        self.proj = ConvBN(dim, dim, dims=1, bias=True)
        self.proj_lif = LIFNeuron(backend=backend)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x = x.flatten(3)
        q = self.q_lif(self.q(x))
        k = self.k_lif(self.k(x))
        v = self.v_lif(self.v(x))
        y = self.proj(self_attention_core(q, k, v, self.num_heads, self.scale, self.backend))
        if self.proj_lif_over_batch:
            return self.proj_lif(y.flatten(0, 1)).reshape(shape)
        return self.proj_lif(y).reshape(shape)

"""The backbones' attention blocks: the one family of ``spikeops.nn.attention`` with ``stateless=True``.

``QKTokenAttention`` and ``SpikingSelfAttention`` are thin aliases that fix ``stateless=True`` and keep the
backbones' argument order; they build one ``ConvBN`` per branch (``q.conv``, ``q.bn``, the backbones'
checkpoint names) and neurons that start from rest at every call. The spike-level cores in between are one
call each, ``token_qk_core`` / ``self_attention_core``, into the fused ``spikeops.ops.attention`` operators
with the model's backend (``backend="torch"`` runs their pure-PyTorch references).
"""
from __future__ import annotations

from ..nn import attention as _family
from ..nn.attention import SSA_SCALE, self_attention_core, token_qk_core

__all__ = ["QKTokenAttention", "SpikingSelfAttention", "token_qk_core", "self_attention_core"]


class QKTokenAttention(_family.TokenQKAttention):
    """QKFormer ``Token_QK_Attention``: ``TokenQKAttention(dim, num_heads, backend, stateless=True)``."""

    def __init__(self, dim: int, num_heads: int, backend: str = "auto"):
        super().__init__(dim, num_heads, backend, stateless=True)


class SpikingSelfAttention(_family.SpikingSelfAttention):
    """Spikformer SSA, ImageNet layout: ``spikeops.nn.attention.SpikingSelfAttention(..., stateless=True)``
    with the backbones' argument order (``proj_lif_over_batch``, ``qkv_bias``: see there)."""

    def __init__(self, dim: int, num_heads: int, backend: str = "auto", scale: float = SSA_SCALE,
                 proj_lif_over_batch: bool = False, qkv_bias: bool = False):
        super().__init__(dim, num_heads, scale, backend, stateless=True, proj_lif_over_batch=proj_lif_over_batch,
                         qkv_bias=qkv_bias)

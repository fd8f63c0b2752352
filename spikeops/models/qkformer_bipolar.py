"""Bipolar-attention QKFormer: QKFormer (``qkformer.QKFormer``) whose stage-3 Spikformer SSA blocks are replaced
by bipolar self-attention (BSA, NeurIPS 2025; docs/attention.md, docs/models.md). The BSA paper plugs its attention into
QKFormer but publishes no code, so this is our reading: QKTA stages 1-2 unchanged, and in stage 3
``Q, K = BipolarLIF(BN(Conv1x1(x)))`` (ternary), ``V = LIF(BN(Conv1x1(x)))``, per head
``SN_0.5(norm(scale · Q Kᵀ) V)`` with ``attention_norm`` "shiftmax" (default) or "softmax" (the paper's
ablation), then ``LIF(BN(Conv1x1))``. Every BSA constant is an argument; the projections have the same
shapes as SSA's, so the parameter count equals the plain QKFormer's.
"""
from __future__ import annotations

from ..nn.attention import BipolarSelfAttention
from .qkformer import QKFormer

__all__ = ["qkformer_bipolar", "qkformer_bipolar_hst_4_384", "qkformer_bipolar_hst_10_384"]

ATTENTION_NORMS = ("shiftmax", "softmax")


def qkformer_bipolar(*, attention_norm: str = "shiftmax", attention_scale: float = 1.0, pow2_denominator: bool = True,
                     qk_threshold: float = 1.0, attention_threshold: float = 0.5, **qkformer_kwargs) -> QKFormer:
    """A QKFormer with bipolar self-attention in stage 3; ``qkformer_kwargs`` go to ``QKFormer``."""
    if attention_norm not in ATTENTION_NORMS:
        raise ValueError(f"attention_norm: expected one of {ATTENTION_NORMS}, got {attention_norm!r}")

    def bipolar_attention(dim: int, num_heads: int, backend: str) -> BipolarSelfAttention:
        return BipolarSelfAttention(
            dim, num_heads, scale=attention_scale, norm=attention_norm, pow2_denominator=pow2_denominator,
            qk_threshold=qk_threshold, attention_threshold=attention_threshold, backend=backend, stateless=True)

    return QKFormer(self_attention_block=bipolar_attention, **qkformer_kwargs)


def qkformer_bipolar_hst_4_384(*, num_classes: int = 10, T: int = 4, backend: str = "auto", **kwargs) -> QKFormer:
    """HST-4-384 with BSA, CIFAR 32² (blocks 1 QKTA, 1 QKTA, 2 BSA; 8 heads everywhere)."""
    return qkformer_bipolar(T=T, num_classes=num_classes, embed_dim=384, num_heads=8, depths=(1, 1, 2),
                            imagenet=False, backend=backend, **kwargs)


def qkformer_bipolar_hst_10_384(*, num_classes: int = 1000, T: int = 4, backend: str = "auto", **kwargs) -> QKFormer:
    """HST-10-384 with BSA, ImageNet 224² (blocks 1 QKTA, 2 QKTA, 7 BSA; 6 heads)."""
    return qkformer_bipolar(T=T, num_classes=num_classes, embed_dim=384, num_heads=6, depths=(1, 2, 7),
                            backend=backend, **kwargs)

"""SEMM-Spikformer (Spiking Transformer with Experts Mixture, Zhou et al., NeurIPS 2024) on spikeops, after
STEP's port (Fancyssc/STEP @c0b31937b8, ``cls/models/static/spikf_semm_cifar.py`` / ``spikf_semm_imagenet.py``,
``cls/configs/spikf_semm/*.yml``; docs/models.md). There is no official code.

A Spikformer (the same patch splitter and head as ``spikformer.Spikformer``) whose encoder blocks are
``x + EMSA(x)``, ``x + EMSP(x)``: EMSA (spikeops.attention_experts) replaces SSA and EMSP replaces the MLP,
as the port does in both variants; every neuron is LIF with τ = 2, θ = 1 and a detached hard reset.

=====================  ===============================  ===========================================
                       ``semm_spikformer_4_384_cifar``  ``semm_spikformer_8_512`` (ImageNet)
=====================  ===============================  ===========================================
patch splitter         SPS, 4x (32² -> 8² tokens)       SPS, 16x (224² -> 14² tokens)
experts m, d_e         4, 96                            4, 96
EMSA scale s           0.125                            1 (the port sets 0.125 but never applies it)
BN on K and V          yes                              no (the port's ``k_bn``/``v_bn`` are never called)
EMSP hidden width      4C = 1536                        ⌊C/3⌋·16 = 2720 (``mlp_ratio`` is ignored)
T                      4                                4
=====================  ===============================  ===========================================

Differences from the port, none of which changes what a trained network computes:

* The port's Linear/Conv layers in front of a BatchNorm carry a bias where ours (K, V, router, expert
  queries) do not; BatchNorm subtracts the mean, so such a bias has no effect. The CIFAR port's depthwise
  gate conv has no bias, ours (like the ImageNet port's) has one.
* The port runs one neuron per expert (``lif_list``, ``ff_list``); here one neuron runs over the stacked
  experts: the dynamics are element-wise, so the spikes are the same.
* The port hard-codes an 8x8 token grid in EMSP and T = 4 in the expert queries; here both come from the input.
* The port keeps its neurons' membranes between calls and resets them at the start of each forward; here
  every forward starts from rest and keeps no state (the blocks are built with ``stateless=True``).
"""
from __future__ import annotations

import torch
from torch import nn

from ..nn.attention import EMSA, EMSP
from .layers import check_backend
from .spikformer import Spikformer

__all__ = ["SEMMBlock", "semm_spikformer", "semm_spikformer_4_384_cifar", "semm_spikformer_8_512"]


class SEMMBlock(nn.Module):
    """``x + EMSA(x)`` then ``x + EMSP(x)`` on [T, B, C, H, W] spike counts. ``kv_norm=False`` drops the
    BatchNorm after the K and V projections, as the ImageNet port does."""

    def __init__(self, dim: int, *, num_experts: int = 4, expert_dim: int = 96, scale: float = 0.125,
                 hidden_dim: int | None = None, kv_norm: bool = True, backend: str = "auto"):
        super().__init__()
        self.attn = EMSA(dim, num_experts, expert_dim, scale, backend=check_backend(backend), stateless=True)
        if not kv_norm:
            self.attn.k_bn = nn.Identity()
            self.attn.v_bn = nn.Identity()
        self.mlp = EMSP(dim, hidden_dim, backend=backend, stateless=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(x)
        return x + self.mlp(x)


def semm_spikformer(*, embed_dim: int, depth: int, imagenet: bool, num_classes: int, T: int = 4,
                    num_experts: int = 4, expert_dim: int = 96, scale: float = 0.125, hidden_dim: int | None = None,
                    kv_norm: bool = True, in_channels: int = 3, backend: str = "auto") -> Spikformer:
    """A Spikformer with SEMM blocks; m (``num_experts``), d_e (``expert_dim``) and s (``scale``) are
    arguments (Decision 6). ``hidden_dim`` defaults to EMSP's 4C."""

    def block(dim: int, backend: str) -> SEMMBlock:
        return SEMMBlock(dim, num_experts=num_experts, expert_dim=expert_dim, scale=scale, hidden_dim=hidden_dim,
                         kv_norm=kv_norm, backend=backend)

    return Spikformer(T=T, in_channels=in_channels, num_classes=num_classes, embed_dim=embed_dim, depth=depth,
                      imagenet=imagenet, backend=backend, block=block)


def semm_spikformer_4_384_cifar(*, num_classes: int = 10, T: int = 4, backend: str = "auto", **kwargs) -> Spikformer:
    """SEMM-Spikformer-4-384, CIFAR 32² (STEP ``spikf_semm_cifar`` with ``cifar10.yml``)."""
    return semm_spikformer(embed_dim=384, depth=4, imagenet=False, num_classes=num_classes, T=T, backend=backend,
                           **kwargs)


def semm_spikformer_8_512(*, num_classes: int = 1000, T: int = 4, backend: str = "auto", **kwargs) -> Spikformer:
    """SEMM-Spikformer-8-512, ImageNet 224² (STEP ``spikf_semm_imagenet`` with ``imgnet.yaml``): no EMSA scale,
    no BN on K/V, EMSP hidden width ⌊512/3⌋·16."""
    kwargs.setdefault("scale", 1.0)
    kwargs.setdefault("kv_norm", False)
    kwargs.setdefault("hidden_dim", 512 // 3 * 16)
    return semm_spikformer(embed_dim=512, depth=8, imagenet=True, num_classes=num_classes, T=T, backend=backend,
                           **kwargs)

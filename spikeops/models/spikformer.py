"""Spikformer (Zhou et al., ICLR 2023) on spikeops, ImageNet architecture (docs/models.md).

As in the official code (ZK-Zhou/spikformer @6212689818, ``imagenet/model.py``): a spiking patch splitter
(SPS) of four Conv3x3-BN-LIF-MaxPool stages (C/8, C/4, C/2, C; each LIF fires before its max-pool) and a
Conv3x3-BN-LIF relative position embedding added to its input, then ``depth`` blocks of
``x + SSA(x)``, ``x + MLP(x)``, and a linear head on the mean over T and tokens.

Every official block also holds two LayerNorms (``norm1``, ``norm2``) that its forward never calls; they
are kept (as unused parameters) because the published parameter counts (16.81 M, 29.68 M, 66.34 M) and
the checkpoints include them. They receive no gradient, so DDP needs ``find_unused_parameters=True`` or
``model.drop_unused_norms()`` first.

Official checkpoint key map (``official_key_map``):

==========================================  =====================================
official key prefix                          spikeops key prefix
==========================================  =====================================
``patch_embed.proj_conv`` / ``proj_bn``     ``patch_embed.conv1.conv`` / ``.bn``
``patch_embed.proj_conv{i}`` / ``proj_bn{i}``  ``patch_embed.conv{i+1}.conv`` / ``.bn``
``patch_embed.rpe_conv`` / ``rpe_bn``       ``patch_embed.rpe.conv`` / ``.bn``
``block.j.attn.{q,k,v,proj}_{conv,bn}``     ``block.j.attn.{q,k,v,proj}.{conv,bn}``
``block.j.mlp.fc{1,2}_{conv,bn}``           ``block.j.mlp.fc{1,2}.{conv,bn}``
``block.j.norm{1,2}``, ``head``             unchanged
==========================================  =====================================
"""
from __future__ import annotations

import torch
from torch import nn

from ..nn.packing import enable_spike_packing
from ..ops.spike_pack import spike_max_pool2d
from .attention import SpikingSelfAttention
from .keymap import load_mapped_state_dict, rename_keys
from .layers import ConvBN, LIFNeuron, SpikingMLP, check_backend, to_time_major

__all__ = ["Spikformer", "spikformer_8_384", "spikformer_8_512", "spikformer_8_768", "official_key_map",
           "load_official_state_dict"]


def _max_pool(x: torch.Tensor) -> torch.Tensor:
    T, B = x.shape[:2]
    # the input is LIF spikes: with packing on, kept as bits and no int64 indices (docs/memory.md)
    y = spike_max_pool2d(x.flatten(0, 1), kernel_size=3, stride=2, padding=1)
    return y.reshape(T, B, *y.shape[1:])


class SPS(nn.Module):
    """Spiking patch splitter: 16x downsampling (ImageNet, a max-pool after every LIF), or 4x for CIFAR
    (``imagenet=False``, ``cifar10/model.py``: max-pools after the third and fourth LIF only)."""

    def __init__(self, in_channels: int, dim: int, backend: str, imagenet: bool = True):
        super().__init__()
        self.pooled = (True, True, True, True) if imagenet else (False, False, True, True)
        widths = (in_channels, dim // 8, dim // 4, dim // 2, dim)
        for i in range(4):
            setattr(self, f"conv{i + 1}", ConvBN(widths[i], widths[i + 1], 3))
            setattr(self, f"lif{i + 1}", LIFNeuron(backend=backend))
        self.rpe = ConvBN(dim, dim, 3)
        self.rpe_lif = LIFNeuron(backend=backend)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(1, 5):
            x = getattr(self, f"conv{i}")(x, getattr(self, f"lif{i}"))  # BatchNorm fused into the neuron
            if self.pooled[i - 1]:
                x = _max_pool(x)
        return x + self.rpe(x, self.rpe_lif)


class SpikformerBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, backend: str, qkv_bias: bool = False):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)  # unused by the official forward; see the module docstring
        self.attn = SpikingSelfAttention(dim, num_heads, backend=backend, qkv_bias=qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = SpikingMLP(dim, int(dim * mlp_ratio), backend=backend)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(x)
        return x + self.mlp(x)


class Spikformer(nn.Module):
    """``forward`` takes [B, C, H, W] (repeated T times) or [T, B, C, H, W]; returns logits [B, num_classes].

    ``imagenet=False`` selects the CIFAR patch splitter (4x downsampling) and ``qkv_bias=True`` the CIFAR code's
    biased Q/K/V projections. ``block(dim, backend)``, when given, builds every encoder block instead of the
    SSA + MLP one (variants such as SEMM-Spikformer swap the block and keep the rest)."""

    def __init__(self, *, T: int = 4, in_channels: int = 3, num_classes: int = 1000, embed_dim: int = 384,
                 num_heads: int = 12, depth: int = 8, mlp_ratio: float = 4.0, backend: str = "auto",
                 imagenet: bool = True, qkv_bias: bool = False, block=None):
        super().__init__()
        if not isinstance(T, int) or isinstance(T, bool) or T < 1:
            raise ValueError(f"T: expected a positive int, got {T!r}")
        if embed_dim % 8:
            raise ValueError(f"embed_dim: must be divisible by 8 (the SPS widths are embed_dim/8..), got {embed_dim}")
        check_backend(backend)
        self.T = T
        self.patch_embed = SPS(in_channels, embed_dim, backend, imagenet=imagenet)
        if block is None:
            def block(dim, backend):
                return SpikformerBlock(dim, num_heads, mlp_ratio, backend, qkv_bias=qkv_bias)
        self.block = nn.ModuleList([block(embed_dim, backend) for _ in range(depth)])
        # spikeops.minimum_memory's default: the patch embedding and every encoder block, whatever builds them
        self.checkpoint_block_types = (SPS, *{type(b) for b in self.block})
        self.head = nn.Linear(embed_dim, num_classes)
        nn.init.trunc_normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)
        enable_spike_packing(self)  # spikes kept as bits for backward in training (docs/memory.md)

    def drop_unused_norms(self) -> "Spikformer":
        """Removes the never-called LayerNorms (for DDP without ``find_unused_parameters``)."""
        for block in self.block:
            block.norm1 = block.norm2 = None
        return self

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(to_time_major(x, self.T))
        for block in self.block:
            x = block(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x).flatten(3).mean(3).mean(0))


def spikformer_8_384(*, num_classes: int = 1000, T: int = 4, backend: str = "auto", **kwargs) -> Spikformer:
    """Spikformer-8-384, ImageNet 224², 16.81 M parameters."""
    kwargs.setdefault("num_heads", 12)
    return Spikformer(T=T, num_classes=num_classes, embed_dim=384, depth=8, backend=backend, **kwargs)


def spikformer_8_512(*, num_classes: int = 1000, T: int = 4, backend: str = "auto", **kwargs) -> Spikformer:
    """Spikformer-8-512, ImageNet 224², 29.68 M parameters (8 heads, the official ``spikformer`` default)."""
    kwargs.setdefault("num_heads", 8)
    return Spikformer(T=T, num_classes=num_classes, embed_dim=512, depth=8, backend=backend, **kwargs)


def spikformer_8_768(*, num_classes: int = 1000, T: int = 4, backend: str = "auto", **kwargs) -> Spikformer:
    """Spikformer-8-768, ImageNet 224², 66.34 M parameters."""
    kwargs.setdefault("num_heads", 12)
    return Spikformer(T=T, num_classes=num_classes, embed_dim=768, depth=8, backend=backend, **kwargs)


_RULES = [
    (r"^patch_embed\.proj_(conv|bn)\.", r"patch_embed.conv1.\1."),
    (r"^patch_embed\.proj_(conv|bn)([123])\.", lambda m: f"patch_embed.conv{int(m.group(2)) + 1}.{m.group(1)}."),
    (r"^patch_embed\.rpe_(conv|bn)\.", r"patch_embed.rpe.\1."),
    (r"\.attn\.(q|k|v|proj)_(conv|bn)\.", r".attn.\1.\2."),
    (r"\.mlp\.fc([12])_(conv|bn)\.", r".mlp.fc\1.\2."),
]


def official_key_map(keys) -> dict[str, str]:
    """{official key: spikeops key} for an official ImageNet Spikformer state dict."""
    return rename_keys(keys, _RULES)


def load_official_state_dict(model: Spikformer, state_dict, strict: bool = True, key_map=official_key_map):
    """Loads an official Spikformer checkpoint into ``model`` (keys renamed by ``key_map``). When
    ``drop_unused_norms()`` was called, the checkpoint's unused LayerNorm entries are skipped."""
    has_norms = model.block[0].norm1 is not None if len(model.block) else True

    def ignore(key: str) -> bool:
        return not has_norms and ".norm" in key

    return load_mapped_state_dict(model, state_dict, key_map, strict=strict, ignore=ignore)
